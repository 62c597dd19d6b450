# The front door. `make` alone lists every target.
#
# Variables you may set (make VAR=value ...):
#   RUN_NAME        name of the MLflow parent run of `make pipeline`
#   FORCE=1         re-run every stage, changed or not; `make gc`: clean a cache shared between clones all the same
#   PYTHON          the Python 3.11 that creates .venv
#   VENV            the virtualenv to use (default: .venv here; a path without spaces)
#   DVC_REMOTE_URL  the default DVC remote, a local folder (default: ~/.dvc-remotes/$(PROJECT_NAME))
#   DVC_CACHE_DIR   a DVC cache shared between clones (default: .dvc/cache)
#   UPGRADE=1       `make lock` moves the locks to the newest releases the .in files allow
#   PYTEST_ARGS     extra arguments for pytest, e.g. PYTEST_ARGS="-m 'not slow'"
#   PORT            the port of `make ui` (default: 5000); DOCS_PORT: of `make docs-serve` (8000)
#   TAG, MSG        the data version `make tag` pins, and what it is; PUSH=1 also pushes the tag
#   RUN_ID          the MLflow run `make checkout` restores
#   REV             the git revision or tag `make verify` checks (default: the working tree)
#   BASE            the git revision or tag `make report` compares with (default: HEAD)
#   BENCH_ARGS      options of `make bench`: --quick (smoke test), --scale (a CSV of 2,000,000 rows), --repeats N
#   SWEEP           the grid of `make sweep`, e.g. SWEEP="train.linear.C=0.1,1,10 data_split.test_size=0.2,0.3"
#   JOBS            how many points of a sweep run at once, through DVC's experiment queue (default: 1; on a Dask cluster, one per worker)
#   TEAM_ENV        the team-mode settings file (default: team.env; see team.env.example)
#   NAME, ROLE      the user `make team-user` creates and its right on the experiment (read, edit, manage)
#   PASSWORD        that user's password, from the environment only, never on make's command line (default: asked)
#   WORKERS         how many workers `make cluster-up` starts (default: 2)
#   SCHEDULER       the Dask scheduler `make worker` joins, e.g. tls://scheduler.example.org:8786
#   DEST, NAME      where `make new` creates a project of your own, and its name
#   MODEL           the model URI of serve, predict (default: models:/<registry.model_name>@champion)
#   MAX_BODY_MB     the largest request body `make serve` takes, in MB (default: 16)
#   SERVE_TOKEN     the key every request to `make serve` must carry; from the environment only, never on make's
#                   command line (default: a new one at each start, in .serve/token-<port>, mode 600)
#   METRIC          the metric `make promote` compares (default: registry.metric in params.yaml)
#   INPUT, OUTPUT   the file `make predict` scores and the file it writes (.csv or .parquet)
#   KEEP            the input columns `make predict` keeps beside its predictions (default: every column)
#   BATCH           the new labelled batch `make retrain` learns from (.csv or .parquet)
#   NEW, REF        the batch `make drift` checks, and what against (a git tag or a file; default: the champion's training data)
#
# Team mode: when team.env exists, every target tracks to its MLflow server and stores data in its
# S3 remote (`make team-up` starts a trial stack here and writes one). Without it, nothing changes.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PROJECT_NAME ?= ml-research-template
PROJECT_ROOT := $(CURDIR)
TEAM_ENV ?= team.env
-include $(TEAM_ENV)
PYTHON ?= python3.11
VENV ?= .venv
RUN_NAME ?=
FORCE ?=
TAG ?=
BASE ?= HEAD
SWEEP ?=
JOBS ?= 1
NAME ?=
ROLE ?=
PASSWORD ?=
MODEL ?=
METRIC ?=
INPUT ?=
OUTPUT ?=
KEEP ?=
NEW ?=
BATCH ?=
DEST ?=
REF ?=
BENCH_ARGS ?=
MSG ?=
RUN_ID ?=
REV ?=
PUSH ?=
WORKERS ?= 2
SCHEDULER ?=
DVC_REMOTE ?= local
DVC_REMOTE_URL ?= $(HOME)/.dvc-remotes/$(PROJECT_NAME)
DVC_CACHE_DIR ?=
PYTEST_ARGS ?=
PORT ?= 5000
DOCS_PORT ?= 8000

