"""Runs the CLI with the test fixtures registered (used as a subprocess by test_runner)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import conftest  # noqa: E402,F401 - registers toy-faces, toy-flip, mean-abs-change
from benchmark.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
