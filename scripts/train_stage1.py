"""Train stage 1: `python scripts/train_stage1.py --config configs/stage1.yaml [key=value ...]`
(same as `varformer train stage1 ...`; works under `torchrun --nproc_per_node=N`)."""
import sys

from varformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "stage1", *sys.argv[1:]]))
