# Quick start: `make demo` (the main job) and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/datasets)
export KANGAE_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: demo test venv bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Until `kangae tour` exists, the demo trains the default model (resuming a run that was
# stopped) and evaluates it.
demo: $(VENV)/.installed
	if [ -f runs/demo/checkpoints/latest.json ]; then \
		$(VENV)/bin/kangae train --out runs/demo --resume; \
	else \
		$(VENV)/bin/kangae train --out runs/demo; \
	fi
	$(VENV)/bin/kangae eval runs/demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check --quiet .
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) runs
