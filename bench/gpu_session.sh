#!/usr/bin/env bash
# One GPU session of benchmarks: stage one (CoTracker3 with random weights, through the whole
# extraction) and the training step, on a machine with Python, torch and CUDA and no internet,
# third_party/ prepared by bench/gpu_prepare.sh. From the repo root:
#     bash bench/gpu_session.sh OUT_DIR
# Writes OUT_DIR/gpu_stage_one.{json,log} and OUT_DIR/gpu_train_step.{json,log}.
set -uo pipefail
out=${1:?usage: bash bench/gpu_session.sh OUT_DIR}
python=${PYTHON:-python3}
mkdir -p "$out"
if compgen -G "third_party/wheels/*.whl" >/dev/null; then
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/mosic-site third_party/wheels/*.whl || exit 2
    export PYTHONPATH="/tmp/mosic-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
if ! "$python" -c "import mosic.pipeline.extract, mosic.pipeline.train"; then
    echo "gpu_session.sh: a package is missing (above): run bench/gpu_prepare.sh where pip works" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
"$python" bench/gpu_stage_one.py --cotracker third_party/co-tracker --out "$out" 2>&1 |
    tee "$out/gpu_stage_one.log" || status=1
"$python" bench/gpu_train_step.py --out "$out" 2>&1 | tee "$out/gpu_train_step.log" || status=1
exit $status
