"""`aggregate`: compare.csv and per_seed.csv from hand-made result trees; refusal of inputs that are not the grid."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import trim_mean

from flow_mbpo_pwm.aggregate import COMPARE_COLUMNS, PER_SEED_COLUMNS, aggregate
from flow_mbpo_pwm.cli import main

try:
    from .fixtures_results import run_dir, small_experiment, write_episodes, write_results, write_summary
except ImportError:  # tests/results is not a package
    from fixtures_results import run_dir, small_experiment, write_episodes, write_results, write_summary

REQUIRED = [
    "task",
    "size",
    "dynamics",
    "n_seeds",
    "n_episodes",
    "return_mean",
    "return_std",
    "return_median",
    "return_iqm",
    "return_ci_low",
    "return_ci_high",
    "ratio_to_deterministic",
    "ratio_ci_low",
    "ratio_ci_high",
    "train_best_return_mean",
    "params",
    "env_steps",
    "train_seconds",
]


def hand_returns(cell):
    """Seed s of a cell returns base * (s + 1) + (0, 1, ..., 7); flow doubles the deterministic base."""
    task, size, dynamics, seed = cell
    base = {"tiny": 10.0, "5M": 20.0, "reference": 50.0}[size] * (2.0 if dynamics == "flow" else 1.0)
    return base * (seed + 1) + np.arange(8.0)


def run(tmp_path, experiment, episodes, summaries, bootstrap=300):
    out, per_seed = tmp_path / "compare.csv", tmp_path / "per_seed.csv"
    code = aggregate(experiment, episodes, summaries, out, per_seed, bootstrap)
    return code, out, per_seed


def test_compare_has_the_fixed_columns_and_hand_computed_values(tmp_path):
    experiment = small_experiment()
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    code, out, per_seed_path = run(tmp_path, experiment, episodes, summaries)
    assert code == 0
    compare = pd.read_csv(out)
    assert set(REQUIRED) <= set(compare.columns) and list(compare.columns) == COMPARE_COLUMNS
    assert len(compare) == 4  # 1 task x 2 sizes x 2 dynamics

    row = compare.set_index(["size", "dynamics"]).loc[("tiny", "deterministic")]
    pooled = np.concatenate([hand_returns(("ant", "tiny", "deterministic", s)) for s in (0, 1, 2)])
    # seeds return 10, 20, 30 plus 0..7: mean 20 + 3.5
    assert row["return_mean"] == pytest.approx(23.5)
    assert row["return_median"] == pytest.approx(np.median(pooled))
    assert row["return_std"] == pytest.approx(pooled.std(ddof=1))
    assert row["return_iqm"] == pytest.approx(trim_mean(pooled, 0.25))
    assert row["return_ci_low"] < 23.5 < row["return_ci_high"]
    assert row["n_seeds"] == 3 and row["n_episodes"] == 24
    assert row["train_best_return_mean"] == pytest.approx(11.0)  # best = 10 + seed
    assert row["train_best_return_ci_low"] <= 11.0 <= row["train_best_return_ci_high"]
    assert row["params"] == 20_000 and row["env_steps"] == 4000
    assert row["train_seconds"] == pytest.approx(110.0)  # 100 + 10 * seed

    # The deterministic row is the reference: exactly 1 with CI [1, 1]; flow returns are 2x minus the offsets.
    det = compare[compare["dynamics"] == "deterministic"]
    assert (det[["ratio_to_deterministic", "ratio_ci_low", "ratio_ci_high"]].to_numpy() == 1.0).all()
    flow = compare.set_index(["size", "dynamics"]).loc[("tiny", "flow")]
    assert flow["ratio_to_deterministic"] == pytest.approx((40 + 3.5) / 23.5)
    assert flow["ratio_ci_low"] < flow["ratio_to_deterministic"] < flow["ratio_ci_high"]
    assert flow["substeps"] == 4 and np.isnan(row["substeps"])

    per_seed = pd.read_csv(per_seed_path)
    assert list(per_seed.columns) == PER_SEED_COLUMNS and len(per_seed) == 12
    one = per_seed.set_index(["size", "dynamics", "seed"]).loc[("5M", "flow", 2)]
    assert one["return_mean"] == pytest.approx(120 + 3.5) and one["n_episodes"] == 8
    assert one["train_best_return"] == 12.0 and one["params"] == 5_000_000


def test_ratio_ci_brackets_the_true_ratio_on_synthetic_data(tmp_path):
    experiment = small_experiment(seeds=tuple(range(8)), sizes=("tiny",), episodes=50)

    def returns(cell):
        rng = np.random.default_rng(cell[3] + (100 if cell[2] == "flow" else 0))
        return rng.normal((150.0 if cell[2] == "flow" else 100.0) + rng.normal(0, 3), 15.0, size=50)

    episodes, summaries = write_results(tmp_path / "results", experiment, returns)
    code, out, _ = run(tmp_path, experiment, episodes, summaries, bootstrap=1000)
    assert code == 0
    flow = pd.read_csv(out).set_index("dynamics").loc["flow"]
    assert flow["ratio_ci_low"] < 1.5 < flow["ratio_ci_high"]
    assert flow["ratio_ci_high"] - flow["ratio_ci_low"] < 0.2


def test_outputs_are_reproducible(tmp_path):
    experiment = small_experiment()
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    _, first, _ = run(tmp_path, experiment, episodes, summaries)
    text = first.read_text()
    _, again, _ = run(tmp_path, experiment, list(reversed(episodes)), summaries)
    assert again.read_text() == text


def test_ratio_is_nan_with_a_reason_when_the_deterministic_mean_is_not_positive(tmp_path):
    experiment = small_experiment(sizes=("tiny",))
    episodes, summaries = write_results(
        tmp_path / "results", experiment, lambda cell: hand_returns(cell) - (100 if cell[2] == "deterministic" else 0)
    )
    code, out, _ = run(tmp_path, experiment, episodes, summaries)
    assert code == 0
    compare = pd.read_csv(out)
    assert compare["ratio_to_deterministic"].isna().all()
    assert compare["ratio_note"].str.contains("not positive").all()


def test_missing_best_train_return_gives_nan_not_a_partial_average(tmp_path):
    experiment = small_experiment(sizes=("tiny",))
    episodes, summaries = write_results(
        tmp_path / "results", experiment, hand_returns, best=lambda cell: None if cell[3] == 1 else 5.0
    )
    assert run(tmp_path, experiment, episodes, summaries)[0] == 0
    compare = pd.read_csv(tmp_path / "compare.csv")
    assert compare["train_best_return_mean"].isna().all() and compare["return_mean"].notna().all()


def test_without_a_deterministic_variant_ratios_are_nan(tmp_path):
    experiment = small_experiment(dynamics={"flow": {}, "flow8": {"kind": "flow", "substeps": 8}}, sizes=("tiny",))
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    assert run(tmp_path, experiment, episodes, summaries)[0] == 0
    compare = pd.read_csv(tmp_path / "compare.csv")
    assert compare["ratio_to_deterministic"].isna().all()
    assert compare["ratio_note"].str.contains("no deterministic variant").all()


def test_several_deterministic_variants_are_refused_unless_one_is_named_deterministic(tmp_path, capsys):
    experiment = small_experiment(dynamics={"det-a": {"kind": "deterministic"}, "det-b": {"kind": "deterministic"}},
                                  sizes=("tiny",))  # fmt: skip
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    assert run(tmp_path, experiment, episodes, summaries)[0] == 1
    assert "several deterministic" in capsys.readouterr().err

    experiment = small_experiment(dynamics={"deterministic": {}, "residual": {"kind": "deterministic",
                                                                               "residual": True}}, sizes=("tiny",))  # fmt: skip
    episodes, summaries = write_results(tmp_path / "named", experiment, hand_returns)
    assert run(tmp_path, experiment, episodes, summaries)[0] == 0
    compare = pd.read_csv(tmp_path / "compare.csv").set_index("dynamics")
    assert compare.loc["deterministic", "ratio_to_deterministic"] == 1.0
    assert compare.loc["residual", "ratio_to_deterministic"] > 0


def _refused(tmp_path, capsys, experiment, episodes, summaries, *fragments):
    code, out, per_seed = run(tmp_path, experiment, episodes, summaries)
    err = capsys.readouterr().err
    assert code == 1 and not out.exists() and not per_seed.exists()
    for fragment in fragments:
        assert fragment in err, err


def test_missing_cells_are_refused_by_name(tmp_path, capsys):
    experiment = small_experiment()
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    gone = [p for p in episodes if "5M-flow/seed1" in str(p)]
    _refused(
        tmp_path,
        capsys,
        experiment,
        [p for p in episodes if p not in gone],
        summaries,
        "missing episodes for 1 cell(s): ant/5M-flow/seed1",
    )
    _refused(
        tmp_path,
        capsys,
        experiment,
        episodes,
        summaries[1:],
        "missing training summaries for 1 cell(s): ant/tiny-deterministic/seed0",
    )


def test_duplicated_cells_are_refused_by_name(tmp_path, capsys):
    experiment = small_experiment()
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    copy = write_episodes(tmp_path / "copy.csv", ("ant", "tiny", "flow", 2), hand_returns(("ant", "tiny", "flow", 2)))
    _refused(
        tmp_path,
        capsys,
        experiment,
        [*episodes, copy],
        summaries,
        "duplicated episodes for ant/tiny-flow/seed2",
        "copy.csv",
    )
    _refused(
        tmp_path,
        capsys,
        experiment,
        episodes,
        [*summaries, summaries[0]],
        "several training summaries for ant/tiny-deterministic/seed0",
    )
    # Two rows for the same episode inside one file.
    path = episodes[0]
    frame = pd.read_csv(path)
    frame.loc[1, "episode"] = 0
    frame.to_csv(path, index=False)
    _refused(tmp_path, capsys, experiment, episodes, summaries, "duplicated episodes for ant/tiny-deterministic/seed0")


def test_cells_not_in_the_grid_and_unfinished_runs_are_refused(tmp_path, capsys):
    experiment = small_experiment()
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    stray = ("ant", "5M", "flow", 9)
    extra = write_episodes(run_dir(tmp_path / "results", *stray) / "episodes.csv", stray, np.arange(8.0))
    _refused(
        tmp_path,
        capsys,
        experiment,
        [*episodes, extra],
        summaries,
        "episodes for cell(s) not in the config's grid: ant/5M-flow/seed9",
    )
    write_summary(summaries[3], ("ant", "tiny", "flow", 0), 3.0, status="failed")
    _refused(tmp_path, capsys, experiment, episodes, summaries, "training did not complete for ant/tiny-flow/seed0")


def test_a_run_stopped_by_the_collapse_guard_counts_and_is_counted(tmp_path):
    """A collapsed seed (train status "collapsed": it was evaluated at the checkpoint selected from before its
    collapse) is one of its cell's seeds, and the tables say so: `n_collapsed`, `train_status`."""
    experiment = small_experiment()
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    collapsed = ("ant", "tiny", "flow", 1)
    path = next(p for p in summaries if p.parent == run_dir(tmp_path / "results", *collapsed))
    write_summary(path, collapsed, 3.0, status="collapsed")
    code, out, per_seed_path = run(tmp_path, experiment, episodes, summaries)
    assert code == 0
    compare, per_seed = pd.read_csv(out), pd.read_csv(per_seed_path)
    counts = compare.set_index(["size", "dynamics"])["n_collapsed"]
    assert counts[("tiny", "flow")] == 1 and counts.drop(("tiny", "flow")).eq(0).all()
    status = per_seed.set_index(["size", "dynamics", "seed"])["train_status"]
    assert status[("tiny", "flow", 1)] == "collapsed" and (status.drop(("tiny", "flow", 1)) == "completed").all()
    flow = compare.set_index(["size", "dynamics"]).loc[("tiny", "flow")]
    assert flow["n_seeds"] == len(experiment.seeds)  # it is not dropped from the statistics


