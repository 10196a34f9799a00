"""Converter round trips at reduced width, strict-loading errors, our checkpoint format and the CLI."""
import pytest
import torch

from varformer.cli import main
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.model import (VarFormer, VarFormerStage1, convert_official, load_varformer, save_varformer,
                             to_official)
from varformer.model import load_official
from varformer.model.files import load_weights

SMALL = dict(depth=2, vae_ch=32)


def _random_state(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype))
            for k, v in model.state_dict().items()}


_CACHE = {}


def _official_small(cls, seed=0, **kw):
    """An official-layout state dict at reduced width: our layout (shapes from a meta-device model, random values)
    mapped back, plus inert official tensors. A fresh dict each call (the tensors are shared: do not modify them
    in place)."""
    key = (cls.__name__, seed, tuple(sorted(kw.items())))
    if key not in _CACHE:
        with torch.device("meta"):
            model = cls(**SMALL, **kw)
        sd = to_official(_random_state(model, seed))
        for j in range(model.n_cross):
            sd[f"cross_attn_blocks.{j}.zero_k_bias"] = torch.zeros(model.var.C)
        if cls is VarFormer:
            sd["Mainencoder.AFT.Level_0.q.weight"] = torch.randn(32, 32, 1, 1)
            sd["main_decoder.DAE.Level_0.conv1x1.bias"] = torch.randn(2)
            sd["main_decoder.conv1__w.weight"] = torch.randn(1, 1, 1, 1)
            sd["main_decoder.conv1__w.bias"] = torch.randn(1)
            rstb = "Mainencoder.DAE.Level_2.swin_blocks.1"
            sd[f"{rstb}.patch_embed.proj.weight"] = torch.empty(64, 0, 4, 4)
            sd[f"{rstb}.patch_embed.proj.bias"] = torch.randn(64)
            sd[f"{rstb}.residual_group.blocks.1.attn_mask"] = torch.zeros(256, 16, 16)
            sd[f"{rstb}.residual_group.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16,
                                                                                           dtype=torch.long)
        _CACHE[key] = sd
    return dict(_CACHE[key])


@pytest.mark.parametrize("cls, kw, config", [
    (VarFormer, dict(n_cross=1, dec_adjust=True), dict(stage=2, depth=2, vae_ch=32, n_cross=1, dec_adjust=True)),
    (VarFormer, dict(n_cross=2), dict(stage=2, depth=2, vae_ch=32, n_cross=2, dec_adjust=False)),
    (VarFormerStage1, dict(n_cross=2), dict(stage=1, depth=2, vae_ch=32, n_cross=2)),
])
def test_round_trip(cls, kw, config):
    off = _official_small(cls, **kw)
    got_config, ours, report = convert_official(off, with_report=True)
    assert got_config == config
    assert set(report.dropped) == {k for k in off if "Level_0" in k or "conv1__w" in k or "patch_embed" in k
                                   or "attn_mask" in k or "relative_position_index" in k
                                   or (k.startswith("cross_attn_blocks.") and k.endswith("zero_k_bias"))}
    model = cls.from_official(off)                       # build + strict load
    back = to_official(model.state_dict())
    assert back.keys() == off.keys() - set(report.dropped)
    assert all(torch.equal(back[k], off[k]) for k in back)


def test_stage_mismatch_names_both_stages():
    off1 = _official_small(VarFormerStage1, n_cross=2)
    with pytest.raises(CheckpointMismatchError, match="stage-1.*stage-2"):
        VarFormer.from_official(off1)
    with pytest.raises(CheckpointMismatchError, match="stage-1.*stage-2"):
        load_official(off1, expect_stage=2)
    off2 = _official_small(VarFormer, n_cross=1)
    with pytest.raises(CheckpointMismatchError, match="stage-2.*stage-1"):
        VarFormerStage1.from_official(off2)


