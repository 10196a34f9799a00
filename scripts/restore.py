"""Same as ``varformer restore ...`` from a checkout: ``python scripts/restore.py INPUT... -o OUT``."""
import sys

from varformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["restore", *sys.argv[1:]]))
