"""Data: benchmark readers (``test_sets.benchmark_dataset``), the registry of test sets and their layouts
(``benchmarks``), name-based pairing (``pairing``), robust image I/O (``image_io``), SIDD ``.mat`` blocks
(``sidd``), training datasets and the DDP sampler (``training``), the offline demo set (``demo``), synthetic
degradations (``degradations``) and ``varformer data check`` (``check``)."""
