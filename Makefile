# Two commands matter: `make demo` (emulator + mount + a look) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

PREFIX ?= /usr/local
UNITDIR ?= /etc/systemd/system

.PHONY: test lint format demo bench soak clean system-deps venv install uninstall systemd-test

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

bench: venv
	$(PY) scripts/bench.py

SOAK_SECONDS ?= 600
soak: venv  # readers against a faulty emulator for SOAK_SECONDS; prints a summary
	$(PY) scripts/soak.py --seconds $(SOAK_SECONDS)

# imdsfs where mount(8) looks (mount.fuse3 runs it with PATH=...:/usr/local/bin:...), plus the
# systemd unit. The command is a link into this checkout's venv: keep the checkout.
install: venv
	mkdir -p $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR)
	ln -sfn $(CURDIR)/$(VENV)/bin/imdsfs $(DESTDIR)$(PREFIX)/bin/imdsfs
	sed 's#/usr/local/bin/imdsfs#$(PREFIX)/bin/imdsfs#' scripts/systemd/imdsfs.service \
		> $(DESTDIR)$(UNITDIR)/imdsfs.service

# imdsfs under a real systemd: a cached Debian container boots with `make install`'s unit, then
# with the README's fstab line; PASS/FAIL per check (README "Mounting at boot"). Root only.
systemd-test: venv
	scripts/systemd-test/host-deps.sh
	$(PY) scripts/systemd-test/run.py

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/imdsfs $(DESTDIR)$(UNITDIR)/imdsfs.service

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