def test_wrong_depth_and_stray_tensors_are_reported():
    with torch.device("meta"):
        small = VarFormerStage1(depth=2, vae_ch=32, n_cross=2)
        deeper = VarFormerStage1(depth=3, vae_ch=32, n_cross=2)
    sd = {k: torch.zeros(v.shape) for k, v in small.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="depth: checkpoint 2, model 3"):
        load_weights(deeper, sd)
    off = _official_small(VarFormerStage1, n_cross=2)
    off["ft_layers.blks.0.mystery.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match="could not be placed: ft_layers.blks.0.mystery.weight"):
        convert_official(off)
    off = _official_small(VarFormerStage1, n_cross=2)
    del off["head.bias"]
    with pytest.raises(CheckpointMismatchError, match="unfilled: head.bias"):
        convert_official(off)
    off = _official_small(VarFormerStage1, n_cross=2)
    off["word_embed.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches: word_embed.bias"):
        convert_official(off)
    off = _official_small(VarFormerStage1, n_cross=2)
    off["cross_attn_blocks.0.zero_k_bias"] = off["cross_attn_blocks.0.zero_k_bias"] + 1
    with pytest.raises(CheckpointMismatchError, match="all-zero"):
        convert_official(off)


def test_basicsr_file_key_selection_and_cli(tmp_path):
    ema = _official_small(VarFormerStage1, seed=1, n_cross=2)
    raw = _official_small(VarFormerStage1, seed=2, n_cross=2)
    path = tmp_path / "net_g.pth"
    torch.save({"params": raw, "params_ema": ema}, path)
    m = VarFormerStage1.from_official(str(path))
    assert torch.equal(m.var.head.weight, ema["head.weight"])
    m = VarFormerStage1.from_official(str(path), key="params")
    assert torch.equal(m.var.head.weight, raw["head.weight"])
    with pytest.raises(CheckpointMismatchError, match="no 'nope' entry"):
        VarFormerStage1.from_official(str(path), key="nope")
    with pytest.raises(WeightsNotFoundError, match="wsy541/VarFormer"):
        VarFormer.from_official(str(tmp_path / "missing.pth"))
    # CLI: official -> our safetensors file -> load_varformer
    out = tmp_path / "ours.safetensors"
    assert main(["convert", "official", str(path), "-o", str(out), "--key", "params"]) == 0
    loaded = load_varformer(out)
    assert isinstance(loaded, VarFormerStage1) and loaded.settings().depth == 2
    assert torch.equal(loaded.var.head.weight, raw["head.weight"])
    assert main(["convert", "official", str(tmp_path / "missing.pth"), "-o", str(out)]) == 2


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_our_format_round_trip(tmp_path, suffix):
    model = VarFormerStage1(**SMALL, n_cross=1, cfg=0.7)
    path = tmp_path / f"m{suffix}"
    save_varformer(path, model)
    if suffix == ".pt":
        obj = torch.load(path, weights_only=True)
        assert obj["config"] == dict(stage=1, depth=2, vae_ch=32, n_cross=1, cfg=0.7, head_layout="official")
    loaded = load_varformer(path)
    assert isinstance(loaded, VarFormerStage1) and loaded.cfg == 0.7
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(CheckpointMismatchError, match="stage-1.*stage-2"):
        load_varformer(path, expect_stage=2)
    assert load_varformer(path, head_layout="standard").cross_attn[0].head_layout == "standard"


def test_stage2_config_names_the_architecture():
    with torch.device("meta"):
        model = VarFormer(**SMALL, n_cross=1, dec_adjust=True)
    assert model.settings().to_metadata() == dict(stage=2, depth=2, vae_ch=32, n_cross=1, cfg=0.5,
                                                  head_layout="official", dec_adjust=True)


def test_load_backbone_from_official_files(tmp_path):
    torch.manual_seed(3)
    src = VarFormerStage1(**SMALL, n_cross=1)
    torch.save(src.vae.state_dict(), tmp_path / "vae.pth")
    torch.save(src.var.state_dict(), tmp_path / "var_d2.pth")
    with torch.device("meta"):
        model = VarFormerStage1(**SMALL, n_cross=1)
    model.load_backbone(str(tmp_path / "vae.pth"), str(tmp_path / "var_d2.pth"))
    assert torch.equal(model.vae.quantize.embedding.weight, src.vae.quantize.embedding.weight)
    assert torch.equal(model.var.head.weight, src.var.head.weight)
    assert model.var.vae is model.vae
    with pytest.raises(WeightsNotFoundError, match="var_d2"):
        model.load_backbone(str(tmp_path / "vae.pth"), str(tmp_path / "nope" / "var_d2.pth"))


def test_safetensors_reader_without_memory_map(tmp_path):
    from safetensors.torch import save_file

    from varformer.files import read_safetensors
    t = {"x": torch.randn(3, 4).bfloat16(), "s": torch.tensor(2.0), "e": torch.empty(0, 5),
         "i": torch.arange(7), "h": torch.randn(2, 2).half(), "b": torch.tensor([True, False])}
    save_file(t, str(tmp_path / "t.safetensors"))
    r = read_safetensors(tmp_path / "t.safetensors")[0]
    assert r.keys() == t.keys()
    for k in t:
        assert r[k].dtype == t[k].dtype and r[k].shape == t[k].shape and torch.equal(r[k], t[k]), k
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(CheckpointMismatchError, match="truncated"):
        read_safetensors(tmp_path / "cut.safetensors")
