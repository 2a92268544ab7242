# hasched — the two commands a user needs are `make lab` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
# Debian's interpreter: the nodes run the same one, and the OCF agent's shebang points into this venv.
BASE_PY ?= /usr/bin/python3

.PHONY: venv test test-unit test-integration test-ocf test-lab lint bench install-agent clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(BASE_PY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lab,ocf]'
	touch $@

## test: the whole suite — unit, integration (real daemons on loopback), ocf (a real
## single-node Pacemaker, root) and lab (the two-node container cluster, root).
test: venv lint
	$(PYTEST) -ra -p no:cacheprovider tests/unit tests/static tests/integration
	$(PYTEST) -ra -p no:cacheprovider tests/ocf
	$(MAKE) test-lab

test-unit: venv
	$(PYTEST) -ra tests/unit

test-integration: venv
	$(PYTEST) -ra tests/integration

test-ocf: venv
	$(PYTEST) -ra tests/ocf

test-lab: venv
	if [ -d tests/cluster ] && ls tests/cluster/test_*.py >/dev/null 2>&1; then \
	  $(PYTEST) -rfEsP -p no:cacheprovider tests/cluster; fi

lint: venv
	$(VENV)/bin/ruff check scheduler resource-agents tests bench

## bench: figures, not assertions (see bench/README.md)
bench: venv
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

install-agent: venv
	resource-agents/install.sh --python $(abspath $(PY))

clean:
	rm -rf $(VENV) build dist *.egg-info

-include lab.mk
