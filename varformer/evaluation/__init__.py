"""Evaluation: protocols (how LQ/GT are prepared and measured, ``protocols``), the evaluator (``evaluate``) and the
paper-style tables with published rows and deltas (``report``)."""
from varformer.evaluation.evaluate import (EvalResult, check_output_dir, check_protocol_needs, evaluate,
                                           official_test_protocol, open_benchmark, parse_benchmarks, run_restorer)
from varformer.evaluation.protocols import PROTOCOLS, Protocol, get_protocol, with_metric_overrides

__all__ = ["EvalResult", "check_output_dir", "check_protocol_needs", "evaluate", "official_test_protocol",
           "open_benchmark", "parse_benchmarks", "run_restorer", "PROTOCOLS", "Protocol", "get_protocol",
           "with_metric_overrides"]
