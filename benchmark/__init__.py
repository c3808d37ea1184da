"""faceedit-bench: a comparative benchmark suite for facial attribute editors."""
__version__ = "0.1.0"
