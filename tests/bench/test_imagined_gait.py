"""bench/imagined_gait.py: the model's closed loop under the actor against the env's and the recorded actions' (known
answers on a linear system: a model equal to the env imagines the real rewards, one that stands still repeats the
first), and the bench end to end on a clone of the pinned 5.3k PPO reference (short CPU episodes)."""

import json
import subprocess
import sys

import pytest
import torch
from bench_helpers import ROOT, TINY_CLONE_EXPERIMENT, clone_on_a_fresh_world_model, load_bench_script
from linear_system import OBS, LinearSystemModel, N, T, linear_actor, linear_system_record, true_next

from flow_mbpo_pwm.diagnostics import cut_windows


def closed_loop_windows(actor, length=5):
    """The linear system driven by the actor (its own closed loop, as validation records it), cut into windows."""
    return cut_windows(linear_system_record(policy=actor.act).record, length, stride=length)


def test_a_model_equal_to_the_env_imagines_the_real_rewards_closed_loop_and_open():
    bench, actor = load_bench_script("imagined_gait"), linear_actor()
    windows = closed_loop_windows(actor)
    curves = bench.imagined_curves(LinearSystemModel(true_next), actor, windows)
    assert curves["real"].shape == (T // 5 * N, 5)  # T / 5 windows of 5 steps per env, none crossing a done
    torch.testing.assert_close(curves["closed"], curves["real"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(curves["open"], curves["real"], rtol=1e-5, atol=1e-5)
    assert float(curves["action_gap"].max()) < 1e-5
    assert bench.discounted(curves["real"], 0.5, 2) == pytest.approx(
        float((windows.rewards[:, 0].double() + 0.5 * windows.rewards[:, 1].double()).mean()), rel=1e-12
    )


def test_a_model_that_stands_still_repeats_the_first_step_closed_loop():
    bench, actor = load_bench_script("imagined_gait"), linear_actor()
    windows = closed_loop_windows(actor)
    curves = bench.imagined_curves(LinearSystemModel(lambda z, a: z), actor, windows)
    first = curves["closed"][:, :1].expand(-1, 5)
    torch.testing.assert_close(curves["closed"], first)  # the same latent, so the same action and reward
    torch.testing.assert_close(curves["closed"][:, 0], curves["real"][:, 0])
    assert float(curves["action_gap"][:, 1:].mean()) > 0  # the real policy moved on, the imagined one did not
    assert not torch.allclose(curves["open"], curves["closed"])  # open loop: the recorded actions, other rewards


def test_latent_errors_are_zero_for_a_model_equal_to_the_env():
    bench, actor = load_bench_script("imagined_gait"), linear_actor()
    errors = bench.latent_errors(LinearSystemModel(true_next), actor, closed_loop_windows(actor))
    assert set(errors) == set(bench.ERRORS)
    for curve in errors.values():
        assert curve.shape == (T // 5 * N, 5) and float(curve.abs().max()) < 1e-10


def test_latent_errors_of_a_model_that_stands_still_are_the_distance_travelled():
    bench, actor = load_bench_script("imagined_gait"), linear_actor()
    actor.input_norm = torch.nn.Linear(OBS, OBS, bias=False)  # an input scaled x2: its squared error is 4x
    torch.nn.init.eye_(actor.input_norm.weight).data.mul_(2)
    windows = closed_loop_windows(actor)
    errors = bench.latent_errors(LinearSystemModel(lambda z, a: z), actor, windows)
    travelled = (windows.obs[:, :5] - windows.obs[:, :1]).double()  # the model keeps E(o_0) = o_0 at every step
    torch.testing.assert_close(errors["latent_mse"], travelled.pow(2).mean(-1))
    torch.testing.assert_close(errors["input_mse"], 4 * travelled.pow(2).mean(-1))
    drift = (actor.act(windows.obs[:, :1]) - actor.act(windows.obs[:, :5])).abs().mean(-1).double()
    torch.testing.assert_close(errors["input_drift"], drift)
    assert float(errors["latent_mse"][:, 0].abs().max()) == 0.0  # step 1 is E(o_0) itself
    spread = bench.spreads(LinearSystemModel(lambda z, a: z), actor, windows)
    real = windows.obs[:, :-1].flatten(0, 1).double()
    assert spread["latent_var"] == pytest.approx(float(real.var(0).mean()))
    assert spread["input_var"] == pytest.approx(4 * spread["latent_var"])


def test_imagined_gait_runs_on_a_clone_of_the_reference(tmp_path):
    paths = clone_on_a_fresh_world_model(tmp_path, TINY_CLONE_EXPERIMENT)
    out = tmp_path / "imagined.json"
    args = ["--config", str(paths["config"]), "--size", "tiny", "--world-model", str(paths["world_model"]),
            "--dataset", str(paths["dataset"]), "--actor", str(paths["actor"]), "--envs", "2", "--length", "16",
            "--out", str(out)]  # fmt: skip
    subprocess.run([sys.executable, "bench/imagined_gait.py", *args], cwd=ROOT, check=True)
    bench, rows = load_bench_script("imagined_gait"), json.loads(out.read_text())["rows"]
    assert rows[0]["windows"] >= 1 and rows[0]["return_mean"] > 0
    assert [r["step"] for r in rows[1:]] == [1, 2, 4, 8, 16, "sum over H = 8", "sum over 16"]
    columns = ("real", "closed", "open", "action_gap", *bench.ERRORS)
    assert all(torch.isfinite(torch.tensor([r[k] for k in columns])).all() for r in rows[1:])
    assert rows[0]["latent_var"] > 0 and rows[0]["input_var"] > 0
    assert rows[1]["latent_mse"] == 0.0 and rows[2]["latent_mse"] > 0  # one model step from E(o_0) by step 2
    assert rows[1]["action_gap"] < 1e-6  # step 1 acts on E(o_0) itself, as the episode did
