#!/usr/bin/env bash
# The real pipeline on a lent GPU machine (no package registry there): a config's whole DAG through
# profiles/local on every GPU of the machine, started detached so that it outlives the call that starts it.
#
#   bash bench/gpu_grid.sh start CONFIG [JOBS_PER_GPU]   # after `source .wN/setup_on_device.sh` (wheels installed)
#   bash bench/gpu_grid.sh sweep SWEEP.yaml [JOBS_PER_GPU] # deciding runs side by side (bench/pwm_sweep.py)
#   bash bench/gpu_grid.sh ppo FILE                       # PPO reference variants side by side (reference_sweep.py)
#   bash bench/gpu_grid.sh ppo_reference NAME             # then variant NAME as the reference of the next `sweep`
#   bash bench/gpu_grid.sh status                         # progress: jobs done, last lines of the running logs
#   bash bench/gpu_grid.sh wait_job [SECONDS]             # until the started job exits (at most SECONDS, 540)
#   bash bench/gpu_grid.sh pack OUT_DIR                   # results/ tables, figures, curves and logs -> one tarball
#   bash bench/gpu_grid.sh kernel-cache OUT_DIR           # compiled Warp kernels -> OUT_DIR/warp.tar.gz
#
# The wheels: `bash ../shared/gpu/prepare_wheels.sh`, then `bash bench/restage_wheels.sh` (a call carries the tracked
# tree too, and prepare_wheels.sh's 60 MiB folders no longer fit beside it), then `bash bench/stage_extra_wheels.sh`
# (`.whl`: rsl-rl-lib and what it imports): one call per folder, the last with `.whl` (and `.kernelcache`, `.carry`
# where a session has them). Make the calls, and every call after them, back to back in one batch: a machine is
# given back 30 s after a call ends, and a bare one starts from nothing (twice on 2026-12-01, 8 device minutes lost).
# But make the first call alone, and the batch only once it has a machine: where none can be started, that call costs
# 90-180 s and every later call of its batch is refused at 15 s (2026-12-06, night: ten failed starts and twelve
# refused calls took 1,261 of the session's 1,800 device seconds, and no machine came). `status` first: while it
# shows `none_now`, do not call at all.
# The pinned references and kernels: bench/carried/ (tracked, README.md there), used where `.carry/` and
# `.kernelcache/` (ignored, of one session) have none.
# A started job reads its code from the checkout whenever a stage starts a process (pretrain, train, held out), and
# every later call brings the session's tree into the checkout again: to change code on this machine while a job
# runs, start the job from a copy (`cp -a . /tmp/run && cd /tmp/run && bash bench/gpu_grid.sh sweep ...`; then
# `status`, `wait_job` and `pack` from /tmp/run too), as docs/results/2026-12-04-flow-seeds34 was run.
# A fresh machine spends ~2 minutes compiling the Ant's Warp kernels (of a session's 30 device minutes).
# `kernel-cache` saves Warp's kernel cache as one tarball (9 MB, 1.9 MB compressed, after the short grid); put it in
# `.kernelcache/` of the checkout (ignored by git: `mkdir -p .kernelcache && cp warp.tar.gz .kernelcache/`) and carry
# it with the last wheel folder (`carry [".w7", ".whl", ".kernelcache"]` after restage_wheels.sh). `setup`
# extracts it where Warp looks (WARP_CACHE_PATH), so only kernels that changed compile again. inductor's cache of
# the `run.compile` graphs (~20-35 s per train / pretrain process) stays behind: 583 MB after the short grid, 90 MB
# compressed, more than a call may carry.
# A call carries at most 64 MiB with the tracked tree (21 MiB on 2026-12-04, when restage_wheels.sh's folders went
# from 36 to 30 MiB, seven of them, the last 5 MiB): the last folder + .whl (7) + .carry (8.5, or ~21 with
# inductor.tar.gz) fit beside it. Where they would not, carry `.carry` in a call of its own before the last one,
# with `mkdir -p /tmp/carry && cp .carry/* /tmp/carry/`: `setup` and `carry_reference` take each archive from
# `.carry/`, else from /tmp/carry.
# `pack` also writes reference.tar.gz: the PPO reference runs (policy, snapshots, tables, settings; no resumable
# state, no evaluation), ~3 MB. Put it in `.carry/` of the checkout (ignored by git) and carry it with the last wheel
# folder: `start` and `sweep` put every carried run whose settings equal the config's back into results/, where
# Snakemake, which has no record of it, leaves it as it is. That spares the next machine the reference's 3 minutes
# of training, and every run of that session learns from the same reference as the last one's. A run of other
# settings is removed and trains again.
# `pack` also writes inductor.tar.gz, the compiled `run.compile` graphs of this machine's processes (torch inductor's
# FX-graph and Triton caches, TORCHINDUCTOR_CACHE_DIR below), when it is at most INDUCTOR_CARRY_MIB compressed
# (what fits beside the last wheel folder in one call). Put it in `.carry/` as well: `setup` unpacks it where
# inductor looks, so the train and pretrain processes of the next machine (same card, torch and code) load their
# graphs instead of compiling them, which took 81 s of a 3-seed flow train's 114 s start
# (docs/results/2026-12-01-flow-10M). A graph whose code or
# settings changed compiles again; an archive that is stale costs only its unpacking.
set -uo pipefail
cd "$(dirname "$0")/.."
GRID=${GRID:-/tmp/grid}
PPO=${PPO:-/tmp/ppo}  # bench/reference_sweep.py's results (`ppo`, `ppo_reference`, `pack`)
export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
export GIT_PYTHON_REFRESH=quiet  # rsl-rl imports GitPython, which otherwise fails without a git executable
KERNELS=/tmp/kernelcache  # Warp's kernel cache, which every job below inherits (see kernel-cache above)
export WARP_CACHE_PATH=$KERNELS/warp
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor  # inductor's compiled graphs, which every job inherits (see the top)
INDUCTOR_CARRY_MIB=12
PINNED=bench/carried  # tracked: the pinned PPO references and Warp's kernels (bench/carried/README.md)
CARRIED=${CARRIED:-/tmp/carry}  # .carry/ copied here by a call of its own where it does not fit beside the wheels (top)

