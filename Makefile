# attnloop: `make demo` installs and runs the demonstration, `make test` installs and runs the tests.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
# Label Studio runs as its own service, so it gets its own environment (about 1 GB).
LS_VENV := .venv-ls
LS_STAMP := $(LS_VENV)/.installed

.PHONY: setup browser demo test bench clean

# setup installs what attnloop runs on; the demo needs nothing more (no browser, no apt).
setup: $(STAMP) $(LS_STAMP)

# The page tests drive a real headless Chromium (Debian's packages; sudo when not root): only `make test` installs it.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Re-installs only when pyproject.toml changed; torch/torchvision come from this machine's disk.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(LS_STAMP): infra/label-studio/requirements.txt
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet -r infra/label-studio/requirements.txt
	touch $(LS_STAMP)

demo: setup
	$(VENV)/bin/attnloop demo

test: setup browser
	$(VENV)/bin/python -m pytest --durations=15

bench: setup
	$(VENV)/bin/python benchmarks/inference.py --out docs/benchmarks/inference.md

clean:
	rm -rf $(VENV) $(LS_VENV) .attnloop
