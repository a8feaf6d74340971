# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The full CIFAR-10 beside the project when there is one; elsewhere cnnkit downloads it.
CIFAR10_DIR ?= $(wildcard ../shared/data/cifar10)
DEMO_RUN ?= runs/cifar10-simple-cnn

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,tf]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/cnnkit train cifar10 $(if $(CIFAR10_DIR),--data-dir $(CIFAR10_DIR)) --model simple-cnn \
		--epochs 10 --batch-size 64 --lr 1e-3 --out $(DEMO_RUN) --overwrite
	$(VENV)/bin/cnnkit evaluate $(DEMO_RUN)
	@echo "Results: $(DEMO_RUN)/ (metrics.json, learning_curves.png, confusion_matrix.png, mistakes.png, model.safetensors)"

# One pytest worker per core; a worker that runs out of tests takes some queued on another (worksteal), which
# balances the few long end-to-end tests better than a file per worker.
test: install
	$(PY) -m pytest -q -n auto --dist worksteal

bench: install
	$(PY) bench/cifar10_simple_cnn.py

clean:
	rm -rf $(VENV) runs .pytest_cache