setup() {
  mkdir -p "$GRID" /tmp/site/bin
  if compgen -G ".whl/*.whl" >/dev/null; then
    # Into a folder of their own, then merged: `pip --target --upgrade` replaces every top-level folder a wheel
    # brings, bin/ included, and a wheel with a console script (tensorboard's) took snakemake's away with it.
    rm -rf /tmp/site-extra
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-extra .whl/*.whl
    cp -a -n /tmp/site-extra/. /tmp/site/
  fi
  printf '#!/bin/sh\nexec python3 -m flow_mbpo_pwm.cli "$@"\n' > /tmp/site/bin/flow-mbpo-pwm
  chmod +x /tmp/site/bin/flow-mbpo-pwm
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv | tee "$GRID/card.txt"
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  # A second `setup` on the machine (e.g. `sweep` after `ppo`) finds the first one's daemon: keep using it. (On
  # 2026-12-03 `-d` refused, "already running", and the sweep fell back to time-slicing.) By its command line:
  # `pgrep -x` matches the 15-character process name only, which this name is longer than. Seen on the GPU the same
  # night: a second `sweep` on the machine kept MPS on (docs/results/2026-12-03-det-seeds34).
  if command -v nvidia-cuda-mps-control >/dev/null \
     && { pgrep -f '(^|/)nvidia-cuda-mps-control -d' >/dev/null || nvidia-cuda-mps-control -d 2>>"$GRID/mps.txt"; } \
     && timeout 60 python3 -c "import torch; print(torch.ones(2, device='cuda').sum().item())" >>"$GRID/mps.txt" 2>&1; then
    echo "MPS on" | tee -a "$GRID/mps.txt"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS off (time-slicing)" | tee -a "$GRID/mps.txt"
  fi
  # Caches from an earlier machine (see the top), each unpacked once per machine.
  carry_cache "$(first_of .kernelcache/warp.tar.gz "$PINNED/warp.tar.gz")" "$KERNELS/warp" "$KERNELS/.carried" "Warp kernels"
  carry_cache "$(first_of .carry/inductor.tar.gz "$CARRIED/inductor.tar.gz")" "$TORCHINDUCTOR_CACHE_DIR" "$TORCHINDUCTOR_CACHE_DIR/.carried" "compiled graphs"
  # One compile of every Warp kernel the jobs use, instead of one per job.
  ( time python3 - <<'PY'
import torch
import rsl_rl.algorithms  # noqa: F401 -- fails here, not inside a job, if a wheel is missing
from flow_mbpo_pwm import envs
for deterministic in (False, True):  # the diagnostics' gradient check runs a deterministic Ant
    env = envs.make("ant", 4, "cuda", 0, deterministic=deterministic)
    env.reset()
    env.step(torch.zeros(4, 8, device="cuda"))
torch.cuda.synchronize()
print("warp kernels ready")
PY
  ) >> "$GRID/warm.txt" 2>&1
}

first_of() {  # PATH...: the first of these files that exists (nothing if none does)
  local file
  for file in "$@"; do [ -f "$file" ] && { echo "$file"; return 0; }; done
  return 0
}

carry_cache() {  # ARCHIVE DIR MARK LABEL: unpack a carried cache archive into DIR, unless MARK says it was
  local archive=$1 dir=$2 mark=$3 label=$4
  if [ -n "$archive" ] && [ -f "$archive" ] && [ ! -e "$mark" ]; then
    mkdir -p "$dir" && tar -xzf "$archive" -C "$dir" && touch "$mark" \
      && echo "$label carried in: $(du -sh "$dir" | cut -f1)" | tee -a "$GRID/warm.txt"
  fi
}

carry_reference() {  # CONFIG: reference runs packed on an earlier machine (see the top), each used only where it
  # checks out. Every archive is tried, the session's first: a run one of them put into results/ is kept there.
  local config=$1 archive
  for archive in .carry/reference.tar.gz "$CARRIED/reference.tar.gz" "$PINNED"/reference*.tar.gz; do
    [ -f "$archive" ] && carry_reference_from "$config" "$archive"
  done
  return 0
}

carry_reference_from() {  # CONFIG ARCHIVE
  local config=$1 archive=$2 unpacked
  mkdir -p "$GRID"
  unpacked=$(mktemp -d)
  # Unpacked aside: a run reaches results/ only once its settings are checked, and never over a run already there.
  echo "carried reference: $archive" | tee -a "$GRID/warm.txt"
  if ! tar -xzf "$archive" -C "$unpacked"; then
    echo "carried reference: $archive cannot be unpacked; the reference trains here" | tee -a "$GRID/warm.txt"
  elif ! python3 - "$config" "$unpacked" <<'PY' 2>&1 | tee -a "$GRID/warm.txt"; then
import pathlib, shutil, sys

import yaml

from flow_mbpo_pwm.config import load_experiment
from flow_mbpo_pwm.reference import reference_settings, settings_defaults
from flow_mbpo_pwm.train_state import config_differences

experiment, unpacked = load_experiment(sys.argv[1]), pathlib.Path(sys.argv[2])
for run in sorted(unpacked.glob("results/*/reference/seed*")):
    target = pathlib.Path(run.relative_to(unpacked))
    task, seed = run.parent.parent.name, int(run.name.removeprefix("seed"))
    saved = run / "work" / "settings.yaml"
    if target.exists():
        why = "results/ has this run already (kept)"
    elif not saved.is_file() or not (run / "train_summary.json").is_file():
        why = "not a finished run with its settings"
    elif task not in experiment.tasks or seed not in experiment.seeds:
        why = f"task {task} / seed {seed} is not in {sys.argv[1]}"
    else:
        requested = reference_settings(experiment, task, seed)
        diffs = config_differences(yaml.safe_load(saved.read_text()), requested, settings_defaults())
        why = f"other settings ({diffs[:3]})" if diffs else ""
    if why:
        print(f"carried reference {target}: {why}; not used")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run), str(target))
        print(f"carried reference {target}: the config's settings; used as it is")
