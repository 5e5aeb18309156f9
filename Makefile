# Switchboard: `make run` serves both sub-apps on :8000; `make test` runs the whole suite.
# Everything a fresh Debian machine with Python 3.11 lacks is installed from here.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS   ?=

.PHONY: run test bench clean redis-server test-packages screenshots

run: $(VENV)/.installed
	$(BIN)/python run.py --insecure $(ARGS)

test: $(VENV)/.installed-test redis-server test-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: $(VENV)/bin/python setup.cfg setup.py pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python setup.cfg setup.py pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

# The console screenshots in docs/img/, taken by the browser test.
screenshots: $(VENV)/.installed-test redis-server test-packages
	SWITCHBOARD_SCREENSHOTS=docs/img $(BIN)/python -m pytest tests/test_browser.py -q

# The benchmark (bench/run.py) starts its own redis-server and server processes on loopback
# ports and writes docs/benchmarks.md and docs/benchmarks.png. `make bench ARGS=--quick`: smoke run.
bench: $(VENV)/.installed-bench redis-server
	$(BIN)/python -m bench.run $(ARGS)

$(VENV)/.installed-bench: $(VENV)/bin/python setup.cfg setup.py pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed

# The tests start their own redis-server on a free loopback port (and a 3-node Redis Cluster,
# made with redis-cli); they only need the binaries (Redis 7+, as in Debian 12).
redis-server:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools; }

# The browser and proxy tests drive Debian's Chromium (with Playwright, no browser download)
# and start Debian's nginx on loopback ports.
test-packages:
	@command -v chromium >/dev/null && command -v nginx >/dev/null || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium nginx; }

clean:
	rm -rf $(VENV) build *.egg-info
