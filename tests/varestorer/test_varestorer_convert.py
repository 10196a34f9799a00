"""The official files <-> our state dict: the released size and key layout of varestorer.pth, strict loading of
the three files in their release forms, the round trip, one-line errors naming the file, and the settings."""
import time

import infinity_reference as ref
import pytest
import torch
from varestorer_testutils import PN, SMALL

from varformer.errors import CheckpointMismatchError, ConfigError, WeightsNotFoundError
from varformer.varestorer import (VARestorer, VARestorerSettings, convert_varestorer, lora_parameters,
                                  official_varestorer_shapes, to_official_varestorer)


def test_released_size_builds_on_meta_with_the_spec_parameter_count_and_key_layout():
    t = time.perf_counter()
    with torch.device("meta"):
        m = VARestorer()
    assert time.perf_counter() - t < 30
    assert sum(p.numel() for p in m.transformer.parameters()) == 2_204_564_032 + 27_262_976
    assert sum(p.numel() for p in lora_parameters(m)) == 27_262_976 and len(lora_parameters(m)) == 320
    layout = official_varestorer_shapes(VARestorerSettings())
    assert layout == ref.official_infinity_shapes(32, 2048, 16, 2048, 8, lora_rank=32)
    assert len(layout) == 1014
    assert layout["block_chunks.7.module.3.sa.mat_qkv.lora_up.weight"] == (6144, 32)
    assert layout["block_chunks.0.module.0.ca.mat_kv.linear.weight"] == (4096, 2048)


def test_round_trip_gives_back_the_official_tensors(model, files):
    sd, vae_file, swin_file = files
    cfg, ours = convert_varestorer(sd)
    assert cfg == dict(depth=2, embed_dim=128, num_heads=2, text_channels=128, lora_rank=4, block_chunks=2,
                       codebook_dim=32)
    official = to_official_varestorer(model.state_dict(), model.settings())
    assert official["model"].keys() == sd.keys() and all(torch.equal(official["model"][k], sd[k]) for k in sd)
    vae = {k: v for k, v in vae_file["vae"].items() if k != "quantizer.lfq.mask"}
    assert official["vae"].keys() == vae.keys() and all(torch.equal(official["vae"][k], vae[k]) for k in vae)
    swin = {k[len("module."):]: v for k, v in swin_file["state_dict"].items()}
    assert official["swinir"].keys() == swin.keys()
    assert all(torch.equal(official["swinir"][k].to(swin[k].dtype), swin[k]) for k in swin)


def test_file_forms_and_paths(tmp_path, files):
    sd, vae_file, swin_file = files
    torch.save(sd, tmp_path / "varestorer.pth")
    torch.save(vae_file, tmp_path / "infinity_vae_d32reg.pth")
    torch.save(swin_file, tmp_path / "general_swinir_v1.ckpt")
    bare_vae = dict(vae_file["vae"])
    bare_vae.pop("quantizer.lfq.mask")
    m = VARestorer.from_official(tmp_path / "varestorer.pth", bare_vae, tmp_path, patch_nums=PN)
    assert m.swinir is not None and m.settings().to_metadata() == VARestorerSettings(**SMALL).to_metadata()
    no_swin = VARestorer.from_official(sd, tmp_path / "infinity_vae_d32reg.pth", patch_nums=PN)
    assert no_swin.swinir is None and not no_swin.settings().swinir
    with pytest.raises(WeightsNotFoundError, match="huggingface.co/lxq007/DiffBIR"):
        VARestorer.from_official(sd, bare_vae, tmp_path / "nowhere" / "general_swinir_v1.ckpt", patch_nums=PN)


def test_mismatches_are_one_line_errors_naming_the_file(files):
    sd, vae_file, swin_file = files
    vae = vae_file["vae"]
    swin = swin_file["state_dict"]
    base = {k.replace(".linear.", "."): v for k, v in sd.items() if ".lora_" not in k}
    cases = [
        (dict(sd, **{"block_chunks.1.module.0.ca.mat_kv.lora_up.weight": torch.zeros(256, 5)}), vae, None,
         "the varestorer.pth state dict is not the official VARestorer layout", "keys with other shapes"),
        ({k: v for k, v in sd.items() if k != "block_chunks.1.module.0.sa.proj.lora_down.weight"}, vae, None,
         "varestorer.pth", "1 missing keys (block_chunks.1.module.0.sa.proj.lora_down.weight)"),
        (base, vae, None, "varestorer.pth", "has no LoRA tensors"),
        (sd, dict(vae, **{"decoder.conv_out.conv.bias": torch.zeros(4)}), None, "infinity_vae_d32reg.pth",
         "VARestorer's vae"),
        (sd, {k: v for k, v in vae.items() if "decoder.mid.block_2.norm1" not in k}, None,
         "infinity_vae_d32reg.pth", "2 missing keys (vae.decoder.mid.block_2.norm1.norm.bias"),
        (sd, vae, {k: v for k, v in swin.items() if "conv_hr.bias" not in k}, "general_swinir_v1.ckpt",
         "1 missing keys"),
    ]
    for model_sd, vae_sd, swin_sd, where, what in cases:
        with pytest.raises(CheckpointMismatchError) as e:
            VARestorer.from_official(model_sd, vae_sd, swin_sd, patch_nums=PN)
        msg = str(e.value)
        assert where in msg and what in msg and "\n" not in msg, msg


def test_settings_validate_and_round_trip():
    s = VARestorerSettings(**SMALL).validate()
    assert VARestorerSettings.from_metadata(s.to_metadata()) == s and s.image_size == 128
    assert VARestorerSettings().image_size == 512
    for bad, msg in [(dict(depth=3, block_chunks=2), "multiple of block_chunks"),
                     (dict(patch_nums=[1, 2, 3]), "prefix of Infinity's 1M schedule"),
                     (dict(text_channels=100), "multiple of 128"),
                     (dict(vae_ch_mult=[1, 2, 4, 4]), "5 levels"),
                     (dict(num_heads=3), "heads")]:
        with pytest.raises(ConfigError, match=msg):
            VARestorerSettings(**dict(SMALL, **bad)).validate()
    with pytest.raises(CheckpointMismatchError, match="unknown VARestorer settings"):
        VARestorerSettings.from_metadata(dict(s.to_metadata(), width=3))