PY
    echo "carried reference: the check failed (above); runs not yet checked were not used" | tee -a "$GRID/warm.txt"
  fi
  rm -rf "$unpacked"
}

start() {
  local config=$1 per_gpu=${2:-3} gpus
  setup
  carry_reference "$config"
  gpus=$(nvidia-smi -L | wc -l)
  export FLOW_MBPO_PWM_JOBS_PER_GPU=$per_gpu
  setsid nohup snakemake all --profile profiles/local --configfile "$config" --resources gpu=$((gpus * per_gpu)) \
    --cores "$(nproc)" > "$GRID/snakemake.log" 2>&1 < /dev/null &
  echo $! > "$GRID/job.pid"
  echo "started: $config, $gpus GPUs x $per_gpu jobs; log $GRID/snakemake.log"
}

sweep() {  # deciding runs side by side (bench/pwm_sweep.py), k jobs per GPU
  local file=$1 per_gpu=${2:-4}
  setup
  # Checked against the config the sweep derives from: its base with the sweep's own `config:` (e.g. a reference of
  # other settings, which a carried reference of the base's must not stand in for).
  python3 bench/pwm_sweep.py base "$file" "$GRID/sweep-base.yaml" || return 1
  carry_reference "$GRID/sweep-base.yaml"
  export FLOW_MBPO_PWM_JOBS_PER_GPU=$per_gpu
  setsid nohup python3 bench/pwm_sweep.py run "$file" > "$GRID/sweep.log" 2>&1 < /dev/null &
  echo $! > "$GRID/job.pid"
  echo "started sweep $file, $per_gpu jobs per GPU; log $GRID/sweep.log"
}

