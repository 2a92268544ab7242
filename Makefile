# hasched — the two commands a user needs are `make lab` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
# Debian's interpreter: the nodes run the same one, and the OCF agent's shebang points into this venv.
BASE_PY ?= /usr/bin/python3

# The tiers of `make test`, each a folder of tests/, in the order they run.
TIERS := unit static integration ocf cluster
TIER_REPORT := $(VENV)/tiers.jsonl

.PHONY: deps venv test test-unit test-integration test-ocf test-lab lint bench install-agent clean

## deps: the Debian packages of deps/debian-packages.txt (installs what is missing, as root;
## does nothing, without network, when all are there)
deps:
	@deps/install

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml | deps
	test -x $(PY) || $(BASE_PY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lab,ocf]'
	touch $@

## test: the whole suite — unit, static, integration (real daemons on loopback), ocf (a real
## single-node Pacemaker, root) and cluster (the two-node container lab, root). Every tier runs;
## a skip counts as a failure (HASCHED_STRICT), and the last lines say, per tier, what ran.
test: deps venv lint
	@rm -f $(TIER_REPORT); rc=0; \
	for tier in $(TIERS); do \
	  echo "== tier $$tier"; \
	  HASCHED_STRICT=1 HASCHED_TIER=$$tier HASCHED_TIER_REPORT=$(abspath $(TIER_REPORT)) \
	    $(PYTEST) -ra -p no:cacheprovider tests/$$tier || rc=1; \
	done; \
	$(PY) -m tests.tiers $(TIER_REPORT) $(TIERS) || rc=1; \
	exit $$rc

test-unit: venv
	$(PYTEST) -ra tests/unit

test-integration: venv
	$(PYTEST) -ra tests/integration

test-ocf: venv
	$(PYTEST) -ra tests/ocf

test-lab: venv
	$(PYTEST) -rfEsP -p no:cacheprovider tests/cluster

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
