"""bench/adam_drift.py: Adam's steps along a gradient that carries no information (known answer: a fixed direction
moves every weight by the learning rate per step), and the bench run end to end on the pinned 5.3k PPO reference
(short CPU episodes)."""

import itertools
import json
import subprocess
import sys
import tarfile

import torch
from bench_helpers import ROOT, load_bench_script

from flow_mbpo_pwm.config import TrainConfig
from flow_mbpo_pwm.models.actor import Actor

POLICY = "results/ant/reference/seed0/policy.pt"


def test_a_fixed_direction_moves_every_weight_by_the_learning_rate_per_step_and_a_fresh_one_less():
    bench = load_bench_script("adam_drift")
    torch.manual_seed(0)
    actor, config, lr = Actor(6, 2, [16, 8]), TrainConfig(), 1e-3
    start = [p.detach().clone() for p in actor.mu_net.parameters()]
    # A constant gradient: Adam's bias-corrected step is lr * g / |g| whatever the clip's scale, so after k steps
    # every weight has moved by k * lr, against the direction's sign.
    moved = next(itertools.islice(bench.adam_steps(actor, lr, config, "fixed", seed=1), 4, None))  # the 5th step
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for p in start][:1]
    change = [(p.detach() - s) for p, s in zip(moved.mu_net.parameters(), start, strict=True)]
    assert all(torch.allclose(c.abs(), torch.full_like(c, 5 * lr), rtol=1e-3) for c in change)
    assert torch.equal(torch.sign(change[0]), -torch.sign(direction[0]))
    # fresh directions partly cancel: less than 5 * lr on average
    wandered = next(itertools.islice(bench.adam_steps(actor, lr, config, "fresh", seed=1), 4, None))
    mean = torch.cat(
        [(p.detach() - s).abs().flatten() for p, s in zip(wandered.mu_net.parameters(), start, strict=True)]
    ).mean()
    assert 0 < mean < 5 * lr
    assert all(
        torch.equal(p, s) for p, s in zip(actor.mu_net.parameters(), start, strict=True)
    )  # the clone is left alone


def test_adam_drift_plays_the_clone_and_each_moved_copy(tmp_path):
    with tarfile.open(ROOT / "bench" / "carried" / "reference-config.tar.gz") as archive:
        archive.extract(POLICY, tmp_path, filter="data")
    out = tmp_path / "drift.json"
    args = ["--config", "config/smoke.yaml", "--size", "tiny", "--reference-policy", str(tmp_path / POLICY),
            "--collect-envs", "2", "--steps", "20", "--batch", "64", "--lrs", "5e-4", "--at", "1", "3", "--envs", "2",
            "--episode-length", "30", "--out", str(out)]  # fmt: skip
    subprocess.run([sys.executable, "bench/adam_drift.py", *args], cwd=ROOT, check=True)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["direction"], r["steps"]) for r in rows] == [("clone", 0), ("fresh", 1), ("fresh", 3), ("fixed", 1),
                                                            ("fixed", 3)]  # fmt: skip
    assert all(r["return_mean"] > 0 for r in rows)
    assert rows[0]["action_shift"] == 0 and 0 < rows[3]["action_shift"] < rows[4]["action_shift"]
