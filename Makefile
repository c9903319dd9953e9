# The two commands a newcomer needs: `make up` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test install system-deps proto lint lint-python lint-proto check-generated \
        unit integration bench clean-data

up: install system-deps
	$(PY) -m comfyfleet.devstack up

test: install system-deps lint
	$(PY) -m pytest -q -p no:cacheprovider tests

install: $(STAMP)

# Re-installs when pyproject.toml changes; `pip install -e` keeps the checkout importable.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

system-deps:
	scripts/install-system-deps.sh

proto: install
	scripts/genproto.sh
	$(PY) -m services.gateway.rest.protodocs

lint: lint-python lint-proto check-generated
	scripts/validate-deploy.sh

lint-python: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

lint-proto: install
	scripts/protodeps.sh
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf format --diff --exit-code
	scripts/buf-breaking.sh

check-generated: install
	scripts/check-generated.sh

unit: install
	$(PY) -m pytest -q tests/unit

integration: install system-deps
	$(PY) -m pytest -q tests/integration

clean-data:
	rm -rf .comfyfleet/postgres .comfyfleet/nats .comfyfleet/s3 .comfyfleet/logs .comfyfleet/admin.key
