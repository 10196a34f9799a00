"""Speed and memory of a training step: the same as ``varformer benchmark train ...``.

    python scripts/benchmark_training.py [--method NAME] [--stage stage2] [--batch 2] [--precision bf16] [--device cpu]
                                         [--skip-small] [--no-estimate]
"""
import sys

from varformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "train", *sys.argv[1:]]))
