"""VarFormer model: the stage-1 Adapter model and the stage-2 DAE/AFT restorer on a frozen VAR backbone.

One concept per module: ``adapter`` (AIEM blocks), ``cross_attention`` (degraded-token injection into VAR),
``prior_rollout`` (greedy VAR rollout -> scale priors), ``swin`` (RSTB pieces), ``dae`` (scale selection +
region-adaptive fusion), ``aft`` (bridge feature + anchor attention), ``alignment`` (optional deformable decoder
alignment), ``unet`` (encoder/decoder with adaptive mix-up skips), ``varformer`` (assembled models),
``settings`` (the model's settings: constructor <-> checkpoint metadata <-> config), ``strict_load`` (strict
loading with clear errors), ``convert`` (official checkpoint <-> ours), ``checkpoint_io`` (our checkpoint format),
``weights_files`` (what a weights file is; a model from any of them, training checkpoints included).
Import order inside the package follows that list: nothing imports a module after it.
"""
from varformer.model.checkpoint_io import (convert_official, load_official, load_varformer, read_varformer,
                                           save_varformer)
from varformer.model.convert import to_official
from varformer.model.settings import VarFormerSettings
from varformer.model.varformer import (ModelInputError, Stage1Outputs, VarFormer, VarFormerOutputs,
                                       VarFormerStage1, build_varformer)

__all__ = ["VarFormer", "VarFormerStage1", "VarFormerOutputs", "Stage1Outputs", "ModelInputError",
           "VarFormerSettings", "build_varformer", "convert_official", "to_official", "load_official",
           "load_varformer", "read_varformer", "save_varformer"]