ppo() {  # PPO reference variants side by side (bench/reference_sweep.py), into $PPO (`pack` takes it along)
  local file=$1
  setup
  # Several processes on the machine's cores: a few CPU threads each (their work is on the GPU).
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} setsid nohup python3 bench/reference_sweep.py run "$file" "$PPO" \
    > "$GRID/ppo.log" 2>&1 < /dev/null &  # a log of its own: a `sweep` after it on the machine writes sweep.log
  echo $! > "$GRID/job.pid"
  echo "started PPO variants $file; log $GRID/ppo.log, results $PPO"
}

reference_archive() {  # ARCHIVE [tar options] RUN...: finished reference runs as a carried reference (top): what
  # `collect` and `evaluate` read, and the settings; no resumable state, no evaluation.
  local archive=$1; shift
  tar -czf "$archive" --exclude='*/work/*.pt' --exclude='*/work/snapshots' --exclude='*/eval' "$@"
}

ppo_reference() {  # NAME: variant NAME of the `ppo` run as the carried reference (.carry/reference.tar.gz) of a
  # `sweep` started after it on this machine; used only where its settings equal the sweep's (carry_reference).
  local name=$1
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] && [ -d "$PPO/$name/results" ] \
    || { echo "no PPO variant '$name' in $PPO"; return 1; }
  mkdir -p .carry
  reference_archive .carry/reference.tar.gz -C "$PPO/$name" results \
    && echo "PPO variant $name -> .carry/reference.tar.gz ($(du -h .carry/reference.tar.gz | cut -f1))"
}

