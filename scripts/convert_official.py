"""Same as ``varformer convert official CKPT -o OUT [--key params]`` from a checkout."""
import sys

from varformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "official", *sys.argv[1:]]))
