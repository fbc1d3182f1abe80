# TMagikarp developer commands. `make demo` and `make test` work on a fresh machine (offline except
# for package installation); everything they need is installed by the `install` target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export PYTHONHASHSEED := 0

.PHONY: install system-deps cdk-venv synth demo test lint format dev bench clean

install: $(STAMP) $(DAGSTER_HOME)/dagster.yaml

# torch first, from the CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
# FinRL (parity tests and benchmarks only) goes in with --no-deps: its broker SDK pins break yfinance.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev,aws]"
	$(PY) -m pip install --quiet --no-deps finrl==0.3.7
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Debian packages the tests drive for real: Chromium (browser test of the UI and reports), PostgreSQL 15
# (the production instance storage) and docker-compose (validates deploy/docker-compose.yaml; no engine runs
# here). Installed once, when missing; needs root (CI runs as root).
SYSTEM_PACKAGES := chromium postgresql-15 docker-compose
system-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/lib/postgresql/15/bin/initdb ] || [ ! -x /usr/bin/docker-compose ]; then \
		echo "installing Debian packages: $(SYSTEM_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

# The AWS CDK app (deploy/cdk) has its own virtualenv: jsii pins typeguard 2, the runtime's pandera wants 4.
CDK_VENV := .venv-cdk
CDK_STAMP := $(CDK_VENV)/.installed-stamp
cdk-venv: $(CDK_STAMP)
$(CDK_STAMP): deploy/cdk/requirements.txt
	$(PYTHON) -m venv $(CDK_VENV)
	$(CDK_VENV)/bin/python -m pip install --quiet -r deploy/cdk/requirements.txt
	touch $(CDK_STAMP)

# Synthesise the CloudFormation template offline (no AWS account needed) into deploy/cdk/cdk.out.
synth: cdk-venv
	cd deploy/cdk && ../../$(CDK_VENV)/bin/python app.py

demo: install
	$(PY) -m magikarp_assets.demo

# pytest exits 5 when it collects nothing: an empty suite is a failure here, said plainly.
test: install system-deps cdk-venv
	@$(PY) -m pytest -n 2 -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is empty"; exit 1; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/scan_secrets.py

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

dev: install
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: install
	$(PY) -m benchmarks.run

clean:
	rm -rf $(DAGSTER_HOME) .pytest_cache .ruff_cache .mypy_cache
