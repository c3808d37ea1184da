# Two entry points that do all the set-up on a fresh machine:
#   make bench   - create .venv if needed, then run the default benchmark (configs/default.yaml)
#   make test    - create .venv if needed, then run the test suite
VENV     ?= .venv
PYTHON   ?= python3
# torch / torchvision builds pinned for reproducibility (CUDA build on x86_64 Linux; runs on CPU too).
TORCH    ?= torch==2.14.1 torchvision==0.29.1
CONFIG   ?= configs/default.yaml
ARGS     ?=
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.faceedit-installed

.PHONY: bench test test-slow setup clean-venv reference-fits

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,dlib]'
	# facenet-pytorch 2.6.0 pins torch<2.3, numpy<2, Pillow<10.3: installed without its
	# dependencies so that it cannot downgrade torch (it works with the newer versions).
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

bench: $(STAMP)
	$(PY) run_benchmark.py --config $(CONFIG) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

# Regenerate every shipped reference fit with our own training code (CPU hours; minutes on a GPU):
# train the default config's fits ignoring the shipped ones, then export that run's stages (fp16).
reference-fits: $(STAMP)
	$(PY) run_benchmark.py --config $(CONFIG) --fit-only --retrain --out results/reference-runs $(ARGS)
	$(PY) -m methods.reference export "$$(ls -d results/reference-runs/*-* | tail -1)"

clean-venv:
	rm -rf $(VENV)
