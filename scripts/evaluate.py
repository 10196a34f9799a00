"""Thin wrapper: ``python scripts/evaluate.py ARGS`` == ``varformer evaluate ARGS``."""
import sys

from varformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
