#!/usr/bin/env python
"""Entry point: ``python run_benchmark.py [--config FILE] [key=value ...]`` (same as ``faceedit-bench``)."""
import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
