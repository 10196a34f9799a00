"""Speed and memory of a training step.

    python scripts/benchmark_training.py [--stage 2] [--batch 2] [--precision bf16] [--device cpu]

Measures images/s and peak memory of a stage-2 (or stage-1) step at the small configuration (vae_ch 32, VAR
depth 2, random backbone) on the given device, and estimates the activation memory per image of the official
configuration (stage 2: d20, ch 160, 6 cross blocks, dec_adjust) on the meta device, with and without
activation checkpointing.
"""
import argparse

import torch

from varformer.config import load_config
from varformer.losses import VarFormerLoss
from varformer.training.activation_checkpointing import enable_activation_checkpointing
from varformer.training.memory import measure_step, parameter_bytes, saved_activation_bytes
from varformer.training.stages import VarFormerTask, freeze_for


def _model(stage, **kw):
    from varformer.model import VarFormer, VarFormerStage1
    return VarFormer(**kw) if stage == 2 else VarFormerStage1(**{k: v for k, v in kw.items() if k != "dec_adjust"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--skip-small", action="store_true")
    args = ap.parse_args()
    GiB = 2 ** 30
    if not args.skip_small:
        dev = torch.device(args.device)
        torch.manual_seed(0)
        model = _model(args.stage, depth=2, vae_ch=32, n_cross=2)
        freeze_for(model, args.stage, "official")
        cfg = load_config(None, ["train.loss.perceptual=0"]).train.loss
        task = VarFormerTask(model, VarFormerLoss(cfg, args.stage), args.stage).to(dev)
        batch = {"lq": torch.rand(args.batch, 3, 256, 256, device=dev),
                 "gt": torch.rand(args.batch, 3, 256, 256, device=dev)}
        cost = measure_step(task, batch, args.precision, args.steps)
        print(f"small stage-{args.stage} step (vae_ch 32, depth 2, batch {args.batch}, {args.precision}, "
              f"{args.device}): {cost.seconds_per_step:.2f} s/step, {cost.images_per_s:.3f} images/s, "
              f"peak memory {cost.peak_bytes / GiB:.2f} GiB (perceptual term off: no VGG19 weights offline)")
    for ckpt in (False, True):
        with torch.device("meta"):
            full = _model(args.stage, depth=20, vae_ch=160, n_cross=6 if args.stage == 2 else 20, dec_adjust=True)
        freeze_for(full, args.stage, "official")
        full.train()
        if ckpt:
            enable_activation_checkpointing(full)
        act = saved_activation_bytes(full, torch.empty(1, 3, 256, 256, device="meta"))
        pb = parameter_bytes(full)
        print(f"official stage-{args.stage} config, activation checkpointing {'on ' if ckpt else 'off'}: "
              f"~{act / GiB:.1f} GiB saved activations per image (fp32), model/optimizer/EMA state "
              f"{pb['state_bytes'] / GiB:.1f} GiB ({pb['trainable_params'] / 1e6:.0f} M trainable, "
              f"{pb['frozen_params'] / 1e6:.0f} M frozen); batch 16 -> ~{(16 * act + pb['state_bytes']) / GiB:.0f} GiB")


if __name__ == "__main__":
    main()
