# Quick start: `make demo` (the main job) and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/datasets)
export KANGAE_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: demo test venv bench clean browser

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The main job: train, probe, and write tour/report.html (a rerun skips finished steps).
# `make demo QUICK=1` runs the smaller tour; `kangae serve tour` then opens the drawing app.
demo: $(VENV)/.installed
	$(VENV)/bin/kangae tour --out tour $(if $(QUICK),--quick,)

# Browser tests use Debian's chromium; install it when missing and we may (root, apt).
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "warning: could not install chromium; browser tests will be skipped"

test: $(VENV)/.installed browser
	$(VENV)/bin/ruff check --quiet .
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) runs tour
