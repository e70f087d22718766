"""bench/branch_run.py on a tiny held run: the branch carries the changed pwm settings in all three of its config
copies, `train` continues it from the saved epoch with an experiment config carrying the same change, the source is
left as it was, and a bad setting is refused before anything is copied."""

import subprocess
import sys

import yaml
from bench_helpers import HELD_CLONE_EXPERIMENT, ROOT, held_clone_run

from flow_mbpo_pwm import io
from flow_mbpo_pwm.cli import main

EXPERIMENT = HELD_CLONE_EXPERIMENT
PWM = EXPERIMENT["train"]["pwm"]


def branch(*args):
    return subprocess.run([sys.executable, "bench/branch_run.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True)  # fmt: skip


def test_a_branch_continues_from_the_saved_epoch_with_the_changed_settings(tmp_path):
    run, paths = held_clone_run(tmp_path, EXPERIMENT)
    target = tmp_path / "branch"
    result = branch(run, target, "--pwm", "epochs=6", "actor_lr=1.0e-4")
    assert result.returncode == 0, result.stderr
    assert "at epoch 4" in result.stdout
    state = io.torch_load(target / "work" / "state.pt", map_location="cpu")
    for saved in (state["config"], *(yaml.safe_load((target / f).read_text()) for f in ("work/config.yaml",
                                                                                        "config.yaml"))):  # fmt: skip
        assert saved["pwm"]["actor_lr"] == 1.0e-4 and saved["pwm"]["epochs"] == 6
    source = io.torch_load(run / "work" / "state.pt", map_location="cpu")
    assert source["config"]["pwm"]["epochs"] == 4  # the source is as it was

    changed = {**EXPERIMENT, "train": {**EXPERIMENT["train"], "pwm": {**PWM, "epochs": 6, "actor_lr": 1.0e-4}}}
    config = tmp_path / "branched.yaml"
    config.write_text(yaml.safe_dump(changed))
    assert main(["train", "--config", str(config), "--task", "ant", "--size", "tiny", "--dynamics",
                 "deterministic", "--seed", "0", "--device", "cpu", "--run-dir", str(target), "--world-model-init",
                 str(paths["world_model"]), "--actor-init", str(paths["actor"]), "--offline-data",
                 str(paths["dataset"])]) == 0  # fmt: skip
    epochs = [int(line.split(",")[4]) for line in (target / "metrics.csv").read_text().splitlines()[1:]]
    assert max(epochs) == 6


def test_a_bad_setting_or_an_existing_target_is_refused_before_anything_is_copied(tmp_path):
    missing = branch(tmp_path / "none", tmp_path / "b", "--pwm", "actor_lr=1.0e-4")
    assert missing.returncode == 2 and "state.pt" in missing.stderr
    run, _ = held_clone_run(tmp_path, EXPERIMENT)
    unknown = branch(run, tmp_path / "b", "--pwm", "actor_rate=1.0e-4")
    assert unknown.returncode == 2 and "pwm.actor_rate" in unknown.stderr and not (tmp_path / "b").exists()
    invalid = branch(run, tmp_path / "b", "--pwm", "critic_bootstrap=nowhere")
    assert invalid.returncode == 2 and "critic_bootstrap" in invalid.stderr and not (tmp_path / "b").exists()
    exists = branch(run, run, "--pwm", "actor_lr=1.0e-4")
    assert exists.returncode == 2 and "exists already" in exists.stderr
