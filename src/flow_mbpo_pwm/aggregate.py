"""`flow-mbpo-pwm aggregate`: every cell's evaluation episodes and training summary -> `compare.csv` and
`per_seed.csv`. pandas/numpy only: runs on a login node without torch or Warp.

The PPO reference (`flow-mbpo-pwm reference`) is part of the grid when `reference.enabled`: one row per task with
size "reference" and dynamics "ppo" in both tables (no ratio to deterministic).

The inputs must be exactly the experiment's grid (PWM cells and reference runs): a missing cell, a duplicated
cell or episode, a cell the config does not list, or a run that neither completed nor was stopped by the collapse
guard is refused (naming the cells) instead of averaged over. A collapsed run counts, at the checkpoint selection
took from before its collapse, and is counted (`n_collapsed`, `train_status`). Every column is explained in
docs/compare-columns.md.
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flow_mbpo_pwm.config import REFERENCE_DYNAMICS, ExperimentConfig
from flow_mbpo_pwm.io import InputError, read_json, write_csv
from flow_mbpo_pwm.run_folder import COLLAPSED, TRAIN_STATUSES
from flow_mbpo_pwm.statistics import (
    hierarchical_bootstrap,
    iqm,
    percentile_interval,
    ratio_estimate,
)

CELL = ["task", "size", "dynamics"]
RUN = [*CELL, "seed"]
EPISODE_COLUMNS = [*RUN, "episode", "return"]
SUMMARY_KEYS = [
    "task",
    "size",
    "dynamics",
    "seed",
    "status",
    "env_steps",
    "train_seconds",
    "params",
    "best_train_return",
]
CI_LEVEL = 0.95
BOOTSTRAP_SEED = 20_240_601  # fixed: the same inputs always give the same compare.csv

COMPARE_COLUMNS = [
    *CELL,
    "dynamics_kind",
    "substeps",
    "n_seeds",
    "n_collapsed",
    "n_episodes",
    "return_mean",
    "return_std",
    "return_median",
    "return_iqm",
    "return_ci_low",
    "return_ci_high",
    "return_iqm_ci_low",
    "return_iqm_ci_high",
    "return_seed_std",
    "ratio_to_deterministic",
    "ratio_ci_low",
    "ratio_ci_high",
    "ratio_note",
    "train_best_return_mean",
    "train_best_return_std",
    "train_best_return_median",
    "train_best_return_iqm",
    "train_best_return_ci_low",
    "train_best_return_ci_high",
    "params",
    "params_world_model",
    "env_steps",
    "train_seconds",
    "train_seconds_std",
    "bootstrap_resamples",
]
# Per-seed values copied from each run's train summary, as they are.
SUMMARY_FIELDS = (
    "train_best_return",
    "final_train_return",
    "params",
    "params_world_model",
    "env_steps",
    "epochs",
    "train_seconds",
)
PER_SEED_COLUMNS = [
    *RUN,
    "dynamics_kind",
    "substeps",
    "n_episodes",
    "return_mean",
    "return_median",
    "return_std",
    *SUMMARY_FIELDS,
    "train_status",
]


class ResultsInputError(InputError):
    """Inputs that do not match the experiment's grid or the stage contracts."""


