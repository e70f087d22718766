"""bench/clone_inputs.py runs: PWM's actor fitted to the pinned 5.3k PPO reference (bench/carried/
reference-config.tar.gz) from a world model's latents (as they are, and standardised, layer-normalised or centred)
and from the raw observation, on a small dataset collected from that reference's snapshots, each fit then played on
a few short Ant episodes on the CPU."""

import json
import subprocess
import sys

import torch
from bench_helpers import CARRIED_REFERENCE, ROOT, collect_from_carried_reference

from flow_mbpo_pwm import checkpoints
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import load_experiment

EXPERIMENT = {"tasks": {"ant": {"num_envs": 4, "episode_length": 30}}, "sizes": ["tiny"],
              "dynamics": {"deterministic": {}}, "seeds": [0], "reference": {"device": "cpu"},
              "collect": {"num_envs": 4, "steps_per_snapshot": 25}}  # fmt: skip


def test_clone_inputs_fits_the_reference_from_each_input_and_plays_it(tmp_path):
    config_path, dataset = collect_from_carried_reference(tmp_path, EXPERIMENT)
    config = load_experiment(config_path).cell("ant", "tiny", "deterministic", 0)
    checkpoints.save_world_model(tmp_path / "wm.pt", PWM(37, 8, config, "cpu"), {"config": config.to_dict()})

    def run(steps: int) -> dict:
        out = tmp_path / f"clone_{steps}.json"
        args = ["--config", str(config_path), "--size", "tiny", "--world-model", str(tmp_path / "wm.pt"),
                "--dataset", str(dataset), "--reference-policy", str(tmp_path / CARRIED_REFERENCE / "policy.pt"),
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
