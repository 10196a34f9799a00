"""Full-size official layouts on the meta device: converter accounting, parameter counts, freezing split."""
import json
import lzma
import math
import re
from pathlib import Path

import pytest
import torch

from varformer.model import VarFormer, VarFormerStage1, convert_official, to_official
from varformer.model.convert import is_inert

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "model" / "official_keys.json.xz"
LAYOUTS = {
    "VarFormer2@test": (VarFormer, dict(stage=2, depth=16, vae_ch=160, n_cross=8, dec_adjust=False)),
    "VarFormer2@stage2": (VarFormer, dict(stage=2, depth=20, vae_ch=160, n_cross=6, dec_adjust=True)),
    "VarFormer2_varRec@stage1": (VarFormerStage1, dict(stage=1, depth=20, vae_ch=160, n_cross=20)),
}
# official prefix -> our prefix (for the per-prefix parameter table)
PREFIXES = {
    "encoder": "vae.encoder", "decoder": "vae.decoder", "quantize": "vae.quantize", "quant_conv": "vae.quant_conv",
    "post_quant_conv": "vae.post_quant_conv", "pos_start": "var.pos_start", "pos_1LC": "var.pos_1LC",
    "word_embed": "var.word_embed", "class_emb": "var.class_emb", "lvl_embed": "var.lvl_embed",
    "blocks": "var.blocks", "head_nm": "var.head_nm", "head": "var.head", "cross_attn_blocks": "cross_attn",
    "ft_layers": "adapter", "Mainencoder": "unet_encoder", "main_decoder": "unet_decoder",
}
DEAD = re.compile(r".*(Level_0|patch_embed|conv1__w).*")


@pytest.fixture(scope="module")
def official():
    with lzma.open(FIXTURE) as f:
        return json.load(f)


_MODELS = {}


def _build(cls, config):
    """Meta-device model per layout, built once per session (freeze_official resets requires_grad itself)."""
    key = (cls.__name__, tuple(sorted(config.items())))
    if key not in _MODELS:
        kw = {k: v for k, v in config.items() if k != "stage"}
        with torch.device("meta"):
            _MODELS[key] = cls(**kw)
    return _MODELS[key]


def _count(model, prefix):
    return sum(p.numel() for n, p in model.named_parameters() if n == prefix or n.startswith(prefix + "."))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_convert_accounts_for_every_tensor(official, layout):
    cls, config = LAYOUTS[layout]
    keys = official[layout]
    sd = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    got_config, ours, report = convert_official(sd, with_report=True)
    assert got_config == config
    assert report.mapped + len(report.dropped) == len(keys)
    assert all(is_inert(k) for k in report.dropped)
    model = _build(cls, config)
    own = model.state_dict()
    assert ours.keys() == own.keys()
    assert all(tuple(ours[k].shape) == tuple(own[k].shape) for k in own)
    back = to_official(ours)
    assert back.keys() == keys.keys() - set(report.dropped)
    assert all(list(back[k].shape) == keys[k] for k in back)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_parameter_counts_per_prefix(official, layout):
    cls, config = LAYOUTS[layout]
    counts = official["_counts"][layout]
    buffers = set(official["_buffers"][layout])
    model = _build(cls, config)
    per_top = counts["per_top_module"]
    for off_prefix, total in per_top.items():
        dead = sum(math.prod(s) for k, s in official[layout].items()
                   if k.split(".")[0] == off_prefix and k not in buffers and DEAD.fullmatch(k))
        ours = _count(model, PREFIXES[off_prefix])
        if off_prefix == "main_decoder":
            ours += _count(model, "input_weight")  # the global blend weight lives at the top level here
        assert ours == total - dead, off_prefix
    n_dead = sum(counts["structurally_dead_params"].values())
    assert sum(p.numel() for p in model.parameters()) == counts["total_params"] - n_dead


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_freeze_official_split(official, layout):
    cls, config = LAYOUTS[layout]
    counts = official["_counts"][layout]
    model = _build(cls, config).freeze_official()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    n_dead = sum(counts["structurally_dead_params"].values())  # all dead parameters are in trainable modules
    assert frozen == counts["frozen_by_fix_modules_of_train_yamls"]
    assert trainable == counts["trainable_if_trained_with_fix_modules"] - n_dead
    # the VAR embeddings and head are trained by both official stages
    for name in ("var.word_embed.weight", "var.class_emb.weight", "var.pos_1LC", "var.head.weight",
                 "var.head_nm.ada_lin.1.weight"):
        assert model.get_parameter(name).requires_grad
    assert not model.get_parameter("var.blocks.0.attn.mat_qkv.weight").requires_grad
