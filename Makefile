# attnloop: `make demo` installs and runs the demonstration, `make test` installs and runs the tests.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changed; torch/torchvision come from this machine's disk.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/attnloop demo

test: setup
	$(VENV)/bin/python -m pytest

bench: setup
	$(VENV)/bin/python benchmarks/inference.py --out docs/benchmarks/inference.md

clean:
	rm -rf $(VENV) .attnloop
