# Every target creates the environment it needs when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mosic-installed
DEMO_DIR ?= runs/demo
COTRACKER ?= third_party/co-tracker

.PHONY: test lint format demo bench bench-gpu reproduce reproduce-mini clean

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

# The CPU benchmarks run torch on one thread unless OMP_NUM_THREADS says otherwise: a tiny ViT
# gains little from two, and on a shared machine two threads ran the start model ~8x slower.
CPU_THREADS ?= 1

demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(CPU_THREADS)} $(BIN)/mosic demo --out $(DEMO_DIR)

reproduce: $(STAMP)
	$(BIN)/mosic reproduce --all configs/paper --work runs/reproduce --output results

reproduce-mini: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(CPU_THREADS)} $(BIN)/mosic reproduce --all configs/mini --work runs/reproduce-mini --output results/mini

bench: $(STAMP)
	$(BIN)/python bench/stage_one.py --out runs/bench
	$(BIN)/python bench/tracker_accuracy.py --out runs/bench
	$(BIN)/python bench/cluster_scaling.py --out runs/bench
	$(BIN)/python bench/clip_loading.py
	$(BIN)/python bench/store_scale.py --out runs/bench
	$(BIN)/python bench/store_s3.py --out runs/bench
	$(BIN)/python bench/train_step.py --out runs/bench
	$(BIN)/python bench/track_grid.py --out runs/bench
	$(BIN)/python bench/teacher_precision.py --out runs/bench
	$(BIN)/python bench/trajbench_headroom.py --out runs/bench

bench-gpu: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,gpu]'
	$(BIN)/python bench/gpu_stage_one.py --cotracker $(COTRACKER) --out runs/bench
	$(BIN)/python bench/gpu_train_step.py --out runs/bench

clean:
	rm -rf $(VENV) runs
