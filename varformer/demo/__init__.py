"""The offline demo: a layer on top of training, evaluation and inference (``run``), driven by the recipes
``configs/demo_stage{1,2}.yaml`` (``--model restorevar``: ``configs/demo_restorevar_stage{1,2}.yaml``). Nothing below this package knows the demo exists (docs/demo.md)."""
from varformer.demo.run import (DemoOutcome, find_trained_weights, pretrained_restorers, restorevar_training_step,
                                run_demo, training_step)

__all__ = ["DemoOutcome", "find_trained_weights", "pretrained_restorers", "restorevar_training_step", "run_demo",
           "training_step"]
