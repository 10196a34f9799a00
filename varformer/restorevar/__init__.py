"""RestoreVAR's method package, on our VAR backbone (beside VarFormer's ``varformer.model``).

One concept per module: ``settings`` (constructor <-> checkpoint metadata <-> config), ``transformer`` (the
image-conditioned VAR: RoPE blocks with cross-attention, greedy rollout, teacher forcing), ``refiner`` (latent
refiner), ``weights`` (where the released files come from), ``convert`` (official layouts <-> ours, stage-1
initialisation from ``var_d16.pth``), ``model`` (the assembled ``RestoreVAR``), ``files`` (our model files,
training checkpoints as restorers), ``config`` (its config sections), ``task`` (its training stages), ``spec``
(the ``MethodSpec``). Import order inside the package follows that list. The blocks and the 2-D RoPE are generic
pieces in ``varformer.backbone.rope_blocks`` / ``varformer.backbone.rope``.
"""
from varformer.restorevar.convert import (InitReport, convert_restorevar, infer_official_layout,
                                          stage1_init_from_var, to_official_restorevar)
from varformer.restorevar.files import build_restorevar, load_restorevar, read_restorevar, save_restorevar
from varformer.restorevar.model import (PARTS, RestoreVAR, RestoreVARInputError, SampleOutputs, TrainingOutputs,
                                        rollout_of)
from varformer.restorevar.settings import PATCH_NUMS_512, RestoreVARSettings
from varformer.restorevar.weights import DECODER_VAE_FILE, RESTOREVAR_FILE, TOKENIZER_FILE, find_weight_file

__all__ = ["RestoreVAR", "RestoreVARSettings", "RestoreVARInputError", "SampleOutputs", "TrainingOutputs", "PARTS",
           "PATCH_NUMS_512", "convert_restorevar", "to_official_restorevar", "stage1_init_from_var", "InitReport",
           "infer_official_layout", "save_restorevar", "load_restorevar", "read_restorevar", "build_restorevar",
           "rollout_of", "find_weight_file", "RESTOREVAR_FILE", "DECODER_VAE_FILE", "TOKENIZER_FILE"]
