# Every target creates the environment it needs when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mosic-installed
DEMO_DIR ?= runs/demo

.PHONY: test lint format demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check mosic tests bench
	$(BIN)/ruff format --check mosic tests bench

format: $(STAMP)
	$(BIN)/ruff format mosic tests bench
	$(BIN)/ruff check --fix mosic tests bench

test: lint
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python -m mosic.demo --out $(DEMO_DIR)

bench: $(STAMP)
	$(BIN)/python bench/run.py --out runs/bench

clean:
	rm -rf $(VENV) runs