# The venv's absolute path (the project may live under a path with spaces: no make
# function touches it, and recipes quote it); VENV itself stays relative by default
# because make cannot name a target file whose path has a space.
VENV_DIR := $(if $(filter /%,$(VENV)),$(VENV),$(PROJECT_ROOT)/$(VENV))
BIN := $(VENV_DIR)/bin
PY := "$(BIN)/python"
DVC := "$(BIN)/dvc"

# Every process make starts shares one tracking store, addressed absolutely, and none phones home.
export MLFLOW_TRACKING_URI ?= sqlite:///$(PROJECT_ROOT)/mlflow.db
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
export DVC_NO_ANALYTICS := 1
export PIPELINE_RECORDS_DIR := $(PROJECT_ROOT)/.pipeline
export NO_MKDOCS_2_WARNING := 1
export PROJECT_VENV := $(VENV_DIR)
export PATH := $(BIN):$(PATH)
# Team mode's logins: MLflow reads the first two, DVC's S3 remote the keys (dvc-setup also writes them
# into .dvc/config.local, so plain `dvc push` works too).
# DASK_SCHEDULER (and a tls:// scheduler's certificates) sends sweep points and train's parallel work to a Dask cluster.
# Only settings team.env gives a value are exported.
TEAM_EXPORTS := MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD DVC_S3_ENDPOINT_URL AWS_ACCESS_KEY_ID \
  AWS_SECRET_ACCESS_KEY DVC_REMOTE DVC_REMOTE_URL DASK_SCHEDULER DASK_TLS_CA_FILE DASK_TLS_CERT DASK_TLS_KEY
ifneq ($(wildcard $(TEAM_ENV)),)
$(foreach name,$(TEAM_EXPORTS),$(if $($(name)),$(eval export $(name))))
endif

