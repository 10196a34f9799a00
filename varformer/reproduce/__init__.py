"""Reproducing the paper: the main table from the released weights (``paper``), the ablation table
(``ablations``), with the fetching and one-time conversion of the released files (``weights``). A layer on top of
evaluation, training and inference (docs/architecture.md); the analysis figures are ``varformer.analysis``."""
from varformer.reproduce.ablations import ROWS, AblationRow, run_full_ablations, run_small_ablations
from varformer.reproduce.paper import PAPER_TABLE, paper_benchmarks, reproduce_paper
from varformer.reproduce.weights import PAPER_FILES, converted_checkpoint, fetch_paper_weights

__all__ = ["ROWS", "AblationRow", "run_full_ablations", "run_small_ablations", "PAPER_TABLE", "paper_benchmarks",
           "reproduce_paper", "PAPER_FILES", "converted_checkpoint", "fetch_paper_weights"]
