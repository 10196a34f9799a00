"""Performance measurement: speed, FLOPs and memory of the VAR backbone (``backbone``), of any registered method's
whole model through its ``BenchmarkEntry`` (``model``, ``overrides``, ``report``) and of a training step of a
method's stage (``training``), all on the helpers of ``measure`` and ``bounds``. A layer on top of the methods,
inference, evaluation and training code; nothing imports it back, and it names no method (the registry does)."""
