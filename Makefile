# `make demo` and `make test` are all a user types on a fresh clone: both create .venv/ first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-fast bench bench-gpu install clean

install: $(INSTALLED)

$(INSTALLED): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# MS + PSD + OBDP on scikit-learn's bundled digits (train 0-4, test 5-9), from scratch, on CPU.
demo: $(INSTALLED)
	$(PY) main.py --dataset digits --arch resnet18_frozen_normalize --not_pretrained \
		--embed_dim 16 --bs 50 --samples_per_class 10 --lr 1e-4 --n_epochs 10 \
		--loss multisimilarity --PSD --OBDP --save_path Training_Results/demo

# pytest-xdist: one worker a core, each on one thread (tests/conftest.py), a file's tests on one
# worker (--dist loadfile) so a file's shared fixtures are built once. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(INSTALLED)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(INSTALLED)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

bench: $(INSTALLED)
	$(PY) -m benchmarks.criterion
	$(PY) -m benchmarks.diffusion --sizes 112 512 2048 4096 --dims 128 512
	$(PY) -m benchmarks.evaluation
	$(PY) -m benchmarks.evaluation --size inshop
	$(PY) -m benchmarks.evaluation --size sop_gallery
	$(PY) -m benchmarks.train_step
	$(PY) -m benchmarks.duplicates

# Every GPU measurement in under 8 minutes (see benchmarks/README.md); --quick checks it on the CPU.
bench-gpu: $(INSTALLED)
	$(PY) -m benchmarks.gpu

clean:
	rm -rf $(VENV) .pytest_cache
