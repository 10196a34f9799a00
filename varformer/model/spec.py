"""VarFormer as a method of this package: the one ``MethodSpec`` the registry holds for it (docs/extending.md)."""
from __future__ import annotations

import argparse
from functools import partial
from typing import List

import torch

from varformer.methods.api import (BenchmarkEntry, BenchmarkSwitch, Converter, DemoRecipe, MethodSpec, ReferencePath,
                                   RestorerTraits, StageSpec)
from varformer.model import task
from varformer.model.ablations import ABLATIONS
from varformer.model.analysis import ANALYSES
from varformer.model.config import VarFormerDemoConfig, VarFormerLossConfig, VarFormerModelConfig
from varformer.model.convert import read_official
from varformer.model.files import (METHOD, RELEASE_HINT, build_from_state_dict, convert_official, describe, recognize,
                                   restorer_model, save_varformer)
from varformer.model.memory import estimate_stage_memory
from varformer.model.reference_forward import DESCRIPTION as REFERENCE_DESCRIPTION
from varformer.model.reference_forward import has_reference, official_style_forward
from varformer.model.paper import PAPER
from varformer.model.settings import VarFormerSettings, architecture_of
from varformer.model.varformer import PARTS, build_varformer

INPUT_SIZE = 256


def _add_official_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", default=None,
                        help="entry of the BasicSR checkpoint to convert (default params_ema; or params)")
    parser.add_argument("--cfg", type=float, default=0.5, help="CFG strength stored in the model's settings")


def _convert_official(args) -> List[str]:
    sd = read_official(args.checkpoint, key=args.key)
    arch, state_dict, report = convert_official(sd, with_report=True)
    model = build_from_state_dict(VarFormerSettings(**arch, cfg=args.cfg), state_dict, source=args.checkpoint)
    save_varformer(args.output, model)
    return [report.summary(), f"wrote {args.output}"]


def _benchmark_inputs(settings: VarFormerSettings, batch: int, device: torch.device) -> tuple:
    return (torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device),)


def _bf16_transformer(model) -> str:
    model.bf16_transformer = True
    return "VAR loop in bf16 under bf16"


# the benchmark's tables: each record_function range of the forward, and FLOPs / parameters by module
PART_LABELS = ("VQVAE encoder + adapter + quantise", "VAR scale loop", "U-Net encoder", "VQVAE decoder features",
               "U-Net decoder")
FLOP_GROUPS = (("VQVAE encoder, quant_conv, adapter, quantiser", ("vae.encoder", "vae.quant_conv", "adapter",
                                                                  "vae.quantize")),
               ("VAR and cross-attention", ("var", "cross_attn")),
               ("U-Net encoder", ("unet_encoder",)),
               ("VQVAE decoder", ("vae.decoder", "vae.post_quant_conv")),
               ("U-Net decoder", ("unet_decoder",)))


def _stage(name: str, stage: int, description: str, batch: int, layout: str) -> StageSpec:
    return StageSpec(name, description, build_task=partial(_build_task, stage=stage),
                     check_inputs=partial(task.check_inputs, stage=stage),
                     training_data=partial(task.training_data, stage=stage), official_global_batch=batch,
                     official_layout=layout, released_size=lambda cfg: cfg.model.vae_ch == 160,
                     configure=lambda cfg: setattr(cfg.model, "stage", stage),
                     estimate_memory=lambda cfg, micro, precision: estimate_stage_memory(cfg, stage, precision),
                     recipe=f"{name}.yaml")


def _build_task(cfg, announce, stage: int):
    return task.build_task(cfg, stage, announce)


SPEC = MethodSpec(
    name=METHOD,
    title="VarFormer",
    settings=VarFormerSettings,
    model_config=VarFormerModelConfig,
    loss_config=VarFormerLossConfig,
    demo_config=VarFormerDemoConfig,
    build=build_varformer,
    stages=(_stage("stage1", 1, "the Adapter and cross-attention on the frozen VAR (token CE + feature L2)", 8,
                   "4 per GPU x 2 GPUs"),
            _stage("stage2", 2, "the restorer: U-Net with DAE and AFT (L1 + PSNR + VGG19 + the stage-1 terms)", 64,
                   "16 per GPU x 4 GPUs")),
    restorer=lambda model: RestorerTraits(input_size=INPUT_SIZE, precision="fp32"),
    load_model=restorer_model,
    describe=describe,
    architecture_of=architecture_of,
    recognize=recognize,
    converters=(Converter("official", "the released VarFormer checkpoint (net_g_last.pth, BasicSR layout) -> our "
                                      "model file; layout inferred, every tensor placed or dropped as inert",
                          _add_official_arguments, _convert_official),),
    benchmark=BenchmarkEntry(
        released=lambda: VarFormerSettings(), inputs=_benchmark_inputs, input_size=lambda settings: INPUT_SIZE,
        parts=PARTS, part_labels=PART_LABELS, flop_groups=FLOP_GROUPS, flop_rest="rest (glue outside these modules)",
        reference=ReferencePath(official_style_forward, applies=has_reference, label="official-style ref. (fp32)",
                                description=REFERENCE_DESCRIPTION),
        switches=(BenchmarkSwitch("bf16-transformer", "with bf16: also run the VAR scale loop in bf16 (the model "
                                                      "keeps it float32 by default)", _bf16_transformer),)),
    demo=DemoRecipe(stages=(("stage1", "demo_stage1.yaml"), ("stage2", "demo_stage2.yaml")),
                    carry=lambda stage, previous: [f"model.stage1_weights={previous}"] if stage == "stage2" else [],
                    model="VQVAE/U-Net width 32, VAR depth 2, two cross-attention blocks, a RANDOM-INIT VQVAE/VAR "
                          "backbone (no pretrained VAR weights offline)",
                    summary="The demo VarFormer is small (width 32, VAR depth 2) on a random-init VQVAE/VAR "
                            "backbone and trains for minutes on the demo photos: it shows the pipeline learning, "
                            "not the paper's numbers (those need the released weights: docs/evaluation.md). In "
                            "its ten minutes it does not learn to deblur (measured in docs/demo.md).",
                    time_split=(1, 30)),
    default_protocol="paper",
    default_weights="checkpoints/varformer_d16.pt",
    release=RELEASE_HINT,
    package="varformer.model",
    paper=PAPER,
    analyses=ANALYSES,
    ablations=ABLATIONS,
)
