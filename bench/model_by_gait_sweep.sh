#!/usr/bin/env bash
# bench/model_by_gait.py on a running sweep's world models, on the GPU machine's CPU cores, snapshot by snapshot in
# parallel (each a process of its own: the bench is single-threaded, and a 5M world model's 12 gradient checks of
# one snapshot take a minute or two). Start it detached beside `bench/gpu_grid.sh sweep` and it waits for each file:
#
#   setsid nohup bash bench/model_by_gait_sweep.sh WORK OUT_DIR PRETRAINED_POINT POINT... > LOG 2>&1 &
#
# - WORK/PRETRAINED_POINT/world_model.pt (the world model pretrained on the offline data) as soon as it is written,
#   `JOBS_DURING` processes at a time (the training stacks need the other cores to launch their kernels);
# - WORK/POINT/seed<SEED>/final.pt of every POINT (its world model after the run's online training) once all of them
#   exist, `JOBS_AFTER` at a time.
# OUT_DIR/<label>-<snapshot>.json per process (label: `pretrained` or the point), then OUT_DIR/<label>.json: every
# snapshot's rows in one record. Each process compiles Warp's CPU kernels into a cache of its own (concurrent
# compiles into one cache are not safe to rely on). Paths must hold no spaces.
set -uo pipefail
cd "$(dirname "$0")/.."
work=$1 out=$2 pretrained=$3
shift 3
SEED=${SEED:-0} SIZE=${SIZE:-5M} JOBS_DURING=${JOBS_DURING:-6} JOBS_AFTER=${JOBS_AFTER:-14} WAIT_LIMIT=${WAIT_LIMIT:-2400}
mkdir -p "$out"
dataset=results/ant/offline/dataset.h5

wait_for() {  # FILE...: until every one exists (at most WAIT_LIMIT seconds in all)
  local waited=0 file
  for file in "$@"; do
    while [ ! -f "$file" ] && [ "$waited" -lt "$WAIT_LIMIT" ]; do sleep 10; waited=$((waited + 10)); done
    [ -f "$file" ] || { echo "gave up waiting for $file"; return 1; }
  done
}

one() {  # LABEL CONFIG WORLD_MODEL SNAPSHOT: one process of bench/model_by_gait.py
  WARP_CACHE_PATH=/tmp/warp-gait-$4 python3 bench/model_by_gait.py --config "$2" --size "$SIZE" --world-model "$3" \
    --dataset "$dataset" --reference-dir "$reference" --snapshots "$4" --out "$out/$1-$4.json" > "$out/$1-$4.log" 2>&1
}
export -f one
export dataset out SIZE

merge() {  # LABEL: its snapshots' records -> OUT_DIR/LABEL.json
  python3 -c '
import json, sys
from pathlib import Path

out, label = Path(sys.argv[1]), sys.argv[2]
parts = sorted(out.glob(f"{label}-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
records = [json.loads(p.read_text()) for p in parts]
merged = {**records[0], "rows": [row for record in records for row in record["rows"]]} if records else {"rows": []}
(out / f"{label}.json").write_text(json.dumps(merged, indent=2) + "\n")
rows = merged["rows"]
print(f"{label}: {len(rows)} snapshots")
' "$out" "$1"
}

measure() {  # JOBS "LABEL CONFIG WORLD_MODEL"...: every snapshot of the dataset for every model, JOBS at a time
  local jobs=$1 model k count
  shift
  count=$(python3 -c "import json, h5py, sys; print(len(json.loads(h5py.File(sys.argv[1]).attrs['snapshots'])))" \
    "$dataset")
  for model in "$@"; do
    for k in $(seq 0 $((count - 1))); do echo "$model $k"; done
  done | xargs -P "$jobs" -L 1 bash -c 'one "$@"' _
  for model in "$@"; do merge "${model%% *}"; done
}

wait_for "$dataset" "$work/$pretrained/world_model.pt" || exit 1
reference=$(ls -d results/ant/reference/seed* | head -n 1)
export reference
sleep 5  # io.torch_save renames the file into place whole; the point's config.yaml was written before pretraining
measure "$JOBS_DURING" "pretrained $work/$pretrained/config.yaml $work/$pretrained/world_model.pt"
finals=() models=()
for point in "$@"; do
  finals+=("$work/$point/seed$SEED/final.pt")
  models+=("$point $work/$point/config.yaml $work/$point/seed$SEED/final.pt")
done
wait_for "${finals[@]}" || exit 1
measure "$JOBS_AFTER" "${models[@]}"
echo "done"
