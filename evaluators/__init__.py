"""Metric families behind ``evaluators.base.Evaluator``.  Importing this package registers the built-ins."""
from evaluators.base import EvalContext, Evaluator, MetricUnavailable, RunningMean, shared_model  # noqa: F401

# built-in evaluators register themselves on import (one line each)
