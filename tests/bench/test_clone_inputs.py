"""bench/clone_inputs.py runs: PWM's actor fitted to the pinned 5.3k PPO reference (bench/carried/
reference-config.tar.gz) from a world model's latents (as they are, and standardised, layer-normalised or centred)
and from the raw observation, on a small dataset collected from that reference's snapshots, each fit then played on
a few short Ant episodes on the CPU."""

import json
import subprocess
import sys
import tarfile

import torch
import yaml
from bench_helpers import ROOT

from flow_mbpo_pwm import checkpoints
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.cli import main
from flow_mbpo_pwm.config import load_experiment

REFERENCE = "results/ant/reference/seed0"
EXPERIMENT = {"tasks": {"ant": {"num_envs": 4, "episode_length": 30}}, "sizes": ["tiny"],
              "dynamics": {"deterministic": {}}, "seeds": [0], "reference": {"device": "cpu"},
              "collect": {"num_envs": 4, "steps_per_snapshot": 25}}  # fmt: skip


def test_clone_inputs_fits_the_reference_from_each_input_and_plays_it(tmp_path):
    with tarfile.open(ROOT / "bench" / "carried" / "reference-config.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(EXPERIMENT))
    dataset = tmp_path / "dataset.h5"
    assert main(["collect", "--config", str(config_path), "--task", "ant", "--reference-dir",
                 str(tmp_path / REFERENCE), "--out", str(dataset), "--device", "cpu"]) == 0  # fmt: skip
    config = load_experiment(config_path).cell("ant", "tiny", "deterministic", 0)
    checkpoints.save_world_model(tmp_path / "wm.pt", PWM(37, 8, config, "cpu"), {"config": config.to_dict()})

    def run(steps: int) -> dict:
        out = tmp_path / f"clone_{steps}.json"
        args = ["--config", str(config_path), "--size", "tiny", "--world-model", str(tmp_path / "wm.pt"),
                "--dataset", str(dataset), "--reference-policy", str(tmp_path / REFERENCE / "policy.pt"),
                "--steps", str(steps), "--batch", "64", "--envs", "2", "--episode-length", "30",
                "--out", str(out)]  # fmt: skip
        subprocess.run([sys.executable, "bench/clone_inputs.py", *args], cwd=ROOT, check=True)
        return {row["input"]: row for row in json.loads(out.read_text())["rows"]}

    short, longer = run(1), run(150)
    assert list(longer) == ["latent", "untrained", "observation", "latent-standardized", "latent-layernorm",
                            "latent-centred"]  # fmt: skip
    for row in longer.values():
        assert row["falls"] <= 2 and row["return_std"] >= 0 and torch.isfinite(torch.tensor(row["return_mean"]))
    for name in longer:  # fitting longer brings each input's actor closer to the reference on held-back data
        assert longer[name]["held_back_action_error"] < short[name]["held_back_action_error"], name
