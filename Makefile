# Two entry points a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test
HOST   ?= 0.0.0.0
PORT   ?= 8080
# Debian packages the tests drive as real clients and services
# (swift-*: OpenStack Swift with its s3api middleware, the S3-compatible server of the storage tests;
# slapd, ldap-utils: the OpenLDAP server and tools of the LDAP sign-in tests;
# chromium: the browser Playwright drives in tests/e2e; systemd: systemd-analyze checks generated units).
TEST_DEBS := podman skopeo docker-registry postgresql redis-server \
	swift-proxy swift-account swift-container swift-object \
	slapd ldap-utils chromium systemd
# Two test processes (CI has two cores; most integration time is spent waiting on servers). A test
# file runs in one process, so its module fixtures are built once.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: run test install install-test debs unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/quaymaster registry --host $(HOST) --port $(PORT)

$(TESTSTAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install-test: $(TESTSTAMP)

# Installs the Debian packages the tests need when running as root (CI, fresh machines).
debs:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping Debian packages ($(TEST_DEBS))"; fi

test: install-test debs
	$(PY) -m pytest -q $(PYTEST_ARGS)

unit: install-test
	$(PY) -m pytest -q tests/unit

bench: install-test debs
	$(PY) bench/registry_bench.py

clean:
	rm -rf $(VENV) .pytest_cache