# The venv is synced to a lock only when that lock's content changes. Each lock pins every
# package with hashes: requirements.txt what requirements.in asks for, requirements-team.txt
# that and requirements-team.in at the same versions, requirements-dev.txt all three .in
# files, so a venv synced to a bigger lock satisfies the smaller ones too.
RUNTIME_HASH := $(shell cat requirements.txt | sha256sum | cut -c1-16)
TEAM_HASH := $(shell cat requirements-team.txt | sha256sum | cut -c1-16)
DEV_HASH := $(shell cat requirements-dev.txt | sha256sum | cut -c1-16)
RUNTIME_STAMP := $(VENV)/.installed-runtime-$(RUNTIME_HASH)
TEAM_STAMP := $(VENV)/.installed-team-$(TEAM_HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(DEV_HASH)

.PHONY: close-late lock help pipeline ui report sweep bench tag verify checkout history gc pull docs docs-serve test lint format clean clean-mlflow venv venv-dev dvc-setup team-up team-down team-status team-user cluster-up cluster-down cluster-status worker promote serve predict drift retrain hooks new

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

pipeline: $(RUNTIME_STAMP) close-late dvc-setup ## Run the DVC pipeline as one MLflow parent run (RUN_NAME=..., FORCE=1)
	@exec $(PY) -m src.pipeline --config params.yaml --run-name "$(RUN_NAME)" $(if $(FORCE),--force)

ui: $(RUNTIME_STAMP) close-late ## Open the MLflow UI on this project's runs, on 127.0.0.1 only, behind a login (PORT=5000)
ifneq ($(filter http://% https://%,$(MLFLOW_TRACKING_URI)),)
	@echo "In team mode the UI is the tracking server's: open $(MLFLOW_TRACKING_URI) and log in as $(MLFLOW_TRACKING_USERNAME)"
else
	@umask 077 && exec $(PY) -m src.tracking.ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --port $(PORT)
endif

report: $(RUNTIME_STAMP) close-late ## Compare params, metrics and plots with a git revision: reports/report.md (BASE=HEAD)
	@$(PY) -m src.report.compare --base "$(BASE)"

sweep: $(RUNTIME_STAMP) close-late dvc-setup ## Run a grid of params as DVC experiments, one MLflow parent run each (SWEEP="train.linear.C=0.1,1 ...")
	@[ -n "$$SWEEP" ] || { echo 'error: give the grid: make sweep SWEEP="train.linear.C=0.1,1,10 data_split.test_size=0.2,0.3"' >&2; exit 2; }
	@$(PY) -m src.pipeline.sweep --config params.yaml --grid "$$SWEEP" --jobs "$(JOBS)"

bench: $(RUNTIME_STAMP) close-late ## Measure the pipeline's overhead, memory and bytes written against the floor: reports/bench.md (BENCH_ARGS=--scale)
	@$(PY) -m src.bench $(BENCH_ARGS)

tag: $(RUNTIME_STAMP) close-late dvc-setup ## Pin the data version: push the data, then commit dvc.lock & co and tag (TAG=v1 MSG="...", PUSH=1)
	@[ -n "$$TAG" ] || { echo 'error: name the data version: make tag TAG=v1 MSG="what this data is"' >&2; exit 2; }
	@[ -n "$$MSG" ] || { echo 'error: say what this data version is: make tag TAG=$(TAG) MSG="..."' >&2; exit 2; }
	@exec $(PY) -m src.versions tag --name "$$TAG" --message "$$MSG" $(if $(PUSH),--push)

promote: $(RUNTIME_STAMP) close-late ## Register a run's model; move the champion alias only if it is better (RUN_ID=best, METRIC=..., FORCE=1)
	@$(PY) -m src.service.promote --run-id "$(RUN_ID)" --metric "$(METRIC)" $(if $(FORCE),--force)

serve: $(RUNTIME_STAMP) close-late ## Serve a model over REST on 127.0.0.1, behind a key (MODEL=champion, PORT=5001, MAX_BODY_MB=16, SERVE_TOKEN)
	@[ "$(origin SERVE_TOKEN)" != "command line" ] || { echo "error: SERVE_TOKEN on make's command line shows to every account (ps); choose a new one and export it instead: export SERVE_TOKEN=..." >&2; exit 2; }
	@exec $(PY) -m src.service.serve --model "$(MODEL)" --port $(if $(filter command line environment,$(origin PORT)),$(PORT),5001) --max-body-mb "$(MAX_BODY_MB)"

predict: $(RUNTIME_STAMP) close-late ## Score a CSV or Parquet file in batches, its columns kept (INPUT=... OUTPUT=... MODEL=champion KEEP=id,...)
	@[ -n "$$INPUT" ] && [ -n "$$OUTPUT" ] || { echo 'error: name the files: make predict INPUT=new.parquet OUTPUT=scored.parquet' >&2; exit 2; }
	@$(PY) -m src.service.predict --input "$$INPUT" --output "$$OUTPUT" --model "$(MODEL)" --keep "$(KEEP)"

drift: $(RUNTIME_STAMP) close-late ## Compare a new batch with the champion's training data: reports/drift.{json,html} (NEW=... REF=<tag or file>)
	@[ -n "$$NEW" ] || { echo 'error: name the new batch: make drift NEW=data/new.parquet [REF=v1]' >&2; exit 2; }
	@$(PY) -m src.service.drift --new "$$NEW" --ref "$(REF)"

retrain: $(RUNTIME_STAMP) close-late dvc-setup ## Check a labelled batch, version it, retrain from the champion, promote only if better (BATCH=...)
	@[ -n "$$BATCH" ] || { echo 'error: name the labelled batch: make retrain BATCH=data/new-labelled.csv' >&2; exit 2; }
	@$(PY) -m src.service.retrain --batch "$$BATCH"

verify: $(RUNTIME_STAMP) close-late ## Re-hash the DVC cache objects dvc.lock references; name any corrupted (REV=<tag>)
	@$(PY) -m src.versions verify --rev "$(REV)"

checkout: $(RUNTIME_STAMP) close-late dvc-setup ## Restore the code, params and data of an MLflow run on a new branch (RUN_ID=...)
	@[ -n "$$RUN_ID" ] || { echo 'error: name the run: make checkout RUN_ID=<MLflow run id>' >&2; exit 2; }
	@$(PY) -m src.versions checkout --run-id "$$RUN_ID"

pull: $(RUNTIME_STAMP) close-late dvc-setup ## Get the data dvc.lock records from the DVC remote (after a clone or `git checkout v1`)
	@$(DVC) pull

history: $(RUNTIME_STAMP) close-late ## List the data versions (tags) and the runs trained on each
	@$(PY) -m src.versions history

gc: $(RUNTIME_STAMP) close-late ## Free the local DVC cache of what no tag, branch, commit or the workspace uses; never the remote
	@exec $(PY) -m src.versions gc $(if $(FORCE),--force)

docs: $(DEV_STAMP) close-late ## Build the docs site into site/ (strict), with the latest results
	@$(PY) -m src.report.docs_site
	@"$(BIN)/mkdocs" build --strict --quiet
	@echo "Built site/ (open site/index.html, or make docs-serve)"

docs-serve: $(DEV_STAMP) close-late ## Serve the docs site live on http://127.0.0.1:8000 (DOCS_PORT=...)
	@$(PY) -m src.report.docs_site
	@"$(BIN)/mkdocs" serve --dev-addr 127.0.0.1:$(DOCS_PORT)

test: $(DEV_STAMP) ## Run the unit and integration tests (PYTEST_ARGS=...)
	$(PY) -m pytest $(PYTEST_ARGS)

new: $(RUNTIME_STAMP) ## Start your own project from this template, and run its quick tests (DEST=../my-project NAME="My project")
	@[ -n "$$DEST" ] && [ -n "$$NAME" ] || { echo 'error: say where and what: make new DEST=../my-project NAME="My project"' >&2; exit 2; }
	@$(PY) -m src.new_project --dest "$$DEST" --name "$$NAME"

hooks: $(DEV_STAMP) ## Install the git hooks of .pre-commit-config.yaml: ruff, YAML and end-of-file checks, DVC's hooks
	@"$(BIN)/pre-commit" install

lint: $(DEV_STAMP) ## Check the code: ruff (lint, format), deptry (imports declared), import-linter (the layers)
	"$(BIN)/ruff" check .
	"$(BIN)/ruff" format --check .
	"$(BIN)/deptry" .
	"$(BIN)/lint-imports"

format: $(DEV_STAMP) ## Format the code and fix what ruff can
	"$(BIN)/ruff" format .
	"$(BIN)/ruff" check --fix .

clean: ## Remove pipeline outputs and build files (keeps data/external, the MLflow store and the DVC cache)
	git clean -fdX -- data/raw data/processed models reports
	rm -rf site docs/generated .pytest_cache .ruff_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +

clean-mlflow: ## Delete the MLflow store, every run in it (CONFIRM=1)
	@case "$(MLFLOW_TRACKING_URI)" in http://*|https://*) echo "error: the runs live on the tracking server $(MLFLOW_TRACKING_URI); delete them there (MLflow UI or API), not here" >&2; exit 2;; esac
	@if [ "$(CONFIRM)" != 1 ]; then echo "error: this deletes mlflow.db and mlruns/ with every run; run 'make clean-mlflow CONFIRM=1'" >&2; exit 2; fi
	rm -rf mlflow.db mlruns

venv: $(RUNTIME_STAMP) ## Create .venv holding exactly requirements.txt (the runtime lock)

venv-dev: $(DEV_STAMP) ## Create .venv holding exactly requirements-dev.txt (runtime, team stack, tests, lint, docs)

# uv installs a lock in seconds: make bootstraps the version requirements.txt pins with pip
# (one small wheel), then `uv pip sync` makes the venv hold exactly the lock, nothing left
# over, compiled to bytecode as pip does: every stage is a process, and where Python may not
# write bytecode (PYTHONDONTWRITEBYTECODE, as many container images set) each process would
# otherwise compile pandas and scikit-learn again, seconds each time.
# If uv cannot be installed, pip installs the same lock, hashes checked.
UV_VERSION := $(shell sed -n 's/^uv==\([0-9.]*\).*/\1/p' requirements.txt)
define sync_lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'" >&2; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv "$(VENV_DIR)"
	@echo "Installing $(1) into $(VENV_DIR)..."
	@if "$(BIN)/uv" --version 2>/dev/null | grep -qx "uv $(UV_VERSION)" \
	    || $(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)" >/dev/null 2>&1; then \
	  "$(BIN)/uv" pip sync --quiet --compile-bytecode --python $(PY) --require-hashes $(1); \
	else \
	  echo "pip could not install uv==$(UV_VERSION); installing $(1) with pip instead, hashes checked (slower)" >&2; \
	  $(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r $(1); \
	fi
endef

$(RUNTIME_STAMP):
	$(call sync_lock,requirements.txt)
	@rm -f "$(VENV_DIR)"/.installed-*
	@touch $@

$(TEAM_STAMP):
	$(call sync_lock,requirements-team.txt)
	@rm -f "$(VENV_DIR)"/.installed-*
	@touch $(RUNTIME_STAMP) $@

$(DEV_STAMP):
	$(call sync_lock,requirements-dev.txt)
	@rm -f "$(VENV_DIR)"/.installed-*
	@touch $(RUNTIME_STAMP) $(TEAM_STAMP) $@

lock: ## Pin every package of the .in files into the .txt locks, with hashes (UPGRADE=1: newer releases)
	@test -x $(PY) || $(PYTHON) -m venv "$(VENV_DIR)"
	@"$(BIN)/uv" --version 2>/dev/null | grep -qx "uv $(UV_VERSION)" \
	  || $(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@inputs=; constraint=; for name in requirements requirements-team requirements-dev; do \
	  inputs="$$inputs $$name.in"; \
	  "$(BIN)/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	    --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) $$constraint $$inputs -o $$name.txt || exit 1; \
	  echo "locked$$inputs -> $$name.txt ($$(grep -c '^[A-Za-z]' $$name.txt) packages)"; \
	  constraint="--constraint $$name.txt"; \
	done

# A pipeline that could not reach the tracking server as it ended kept its outcome in
# $(PIPELINE_RECORDS_DIR)/<run>/outcome.json: the first target that reaches it records the run late.
# In team mode the targets that use the tracking server first check that it answers (within 3 s).
TRACKING_TARGETS := pipeline report sweep bench tag promote serve predict drift retrain checkout history docs
REACH := $(if $(and $(filter http://% https://%,$(MLFLOW_TRACKING_URI)),$(filter $(TRACKING_TARGETS),$(MAKECMDGOALS))),--reach)
close-late: $(RUNTIME_STAMP)
	@if [ -n "$(REACH)" ] || ls "$(PIPELINE_RECORDS_DIR)"/*/outcome.json >/dev/null 2>&1; then \
	  $(PY) -m src.pipeline.late --command "make $(firstword $(MAKECMDGOALS))" $(REACH); fi

# The default DVC remote (a local folder, or team.env's S3 bucket) and an optional shared cache, in .dvc/config.local.
dvc-setup: $(RUNTIME_STAMP)
	@$(PY) -m src.versions.remote --name "$(DVC_REMOTE)" --url "$(DVC_REMOTE_URL)" --cache-dir "$(DVC_CACHE_DIR)"

team-up: $(TEAM_STAMP) ## Start a trial team stack here (PostgreSQL, S3, MLflow with logins) and write team.env
	@$(PY) -m src.team up --project-name "$(PROJECT_NAME)"

team-down: ## Stop the team stack, by process id (PostgreSQL's data stays in .team/)
	@if [ -x $(PY) ]; then $(PY) -m src.team down; fi

team-status: ## Show each part of the team stack, its process and the memory it holds
	@$(PY) -m src.team status

cluster-up: $(RUNTIME_STAMP) ## Start a trial Dask cluster on 127.0.0.1, mutual TLS, and write it and its client certificate into team.env (WORKERS=2)
	@$(PY) -m src.team cluster-up --workers "$(WORKERS)"

cluster-down: ## Stop the trial Dask cluster, by process id, and take it out of team.env
	@if [ -x $(PY) ]; then $(PY) -m src.team cluster-down; fi

cluster-status: ## Show the trial Dask cluster: each process, its memory, the workers joined
	@$(PY) -m src.team cluster-status

worker: $(RUNTIME_STAMP) ## Join this machine to a team's Dask cluster with team.env's certificate, in the foreground (SCHEDULER=tls://host:8786)
	@[ -n "$$SCHEDULER" ] || { echo 'error: name the scheduler: make worker SCHEDULER=tls://scheduler.example.org:8786' >&2; exit 2; }
	@exec $(PY) -m src.team worker --scheduler "$$SCHEDULER"

team-user: $(RUNTIME_STAMP) ## Create a user on the tracking server with a right on the experiment (NAME=... ROLE=read|edit|manage)
	@[ "$(origin PASSWORD)" != "command line" ] || { echo "error: PASSWORD on make's command line shows to every account (ps); choose another and export it instead, or let make team-user ask for it" >&2; exit 2; }
	@[ -n "$$NAME" ] && [ -n "$$ROLE" ] || { echo 'error: name the user and its role: make team-user NAME=alice ROLE=read|edit|manage' >&2; exit 2; }
	@$(PY) -m src.team user --name "$$NAME" --role "$$ROLE"
