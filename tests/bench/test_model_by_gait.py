"""bench/model_by_gait.py: its windows of the offline data (unit), and a run on a small dataset collected from the
pinned 5.3k PPO reference's snapshots (bench/carried/reference-config.tar.gz) with a tiny world model pretrained
briefly on it."""

import json
import math
import subprocess
import sys

import pytest
import torch
from bench_helpers import CARRIED_REFERENCE, ROOT, collect_from_carried_reference, load_bench_script

from flow_mbpo_pwm import checkpoints, diagnostics
from flow_mbpo_pwm.algorithms.pwm import PWM, SeedAgent
from flow_mbpo_pwm.cli import main
from flow_mbpo_pwm.config import load_experiment
from flow_mbpo_pwm.data.datasets import read_dataset
from flow_mbpo_pwm.reference_policy import POLICY_GROUP

EXPERIMENT = {"tasks": {"ant": {"num_envs": 4, "episode_length": 30}}, "sizes": ["tiny"],
              "dynamics": {"deterministic": {}}, "seeds": [0], "reference": {"device": "cpu"},
              "collect": {"num_envs": 4, "steps_per_snapshot": 25}, "train": {"pwm": {"horizon": 4}}}  # fmt: skip


def test_windows_start_every_stride_steps_and_leave_out_those_that_reach_a_termination():
    gait = load_bench_script("model_by_gait")
    streams, steps = 3, 10
    rewards = torch.arange(streams * steps, dtype=torch.float32).view(streams, steps)
    terminated = torch.zeros(streams, steps, dtype=torch.bool)
    terminated[1, 5] = True  # stream 1 ends at step 5: its windows reaching step 5 or later are left out
    data = {"observations": rewards.unsqueeze(-1).repeat(1, 1, 2), "actions": rewards.unsqueeze(-1),
            "rewards": rewards, "terminated": terminated}  # fmt: skip
    first, obs, actions, window_rewards = gait.windows(data, slice(0, streams), horizon=4, stride=3)
    # starts 0, 3, 6 of every stream (6 + 4 = 10 fits); stream 1 keeps only start 0 (steps 0-3)
    assert window_rewards.tolist() == [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23], [3, 4, 5, 6],
                                       [23, 24, 25, 26], [6, 7, 8, 9], [26, 27, 28, 29]]  # fmt: skip
    assert torch.equal(first, obs[:, 0]) and obs.shape == (7, 4, 2) and actions.shape == (7, 4, 1)


class Returns:
    """A return with a known gradient in place of the Ant's, for the control's arithmetic: `f(actions [M, H, A])`."""

    def __init__(self, f):
        self.f = f

    def at(self, joint_q, joint_qd):
        return self.f


def self_cosines(gait, starts, returns):
    wide, narrow = (gait.env_gradients(starts, returns, eps, bounds_eps=0.01) for eps in (0.01, 0.003))
    return gait.env_self_cosines(wide, narrow)


