# riverfs: set-up, mount, test and benchmark from a checkout.
#
#   make run      install what is needed, mount the default volume at ./mnt (background)
#   make test     install what is needed, lint and run the whole test suite
#   make umount   unmount ./mnt
#   make bench    run benchmarks/fs_bench.py (needs root: it mounts tmpfs and drops caches)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.riverfs-installed
MNT := ./mnt
SYSTEM_PACKAGES := fuse3 python3-venv  # fuse3: fusermount3 and /dev/fuse; no libfuse is linked
# the tests start their own PostgreSQL server (initdb + pg_ctl); gcc checks the FUSE ABI
TEST_PACKAGES := postgresql gcc libc6-dev util-linux attr rsync acl  # acl: setfacl/getfacl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BENCH_ARGS ?=
# fs_bench.py builds pyfuse3 (benchmarks/.venv-pyfuse3) for memfs_pyfuse3, the old ceiling,
# and mounts rclone (a peer of issue 10; no test needs it)
BENCH_PACKAGES := libfuse3-dev pkg-config gcc python3-dev rclone

export DEBIAN_FRONTEND := noninteractive

.PHONY: help install system-packages test-packages apt-packages run test umount bench clean

help:
	@echo "make run      install what is needed and mount the default volume at $(MNT)"
	@echo "make test     install what is needed and run the whole test suite"
	@echo "make umount   unmount $(MNT)"
	@echo "make bench    run the benchmarks (BENCH_ARGS='--size 1G' to pass options)"

install: $(STAMP)

# Re-run only when the package metadata changes (or the venv is missing).
$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-packages
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found on PATH; riverfs needs Python >= 3.11" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	    echo "error: riverfs needs Python >= 3.11, but $(PYTHON) on PATH is $$($(PYTHON) -c 'import platform; print(platform.python_version())')." >&2; \
	    echo "       Install a newer python3 or run: make install PYTHON=/path/to/python3.11" >&2; exit 1; }
	@if [ -x $(VENV)/bin/python ] && ! $(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	    echo "error: $(VENV) uses Python < 3.11; remove it (rm -rf $(VENV)) and run make again" >&2; exit 1; fi
	@[ -x $(VENV)/bin/python ] || { echo "creating $(VENV) with $$(command -v $(PYTHON))"; $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

# apt-get only when a package is missing; nothing at all on a second run.
system-packages:
	@$(MAKE) --no-print-directory apt-packages PACKAGES="$(SYSTEM_PACKAGES)"

test-packages:
	@$(MAKE) --no-print-directory apt-packages PACKAGES="$(TEST_PACKAGES)"

apt-packages:
	@missing=""; \
	for p in $(PACKAGES); do \
	    dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if ! command -v apt-get >/dev/null; then \
	        echo "error: missing system packages:$$missing (no apt-get here; install them by hand)" >&2; exit 1; fi; \
	    echo "installing system packages:$$missing"; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

run: install
	@if grep -qF " $(abspath $(MNT)) " /proc/self/mountinfo; then \
	    if ! stat -t $(MNT)/. >/dev/null 2>&1; then \
	        echo "$(MNT) is mounted but does not answer (its daemon died?): run make umount, then make run" >&2; exit 1; fi; \
	    echo "$(MNT) is already mounted (unmount with: make umount)"; exit 0; fi; \
	mkdir -p $(MNT); \
	$(VENV)/bin/riverfs mount $(MNT) --background; \
	echo; \
	echo "riverfs: the default volume is mounted at $(MNT)"; \
	echo "  use it like any directory:  echo hello > $(MNT)/hello.txt; ls -l $(MNT)"; \
	echo "  volume status:              $(VENV)/bin/riverfs status"; \
	echo "  unmount:                    make umount   (or $(VENV)/bin/riverfs umount $(MNT))"

test: install test-packages
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/python -m pytest -q tests

umount:
	$(VENV)/bin/riverfs umount $(MNT)

bench: install
	@$(MAKE) --no-print-directory apt-packages PACKAGES="$(BENCH_PACKAGES)"
	$(VENV)/bin/python benchmarks/fs_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