def test_bad_episode_files_are_refused(tmp_path, capsys):
    experiment = small_experiment()
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    frame = pd.read_csv(episodes[2])
    frame.loc[3, "return"] = np.nan
    frame.to_csv(episodes[2], index=False)
    _refused(tmp_path, capsys, experiment, episodes, summaries, "non-finite", "ant/tiny-deterministic/seed2")
    frame.drop(columns=["return"]).to_csv(episodes[2], index=False)
    _refused(tmp_path, capsys, experiment, episodes, summaries, "lacks the columns ['return']")
    write_episodes(episodes[2], ("ant", "tiny", "deterministic", 2), np.arange(8.0))
    _refused(tmp_path, capsys, experiment, [*episodes, tmp_path / "nope.csv"], summaries, "nope.csv does not exist")


def test_bad_summary_files_are_refused(tmp_path, capsys):
    experiment = small_experiment()
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    good = json.loads(summaries[1].read_text())
    summaries[1].write_text('{"task": "ant", "seed": ')
    _refused(tmp_path, capsys, experiment, episodes, summaries, "not valid JSON")
    summaries[1].write_text(json.dumps({**good, "best_train_return": "high"}))
    _refused(tmp_path, capsys, experiment, episodes, summaries, "wrong type", str(summaries[1]))
    summaries[1].write_text('{"task": "ant"}')
    _refused(tmp_path, capsys, experiment, episodes, summaries, "lacks the keys", "best_train_return")
    episodes[0].write_text('task,size\n"ant,tiny\n')
    _refused(tmp_path, capsys, experiment, episodes, summaries, "not a readable CSV")


