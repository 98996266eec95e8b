# make demo: plan/profile a real model and print the result.  make test: the test suite.
# make lint: ruff (lint and format check) and mypy (on the files pyproject.toml names).
# Both create .venv on first use and reuse it afterwards.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup frameworks clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,schedule,prune,mtl]'
	touch $(STAMP)

# the frameworks' own configuration code, for the tests that read exports back (they skip
# without it): --no-deps, since their own dependencies pull GPU builds and GBs of packages
FRAMEWORKS := torchtitan tyro docstring-parser typeguard megatron-core hjson py-cpuinfo \
	pydantic pydantic-core annotated-types typing-inspection psutil tqdm msgpack ninja einops

frameworks: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps $(FRAMEWORKS)
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -c constraints.txt --no-deps \
		--no-build-isolation deepspeed

demo: $(STAMP)
	$(BIN)/python -m simplan demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check simplan tests benchmarks models
	$(BIN)/ruff format --check simplan tests benchmarks models
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
