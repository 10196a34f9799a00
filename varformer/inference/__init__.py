"""Running a restorer: the ``Restorer`` abstraction shared by restore, evaluation, the demo and the benchmarks
(``restorer``), and seamless tiling for images of any size (``tiling``)."""
from varformer.inference.restorer import (Restorer, identity_restorer, load_restorer, model_restorer,
                                          resolve_weights)
from varformer.inference.tiling import count_tiles, tiled_forward, tiled_forward_stream

__all__ = ["Restorer", "identity_restorer", "load_restorer", "model_restorer", "resolve_weights", "count_tiles",
           "tiled_forward", "tiled_forward_stream"]
