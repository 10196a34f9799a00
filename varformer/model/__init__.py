"""VarFormer's method package: the stage-1 Adapter model and the stage-2 DAE/AFT restorer on a frozen VAR backbone,
with everything that makes it a method of this project.

One concept per module: ``adapter`` (AIEM blocks), ``cross_attention`` (degraded-token injection into VAR),
``prior_rollout`` (greedy VAR rollout -> scale priors), ``dae`` (scale selection + region-adaptive fusion),
``aft`` (bridge feature + anchor attention), ``alignment`` (optional deformable decoder alignment), ``unet``
(encoder/decoder with adaptive mix-up skips), ``varformer`` (assembled models), ``settings`` (constructor <->
checkpoint metadata <-> config), ``convert`` (official checkpoint <-> ours), ``files`` (our model files, the
official file, training checkpoints as restorers), ``loss`` (the stage losses), ``config`` (its config sections),
``task`` (the two training stages), ``memory`` (training memory on fake tensors), ``reference_forward`` (the
official-style path its benchmark compares with), ``paper`` (what reproducing the paper's main table needs: the
released files, their conversion, the backbone check), ``analysis`` (the paper's analysis figures), ``ablations``
(the ablation table's rows), ``spec`` (the ``MethodSpec``).
Import order inside the package follows that list: nothing imports a module after it.
"""
from varformer.model.convert import to_official
from varformer.model.files import (convert_official, load_official, load_varformer, read_varformer,
                                   save_varformer)
from varformer.model.settings import VarFormerSettings
from varformer.model.varformer import (ModelInputError, Stage1Outputs, VarFormer, VarFormerOutputs,
                                       VarFormerStage1, build_varformer)

__all__ = ["VarFormer", "VarFormerStage1", "VarFormerOutputs", "Stage1Outputs", "ModelInputError",
           "VarFormerSettings", "build_varformer", "convert_official", "to_official", "load_official",
           "load_varformer", "read_varformer", "save_varformer"]
