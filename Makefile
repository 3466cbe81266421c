# memlens — `make run` and `make test` are the two commands a new user needs.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help setup run test test-unit test-kernel bpf bench bench-long lint vmlinux clean

help:  ## Show this help.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

setup:  ## Install Debian packages, the venv and memlens with its BPF objects (idempotent).
	@scripts/setup.sh

run: setup  ## Set up, then run the main job (`memlens`: memory checklist + readiness report).
	@$(VENV)/bin/memlens

test: setup  ## Set up, then run every test (unit + kernel; kernel tests need root).
	$(PY) -m pytest -q -ra tests $(PYTEST_ARGS)

test-unit: setup  ## Unit tests only (no root needed).
	$(PY) -m pytest -q -ra tests/unit $(PYTEST_ARGS)

test-kernel: setup  ## Kernel tests only (root).
	$(PY) -m pytest -q -ra tests/kernel $(PYTEST_ARGS)

bpf:  ## Rebuild stale BPF objects.
	$(PY) hatch_build.py

bench: setup  ## Benchmarks against peers (bpftrace, root, ~10 min); writes docs/BENCHMARKS.md.
	$(PY) -m bench

bench-long: setup  ## 10 minutes of process churn, each tool's RSS; writes docs/BENCHMARKS-long.md.
	$(PY) -m bench --long

lint: setup  ## ruff over the package and tests.
	$(VENV)/bin/ruff check src tests bench

vmlinux:  ## Regenerate bpf/include/x86/vmlinux.h from this kernel's BTF.
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/include/x86/vmlinux.h

clean:  ## Remove build outputs (keeps the venv).
	find src -name '*.bpf.o' -delete; rm -rf build dist tests/workloads/bin
