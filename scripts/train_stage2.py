"""Train stage 2: `python scripts/train_stage2.py --config configs/stage2.yaml [key=value ...]`
(same as `varformer train stage2 ...`; works under `torchrun --nproc_per_node=N`)."""
import sys

from varformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "stage2", *sys.argv[1:]]))
