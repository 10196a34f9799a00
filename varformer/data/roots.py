"""Data roots: a folder, or a named source that the data layer materialises.

- a path (``~`` expanded): used as it is;
- ``demo`` or ``demo:<sub-folder>``: the built-in demo set (``varformer.data.demo_set``), built on first use in
  its cache (``$VARFORMER_DEMO_CACHE``, else ``$XDG_CACHE_HOME/varformer/demo``, else ``~/.cache/varformer/demo``).
  ``demo:train`` is its training split (generic ``<task>/{input,target}`` layout), ``demo:train/clean`` its
  clean training images (stage 1), ``demo`` the whole set (test benchmarks ``demo-<task>``).

Training, validation and evaluation all resolve their roots here, so the demo set is one data source among
others rather than a special case in each of them.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

from varformer.data.demo_set import ensure_demo
from varformer.errors import DataError

DEMO_SOURCE = "demo"


def is_named_source(root: str) -> bool:
    return root == DEMO_SOURCE or root.startswith(DEMO_SOURCE + ":")


def resolve_root(root: Optional[str], log: Optional[Callable[[str], None]] = print) -> Optional[str]:
    """The folder a root names (the demo set is built first if needed); ``None`` stays ``None``."""
    if root is None:
        return None
    root = str(root)
    if not is_named_source(root):
        return os.path.expanduser(root)
    sub = root[len(DEMO_SOURCE) + 1:].strip("/") if root != DEMO_SOURCE else ""
    folder = os.path.join(ensure_demo(None, log=log), sub) if sub else ensure_demo(None, log=log)
    if not os.path.isdir(folder):
        raise DataError(f"data root {root!r}: the demo set has no folder '{sub}' (it has test/ and train/)")
    return folder
