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
	$(BIN)/mosic synth-videos $(DEMO_DIR)/videos --count 4 --frames 96
	$(BIN)/mosic extract-tracks $(DEMO_DIR)/videos --store $(DEMO_DIR)/tracks.zarr
	$(BIN)/mosic store info $(DEMO_DIR)/tracks.zarr
	$(BIN)/mosic store validate $(DEMO_DIR)/tracks.zarr
	$(BIN)/mosic visualize tracks $(DEMO_DIR)/tracks.zarr synth_000 --step 6 --points 64 \
		-o $(DEMO_DIR)/tracks.png
	$(BIN)/mosic visualize tracks $(DEMO_DIR)/tracks.zarr synth_000 -o $(DEMO_DIR)/tracks.gif

bench: $(STAMP)
	$(BIN)/python bench/stage_one.py --out runs/bench
	$(BIN)/python bench/cluster_scaling.py --out runs/bench
	$(BIN)/python bench/clip_loading.py
	$(BIN)/python bench/train_step.py --out runs/bench

clean:
	rm -rf $(VENV) runs
