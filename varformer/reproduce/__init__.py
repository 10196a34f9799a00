"""Reproducing a method's paper through its ``MethodSpec``: the main table from the released weights (``paper``;
``MethodSpec.paper``), the ablation table (``ablations``; ``MethodSpec.ablations``), with the fetching and one-time
conversion of the released files (``weights``). A layer on top of evaluation, training and inference
(docs/architecture.md); the analysis figures are the methods' own (``MethodSpec.analyses``, ``varformer analyze``)."""
from varformer.reproduce.ablations import run_full_ablations, run_small_ablations
from varformer.reproduce.paper import paper_benchmarks, plan_paper, reproduce_paper
from varformer.reproduce.weights import converted_checkpoint, fetch_released

__all__ = ["run_full_ablations", "run_small_ablations", "paper_benchmarks", "plan_paper", "reproduce_paper",
           "converted_checkpoint", "fetch_released"]
