"""RestoreVAR as a method of this package: the one ``MethodSpec`` the registry holds for it (docs/extending.md)."""
from __future__ import annotations

import argparse
import os
from functools import partial
from typing import List

import torch

from varformer.files import save_torch_atomic
from varformer.methods.api import (BenchmarkEntry, Converter, DemoRecipe, MethodSpec, RestorerTraits, StageSpec)
from varformer.restorevar import task
from varformer.restorevar.config import RestoreVARLossConfig, RestoreVARModelConfig
from varformer.restorevar.convert import to_official_restorevar
from varformer.restorevar.files import METHOD, describe, read_restorevar, recognize, restorer_model, save_restorevar
from varformer.restorevar.model import PARTS, RestoreVAR
from varformer.restorevar.schedule import schedule_for_list
from varformer.restorevar.settings import RestoreVARSettings, architecture_of

# official train.sh: 2 GPUs x 24 per step, both stages; the decoder fine-tuning was not released
OFFICIAL_BATCH, OFFICIAL_LAYOUT = 48, "24 per GPU x 2 GPUs"
OFFICIAL_FILES = ("restorevar.pth", "vae_restorevar.ckpt")   # what restorevar-to-official writes into -o


def _add_official_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", default=None, metavar="PATH",
                        help="vae_restorevar.ckpt (the VQVAE with the fine-tuned decoder); default: "
                             "checkpoints/vae_restorevar.ckpt")
    parser.add_argument("--tokenizer-vae", default=None, metavar="PATH",
                        help="a separate tokenizer VQVAE (vae_ch160v4096z32.pth) for training; default: the --vae one")


def _convert_official(args) -> List[str]:
    model = RestoreVAR.from_official(args.checkpoint, args.vae, tokenizer_vae=args.tokenizer_vae)
    save_restorevar(args.output, model)
    s = model.settings()
    return [f"RestoreVAR depth {s.depth}, width {s.embed_dim}, scales {s.patch_nums}, refiner depth "
            f"{s.refiner_depth}: every tensor placed, constant buffers checked", f"wrote {args.output}"]


def _to_official(args) -> List[str]:
    settings, sd = read_restorevar(args.checkpoint)
    var_sd, vae_sd = to_official_restorevar(sd, settings)
    lines = []
    for name, part in zip(OFFICIAL_FILES, (var_sd, vae_sd)):
        path = os.path.join(args.output, name)
        save_torch_atomic(part, path)
        lines.append(f"wrote {path} ({len(part)} tensors)")
    return lines


def _training_list(path: str) -> List[str]:
    """What one of the authors' training lists implies for the recipes: the release's 50 epochs at batch 48."""
    sched = schedule_for_list(path)
    return ([f"as a RestoreVAR training list (release: 50 epochs, global batch 48): {sched.describe()}"]
            + [f"  stage {stage}: varformer train stage{stage} --config configs/restorevar_stage{stage}.yaml "
               + " ".join(sched.overrides(stage)) for stage in (1, 2)])


def _benchmark_inputs(settings: RestoreVARSettings, batch: int, device: torch.device) -> tuple:
    return (torch.rand(batch, 3, settings.image_size, settings.image_size, device=device),)


# the benchmark's tables: each record_function range of the forward, and FLOPs / parameters by module
PART_LABELS = ("VQVAE encoder + conditioning", "VAR scale loop (greedy, KV cache)", "latent refiner", "VQVAE decoder")
FLOP_GROUPS = (("VQVAE encoder", ("vae.encoder",)), ("refiner", ("refiner",)),
               ("VQVAE decoder", ("vae.decoder", "vae.post_quant_conv")))
TABLE_3 = ("the paper's Table 3: 296.95 M parameters without the VQVAE (the transformer and refiner rows here) and "
           "1.05 TFLOPs, counting method not given (here a multiply-add counts 2)")


def _stage(name: str, stage: int, description: str, batch: int = OFFICIAL_BATCH,
           layout: str = OFFICIAL_LAYOUT) -> StageSpec:
    return StageSpec(name, description,
                     build_task=lambda cfg, announce: task.build_restorevar_task(cfg, stage, announce),
                     check_inputs=partial(task.check_inputs, stage=stage), training_data=task.training_data,
                     official_global_batch=batch, official_layout=layout, lr_scales_with_batch=True,
                     released_size=lambda cfg: (cfg.model.depth, cfg.model.vae_ch) == (16, 160),
                     recipe=f"{METHOD}_{name}.yaml")


SPEC = MethodSpec(
    name=METHOD,
    title="RestoreVAR",
    settings=RestoreVARSettings,
    model_config=RestoreVARModelConfig,
    loss_config=RestoreVARLossConfig,
    build=lambda settings: RestoreVAR(**settings.constructor_kwargs()),
    stages=(_stage("stage1", 1, "the transformer (cross-entropy of teacher-forced logits)"),
            _stage("stage2", 2, "the latent refiner (L1 to the clean latent)"),
            _stage("decoder", task.DECODER_STAGE, "VQVAE decoder fine-tuning (not the authors' code: not released)",
                   batch=0, layout="")),
    restorer=lambda model: RestorerTraits(input_size=model.image_size, resize_to_input=True, precision="fp32"),
    load_model=restorer_model,
    describe=describe,
    architecture_of=architecture_of,
    recognize=recognize,
    converters=(
        Converter("restorevar", "RestoreVAR's released restorevar.pth (+ --vae vae_restorevar.ckpt) -> our model "
                                "file; strict, the constant buffers of the file checked against ours",
                  _add_official_arguments, _convert_official),
        Converter("restorevar-to-official", "our RestoreVAR model file -> OUT/restorevar.pth and "
                                            "OUT/vae_restorevar.ckpt in the official layouts",
                  lambda parser: None, _to_official, writes_folder=True,
                  folder_files=OFFICIAL_FILES)),
    benchmark=BenchmarkEntry(released=lambda: RestoreVARSettings(), inputs=_benchmark_inputs,
                             input_size=lambda settings: settings.image_size, parts=PARTS, part_labels=PART_LABELS,
                             flop_groups=FLOP_GROUPS, flop_rest="transformer (blocks, embeddings, head, quantiser)",
                             released_note=TABLE_3),
    demo=DemoRecipe(stages=(("stage1", "demo_restorevar_stage1.yaml"), ("stage2", "demo_restorevar_stage2.yaml")),
                    carry=lambda stage, previous: [f"model.stage1_weights={previous}"] if stage == "stage2" else [],
                    model="VQVAE width 32, VAR depth 2, scales up to 8x8 (128x128 inputs, tiled), a 2-layer "
                          "refiner, RANDOM-INIT VQVAE and VAR (no pretrained weights offline)",
                    summary="The demo RestoreVAR is small (VQVAE width 32, VAR depth 2, 128x128 inputs) on a "
                            "random-init VQVAE: its tokens learn, its images cannot (its decoder never saw an "
                            "image), so its outputs show the pipeline running, not restoration.",
                    time_split=(1, 2)),
    default_protocol="restorevar",
    default_weights="checkpoints/restorevar.safetensors",
    training_list=_training_list,
    release=("the released RestoreVAR weights are restorevar.pth and vae_restorevar.ckpt from the RestoreVAR "
             "README's checkpoints archive (convert with `varformer convert restorevar restorevar.pth --vae "
             "vae_restorevar.ckpt -o checkpoints/restorevar.safetensors`)"),
    package="varformer.restorevar",
)
