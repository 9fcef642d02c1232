#!/usr/bin/env bash
# Prepare third_party/ (git-ignored) for a GPU machine that has Python with torch and CUDA but
# no internet: co-tracker's code (hubconf.py and the cotracker package, from a clone you have)
# and, as wheels, the packages mosic needs that such a machine lacks. Run where pip works, from
# the repo root:   bash bench/gpu_prepare.sh CO_TRACKER_CLONE [PYTHON_VERSION (3.12)]
# then carry third_party/ to the GPU machine with the working tree (docs/benchmarks.md).
set -euo pipefail
clone=${1:?usage: bash bench/gpu_prepare.sh CO_TRACKER_CLONE [PYTHON_VERSION]}
python_version=${2:-3.12}
if [[ ! -f "$clone/hubconf.py" || ! -d "$clone/cotracker" ]]; then
    echo "gpu_prepare.sh: $clone is not a co-tracker clone (no hubconf.py or cotracker/)" >&2
    exit 2
fi
rm -rf third_party/co-tracker third_party/wheels
mkdir -p third_party/co-tracker third_party/wheels
cp -r "$clone/hubconf.py" "$clone/cotracker" third_party/co-tracker/
git -C "$clone" rev-parse HEAD >third_party/co-tracker/COMMIT 2>/dev/null || echo unknown >third_party/co-tracker/COMMIT
# The store and the decoder (the GPU image has torch, numpy, OpenCV, Pillow, typer, rich, timm,
# PyYAML, nvidia-ml-py): the versions pinned in constraints.txt.
for name in zarr numcodecs google-crc32c donfig av; do
    pin=$(grep -i "^$name==" constraints.txt)
    python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
        --python-version "$python_version" --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d third_party/wheels "$pin"
done
echo "third_party/: co-tracker $(cat third_party/co-tracker/COMMIT), $(ls third_party/wheels | wc -l) wheels, $(du -sh third_party | cut -f1)"
