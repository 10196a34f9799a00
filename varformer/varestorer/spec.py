"""VARestorer as a method of this package: the one ``MethodSpec`` the registry holds for it (docs/extending.md,
docs/varestorer.md "Use"). Its model files come from the release (``varformer convert varestorer``); its one
training stage, ``distill``, is a reconstruction (the release ships no training code; docs/varestorer.md "Training
(reconstructed)")."""
from __future__ import annotations

import argparse
import os
from typing import List

import torch

from varformer.files import save_torch_atomic
from varformer.methods.api import BenchmarkEntry, Converter, DemoRecipe, MethodSpec
from varformer.varestorer.config import VARestorerModelConfig
from varformer.varestorer.convert import to_official_varestorer
from varformer.varestorer import distill_captions
from varformer.varestorer.demo import SUMMARY, demo_model
from varformer.varestorer.distill_config import VARestorerDistillConfig
from varformer.varestorer.distill_stage import distill_stage
from varformer.varestorer.files import (CONVERT_COMMAND, METHOD, architecture_of, describe, read_varestorer,
                                        recognize, restorer_model, save_varestorer)
from varformer.varestorer.model import PARTS, VARestorer
from varformer.varestorer.restorer import restorer_traits
from varformer.backbone.infinity.rope2d import SCHEDULE_025M
from varformer.varestorer.settings import VARestorerSettings
from varformer.varestorer.weights import SWINIR_FILE, VAE_FILE, VARESTORER_FILE, locate_release_file

BENCHMARK_PROMPT_TOKENS = 16   # a BLIP caption's T5 rows (about a dozen words and </s>)


def _add_official_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", default=None, metavar="PATH",
                        help=f"{VAE_FILE} (Infinity's BSQ-VAE); default: checkpoints/, then the Hugging Face cache "
                             "or hub (FoundationVision/Infinity)")
    parser.add_argument("--swinir", default=None, metavar="PATH",
                        help=f"{SWINIR_FILE} (DiffBIR's SwinIR pre-cleaner); default: checkpoints/, then the Hugging "
                             "Face cache or hub (lxq007/DiffBIR)")
    parser.add_argument("--no-swinir", action="store_true", help="a model without the SwinIR pre-cleaning (not the "
                                                                 "release's)")
    parser.add_argument("--patch-nums", type=int, nargs="+", default=None, metavar="PN",
                        help=f"the scale schedule (default: the release's {' '.join(map(str, SCHEDULE_025M))}, "
                             "512x512 inputs)")
    parser.add_argument("--local-files-only", action="store_true", help="never reach the hub, only its cache")


def _convert_official(args) -> List[str]:
    lfo = args.local_files_only
    model_path = locate_release_file(VARESTORER_FILE, args.checkpoint, lfo)
    vae = locate_release_file(VAE_FILE, args.vae, lfo)
    swinir = None if args.no_swinir else locate_release_file(SWINIR_FILE, args.swinir, lfo)
    model = VARestorer.from_official(str(model_path), str(vae), None if swinir is None else str(swinir),
                                     patch_nums=tuple(args.patch_nums or SCHEDULE_025M))
    save_varestorer(args.output, model)
    return [f"{describe(model.settings())} from {model_path}, {vae}" + (f", {swinir}" if swinir else "")
            + ": every tensor placed, each file strict", f"wrote {args.output}"]


def _to_official(args) -> List[str]:
    settings, sd = read_varestorer(args.checkpoint)
    parts = to_official_varestorer(sd, settings)
    files = [(VARESTORER_FILE, parts["model"]), (VAE_FILE, {"vae": parts["vae"]})]
    if parts["swinir"] is not None:
        files.append((SWINIR_FILE, {"state_dict": parts["swinir"]}))
    lines = []
    for name, obj in files:
        path = os.path.join(args.output, name)
        save_torch_atomic(obj, path)
        lines.append(f"wrote {path}")
    return lines


def _benchmark_inputs(settings: VARestorerSettings, batch: int, device: torch.device) -> tuple:
    """(images (B, 3, S, S), one (16, text_channels) text feature tensor per image): ``VARestorer.forward``'s. The
    global generator (the benchmark seeds it): a generator of its own cannot draw under fake tensors before torch
    2.3, where the FLOPs are counted."""
    images = torch.rand(batch, 3, settings.image_size, settings.image_size, device=device)
    text = [torch.randn(BENCHMARK_PROMPT_TOKENS, settings.text_channels, device=device) for _ in range(batch)]
    return images, text


SPEC = MethodSpec(
    name=METHOD,
    title="VARestorer",
    settings=VARestorerSettings,
    model_config=VARestorerModelConfig,
    loss_config=VARestorerDistillConfig,
    build=lambda settings: VARestorer(**settings.constructor_kwargs()),
    stages=(distill_stage(),),
    restorer=restorer_traits,
    load_model=restorer_model,
    describe=describe,
    architecture_of=architecture_of,
    recognize=recognize,
    converters=(
        Converter("varestorer", f"VARestorer's released {VARESTORER_FILE} (+ --vae {VAE_FILE}, --swinir "
                                f"{SWINIR_FILE}) -> our model file; strict per file",
                  _add_official_arguments, _convert_official),
        Converter("varestorer-to-official", f"our VARestorer model file -> OUT/{VARESTORER_FILE}, OUT/{VAE_FILE} and "
                                            f"OUT/{SWINIR_FILE} in the official layouts",
                  lambda parser: None, _to_official, writes_folder=True,
                  folder_files=(VARESTORER_FILE, VAE_FILE, SWINIR_FILE)),
        Converter("varestorer-captions", "a folder of clean training images -> OUT.jsonl, Infinity's metadata with "
                                         "BLIP-large captions (through the text cache; --encode: their T5 features "
                                         "too), the distill stage's data.root",
                  distill_captions.add_arguments, distill_captions.run)),
    benchmark=BenchmarkEntry(released=lambda: VARestorerSettings(), inputs=_benchmark_inputs,
                             input_size=lambda settings: settings.image_size, parts=PARTS),
    demo=DemoRecipe(stages=(), carry=lambda stage, previous: [], summary=SUMMARY, untrained=demo_model, scale=1),
    default_protocol="varestorer",
    default_weights="checkpoints/varestorer.safetensors",
    release=(f"the released VARestorer weights are {VARESTORER_FILE} (Hugging Face EvanEternal/VARestorer), {VAE_FILE} "
             f"(FoundationVision/Infinity) and {SWINIR_FILE} (lxq007/DiffBIR); convert them with `{CONVERT_COMMAND}`"),
    package="varformer.varestorer",
)
