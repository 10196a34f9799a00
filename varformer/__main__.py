import sys

from varformer.cli import main

sys.exit(main())