def test_reference_runs_are_rows_of_both_tables_without_a_ratio(tmp_path, capsys):
    experiment = small_experiment(sizes=("tiny",), reference=True)
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    code, out, per_seed_path = run(tmp_path, experiment, episodes, summaries)
    assert code == 0
    compare, per_seed = pd.read_csv(out), pd.read_csv(per_seed_path)
    assert list(zip(compare["size"], compare["dynamics"], strict=True)) == [
        ("tiny", "deterministic"),
        ("tiny", "flow"),
        ("reference", "ppo"),
    ]
    reference = compare.iloc[2]
    assert reference["dynamics_kind"] == "ppo" and reference["n_seeds"] == 3
    pooled = np.concatenate([hand_returns(("ant", "reference", "ppo", s)) for s in (0, 1, 2)])
    assert reference["return_mean"] == pytest.approx(pooled.mean())
    assert reference[["ratio_to_deterministic", "ratio_ci_low", "ratio_ci_high", "substeps"]].isna().all()
    means = [np.concatenate([hand_returns(("ant", "tiny", d, s)) for s in (0, 1, 2)]).mean() for d in ("flow", "deterministic")]
    assert compare.iloc[1]["ratio_to_deterministic"] == pytest.approx(means[0] / means[1])  # PWM ratios untouched
    assert sorted(per_seed.loc[per_seed["dynamics"] == "ppo", "seed"]) == [0, 1, 2]
    # Missing reference runs are refused by name, like any cell.
    (tmp_path / "refused").mkdir()
    _refused(
        tmp_path / "refused",
        capsys,
        experiment,
        [p for p in episodes if "reference-ppo" not in str(p)],
        summaries,
        "missing episodes for 3 cell(s): ant/reference/seed0, ant/reference/seed1, ant/reference/seed2",
    )


