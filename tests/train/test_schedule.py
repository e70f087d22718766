"""What follows the epoch, through the real CLI: a run cut short of a longer schedule (`pwm.lr_decay_epochs`) is that
schedule's first epochs (a 12-epoch run naming a 24-epoch decay against the first 12 epochs of the 24-epoch run),
and the actor's std floor falling over `pwm.min_logstd_decay_epochs` is followed and resumes exactly."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from train_helpers import assert_same_run, cli_args, killed_and_rerun, run_cli

from flow_mbpo_pwm.config import load_experiment

LONG = {"train": {"pwm": {"epochs": 24}}}
CUT = {"train": {"pwm": {"epochs": 12, "lr_decay_epochs": 24}}}


def test_a_cut_run_trains_as_the_first_epochs_of_its_schedule(tmp_path, write_experiment):
    tables = {}
    for name, changes in (("long", LONG), ("cut", CUT)):
        run = tmp_path / name
        done = run_cli(cli_args(write_experiment(changes, f"{name}.yaml"), run))
        assert done.returncode == 0, done.stderr + done.stdout
        tables[name] = pd.read_csv(run / "metrics.csv").drop(columns=["wall_seconds"])
    long, cut = tables["long"], tables["cut"]
    assert cut["epoch"].max() == 12 and cut["actor_lr"].iloc[-1] > long["actor_lr"].iloc[-1]
    pd.testing.assert_frame_equal(long[long["epoch"] <= 12].reset_index(drop=True), cut, check_exact=True)


# The floor falls from the std's start, exp(-0.5) = 0.607, to exp(-1.5) over the first 12 of 24 epochs.
FALLING = {"train": {"pwm": {"epochs": 24, "init_logstd": -0.5, "min_logstd": -1.5, "min_logstd_decay_epochs": 12}}}


def test_a_falling_std_floor_holds_the_std_up_then_lets_it_down_and_resumes_exactly(tmp_path, write_experiment):
    config = write_experiment(FALLING, "falling.yaml")
    whole = tmp_path / "whole"
    done = run_cli(cli_args(config, whole))
    assert done.returncode == 0, done.stderr + done.stdout
    pwm = load_experiment(str(config)).cell("pendulum", "tiny", "deterministic", 0).pwm
    metrics = pd.read_csv(whole / "metrics.csv")  # a row every 2 epochs: the std over epochs E-2 and E-1 (0-based)
    floors = [math.exp(pwm.logstd_floor(epoch - 1)) for epoch in metrics["epoch"]]  # the window's lower floor
    assert (metrics["actor_std"] >= pd.Series(floors) - 1e-6).all()
    assert metrics["actor_std"].iloc[0] == pytest.approx(math.exp(-0.5), rel=1e-6)  # held at its start (float32)
    # The std ends below its start, which the start's floor (-0.5, as with `min_logstd: -0.5`) would not allow.
    assert metrics["actor_std"].iloc[-1] < math.exp(-0.5)
    # The floor is a function of the epoch, not of the saved state: a run killed after a save resumes bitwise.
    killed = tmp_path / "killed"
    again = killed_and_rerun(config, killed)
    assert again.returncode == 0 and "resumed from" in again.stdout, again.stderr + again.stdout
    assert_same_run(whole, killed)
