"""A tiny real training run on the Ant writes the world-model diagnostics (validation.csv columns and
wm_diagnostics.csv, gradient check included), and a run killed after a state save and resumed writes the same
diagnostics as an uninterrupted one. In a stack of seeds, whose validation episodes run in one batched env, each
seed validates (episodes, gradient check's start states, diagnostics) exactly as alone."""

from __future__ import annotations

import math
import signal
import subprocess
import time

import pandas as pd
from train_helpers import assert_same_run, cli_args, deep_update, run_cli, subprocess_env

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import PWMConfig
from flow_mbpo_pwm.run_folder import (
    LATER_METRICS_COLUMNS,
    LATER_VALIDATION_COLUMNS,
    LATER_WM_DIAGNOSTICS_COLUMNS,
    VALIDATION_DIAGNOSTIC_COLUMNS,
    WM_DIAGNOSTICS_COLUMNS,
)
from flow_mbpo_pwm.train import EXIT_PREEMPTED

HORIZON = 4
# The Ant (it can be placed in a saved state, so the gradient check runs) with 24-step episodes; validation at
# epochs 4 and 8, a gradient check at each, state saves every 3 epochs.
ANT_RUN = {
    "tasks": {"pendulum": {"task": "ant", "num_envs": 4, "episode_length": 24}},
    "train": {"pwm": {"epochs": 8, "horizon": HORIZON}, "run": {"grad_check_every": 1, "grad_check_starts": 2}},
}


