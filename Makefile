# gpufleet — the two quick-start commands are `make plan` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON := $(shell command -v $(PYTHON))

.PHONY: plan validate render test test-fast lint lab lab-full lab-clean bench clean env env-dev fedlab

# uv's version and the SHA-256 of each of its Linux wheels: requirements-uv.txt.
$(UV): requirements-uv.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --require-hashes --only-binary :all: -r requirements-uv.txt
	touch $(UV)

# The locked runtime environment (what `gpufleet` needs to run). Where
# env-dev installed the test dependencies, they stay (uv sync --no-dev would
# remove them, --inexact too).
env: $(UV)
	if [ -x $(VENV)/bin/pytest ]; then $(UV) sync --frozen --quiet; else $(UV) sync --frozen --no-dev --quiet; fi

# The locked environment plus everything the tests need.
env-dev: $(UV)
	$(UV) sync --frozen --quiet

plan: env
	$(VENV)/bin/gpufleet plan

validate: env
	$(VENV)/bin/gpufleet validate

render: env
	$(VENV)/bin/gpufleet render --out out

# Every test. The federation lab's Go build (about 30 minutes on a clean
# clone, CPU-bound; cached in .fedlab/ afterwards) runs beside the other
# suites, most of which keep one core busy; the fedlab scenarios run once it
# is done. TESTS selects the first session's tests (default: all but fedlab).
TESTS ?= not fedlab
test: env-dev
	@mkdir -p .fedlab
	@echo "fedlab: building the Go components in the background (log: .fedlab/build.log)"
	@$(VENV)/bin/python tests/fedlab/build.py > .fedlab/build.log 2>&1 & build=$$!; \
	trap 'kill $$build 2>/dev/null' INT TERM; \
	./tests/install-system-deps.sh && $(VENV)/bin/pytest -q -m "$(TESTS)"; rc=$$?; \
	echo "fedlab: waiting for the Go build"; \
	if ! wait $$build; then echo "fedlab build failed:"; tail -40 .fedlab/build.log; exit 1; fi; \
	tail -1 .fedlab/build.log; \
	$(VENV)/bin/pytest -q -p no:cacheprovider -m fedlab tests/fedlab; rc2=$$?; \
	exit $$(( rc != 0 ? rc : rc2 ))

test-fast: env-dev
	$(VENV)/bin/pytest -q -m "not lab and not fedlab"

# The federation lab (tests/fedlab/README.md): builds Kubernetes, etcd, KWOK,
# cluster-autoscaler, Kueue, JobSet and Trainer from the Go module proxy
# (cached in .fedlab/bin), runs one control plane per site and the scenarios.
fedlab: env-dev
	$(VENV)/bin/python tests/fedlab/build.py
	$(VENV)/bin/pytest -q -p no:cacheprovider -m fedlab tests/fedlab

# The VM lab (tests/lab/README.md): real Debian VMs under qemu, site.yml twice,
# then the testinfra suites. Needs root and tests/install-system-deps.sh.
lab: env-dev
	./tests/install-system-deps.sh
	$(VENV)/bin/python tests/lab/run_lab.py

# The lab plus the NVIDIA driver install path (DKMS build under emulation: slow).
lab-full: env-dev
	./tests/install-system-deps.sh
	$(VENV)/bin/python tests/lab/run_lab.py --full

lab-clean:
	./tests/lab/down.sh
	rm -rf .lab

# Scale benchmark (not a test): gpufleet validate on generated fleets of 5,000 and
# 10,000 GPU servers beside ansible-inventory --list; figures in tests/scale/RESULTS.md.
bench: env-dev
	$(VENV)/bin/python tests/scale/bench.py --sizes 0.5,1 --repeat 3 --ansible per-dc

clean:
	rm -rf out .pytest_cache .hypothesis
