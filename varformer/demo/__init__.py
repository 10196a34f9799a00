"""The offline demo: a layer on top of training, evaluation and inference (``run``: the table; ``training``: any
registered method's demo recipe, e.g. ``configs/demo_stage{1,2}.yaml``; ``report``: the demo's page). Nothing
below this package knows the demo exists, and nothing in it names a method (docs/demo.md)."""
from varformer.demo.report import write_demo_report
from varformer.demo.run import DemoOutcome, find_trained_weights, pretrained_restorers, run_demo
from varformer.demo.training import DemoTraining, demo_train_config, summarise_history, untrained_demo

__all__ = ["DemoOutcome", "DemoTraining", "demo_train_config", "find_trained_weights", "pretrained_restorers",
           "run_demo", "summarise_history", "untrained_demo", "write_demo_report"]