wait_job() {  # [SECONDS]: until the started grid or sweep has exited, at most SECONDS (default 540); then its log's end
  # By its pid: a `pgrep -f` on the command line matches the calling shell too, and waited out a whole call.
  local limit=${1:-540} pid waited=0
  pid=$(cat "$GRID/job.pid" 2>/dev/null) || { echo "no started job ($GRID/job.pid)"; return 1; }
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$limit" ]; do sleep 5; waited=$((waited + 5)); done
  if kill -0 "$pid" 2>/dev/null; then echo "still running after ${limit} s"; else echo "exited"; fi
  tail -n 5 "$GRID/ppo.log" "$GRID/sweep.log" "$GRID/snakemake.log" 2>/dev/null
}

status() {
  date -u
  grep -E "^\[.*\]$|steps \([0-9]+%\) done|Error|error|Finished job|Nothing to be done|Complete log" "$GRID/snakemake.log" | tail -n 12
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
  for log in $(ls -t logs/*/*/*/*.log logs/*/*/*.log 2>/dev/null | head -n 12); do
    echo "== $log"; tail -n 2 "$log" | cut -c1-300
  done
}

pack() {
  local out=$1
  mkdir -p "$out"
  find results logs benchmarks -type f \( -name '*.csv' -o -name '*.json' -o -name '*.png' -o -name '*.pdf' \
    -o -name '*.log' -o -name '*.tsv' -o -name '*.yaml' \) 2>/dev/null \
    > /tmp/pack-list.txt
  find /tmp/sweep -type f \( -name '*.csv' -o -name '*.json' -o -name '*.log' -o -name '*.yaml' \) \
    -not -path '*/checkpoints/*' 2>/dev/null >> /tmp/pack-list.txt
  find "$PPO" -type f \( -name '*.csv' -o -name '*.json' -o -name '*.log' -o -name '*.yaml' \) \
    2>/dev/null >> /tmp/pack-list.txt
  ls "$GRID"/*.txt "$GRID"/*.log 2>/dev/null >> /tmp/pack-list.txt
  tar -czf "$out/grid.tar.gz" -T /tmp/pack-list.txt
  # The finished reference runs, for `.carry/` of a later session (top): what `collect` and `evaluate` read, and the
  # settings. (An unfinished one stays behind: without its resumable state it could not continue.)
  local finished
  finished=$(ls -d results/*/reference/seed* 2>/dev/null | while read -r run; do
    [ -f "$run/train_summary.json" ] && echo "$run"; done)
  if [ -n "$finished" ]; then
    # shellcheck disable=SC2086  # one path per word; run folders have no spaces (the workflow's wildcards)
    reference_archive "$out/reference.tar.gz" $finished
  fi
  if [ -d "$TORCHINDUCTOR_CACHE_DIR" ]; then  # the compiled graphs, for `.carry/` when small enough (top)
    tar -czf /tmp/inductor.tar.gz --exclude=.carried -C "$TORCHINDUCTOR_CACHE_DIR" .
    local mib
    mib=$(( ($(stat -c %s /tmp/inductor.tar.gz) + 1048575) / 1048576 ))
    if [ "$mib" -le "$INDUCTOR_CARRY_MIB" ]; then
      mv /tmp/inductor.tar.gz "$out/inductor.tar.gz"
    else
      echo "compiled graphs: ${mib} MiB compressed, over the ${INDUCTOR_CARRY_MIB} MiB one call can carry; not packed"
      rm -f /tmp/inductor.tar.gz
    fi
  fi
  ls -la "$out"
}

kernel_cache() {  # Warp's compiled kernels, for `.kernelcache/` of a later session (top)
  local out=$1
  mkdir -p "$out" "$WARP_CACHE_PATH"
  tar -czf "$out/warp.tar.gz" -C "$WARP_CACHE_PATH" .
  ls -la "$out/warp.tar.gz"
}

case "${1:-}" in
  kernel-cache) shift; kernel_cache "$@" ;;
  *) "$@" ;;
esac
