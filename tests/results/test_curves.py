"""The learning curves read at fixed env steps (curves.py): known answers on hand-made metrics."""

import math

import pandas as pd
import pytest

from flow_mbpo_pwm.config import REFERENCE_DYNAMICS, REFERENCE_SIZE
from flow_mbpo_pwm.curves import CURVE_COLUMNS, curve_table, return_at

try:
    from .fixtures_results import small_experiment
except ImportError:  # tests/results is not a package
    from fixtures_results import small_experiment


def rows(task, size, dynamics, seed, env_steps, returns):
    return pd.DataFrame(
        {"task": task, "size": size, "dynamics": dynamics, "seed": seed, "env_steps": env_steps,
         "train_return_mean": returns}  # fmt: skip
    )


def test_a_run_is_read_by_linear_interpolation_between_its_rows_and_never_outside_them():
    curve = rows("ant", "5M", "flow", 0, [100, 200, 300, 400], [float("nan"), 10.0, 30.0, 20.0])
    assert return_at(curve, 250) == pytest.approx(20.0)
    assert return_at(curve, 400) == pytest.approx(20.0)
    assert math.isnan(return_at(curve, 150))  # before the first window in which an episode ended
    assert math.isnan(return_at(curve, 401))


def test_cells_at_each_env_step_against_the_reference():
    experiment = small_experiment(sizes=("5M",), seeds=(0, 1), reference=True)
    experiment = experiment.__class__(**{**vars(experiment), "evaluation": experiment.evaluation.__class__(
        **{**vars(experiment.evaluation), "curve_env_steps": (1000, 2000, 3000)})})  # fmt: skip
    steps = [500, 1000, 1500, 2000, 2500, 3000]
    metrics = pd.concat(
        [
            rows("ant", "5M", "deterministic", 0, steps, [s / 10 for s in steps]),  # 100, 200, 300
            rows("ant", "5M", "deterministic", 1, steps[:4], [s / 5 for s in steps[:4]]),  # 200, 400; ends at 2000
            rows("ant", "5M", "flow", 0, steps, [50.0] * 6),
            rows("ant", "5M", "flow", 1, steps, [70.0] * 6),
            rows("ant", REFERENCE_SIZE, REFERENCE_DYNAMICS, 0, [0, 4000], [0.0, 400.0]),  # 100, 200, 300
            rows("ant", REFERENCE_SIZE, REFERENCE_DYNAMICS, 1, [0, 4000], [0.0, 400.0]),
        ]
    )
    table = curve_table(experiment, metrics)
    assert list(table.columns) == CURVE_COLUMNS
    det = table[table["dynamics"] == "deterministic"].set_index("env_steps")
    assert det["n_seeds"].tolist() == [2, 2, 1]  # seed 1 stopped at 2,000 env steps
    assert det["train_return_mean"].tolist() == pytest.approx([150.0, 300.0, 300.0])
    assert det["reference_train_return"].tolist() == pytest.approx([100.0, 200.0, 300.0])
    assert det["ratio_to_reference"].tolist() == pytest.approx([1.5, 1.5, 1.0])
    assert det["train_return_seed_std"].iloc[0] == pytest.approx(pd.Series([100.0, 200.0]).std())
    assert math.isnan(det["train_return_seed_std"].iloc[2])  # one run
    flow = table[table["dynamics"] == "flow"]
    assert flow["train_return_mean"].tolist() == pytest.approx([60.0] * 3)
    reference = table[table["size"] == REFERENCE_SIZE]
    assert reference["train_return_mean"].tolist() == pytest.approx([100.0, 200.0, 300.0])
    assert reference["ratio_to_reference"].isna().all()
    # Cells in config order, then the reference.
    assert table[["size", "dynamics"]].drop_duplicates().values.tolist() == [
        ["5M", "deterministic"], ["5M", "flow"], [REFERENCE_SIZE, REFERENCE_DYNAMICS]
    ]  # fmt: skip
