"""VarFormer's analysis figures (``MethodSpec.analyses``; ``varformer analyze NAME``; docs/analysis.md): the
paper's Figure 1 as two analyses of VAR's next-scale prediction (``scale_replacement``, ``alignment``) and the DAE's
scale weights (``dae_weights``); ``common`` loads the model, the images and the analysed VAR."""
from varformer.methods.api import AnalysisSpec
from varformer.model.analysis import alignment, dae_weights, scale_replacement

ANALYSES = (
    AnalysisSpec("alignment", "VAR features of degraded and clean images before and after the next-scale prediction "
                              "(VAR alone, and the trained model), t-SNE by task",
                 "Figure 1 (2): VAR's scale predictions align degraded inputs with the clean distribution",
                 alignment.run, alignment.add_arguments,
                 optional=(("sklearn", "PCA instead of t-SNE"), ("matplotlib", "no PNG; the CSVs are written"))),
    AnalysisSpec("scale-replacement", "one scale of the degraded image replaced by VAR's prediction of it: PSNR "
                                      "gain per scale and task (--variant oracle: clean tokens instead)",
                 "Figure 1 (1): low scales remove global degradations, high scales local ones",
                 scale_replacement.run, scale_replacement.add_arguments,
                 optional=(("matplotlib", "no PNG; the CSV is written"),)),
    AnalysisSpec("dae-weights", "mean DAE scale weight per level, scale and task",
                 "no figure of the paper: what its DAE (Sec. 3) chooses, per task", dae_weights.run,
                 optional=(("matplotlib", "no PNG; the CSV is written"),)),
)

__all__ = ["ANALYSES"]
