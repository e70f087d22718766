"""bench/clone_drift.py end to end on a clone of the pinned 5.3k PPO reference (tiny world model, short CPU
episodes): nothing has drifted before the first world-model step, the encoder and so the held actor's action move
once the world model trains on, and each row plays the held actor."""

import json
import math
import subprocess
import sys

from bench_helpers import ROOT, TINY_CLONE_EXPERIMENT, clone_on_a_fresh_world_model

# the world model trains 2 steps per measured chunk
EXPERIMENT = {**TINY_CLONE_EXPERIMENT,
              "train": {"pwm": {**TINY_CLONE_EXPERIMENT["train"]["pwm"], "wm_steps": 2}}}  # fmt: skip


def test_clone_drift_measures_the_held_actor_as_the_world_model_trains_on(tmp_path):
    paths = clone_on_a_fresh_world_model(tmp_path, EXPERIMENT)
    out = tmp_path / "drift.json"
    args = ["--config", str(paths["config"]), "--size", "tiny", "--world-model", str(paths["world_model"]),
            "--dataset", str(paths["dataset"]), "--actor", str(paths["actor"]), "--reference-policy",
            str(paths["reference_policy"]), "--at", "0", "3", "--envs", "2", "--sample-every", "5",
            "--out", str(out)]  # fmt: skip
    subprocess.run([sys.executable, "bench/clone_drift.py", *args], cwd=ROOT, check=True)
    start, moved = json.loads(out.read_text())["rows"]
    assert (start["world_model_steps"], moved["world_model_steps"]) == (0, 3)
    assert start["input_drift"] == 0.0 and start["action_drift"] == 0.0
    assert moved["input_drift"] > 0.0 and moved["action_drift"] > 0.0  # the encoder trained, the actor held
    for row in (start, moved):
        assert row["return_mean"] > 0 and math.isfinite(row["reference_action_error"])
        assert 0 <= row["falls"] <= 2


def test_clone_drift_names_its_missing_files_before_any_work(tmp_path):
    missing = tmp_path / "none.pt"
    args = ["--config", "config/smoke.yaml", "--world-model", str(missing), "--dataset", str(missing),
            "--actor", str(missing), "--reference-policy", str(missing), "--out", str(tmp_path / "x.json")]  # fmt: skip
    result = subprocess.run([sys.executable, "bench/clone_drift.py", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "no such file" in result.stderr and "none.pt" in result.stderr
