# Two commands matter: `make demo` (emulator + mount + a look) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint format demo bench soak clean system-deps venv

system-deps:
	@scripts/bootstrap.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: system-deps $(STAMP)

test: venv
	$(PY) -m pytest
	$(MAKE) --no-print-directory lint

lint: venv
	$(VENV)/bin/ruff check imdsfs tests scripts
	$(VENV)/bin/ruff format --check imdsfs tests scripts
	$(VENV)/bin/mypy --strict imdsfs

format: venv
	$(VENV)/bin/ruff check --fix imdsfs tests scripts
	$(VENV)/bin/ruff format imdsfs tests scripts

demo: venv
	scripts/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
