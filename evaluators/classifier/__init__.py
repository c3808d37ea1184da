"""The attribute classifier: a small-input ResNet trained from scratch by our code, cached by content hash.

Used by the attribute evaluators (``evaluators.attributes``) and, through
``AttributeClassifier.features``, by the offline ``fid_clean_<tag>`` metric.
"""
from evaluators.classifier.config import CODE_VERSION, ClassifierConfig, ClassifierConfigError, default_config  # noqa: F401
from evaluators.classifier.model import AttributeClassifier, build_network  # noqa: F401
from evaluators.classifier.training import (  # noqa: F401
    ClassifierHandle, MissingClassifierError, classifier_tag, evaluate_accuracy, load_classifier, train_classifier,
)
