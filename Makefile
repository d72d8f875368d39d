# lbd: the two commands a newcomer needs are `make demo` and `make test`.
# Each installs what it needs first (Debian packages, a virtualenv).
#
# Interpreters:
#   DEBIAN_PYTHON  Debian 12's /usr/bin/python3 with Debian's Twisted 22.4 (what the .deb runs on)
#   VENV_PYTHON    a virtualenv with the newest Twisted from PyPI

DEBIAN_PYTHON ?= /usr/bin/python3
VENV ?= .venv
VENV_PYTHON = $(VENV)/bin/python
PYTEST_ARGS ?=
export PYTHONPATH := $(CURDIR)

.PHONY: all deps venv demo test test-debian test-venv bench bench-quick deb clean

all: test

deps:
	@sh scripts/install-deps.sh

$(VENV)/.stamp: setup.cfg pyproject.toml
	$(DEBIAN_PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install -q --upgrade pip
	$(VENV_PYTHON) -m pip install -q twisted treq prometheus-client service-identity pyopenssl hypothesis pytest
	touch $@

venv: $(VENV)/.stamp

demo: deps
	$(DEBIAN_PYTHON) demo/demo.py

# Every test, on both Twisted versions. pytest exits non-zero when no test ran.
test: deps venv
	$(MAKE) test-debian
	$(MAKE) test-venv

test-debian:
	@echo "== tests on Debian's python3 ($$($(DEBIAN_PYTHON) -c 'import sys,twisted; print(sys.version.split()[0], "Twisted", twisted.__version__)'))"
	$(DEBIAN_PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

test-venv: venv
	@echo "== tests in $(VENV) ($$($(VENV_PYTHON) -c 'import sys,twisted; print(sys.version.split()[0], "Twisted", twisted.__version__)'))"
	LBD_SKIP_DEB=1 $(VENV_PYTHON) -m pytest -q -p no:cacheprovider -W error::DeprecationWarning $(PYTEST_ARGS) tests

# The benchmark against HAProxy (about 15 minutes); bench-quick is the smoke run (about 25 s).
bench: deps venv
	$(DEBIAN_PYTHON) bench/run.py --python $(DEBIAN_PYTHON) --python $(VENV_PYTHON) $(BENCH_ARGS)

bench-quick: deps
	$(DEBIAN_PYTHON) bench/run.py --quick $(BENCH_ARGS)

deb: deps
	sh .ci/build-deb.sh dist

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache _trial_temp* twisted/plugins/dropin.cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
