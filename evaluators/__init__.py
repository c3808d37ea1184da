"""Metric families behind ``evaluators.base.Evaluator``.  Importing this package registers the built-ins."""
from evaluators.base import EvalContext, Evaluator, MetricUnavailable, RunningMean, shared_model  # noqa: F401

# built-in evaluators register themselves on import (one line each)
from evaluators import attributes  # noqa: F401,E402
from evaluators import fid  # noqa: F401,E402  (fid_inception, fid_classifier)
from evaluators import lpips_metric  # noqa: F401,E402  (lpips)
from evaluators import leak  # noqa: F401,E402  (leak)
from evaluators import counterfactual  # noqa: F401,E402  (counterfactual)
from evaluators import identity  # noqa: F401,E402  (id_facenet, id_dlib, id_synth)
from evaluators import attention  # noqa: F401,E402  (attention: SaGAN's masks against region masks)
from evaluators import inversion  # noqa: F401,E402  (inversion: InterFaceGAN's reconstructions)
