"""How methods plug in: ``api`` (what a method provides: ``MethodSpec``, ``StageSpec``, ``TrainTask``) and the
shared pieces methods build on (``validation``, ``memory``, ``activation_checkpointing``), below the method
packages; ``registry`` (the methods there are: built in and through the ``varformer.methods`` entry points, and
what a weights file is), above them. This ``__init__`` imports nothing, so a method package may import ``api``
without pulling in the registry (docs/extending.md)."""
