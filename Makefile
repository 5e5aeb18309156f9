# Switchboard: `make run` serves both sub-apps on :8000; `make test` runs the whole suite.
# Everything a fresh Debian machine with Python 3.11 lacks is installed from here.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS   ?=
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
RUN_LOCK := requirements/run.txt
DEV_LOCK := requirements/dev.txt
UV_VERSION := 0.13.9
LOCK   := $(BIN)/uv pip compile --quiet --upgrade --generate-hashes --python-version 3.11 \
	--custom-compile-command 'make lock' setup.cfg requirements/build.in --output-file

.PHONY: run test test-fast check lock bench clean redis-server test-packages bench-packages screenshots

run: $(VENV)/.installed
	$(BIN)/python run.py --insecure $(ARGS)

# The fast tier: no browser, nginx, Redis Cluster or multi-process tests (see setup.cfg's markers),
# and a tenth of the fuzz examples (make test runs them all). Its tests mostly wait (quiet
# windows), so four pytest-xdist workers run them side by side, each with its own redis-server
# (on two cores: 57 to 60 s, against 57 to 67 s with three).
FAST_TIER := not (processes or cluster or browser or nginx or js or packaging or workers)

# The static checks, then the whole suite (every tier): the fast tier's tests (with all their
# fuzz examples) four at a time, as test-fast runs them, then the tiers that start processes,
# clusters, browsers and nginx one at a time (they measure time, and two cores are shared).
# With PYTEST_ARGS (a module, -k ...), one plain run of what they select.
test: $(VENV)/.installed-dev redis-server test-packages
	$(MAKE) --no-print-directory check
ifeq ($(strip $(PYTEST_ARGS)),)
	$(BIN)/python -m pytest -n 4 -m '$(FAST_TIER)'
	$(BIN)/python -m pytest -m 'not ($(FAST_TIER))'
else
	$(BIN)/python -m pytest $(PYTEST_ARGS)
endif

test-fast: $(VENV)/.installed-dev redis-server
	SWITCHBOARD_FUZZ_TIER=fast $(BIN)/python -m pytest -n 4 -m '$(FAST_TIER)' $(PYTEST_ARGS)

# Static checks: ruff (lint and format) and mypy, as configured in pyproject.toml.
check: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }

# Every package comes from a lock with hashes (requirements/, written by `make lock` only), so
# every machine runs the same program; the project itself is then installed without resolving.
$(VENV)/.installed: $(VENV)/bin/python $(RUN_LOCK) setup.cfg setup.py pyproject.toml
	$(PIP) --require-hashes -r $(RUN_LOCK)
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/bin/python $(DEV_LOCK) setup.cfg setup.py pyproject.toml
	$(PIP) --require-hashes -r $(DEV_LOCK)
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@ $(VENV)/.installed

# Re-resolve both locks to the newest releases setup.cfg allows (the only way they change):
# the development lock first (runtime, test, bench and lint extras, and the build backend),
# then the runtime lock within it, so the two never name different versions.
lock: $(VENV)/bin/python
	$(PIP) 'uv==$(UV_VERSION)'
	$(LOCK) $(DEV_LOCK) --extra test --extra bench --extra lint
	$(LOCK) $(RUN_LOCK) --constraint $(DEV_LOCK)

# The console screenshots in docs/img/, taken by the browser test.
screenshots: $(VENV)/.installed-dev redis-server test-packages
	SWITCHBOARD_SCREENSHOTS=docs/img $(BIN)/python -m pytest tests/test_browser.py -q

# The benchmark (bench/run.py) starts its own redis-server and server processes on loopback
# ports and writes docs/benchmarks.md and docs/benchmarks.png. `make bench ARGS=--quick`: smoke run.
bench: $(VENV)/.installed-dev redis-server bench-packages
	$(BIN)/python -m bench.run $(ARGS)

# The tests start their own redis-server on a free loopback port (and a 3-node Redis Cluster,
# made with redis-cli); they only need the binaries (Redis 7+, as in Debian 12).
redis-server:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools; }

# nginx's nchan module: the benchmark's reference server (bench/nchan.py), tested by the suite.
NCHAN_MODULE := /usr/lib/nginx/modules/ngx_nchan_module.so
bench-packages:
	@test -e $(NCHAN_MODULE) || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx libnginx-mod-nchan; }

# The browser and proxy tests drive Debian's Chromium (with Playwright, no browser download)
# and start Debian's nginx on loopback ports (and the benchmark's nchan, tests/test_bench_nchan.py).
test-packages:
	@command -v chromium >/dev/null && command -v nginx >/dev/null && test -e $(NCHAN_MODULE) || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium nginx libnginx-mod-nchan; }

clean:
	rm -rf $(VENV) build *.egg-info