def test_disabled_reference_is_not_expected(tmp_path, capsys):
    experiment = small_experiment(sizes=("tiny",), reference=True)
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    disabled = small_experiment(sizes=("tiny",), reference=False)
    _refused(tmp_path, capsys, disabled, episodes, summaries, "cell(s) not in the config's grid: ant/reference/seed0")


def test_cli_aggregate_end_to_end(tmp_path):
    experiment = small_experiment(sizes=("tiny",))
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "tasks": {"ant": {"num_envs": 4, "episode_length": 50}},
                "sizes": ["tiny"],
                "dynamics": {"deterministic": {}, "flow": {}},
                "seeds": [0, 1, 2],
                "evaluation": {"episodes": 8},
                "reference": {"enabled": False},
                "pretrain": {"enabled": False},
            }
        )
    )
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    out = tmp_path / "results" / "compare.csv"
    code = main(
        [
            "aggregate",
            "--config",
            str(config),
            "--episodes",
            *map(str, episodes),
            "--summaries",
            *map(str, summaries),
            "--out",
            str(out),
            "--out-per-seed",
            str(tmp_path / "per_seed.csv"),
            "--bootstrap",
            "200",
        ]
    )
    assert code == 0 and len(pd.read_csv(out)) == 2


def test_results_modules_do_not_import_the_gpu_stack():
    code = (
        "import sys, flow_mbpo_pwm.aggregate, flow_mbpo_pwm.plots, flow_mbpo_pwm.statistics; "
        "bad = [m for m in ('torch', 'warp', 'newton') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kept", [5, 9], ids=["fewer", "more"])
def test_a_run_with_another_number_of_episodes_is_refused_by_name(tmp_path, capsys, kept):
    experiment = small_experiment()  # evaluation.episodes = 8
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    write_episodes(episodes[4], ("ant", "tiny", "flow", 1), np.arange(float(kept)))
    _refused(
        tmp_path,
        capsys,
        experiment,
        episodes,
        summaries,
        "evaluation.episodes = 8",
        f"ant/tiny-flow/seed1 ({kept} in {episodes[4]})",
    )


def test_a_directory_given_as_episodes_file_is_named(tmp_path, capsys):
    experiment = small_experiment()
    episodes, summaries = write_results(tmp_path / "results", experiment, hand_returns)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    _refused(tmp_path, capsys, experiment, [*episodes, folder], summaries, f"{folder} is a directory")
