"""A run cut short of a longer schedule (`pwm.lr_decay_epochs`) is that schedule's first epochs: the real CLI, the
same seed, a 12-epoch run naming a 24-epoch decay against the first 12 epochs of the 24-epoch run."""

from __future__ import annotations

import pandas as pd
from train_helpers import cli_args, run_cli

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
