# The commands of README.md. Run from the repository root; `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# The rules call the `flow-mbpo-pwm` console script of the virtualenv.
export PATH := $(BIN):$(PATH)
CORES ?= all

.PHONY: help install smoke test schema check-schema dry-run rulegraph lint format slurm-deps

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# torch is pinned first: an unpinned torch pulls a multi-GB CUDA build (2.13.0 is the CPU wheel this machine has).
# constraints.txt holds every direct dependency at the version the tests run with (the conda envs pin the same).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0 -e ".[test]"
	touch $@

install: $(VENV)/.installed  ## create .venv and install the package with the pipeline and test tools

smoke: install  ## the whole DAG on this machine's CPU in minutes -> results/compare.csv, results/figures/
	snakemake --profile profiles/local --configfile config/smoke.yaml --cores $(CORES)

test: install  ## the full test suite (what CI runs); fails if anything fails or nothing was collected
	@$(BIN)/python -m pytest -q -rs; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

schema: install  ## regenerate workflow/schemas/config.schema.yaml from the typed config
	$(BIN)/python workflow/scripts/schema.py

check-schema: install  ## fail if the committed schema is stale
	$(BIN)/python workflow/scripts/schema.py --check

dry-run: install  ## what `snakemake` would run for config/config.yaml, with each job's reason
	snakemake -n

rulegraph: install  ## the rule graph in dot (pipe into `dot -Tsvg` if graphviz is installed)
	@snakemake --rulegraph --quiet all

lint: install  ## ruff, snakefmt and snakemake --lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	snakemake --lint

slurm-deps:  ## (root, Debian) SLURM + munge for the single-node SLURM test; .ci/run does this
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge
