#!/usr/bin/env bash
# Stage into `.whl/` (ignored by git) the wheels a lent GPU machine needs beyond ../shared/gpu/prepare_wheels.sh's:
# the PPO reference's rsl-rl-lib and what it imports and the GPU image lacks. bench/gpu_grid.sh `setup` installs
# them; carry `.whl` with the last wheel folder (`carry [".w5", ".whl"]`). ~7 MB.
#
#   bash bench/stage_extra_wheels.sh
#
# Why each is here: rsl-rl-lib (pinned in pyproject.toml) imports tensordict (-> cloudpickle, pyvers), and its
# utils import torch.utils.tensorboard at module level (-> tensorboard -> protobuf, absl-py). GitPython, which it
# imports too, comes with snakemake's wheels. The versions are those a CPU install of pyproject.toml resolved on
# 2026-12-01; all are pure Python or abi3, for the GPU image's Python 3.12.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
WHEELS=(rsl-rl-lib==5.5.1 tensordict==0.15.3 cloudpickle==3.1.3 pyvers==0.2.3 tensorboard==2.21.0 protobuf==7.36.2
        absl-py==2.5.1)
next=$(mktemp -d -p .); trap 'rm -rf "$next"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform any --dest "$next" "${WHEELS[@]}"
[ "$(ls "$next"/*.whl | wc -l)" -eq "${#WHEELS[@]}" ] || { echo "expected ${#WHEELS[@]} wheels, got: $(ls "$next")"; exit 3; }
rm -rf .whl && mv "$next" .whl
du -sh .whl
