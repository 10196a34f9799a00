"""RestoreVAR on our VAR backbone (model layer, beside ``varformer.model``).

One concept per module: ``settings`` (constructor <-> checkpoint metadata <-> config), ``transformer`` (the
image-conditioned VAR: RoPE blocks with cross-attention, greedy rollout, teacher forcing), ``refiner`` (latent
refiner), ``weights`` (where the released files come from), ``strict_load``, ``convert`` (official layouts <-> ours,
stage-1 initialisation from ``var_d16.pth``), ``model`` (the assembled ``RestoreVAR``), ``checkpoint_io`` (our
format). Import order inside the package follows that list. The blocks and the 2-D RoPE are generic pieces in
``varformer.backbone.rope_blocks`` / ``varformer.backbone.rope``.
"""
from varformer.restorevar.checkpoint_io import (build_restorevar, checkpoint_format, load_restorevar,
                                                read_restorevar, save_restorevar)
from varformer.restorevar.convert import (InitReport, convert_restorevar, infer_official_layout,
                                          stage1_init_from_var, to_official_restorevar)
from varformer.restorevar.model import (PARTS, RestoreVAR, RestoreVARInputError, SampleOutputs, TrainingOutputs,
                                        rollout_of)
from varformer.restorevar.settings import PATCH_NUMS_512, RestoreVARSettings
from varformer.restorevar.weights import DECODER_VAE_FILE, RESTOREVAR_FILE, TOKENIZER_FILE, find_weight_file

__all__ = ["RestoreVAR", "RestoreVARSettings", "RestoreVARInputError", "SampleOutputs", "TrainingOutputs", "PARTS",
           "PATCH_NUMS_512", "convert_restorevar", "to_official_restorevar", "stage1_init_from_var", "InitReport",
           "infer_official_layout", "save_restorevar", "load_restorevar", "read_restorevar", "build_restorevar",
           "checkpoint_format", "rollout_of", "find_weight_file", "RESTOREVAR_FILE", "DECODER_VAE_FILE",
           "TOKENIZER_FILE"]