def test_training_writes_diagnostics_and_a_resumed_run_writes_the_same(tmp_path, write_experiment):
    config = write_experiment(ANT_RUN)
    reference = tmp_path / "reference"
    done = run_cli(cli_args(config, reference))
    assert done.returncode == 0, done.stderr + done.stdout

    validation = pd.read_csv(reference / "validation.csv")
    assert set(VALIDATION_DIAGNOSTIC_COLUMNS) <= set(validation.columns)
    table = pd.read_csv(reference / "wm_diagnostics.csv")
    assert tuple(table.columns) == WM_DIAGNOSTICS_COLUMNS
    assert list(table["epoch"]) == [e for e in validation["epoch"] for _ in range(HORIZON)]
    assert list(table["step"]) == list(range(1, HORIZON + 1)) * len(validation)
    for column in ("wm_latent_mse", "copy_latent_mse", "wm_reward_mse", "wm_value_mse", "copy_value_mse"):
        assert table[column].notna().all() and (table[column] >= 0).all(), column
    last = table[table["epoch"] == validation["epoch"].iloc[-1]]
    # after the world model is trained its reward head has a gradient: the cosine is measured
    assert math.isfinite(validation["grad_cosine"].iloc[-1]) and -1 <= validation["grad_cosine"].iloc[-1] <= 1
    assert (last["grad_cosine"] == validation["grad_cosine"].iloc[-1]).all()
    assert last["grad_cosine_step"].between(-1, 1).all()
    assert validation["wm_latent_mse_hH"].iloc[-1] == last["wm_latent_mse"].iloc[-1]
    assert validation["copy_latent_mse_h1"].iloc[-1] == last["copy_latent_mse"].iloc[0]
    assert (table["latent_ratio"] == table["wm_latent_mse"] / table["copy_latent_mse"]).all()
    assert validation["wm_value_mse_hH"].iloc[-1] == last["wm_value_mse"].iloc[-1]
    assert validation["value_ratio_hH"].iloc[-1] == last["value_ratio"].iloc[-1]
    assert validation["action_jitter"].between(0, 2).all()  # tanh actions in [-1, 1], measured at every validation
    # the actor's objective split into its reward and value terms: measured at every validation, and once the
    # world model and the critic are trained (their output layers start at zero) both terms have a gradient
    split = validation[["actor_grad_reward_norm", "actor_grad_value_norm"]]
    assert split.notna().all().all() and (split >= 0).all().all()
    assert (split.iloc[-1] > 0).all() and -1 <= validation["actor_grad_terms_cosine"].iloc[-1] <= 1
    # the two terms as imagined and as paid, from the same windows' starts: measured at every validation (pendulum
    # episodes of 24 steps hold windows of the 4-step horizon), the paid rewards in the model's reward units
    terms = validation[["imagined_reward_term", "real_reward_term", "imagined_value_term", "real_value_term"]]
    assert terms.notna().all().all()
    assert validation["action_saturation"].between(0, 1).all()
    assert validation["action_magnitude"].between(0, 1).all()
    # how far the policy moved since the last validation: nothing to compare at the first, then the encoder and the
    # actor have trained between any two
    shift = validation["policy_shift"]
    assert math.isnan(shift.iloc[0]) and shift.iloc[1:].between(0, 2).all() and (shift.iloc[1:] > 0).all()
    # the critic against the episodes' returns: 24-step episodes leave every return's tail too large to count a
    # state (0.99^24 = 0.79) unless an episode ended, so the columns are NaN together or finite together
    fit = validation[["critic_explained_variance", "critic_bias", "critic_return_mean"]]
    assert (fit.isna().all(axis=1) | fit.notna().all(axis=1)).all()

    # SIGKILL right after the first state save, then the same command again.
    killed = tmp_path / "killed"
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(cli_args(config, killed), stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())
        deadline = time.monotonic() + 300
        while not (killed / "work" / "state.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    again = run_cli(cli_args(config, killed))
    assert again.returncode == 0, again.stderr + again.stdout
    assert "resumed from" in again.stdout
    for name in ("wm_diagnostics.csv", "validation.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(reference / name), pd.read_csv(killed / name), check_exact=True)


def test_each_seed_of_an_ant_stack_validates_as_alone_gradient_check_included(tmp_path, write_experiment):
    """Seeds 0 and 1 stacked: their 2 x 8 validation envs are one batched Ant, block s acting with seed s's policy,
    and each block keeps the start states of its own envs. The binned reward head and MKL's strict mode make a stacked
    seed bitwise its lone run (tests/train/test_stacked_runs.py says why)."""
    config = write_experiment(deep_update(ANT_RUN, {"train": {"world_model": {"reward_head": "binned"}}}))
    stack = [tmp_path / "stack" / "seed0", tmp_path / "stack" / "seed1"]
    args = cli_args(config, stack[0])
    args[args.index("--seed") + 1 : args.index("--run-dir") + 2] = ["0", "1", "--run-dir", *map(str, stack)]
    done = run_cli(args, MKL_CBWR="AUTO,STRICT")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "the episodes of seed(s) [0, 1] (" in done.stdout
    for seed, run_dir in enumerate(stack):
        alone = tmp_path / f"alone{seed}"
        lone = run_cli(cli_args(config, alone, seed=seed), MKL_CBWR="AUTO,STRICT")
        assert lone.returncode == 0, lone.stderr + lone.stdout
        assert_same_run(alone, run_dir)
        assert math.isfinite(pd.read_csv(run_dir / "validation.csv")["grad_cosine"].iloc[-1])  # the check ran


def test_a_state_saved_before_the_later_columns_existed_resumes_with_nan_in_its_rows(tmp_path, write_experiment):
    longer = {**ANT_RUN["train"], "pwm": {**ANT_RUN["train"]["pwm"], "epochs": 16}}
    config = write_experiment({**ANT_RUN, "train": longer})
    run = tmp_path / "run"
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cli_args(config, run), stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())
        deadline = time.monotonic() + 300
        validations = run / "work" / "validation.csv"  # written from the start: a header, then a row each
        while proc.poll() is None and time.monotonic() < deadline:
            if validations.exists() and len(validations.read_text().splitlines()) > 1:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # preempted after its first validation: the state holds that row
        assert proc.wait(timeout=300) == EXIT_PREEMPTED, log_path.read_text()
    # The state as code from before the column would have saved it.
    state = io.torch_load(run / "work" / "state.pt")
    old_rows = len(state["validation_rows"])
    assert old_rows >= 1
    rows, wm_rows = state["validation_rows"], state["wm_diagnostic_rows"]
    state["validation_rows"] = [{k: v for k, v in row.items() if k not in LATER_VALIDATION_COLUMNS} for row in rows]
    state["wm_diagnostic_rows"] = [
        {k: v for k, v in row.items() if k not in LATER_WM_DIAGNOSTICS_COLUMNS} for row in wm_rows
    ]
    old_metrics = len(state["metrics_rows"])
    metrics_rows = state["metrics_rows"]
    state["metrics_rows"] = [{k: v for k, v in r.items() if k not in LATER_METRICS_COLUMNS} for r in metrics_rows]
    window = state["window"]
    window["sums"] = window["sums"][: len(window["sums"]) - len(LATER_METRICS_COLUMNS)]
    io.torch_save(run / "work" / "state.pt", state)

    again = run_cli(cli_args(config, run))
    assert again.returncode == 0, again.stderr + again.stdout
    assert "resumed from" in again.stdout
    validation = pd.read_csv(run / "validation.csv")
    jitter, saturation = validation["action_jitter"], validation["action_saturation"]
    assert jitter[:old_rows].isna().all() and jitter[old_rows:].between(0, 2).all() and len(jitter) > old_rows
    assert saturation[:old_rows].isna().all() and saturation[old_rows:].between(0, 1).all()
    magnitude = validation["action_magnitude"]
    assert magnitude[:old_rows].isna().all() and magnitude[old_rows:].between(0, 1).all()
    value = validation["wm_value_mse_hH"]
    assert value[:old_rows].isna().all() and (value[old_rows:] >= 0).all()
    std = pd.read_csv(run / "metrics.csv")["actor_std"]
    assert std[:old_metrics].isna().all() and len(std) > old_metrics + 1
    floor = math.exp(PWMConfig().min_logstd)  # the actor's std never goes below it
    assert (std[old_metrics + 1 :] >= floor - 1e-6).all()  # the windows after the one the resume fell into
    table = pd.read_csv(run / "wm_diagnostics.csv")
    old_steps = len(wm_rows)
    assert table["value_ratio"][:old_steps].isna().all() and table["wm_value_mse"][old_steps:].notna().all()
