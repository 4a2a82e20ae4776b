# slidemil — the two quick-start commands (see README.md):
#   make demo   set up .venv, then run the whole pipeline on the bundled demo cohort (dvc repro)
#   make test   set up .venv, then run the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow ui bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the CUDA build runs on CPU too and pairs with torchvision (timm needs it)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
	@echo "Report: reports/summary.md   MLflow UI: make ui"

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

ui: $(STAMP)
	@echo "Open the experiment, then the link at the top of its description (runs view with test AUROC and CI)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# Each benchmark prints a table and, last, one JSON line. gpu.py runs the full GPU check on a CUDA machine and
# its smoke mode (tiny batches, a few patches) elsewhere.
bench: $(STAMP)
	$(BIN)/python bench/tiling.py
	$(BIN)/python bench/tiling_cohort.py
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/extract.py --encoder resnet50_trunc --only encoding --patches 64
	$(BIN)/python bench/allocator.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/gpu.py
	$(BIN)/python bench/heatmap.py
