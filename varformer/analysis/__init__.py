"""The paper's analysis as figures (PNG + CSV), on any VarFormer weights and any benchmark root (or the demo set):
``alignment`` (VAR features of degraded and clean images before and after the next-scale prediction, PCA),
``scale_replacement`` (clean tokens at the coarse vs the fine scales, PSNR per task), ``dae_weights`` (the DAE's
scale weights per task and level). ``common`` holds the image pairs, the PCA and the output helpers. A layer on
top of the model and data layers (docs/architecture.md); ``varformer analyze`` runs them."""
from varformer.analysis.alignment import alignment_analysis
from varformer.analysis.common import images_per_task, load_model
from varformer.analysis.dae_weights import dae_weights_analysis
from varformer.analysis.scale_replacement import scale_replacement_analysis

__all__ = ["alignment_analysis", "images_per_task", "load_model", "dae_weights_analysis",
           "scale_replacement_analysis"]
