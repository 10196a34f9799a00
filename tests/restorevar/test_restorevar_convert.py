"""Official layouts <-> ours: the round trip, strictness, the released key count, the stage-1 initialisation from
a VAR file, our checkpoint format, and the messages for missing weights."""
import pytest
import torch
from restorevar_testutils import SMALL, small_model

from varformer.backbone import VAR, VQVAE
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.methods.registry import inspect_weights
from varformer.restorevar import (RestoreVAR, RestoreVARSettings, convert_restorevar,
                                  load_restorevar, save_restorevar, stage1_init_from_var, to_official_restorevar)
from varformer.restorevar.weights import find_weight_file


def test_released_layout_has_594_tensors_and_the_published_parameter_count():
    with torch.device("meta"):
        m = RestoreVAR()
    sd, vae_sd = to_official_restorevar(m.state_dict(), m.settings())
    assert len(sd) == 594 and len(vae_sd) == 324
    assert sd["freqs_cis"].shape == (2240, 32) and sd["freqs_cis"].dtype == torch.complex64
    assert sd["attn_bias_for_masking"].shape == (1, 1, 2240, 2240)
    assert not any(k.startswith(("pos_", "head_nm")) or ".ada_lin." in k for k in sd)
    n_var = sum(p.numel() for p in m.var.parameters())
    n_ref = sum(p.numel() for p in m.refiner.parameters())
    assert (n_var, n_ref, n_var + n_ref) == (273_986_097, 22_967_616, 296_953_713)   # Table 3's 296.95 M


def test_round_trip_and_strictness(model, official):
    sd, vae_sd = official
    cfg, ours = convert_restorevar(sd)
    assert cfg == {"depth": 2, "embed_dim": 128, "patch_nums": [1, 2, 3, 4], "refiner_depth": 1, "refiner_dim": 64,
                   "refiner_heads": 1, "refiner_mlp_dim": 128}
    back, _ = to_official_restorevar(ours, RestoreVARSettings(**cfg))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("vae.")}
    assert ours.keys() == own.keys() and all(torch.equal(ours[k], own[k]) for k in own)

    with pytest.raises(CheckpointMismatchError, match="missing"):
        convert_restorevar({k: v for k, v in sd.items() if k != "blocks.1.cross_attn.gain"})
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        convert_restorevar(dict(sd, **{"blocks.0.ada_lin.1.weight": torch.zeros(3)}))
    bad = dict(sd)
    bad["freqs_cis"] = bad["freqs_cis"] * 1j                          # another RoPE convention
    with pytest.raises(CheckpointMismatchError, match="freqs_cis"):
        convert_restorevar(bad)
    with pytest.raises(CheckpointMismatchError, match="plain VAR"):
        convert_restorevar(VAR(VQVAE(ch=32, patch_nums=(1, 2, 3, 4)), depth=2).state_dict())
    s1 = RestoreVAR.from_official({k: v for k, v in sd.items() if not k.startswith("vae_refiner.")}, vae_sd)
    assert s1.refiner is None                      # the stage-1 layout (no vae_refiner.*) gives a stage-1 model


def test_tokenizer_vae_is_kept_apart_when_given(official, images):
    sd, vae_sd = official
    other = {k: (v + 0.01 if k.startswith("decoder.") and v.is_floating_point() else v) for k, v in vae_sd.items()}
    m = RestoreVAR.from_official(sd, other, tokenizer_vae=vae_sd)
    assert m.tokenizer is m.tokenizer_vae and m.tokenizer is not m.vae and m.settings().separate_tokenizer
    assert torch.equal(m.tokenizer.decoder.conv_out.weight, vae_sd["decoder.conv_out.weight"])


def test_stage1_initialisation_from_a_var_file():
    torch.manual_seed(0)
    var = VAR(VQVAE(ch=32, patch_nums=(1, 2, 3, 4)), depth=2)
    var_sd = var.state_dict()
    settings = RestoreVARSettings(**dict(SMALL, refiner_depth=0))
    ours, report = stage1_init_from_var(var_sd, settings, generator_seed=0)
    assert sorted(report.dropped) == sorted(["pos_start", "pos_1LC", "lvl_1L", "attn_bias_for_masking",
                                             "blocks.0.ada_lin.1.weight", "blocks.0.ada_lin.1.bias",
                                             "blocks.1.ada_lin.1.weight", "blocks.1.ada_lin.1.bias",
                                             "head_nm.ada_lin.1.weight", "head_nm.ada_lin.1.bias"])
    for k in ("word_embed.weight", "class_emb.weight", "lvl_embed.weight", "head.bias", "blocks.1.attn.mat_qkv.weight",
              "blocks.0.ffn.fc2.weight", "blocks.0.attn.scale_mul_1H11"):
        assert torch.equal(ours["var." + k], var_sd[k]), k
    assert ours["var.global_embed_gain"].item() == 0 and ours["var.blocks.1.cross_attn.gain"].item() == 0
    assert "blocks.0.cross_attn.q_proj.weight" in report.new and "cond_proj4.weight" in report.new
    m = RestoreVAR(**settings.constructor_kwargs())
    m.var.load_state_dict({k[4:]: v for k, v in ours.items()}, strict=True)
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        stage1_init_from_var(var_sd, settings.replace(patch_nums=[1, 2, 4]))
    with pytest.raises(CheckpointMismatchError, match="shallower"):
        stage1_init_from_var({k: v for k, v in var_sd.items() if not k.startswith("blocks.1.")}, settings)


def test_our_checkpoint_format(tmp_path, model, images):
    path = tmp_path / "rv.pt"
    save_restorevar(path, model)
    info = inspect_weights(path)
    assert (info.kind, info.method.name, info.settings) == ("model", "restorevar", model.settings())
    loaded = load_restorevar(path)
    lq, _ = images
    assert torch.equal(loaded(lq[:1]), model(lq[:1]))
    save_restorevar(tmp_path / "rv.safetensors", model)           # the same model as a safetensors file
    assert inspect_weights(tmp_path / "rv.safetensors").method.name == "restorevar"
    assert torch.equal(load_restorevar(tmp_path / "rv.safetensors")(lq[:1]), model(lq[:1]))
    assert not any(k.startswith("var.freqs") or "attn_bias" in k for k in torch.load(path)["state_dict"])
    with pytest.raises(CheckpointMismatchError, match="stage-1 model"):
        load_restorevar(path, expect_refiner=False)
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    assert inspect_weights(tmp_path / "other.pt").kind == "unknown"
    with pytest.raises(CheckpointMismatchError, match="not a RestoreVAR checkpoint"):
        load_restorevar(tmp_path / "other.pt")
    wrong = small_model(depth=1)
    torch.save({"format": "restorevar", "version": 1, "config": model.settings().to_metadata(),
                "state_dict": wrong.state_dict()}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointMismatchError, match="depth: checkpoint 1, model 2"):
        load_restorevar(tmp_path / "wrong.pt")


def test_missing_files_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("VARFORMER_CHECKPOINTS", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="sharepoint.*checkpoints/"):
        find_weight_file("vae_restorevar.ckpt", checkpoints_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match="restorevar.pth.*SharePoint"):
        RestoreVAR.from_official(tmp_path / "nowhere" / "restorevar.pth", {})
    with pytest.raises(WeightsNotFoundError, match="convert restorevar"):
        load_restorevar(tmp_path / "missing.pt")
