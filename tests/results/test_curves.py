"""The learning curves read at fixed env steps (curves.py): known answers on hand-made metrics."""

import math
from dataclasses import replace

import pandas as pd
import pytest

from flow_mbpo_pwm.config import REFERENCE_DYNAMICS, REFERENCE_SIZE
from flow_mbpo_pwm.curves import CURVE_COLUMNS, curve_table, period_curves, return_at

try:
    from .fixtures_results import small_experiment
except ImportError:  # tests/results is not a package
    from fixtures_results import small_experiment


def rows(task, size, dynamics, seed, env_steps, returns, episodes=1):
    return pd.DataFrame(
        {"task": task, "size": size, "dynamics": dynamics, "seed": seed, "env_steps": env_steps,
         "train_return_mean": returns, "train_episodes": episodes}  # fmt: skip
    )


def test_a_run_is_read_as_the_episodes_that_ended_in_the_period_up_to_the_log_window_holding_the_step():
    nan = float("nan")
    curve = rows("ant", "5M", "flow", 0, [100, 200, 300, 400, 500], [nan, 10.0, 40.0, 20.0, nan], [0, 1, 3, 2, 0])
    # period 200 up to the row at 300: the rows at 200 (1 episode of 10) and 300 (3 of 40)
    assert return_at(curve, 300, period=200) == pytest.approx((10.0 + 3 * 40.0) / 4)
    assert return_at(curve, 250, period=200) == pytest.approx((10.0 + 3 * 40.0) / 4)  # the window closing at 300
    assert return_at(curve, 400, period=200) == pytest.approx((3 * 40.0 + 2 * 20.0) / 5)
    assert math.isnan(return_at(curve, 150, period=200))  # before one period: only falls can have ended
    assert math.isnan(return_at(curve, 501, period=200))  # past the run's last row
    assert math.isnan(return_at(curve, 500, period=100))  # no episode ended in (400, 500]


def test_windows_between_bursts_of_synchronised_episodes_do_not_bias_the_value():
    # The reference's ants finish their episodes together once per period (400 here): 40 episodes of 1,000 at 400
    # and 800; between the bursts one fall of 100 per window. Interpolating between windows would read 100 at 600.
    steps = list(range(100, 1000, 100))
    returns = [1000.0 if x % 400 == 0 else 100.0 for x in steps]
    episodes = [40 if x % 400 == 0 else 1 for x in steps]
    curve = rows("ant", REFERENCE_SIZE, REFERENCE_DYNAMICS, 0, steps, returns, episodes)
    assert return_at(curve, 600, period=400) == pytest.approx((40 * 1000.0 + 3 * 100.0) / 43)


def test_cells_at_each_env_step_against_the_reference():
    experiment = small_experiment(sizes=("5M",), seeds=(0, 1), reference=True)  # PWM: 4 envs x 50 steps
    experiment = replace(
        experiment,
        evaluation=replace(experiment.evaluation, curve_env_steps=(1000, 2000, 3000)),
        reference=replace(experiment.reference, num_envs=8),  # an episode period of 400 env steps
    )
    steps = [500, 1000, 1500, 2000, 2500, 3000]
    reference_steps = list(range(250, 3001, 250))
    metrics = pd.concat(
        [
            rows("ant", "5M", "deterministic", 0, steps, [s / 10 for s in steps]),  # 100, 200, 300
            rows("ant", "5M", "deterministic", 1, steps[:4], [s / 5 for s in steps[:4]]),  # 200, 400; ends at 2000
            rows("ant", "5M", "flow", 0, steps, [50.0] * 6),
            rows("ant", "5M", "flow", 1, steps, [70.0] * 6),
            # its own period of 400 spans two of its rows: (750 + 1000) / 20 at 1,000, and so on
            rows("ant", REFERENCE_SIZE, REFERENCE_DYNAMICS, 0, reference_steps, [s / 10 for s in reference_steps]),
            rows("ant", REFERENCE_SIZE, REFERENCE_DYNAMICS, 1, reference_steps, [s / 10 for s in reference_steps]),
        ]
    )
    table = curve_table(experiment, metrics)
    assert list(table.columns) == CURVE_COLUMNS
    det = table[table["dynamics"] == "deterministic"].set_index("env_steps")
    assert det["n_seeds"].tolist() == [2, 2, 1]  # seed 1 stopped at 2,000 env steps
    assert det["train_return_mean"].tolist() == pytest.approx([150.0, 300.0, 300.0])  # period 200: one row each
    assert det["reference_train_return"].tolist() == pytest.approx([87.5, 187.5, 287.5])
    assert det["ratio_to_reference"].tolist() == pytest.approx([150 / 87.5, 300 / 187.5, 300 / 287.5])
    assert det["train_return_seed_std"].iloc[0] == pytest.approx(pd.Series([100.0, 200.0]).std())
    assert math.isnan(det["train_return_seed_std"].iloc[2])  # one run
    flow = table[table["dynamics"] == "flow"]
    assert flow["train_return_mean"].tolist() == pytest.approx([60.0] * 3)
    reference = table[table["size"] == REFERENCE_SIZE]
    assert reference["train_return_mean"].tolist() == pytest.approx([87.5, 187.5, 287.5])
    assert reference["ratio_to_reference"].isna().all()
    # Cells in config order, then the reference.
    assert table[["size", "dynamics"]].drop_duplicates().values.tolist() == [
        ["5M", "deterministic"], ["5M", "flow"], [REFERENCE_SIZE, REFERENCE_DYNAMICS]
    ]  # fmt: skip


def test_the_figure_reads_every_row_as_the_table_does():
    experiment = small_experiment(sizes=("5M",), seeds=(0,), reference=True)  # periods of 4 envs x 50 = 200 steps
    nan = float("nan")
    metrics = pd.concat(
        [
            rows("ant", "5M", "flow", 0, [100, 200, 300, 400], [nan, 10.0, 40.0, 20.0], [0, 1, 3, 2]),
            rows("ant", REFERENCE_SIZE, REFERENCE_DYNAMICS, 0, [200, 400], [5.0, 7.0], [1, 1]),
        ]
    )
    curves = period_curves(experiment, metrics)
    flow = curves[curves["dynamics"] == "flow"]
    assert flow["env_steps"].tolist() == [200, 300, 400]  # 100: before one period
    assert flow["train_return_mean"].tolist() == pytest.approx([10.0, 32.5, 32.0])
    assert curves[curves["dynamics"] == REFERENCE_DYNAMICS]["train_return_mean"].tolist() == [5.0, 7.0]
