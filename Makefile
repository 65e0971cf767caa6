# Bulwark: `make run` starts the service, `make test` runs every test on SQLite and PostgreSQL.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two stamps: `make run` installs only what the service needs; the test tools come on top.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: run demo test test-sqlite test-postgresql lint format system-deps lab clean

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/bulwark serve

# The vSphere lab and a Dovecot with sample mailboxes, already registered (scripts/demo.py).
demo: $(RUN_STAMP) system-deps
	$(PY) scripts/demo.py $(DEMO_ARGS)

system-deps:
	bash scripts/system-deps.sh

lab:
	bash lab/build.sh
	@echo "vCenter for the connection form: host 127.0.0.1, port 8989,"
	@echo "  user administrator@vsphere.local, password lab-password-1,"
	@echo "  guest account CORP\\backup / guest-password-1; trust its certificate when asked"
	lab/bin/bulwark-lab --listen 127.0.0.1:8989 --password lab-password-1 \
		--guest-password guest-password-1

lint: $(STAMP)
	$(VENV)/bin/ruff check app tests benchmarks migrations
	$(VENV)/bin/ruff format --check app tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix app tests benchmarks
	$(VENV)/bin/ruff format app tests benchmarks

test-sqlite: $(STAMP)
	BULWARK_TEST_DB=sqlite $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-postgresql: $(STAMP)
	BULWARK_TEST_DB=postgresql $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test: system-deps lint
	bash lab/build.sh
	$(MAKE) --no-print-directory test-sqlite
	$(MAKE) --no-print-directory test-postgresql

clean:
	rm -rf $(VENV) test-output lab/bin .pytest_cache .ruff_cache
