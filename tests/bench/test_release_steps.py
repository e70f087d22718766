"""bench/release_steps.py end to end on a tiny run (the pinned 5.3k PPO reference cloned onto a fresh world model,
a few epochs of `train` with the actor held): the step-0 row is the run's actor as saved, its deterministic
objective is `diagnostics.objective_split`'s two terms from the same starts, and Adam steps on the fixed objective
move the actor and climb that objective."""

import json
import math
import subprocess
import sys

import torch
from bench_helpers import ROOT, held_clone_run, load_bench_script

from flow_mbpo_pwm import diagnostics


def test_release_steps_climbs_the_fixed_objective_from_the_saved_state(tmp_path):
    run, _ = held_clone_run(tmp_path)
    steps = load_bench_script("release_steps")
    release = steps.restore(run, torch.device("cpu"))
    member, obs, cfg = release.agent.members[0], release.obs, release.config.pwm
    split = diagnostics.objective_split(member.world_model, member.actor, member.critic.value, obs, cfg.horizon,
                                        cfg.gamma)  # fmt: skip
    draws = steps.fixed_draws(release.agent, obs.shape[0], seed=0)
    with torch.no_grad():
        row = steps.measure(release, draws, member.act(obs))
    assert math.isclose(row["deterministic_objective"], split.reward_term + split.value_term, rel_tol=1e-5)
    assert math.isclose(row["imagined_rewards"], split.reward_term, rel_tol=1e-5)
    assert row["action_shift"] == 0.0 and math.isfinite(row["real_rewards"]) and math.isfinite(row["real_value"])
    assert math.isclose(row["imagined_value"], split.value_term, rel_tol=1e-5)

    # The step follows the objective's gradient (not only the Adam state's momentum): with and without the
    # critic's term the same saved state moves the actor differently.
    moved = []
    for value_coef in (1.0, 0.0):
        release = steps.restore(run, torch.device("cpu"))
        release.agent.adams["actor"].set_lr(5e-4)
        assert steps.adam_step(release.agent, release.obs, draws, value_coef).item() > 0
        moved.append(release.agent.members[0].actor.mu_net[0].weight.detach().clone())
    assert not torch.equal(moved[0], moved[1])

    out = tmp_path / "steps.json"
    args = ["--run", str(run), "--lrs", "5e-4", "--at", "0", "3", "--envs", "2", "--out", str(out)]
    subprocess.run([sys.executable, "bench/release_steps.py", *args], cwd=ROOT, check=True)
    start, moved = json.loads(out.read_text())["rows"]
    assert (start["steps"], moved["steps"]) == (0, 3) and start["lr"] == moved["lr"] == 5e-4
    assert math.isclose(start["deterministic_objective"], row["deterministic_objective"], rel_tol=1e-5)
    assert start["action_shift"] == 0.0 and moved["action_shift"] > 0.0
    assert moved["objective"] > start["objective"]  # Adam's steps climb the objective they are taken on
    for r in (start, moved):
        assert r["return_mean"] > 0 and 0 <= r["falls"] <= 2 and math.isfinite(r["real_rewards"])


def test_release_steps_names_a_run_without_a_saved_state_before_any_work(tmp_path):
    args = ["--run", str(tmp_path / "none"), "--out", str(tmp_path / "x.json")]
    result = subprocess.run([sys.executable, "bench/release_steps.py", *args], cwd=ROOT, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 2 and "no such file" in result.stderr and "state.pt" in result.stderr