def aggregate(
    experiment: ExperimentConfig,
    episodes: list[Path],
    summaries: list[Path],
    out: Path,
    out_per_seed: Path,
    bootstrap: int,
) -> int:
    """Write `out` (compare.csv) and `out_per_seed` (per_seed.csv). Returns 0, or 1 with a message on bad input."""
    try:
        if bootstrap < 1:
            raise ResultsInputError(f"--bootstrap must be >= 1, got {bootstrap}")
        deterministic_variant(experiment)  # refuse an ambiguous reference before reading anything
        episode_rows = read_episodes(episodes)
        summary_rows = read_summaries(summaries)
        compare, per_seed = build_tables(experiment, episode_rows, summary_rows, bootstrap)
    except ResultsInputError as err:
        print(f"flow-mbpo-pwm aggregate: {err}", file=sys.stderr)
        return 1
    write_csv(out, compare)
    write_csv(out_per_seed, per_seed)
    print(f"flow-mbpo-pwm aggregate: {len(compare)} cells, {len(per_seed)} runs -> {out}, {out_per_seed}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# Reading and checking the inputs
# --------------------------------------------------------------------------------------------------------------


def cell_name(task: str, size: str, dynamics: str, seed: int | None = None) -> str:
    """A cell as it appears in the results tree, e.g. `ant/5M-flow/seed3` (the PPO reference: `ant/reference/seed3`)."""
    name = f"{task}/{size}" if dynamics == REFERENCE_DYNAMICS else f"{task}/{size}-{dynamics}"
    return name if seed is None else f"{name}/seed{seed}"


def _name_list(cells: Iterable[tuple[Any, ...]], limit: int = 20) -> str:
    names = [cell_name(*cell) for cell in sorted(cells, key=str)]
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def read_csv(path: Path, what: str) -> pd.DataFrame:
    """A results CSV with the cell-key columns read as strings (a size such as `5M` or a task named `1` stays text)."""
    path = Path(path)
    if path.is_dir():
        raise ResultsInputError(f"{what} {path} is a directory, expected a CSV file")
    if not path.is_file():
        raise ResultsInputError(f"{what} {path} does not exist")
    try:
        return pd.read_csv(path, dtype={"task": str, "size": str, "dynamics": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ResultsInputError(f"{what} {path} is not a readable CSV ({err})") from err


def read_episodes(paths: Sequence[Path]) -> pd.DataFrame:
    """All episodes CSVs in one frame (with a `source` column naming the file each row came from)."""
    frames = []
    for path in paths:
        frame = read_csv(path, "episodes file")
        missing = [c for c in EPISODE_COLUMNS if c not in frame.columns]
        if missing:
            raise ResultsInputError(f"episodes file {path} lacks the columns {missing} (see docs/contracts.md)")
        if frame.empty:
            raise ResultsInputError(f"episodes file {path} has no episodes")
        frame["source"] = str(path)
        frames.append(frame)
    if not frames:
        raise ResultsInputError("no episodes files given")
    episodes = pd.concat(frames, ignore_index=True)
    for column in ("seed", "episode"):
        if not pd.api.types.is_integer_dtype(episodes[column]):
            raise ResultsInputError(f"episodes column '{column}' must hold integers")
    episodes["return"] = pd.to_numeric(episodes["return"], errors="coerce")
    bad = episodes[~np.isfinite(episodes["return"].to_numpy(dtype=float))]
    if not bad.empty:
        cells = set(bad[RUN].itertuples(index=False, name=None))
        raise ResultsInputError(f"non-finite or missing episode returns in {_name_list(cells)}")
    return episodes


def read_summaries(paths: Sequence[Path]) -> pd.DataFrame:
    """All train_summary.json files as one row per run (with a `source` column)."""
    rows = []
    for path in paths:
        path = Path(path)
        try:
            summary = read_json(path)
        except (FileNotFoundError, ValueError) as err:
            raise ResultsInputError(str(err)) from err
        if not isinstance(summary, dict):
            raise ResultsInputError(f"training summary {path} is not a JSON object")
        missing = [k for k in SUMMARY_KEYS if k not in summary]
        if missing:
            raise ResultsInputError(f"training summary {path} lacks the keys {missing} (see docs/contracts.md)")
        params = summary["params"]
        if not isinstance(params, dict) or "total" not in params:
            raise ResultsInputError(f"training summary {path}: 'params' must be a mapping with a 'total' count")
        try:
            rows.append(
                {
                    "task": str(summary["task"]),
                    "size": str(summary["size"]),
                    "dynamics": str(summary["dynamics"]),
                    "seed": int(summary["seed"]),
                    "status": summary["status"],
                    "train_best_return": _float(summary["best_train_return"]),
                    "final_train_return": _float(summary.get("final_train_return")),
                    "params": int(params["total"]),
                    "params_world_model": _int_or_none(params.get("world_model")),
                    "env_steps": int(summary["env_steps"]),
                    "epochs": _int_or_none(summary.get("epochs")),
                    "train_seconds": float(summary["train_seconds"]),
                    "source": str(path),
                }
            )
        except (TypeError, ValueError) as err:
            raise ResultsInputError(f"training summary {path} has a value of the wrong type ({err})") from err
    if not rows:
        raise ResultsInputError("no training summaries given")
    return pd.DataFrame(rows)


def _float(value: Any) -> float:
    # JSON has no NaN: a run that never finished a training episode writes null.
    return float("nan") if value is None else float(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def grid_runs(experiment: ExperimentConfig) -> list[tuple[str, str, str, int]]:
    """Every run the tables hold: the PWM grid's cells, then the PPO reference's runs (when enabled)."""
    return [*experiment.cells(), *experiment.reference_cells()]


def dynamics_kind(experiment: ExperimentConfig, dynamics: str) -> str:
    """`deterministic` / `flow` for a PWM variant; `ppo` for the model-free reference."""
    return REFERENCE_DYNAMICS if dynamics == REFERENCE_DYNAMICS else experiment.dynamics[dynamics].kind


def check_cells(
    experiment: ExperimentConfig,
    found: Iterable[tuple[Any, ...]],
    what: str,
    per_seed: bool = True,
    pwm_only: bool = False,
) -> None:
    """Refuse `found` unless it is exactly the experiment's grid: run keys (task, size, dynamics, seed), or cell
    keys (task, size, dynamics) when `per_seed` is False; the PWM runs alone (no reference) when `pwm_only`."""
    runs = experiment.cells() if pwm_only else grid_runs(experiment)
    expected = set(runs) if per_seed else {cell[:3] for cell in runs}
    found = set(found)
    problems = []
    if expected - found:
        problems.append(f"missing {what} for {len(expected - found)} cell(s): {_name_list(expected - found)}")
    if found - expected:
        problems.append(f"{what} for cell(s) not in the config's grid: {_name_list(found - expected)}")
    if problems:
        raise ResultsInputError("; ".join(problems))


def _check_inputs(experiment: ExperimentConfig, episodes: pd.DataFrame, summaries: pd.DataFrame) -> None:
    problems = []
    duplicated = episodes[episodes.duplicated(subset=[*RUN, "episode"], keep=False)]
    if not duplicated.empty:
        details = []
        for key, rows in duplicated.groupby(RUN, sort=True):
            files = sorted(set(rows["source"]))
            details.append(f"{cell_name(*key)} (episodes {sorted(set(rows['episode']))[:5]} in {files})")
        problems.append("duplicated episodes for " + "; ".join(details[:20]))
    # A run evaluated on another number of episodes (e.g. `evaluate --episodes` by hand, or a stale file from an
    # older config) would be averaged with the others as if it were comparable.
    expected = experiment.evaluation.episodes
    wrong_count = [
        f"{cell_name(*key)} ({rows['episode'].nunique()} in {sorted(set(rows['source']))[0]})"
        for key, rows in episodes.groupby(RUN, sort=True)
        if sorted(set(rows["episode"])) != list(range(expected))
    ]
    if wrong_count:
        problems.append(
            f"runs not evaluated on episodes 0..{expected - 1} (the config's evaluation.episodes = {expected}): "
            + "; ".join(wrong_count[:20])
        )
    duplicated = summaries[summaries.duplicated(subset=RUN, keep=False)]
    if not duplicated.empty:
        details = [f"{cell_name(*key)} ({sorted(rows['source'])})" for key, rows in duplicated.groupby(RUN)]
        problems.append("several training summaries for " + "; ".join(details[:20]))
    unfinished = summaries[~summaries["status"].isin(TRAIN_STATUSES)]
    if not unfinished.empty:
        details = [
            f"{cell_name(*r[:4])} (status {r[4]!r})"
            for r in unfinished[[*RUN, "status"]].itertuples(index=False, name=None)
        ]
        problems.append("training did not complete for " + ", ".join(details[:20]))
    for what, frame in (("episodes", episodes), ("training summaries", summaries)):
        try:
            check_cells(experiment, frame[RUN].itertuples(index=False, name=None), what)
        except ResultsInputError as err:
            problems.append(str(err))
    if problems:
        raise ResultsInputError("refusing to aggregate: " + "; ".join(problems))


def deterministic_variant(experiment: ExperimentConfig) -> str | None:
    """The reference variant for ratios: the one dynamics variant of kind 'deterministic', or among several the one
    named 'deterministic' (e.g. beside a residual variant); None if there is none (ratios are then NaN). Several
    without that name are ambiguous and refused."""
    names = [name for name, dyn in experiment.dynamics.items() if dyn.kind == "deterministic"]
    if len(names) > 1 and "deterministic" in names:
        return "deterministic"
    if len(names) > 1:
        raise ResultsInputError(
            f"the config has several deterministic dynamics variants {names}; ratio_to_deterministic needs "
            "exactly one reference (keep one, or give the others kind 'flow' if that is what they are)"
        )
    return names[0] if names else None


# --------------------------------------------------------------------------------------------------------------
# The tables
# --------------------------------------------------------------------------------------------------------------


def bootstrap_rng(task: str, size: str, dynamics: str, stream: str) -> np.random.Generator:
    """The bootstrap's random stream of one cell and statistic: independent of the order of cells (adding a cell
    changes no other row) and of every other cell's stream, as `statistics.ratio_estimate` assumes."""
    key = zlib.crc32(f"{task}\0{size}\0{dynamics}\0{stream}".encode())
    return np.random.default_rng([BOOTSTRAP_SEED, key])


def _substeps(experiment: ExperimentConfig, dynamics: str) -> float:
    if dynamics_kind(experiment, dynamics) != "flow":
        return float("nan")
    return float(experiment.dynamics[dynamics].substeps)


def build_tables(
    experiment: ExperimentConfig, episodes: pd.DataFrame, summaries: pd.DataFrame, bootstrap: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(compare, per_seed) from checked inputs; raises ResultsInputError if they do not match the grid."""
    _check_inputs(experiment, episodes, summaries)
    reference = deterministic_variant(experiment)
    summaries = summaries.set_index(RUN)
    by_run = {key: rows["return"].to_numpy(dtype=float) for key, rows in episodes.groupby(RUN, sort=False)}

    per_seed_rows = []
    for task, size, dynamics, seed in grid_runs(experiment):
        returns = by_run[(task, size, dynamics, seed)]
        summary = summaries.loc[(task, size, dynamics, seed)]
        per_seed_rows.append(
            {
                "task": task,
                "size": size,
                "dynamics": dynamics,
                "seed": seed,
                "dynamics_kind": dynamics_kind(experiment, dynamics),
                "substeps": _substeps(experiment, dynamics),
                "n_episodes": returns.size,
                "return_mean": returns.mean(),
                "return_median": float(np.median(returns)),
                "return_std": returns.std(ddof=1) if returns.size > 1 else float("nan"),
                **{k: summary[k] for k in SUMMARY_FIELDS},
                "train_status": summary["status"],
            }
        )
    per_seed = _integers(
        pd.DataFrame(per_seed_rows, columns=PER_SEED_COLUMNS), ["substeps", "params_world_model", "epochs"]
    )

    rows, mean_draws = [], {}
    for (task, size, dynamics), runs in per_seed.groupby(CELL, sort=False):
        groups = [by_run[(task, size, dynamics, seed)] for seed in runs["seed"]]
        row, mean_draws[(task, size, dynamics)] = _cell_row(experiment, task, size, dynamics, runs, groups, bootstrap)
        rows.append(row)
    compare = _integers(pd.DataFrame(rows, columns=COMPARE_COLUMNS), ["substeps", "params_world_model"])
    _add_ratios(compare, mean_draws, reference)
    return compare, per_seed


def _integers(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    # Nullable integers: written as `4` or an empty field, not `4.0` / `nan`.
    return frame.astype({column: "Int64" for column in columns})


def _cell_row(
    experiment: ExperimentConfig,
    task: str,
    size: str,
    dynamics: str,
    runs: pd.DataFrame,
    groups: list[np.ndarray],
    bootstrap: int,
) -> tuple[dict[str, Any], np.ndarray]:
    pooled = np.concatenate(groups)
    mean_draws = hierarchical_bootstrap(groups, "mean", bootstrap, bootstrap_rng(task, size, dynamics, "return_mean"))
    iqm_draws = hierarchical_bootstrap(groups, "iqm", bootstrap, bootstrap_rng(task, size, dynamics, "return_iqm"))
    ci_low, ci_high = percentile_interval(mean_draws, CI_LEVEL)
    iqm_low, iqm_high = percentile_interval(iqm_draws, CI_LEVEL)

    # The paper's metric: one value per seed. NaN for any seed (no finished training episode) makes the cell's
    # statistics NaN rather than an average over the seeds that happen to have one.
    best = runs["train_best_return"].to_numpy(dtype=float)
    if np.isfinite(best).all():
        best_draws = hierarchical_bootstrap(
            [[b] for b in best], "mean", bootstrap, bootstrap_rng(task, size, dynamics, "train_best_return")
        )
        best_low, best_high = percentile_interval(best_draws, CI_LEVEL)
        best_stats = (
            best.mean(),
            best.std(ddof=1) if best.size > 1 else math.nan,
            float(np.median(best)),
            iqm(best),
            best_low,
            best_high,
        )
    else:
        best_stats = (math.nan,) * 6

    params = runs["params"].unique()
    if params.size != 1:
        raise ResultsInputError(
            f"parameter counts differ across the seeds of {cell_name(task, size, dynamics)}: {sorted(params)} "
            "(runs from different configs mixed?)"
        )
    seconds = runs["train_seconds"].to_numpy(dtype=float)
    row = {
        "task": task,
        "size": size,
        "dynamics": dynamics,
        "dynamics_kind": dynamics_kind(experiment, dynamics),
        "substeps": _substeps(experiment, dynamics),
        "n_seeds": len(groups),
        "n_collapsed": int((runs["train_status"] == COLLAPSED).sum()),
        "n_episodes": pooled.size,
        "return_mean": pooled.mean(),
        "return_std": pooled.std(ddof=1) if pooled.size > 1 else math.nan,
        "return_median": float(np.median(pooled)),
        "return_iqm": iqm(pooled),
        "return_ci_low": ci_low,
        "return_ci_high": ci_high,
        "return_iqm_ci_low": iqm_low,
        "return_iqm_ci_high": iqm_high,
        "return_seed_std": runs["return_mean"].std(ddof=1) if len(groups) > 1 else math.nan,
        "train_best_return_mean": best_stats[0],
        "train_best_return_std": best_stats[1],
        "train_best_return_median": best_stats[2],
        "train_best_return_iqm": best_stats[3],
        "train_best_return_ci_low": best_stats[4],
        "train_best_return_ci_high": best_stats[5],
        "params": int(params[0]),
        "params_world_model": runs["params_world_model"].iloc[0],
        "env_steps": runs["env_steps"].mean(),
        "train_seconds": seconds.mean(),
        "train_seconds_std": seconds.std(ddof=1) if seconds.size > 1 else math.nan,
        "bootstrap_resamples": bootstrap,
    }
    return row, mean_draws


def _add_ratios(
    compare: pd.DataFrame, mean_draws: dict[tuple[str, str, str], np.ndarray], reference: str | None
) -> None:
    """Ratio of each variant's mean return to the reference (deterministic) variant's of the same task and size,
    with a CI from the two cells' independent bootstrap distributions. The reference row itself is exactly 1.
    The PPO reference rows get none (empty ratio columns): they are not a world-model variant."""
    ratios = []
    for row in compare.itertuples(index=False):
        if row.dynamics == REFERENCE_DYNAMICS:
            ratios.append((math.nan, math.nan, math.nan, "model-free PPO reference: no ratio"))
            continue
        if reference is None:
            ratios.append((math.nan, math.nan, math.nan, "undefined: the config has no deterministic variant"))
            continue
        ref_key = (row.task, row.size, reference)
        ref_mean = float(
            compare.loc[
                (compare["task"] == row.task) & (compare["size"] == row.size) & (compare["dynamics"] == reference),
                "return_mean",
            ].iloc[0]
        )
        ratio = ratio_estimate(
            row.return_mean, ref_mean, mean_draws[(row.task, row.size, row.dynamics)], mean_draws[ref_key], CI_LEVEL
        )
        if row.dynamics == reference and math.isfinite(ratio[0]):
            ratio = (1.0, 1.0, 1.0, "reference")
        ratios.append(ratio)
    compare[["ratio_to_deterministic", "ratio_ci_low", "ratio_ci_high", "ratio_note"]] = pd.DataFrame(
        ratios, index=compare.index
    )