def test_the_envs_self_agreement_is_one_where_its_return_is_smooth_and_falls_across_a_kink():
    gait = load_bench_script("model_by_gait")
    actions = torch.tensor([[[0.2, -0.3], [0.1, 0.4]]], dtype=torch.float64)  # one start, H = 2, A = 2
    starts = diagnostics.StartStates(torch.zeros(1, 4), torch.zeros(1, 5), torch.zeros(1, 5), actions)
    smooth = Returns(lambda a: (a**2).sum((1, 2)) + a[:, 0, 0] * a[:, 1, 1])
    assert self_cosines(gait, starts, smooth) == pytest.approx([1.0], abs=1e-9)
    # |a - k| with one entry's kink 0.005 below it, the others' far away: the steps of 0.003 see slope 1 everywhere,
    # those of 0.01 straddle the kink and see 0.5 there: cosine (0.5 + 3) / (2 * sqrt(0.25 + 3))
    kink = actions - torch.tensor([[[0.005, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    kinked = Returns(lambda a: (a - kink).abs().sum((1, 2)))
    (cosine,) = self_cosines(gait, starts, kinked)
    assert cosine == pytest.approx(3.5 / (2 * math.sqrt(3.25)), abs=1e-9)


class LinearPolicy(torch.nn.Module):
    """pi(o) = W o, read as the reference policy's actor is (its observation group)."""

    def __init__(self, weight):
        super().__init__()
        self.actor = torch.nn.ModuleDict({"linear": torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)})
        self.actor["linear"].weight.data.copy_(weight)
        self.actor.forward = lambda groups: self.actor["linear"](groups[POLICY_GROUP])


def test_action_gradients_through_the_policy_sum_their_outer_products_with_the_observations_where_not_clipped():
    gait = load_bench_script("model_by_gait")
    weight = torch.tensor([[0.5, -0.2, 0.1], [0.3, 0.4, -0.6]])
    obs = torch.tensor([[[0.2, 0.4, -0.1], [1.0, 0.5, 0.3]], [[-0.3, 0.2, 0.6], [3.0, 0.0, 0.0]]])  # S = 2, H = 2
    starts = diagnostics.StartStates(obs[:, 0], torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 2, 2), obs)
    gradients = torch.tensor([[[1.0, -2.0], [0.5, 0.0]], [[0.0, 1.0], [2.0, 2.0]]])
    # d(W o . g)/dW = g o^T, summed; the last window's last step acts 1.5 and 0.9: only its second entry counts
    expected = torch.zeros_like(weight)
    for s in range(2):
        for t in range(2):
            inside = ((weight @ obs[s, t]).abs() < 1.0).float()
            expected += torch.outer(gradients[s, t] * inside, obs[s, t])
    assert inside.tolist() == [0.0, 1.0]
    summed, doubled = gait.through_policy(LinearPolicy(weight), starts, gradients, 2 * gradients)
    assert torch.allclose(summed, expected.flatten())
    assert torch.allclose(doubled, 2 * expected.flatten())  # several gradients through one forward pass


def test_model_by_gait_measures_every_snapshots_value_and_gradient_agreement(tmp_path):
    config_path, dataset = collect_from_carried_reference(tmp_path, EXPERIMENT)
    cell = ["--config", str(config_path), "--task", "ant", "--size", "tiny", "--dynamics", "deterministic"]
    assert main(["pretrain", *cell, "--dataset", str(dataset), "--out", str(tmp_path / "wm.pt"), "--steps", "30",
                 "--device", "cpu"]) == 0  # fmt: skip
    out = tmp_path / "gait.json"
    args = ["--config", str(config_path), "--size", "tiny", "--world-model", str(tmp_path / "wm.pt"),
            "--dataset", str(dataset), "--reference-dir", str(tmp_path / CARRIED_REFERENCE), "--snapshots", "0", "7",
            "--stride", "5", "--envs", "2", "--starts", "2", "--out", str(out)]  # fmt: skip
    subprocess.run([sys.executable, "bench/model_by_gait.py", *args], cwd=ROOT, check=True)
    rows = json.loads(out.read_text())["rows"]
    assert [row["snapshot"] for row in rows] == [0, 7]
    assert rows[1]["env_steps"] > rows[0]["env_steps"] == 0
    for row in rows:
        assert row["windows"] > 0 and len(row["gradient_cosines"]) == len(row["env_self_cosines"]) == 2
        assert all(-1.0 <= c <= 1.0 for c in row["gradient_cosines"])  # (a pretrained reward head: never 0)
        assert all(-1.0 <= c <= 1.0 for c in row["env_self_cosines"])
        assert all(-1.0 <= row[k] <= 1.0 for k in ("policy_gradient_cosine", "policy_env_self_cosine"))
        assert all(math.isfinite(row[k]) for k in ("true_return", "model_open_loop", "model_teacher_forced"))
    assert json.loads(out.read_text())["args"]["eps"] == 0.003  # the config's run.grad_check_eps
    assert rows[1]["true_return"] > rows[0]["true_return"]  # the final snapshot runs, the untrained one stands

    # --world-model also takes a run's final.pt (an agent after online training): its world model, bitwise
    config = load_experiment(config_path).cell("ant", "tiny", "deterministic", 0)
    data, _ = read_dataset(dataset)
    obs_dim, act_dim = data["observations"].shape[-1], data["actions"].shape[-1]
    trained = PWM(obs_dim, act_dim, config, "cpu")
    torch.nn.init.normal_(next(trained.world_model.parameters()))  # not the pretrained weights: read from the file
    checkpoints.save_agent(tmp_path / "final.pt", trained, {"config": config.to_dict()})
    gait = load_bench_script("model_by_gait")
    fresh = SeedAgent(obs_dim, act_dim, config, 0, torch.device("cpu"))
    read = gait.load_world_model(tmp_path / "final.pt", fresh)
    for (name, want), got in zip(trained.world_model.state_dict().items(), read.state_dict().values(), strict=True):
        assert torch.equal(want, got), name
    pretrained = gait.load_world_model(tmp_path / "wm.pt", fresh)
    assert pretrained is fresh.world_model and not torch.equal(
        next(pretrained.parameters()), next(trained.world_model.parameters())
    )
