"""`flow-mbpo-pwm plot`: the experiment's figures as PNG and PDF. matplotlib/seaborn only (no torch).

Figures (stems listed by `expected_figures`, so the Snakemake rule declares its outputs from the same place):
- learning_curves: training-episode return against environment steps, mean and 95% CI over seeds;
- final_returns: evaluation return per cell with the bootstrap 95% CI from compare.csv and per-seed means;
- wall_clock: training seconds per cell with per-seed values;
- substeps_ablation: evaluation return against flow substeps K (only when flow variants differ in K);
- wm_diagnostics: where learning stalls (wm_diagnostics.csv): the world model's latent error over the copy
  baseline's per imagined step at each run's last validation, the model-vs-env gradient cosine over env steps, and
  that cosine per action step at the last check.
Beside them, `learning_curves.csv` (curves.py): the learning curves read at `evaluation.curve_env_steps`.
One panel per (task, size): rows are tasks, columns sizes. Colours follow the config's dynamics order everywhere.
The model-free PPO reference (when `reference.enabled`) is drawn in every panel of its task, in grey: a labelled
band (95% CI) and line (mean) in final_returns, and its training curve in learning_curves, clipped to the env-step
range of that panel's PWM runs so returns are compared per environment step.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # never needs a display; must come before seaborn imports pyplot

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from flow_mbpo_pwm.aggregate import CELL, RUN, ResultsInputError, cell_name, check_cells, read_csv  # noqa: E402
from flow_mbpo_pwm.config import REFERENCE_DYNAMICS, REFERENCE_SIZE, ExperimentConfig  # noqa: E402
from flow_mbpo_pwm.curves import curve_table, period_curves  # noqa: E402
from flow_mbpo_pwm.io import atomic_path, write_csv  # noqa: E402
from flow_mbpo_pwm.run_folder import COLLAPSED, LATER_WM_DIAGNOSTICS_COLUMNS  # noqa: E402

FORMATS = ("png", "pdf")
PANEL_SIZE = (4.2, 3.2)  # inches per panel
METRICS_COLUMNS = [*RUN, "env_steps", "train_return_mean", "train_episodes"]
COMPARE_COLUMNS = [*CELL, "return_mean", "return_ci_low", "return_ci_high", "train_seconds"]
PER_SEED_COLUMNS = [*RUN, "return_mean", "train_seconds"]
WM_DIAGNOSTICS_COLUMNS = [
    *RUN, "epoch", "env_steps", "step", "wm_latent_mse", "copy_latent_mse", "grad_cosine", "grad_cosine_step",
]  # fmt: skip
RETURN_LABEL = "evaluation episode return"
REFERENCE_COLOR = "0.35"
COLLAPSED_COLOR = "tab:red"  # seeds the collapse guard stopped
REFERENCE_LABEL = "PPO reference (rsl-rl)"
SECONDS_LABEL = "training wall-clock (seconds)"
CURVES_TABLE = "learning_curves.csv"  # written by `plot` into its out_dir, beside the figures


def expected_figures(experiment: ExperimentConfig) -> list[str]:
    """The figure stems `plot` writes for this experiment (each as .png and .pdf)."""
    stems = ["learning_curves", "final_returns", "wall_clock", "wm_diagnostics"]
    return [*stems, "substeps_ablation"] if has_substeps_ablation(experiment) else stems


def has_substeps_ablation(experiment: ExperimentConfig) -> bool:
    substeps = {dyn.substeps for dyn in experiment.dynamics.values() if dyn.kind == "flow"}
    return len(substeps) > 1


def plot(
    experiment: ExperimentConfig,
    compare: Path,
    per_seed: Path,
    metrics: list[Path],
    out_dir: Path,
    wm_diagnostics: list[Path],
) -> int:
    """Write every figure of `expected_figures(experiment)` and `CURVES_TABLE` to `out_dir`. Returns 0, or 1 with
    a message."""
    try:
        compare_frame = _read_table(compare, COMPARE_COLUMNS, CELL, "compare table")
        cells = compare_frame[CELL].itertuples(index=False, name=None)
        check_cells(experiment, cells, "compare.csv rows", per_seed=False)
        per_seed_frame = _read_table(per_seed, PER_SEED_COLUMNS, RUN, "per-seed table")
        check_cells(experiment, per_seed_frame[RUN].itertuples(index=False, name=None), "per_seed.csv rows")
        metrics_frame = read_metrics(metrics)
        check_cells(experiment, metrics_frame[RUN].drop_duplicates().itertuples(index=False, name=None), "metrics")
        diagnostics_frame = read_wm_diagnostics(wm_diagnostics)
        runs = diagnostics_frame[RUN].drop_duplicates().itertuples(index=False, name=None)
        check_cells(experiment, runs, "world-model diagnostics", pwm_only=True)  # the reference has no world model
    except ResultsInputError as err:
        print(f"flow-mbpo-pwm plot: {err}", file=sys.stderr)
        return 1

    figures = {
        "learning_curves": learning_curves_figure(experiment, metrics_frame),
        "final_returns": final_returns_figure(experiment, compare_frame, per_seed_frame),
        "wall_clock": wall_clock_figure(experiment, compare_frame, per_seed_frame),
        "wm_diagnostics": wm_diagnostics_figure(experiment, diagnostics_frame),
    }
    if has_substeps_ablation(experiment):
        figures["substeps_ablation"] = substeps_ablation_figure(experiment, compare_frame)
    for stem, figure in figures.items():
        save_figure(figure, Path(out_dir) / stem)
    write_csv(Path(out_dir) / CURVES_TABLE, curve_table(experiment, metrics_frame))
    print(f"flow-mbpo-pwm plot: {len(figures)} figures and {CURVES_TABLE} -> {out_dir}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------


def _read_table(path: Path, columns: Sequence[str], key: Sequence[str], what: str) -> pd.DataFrame:
    """A CSV with at least `columns`, one row per `key`."""
    frame = read_csv(path, what)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ResultsInputError(f"{what} {path} lacks the columns {missing}")
    duplicated = frame[frame.duplicated(subset=list(key), keep=False)]
    if not duplicated.empty:
        first = duplicated[list(key)].iloc[0].tolist()
        raise ResultsInputError(f"{what} {path} has {len(duplicated)} rows sharing a key {list(key)}, e.g. {first}")
    return frame


def read_metrics(paths: Sequence[Path]) -> pd.DataFrame:
    """Every run's metrics.csv in one frame; a run must not come from two files."""
    return _read_runs(paths, METRICS_COLUMNS, [*RUN, "env_steps"], "metrics")


def read_wm_diagnostics(paths: Sequence[Path]) -> pd.DataFrame:
    """Every run's wm_diagnostics.csv in one frame, one row per (run, epoch, step); a run must not come from two
    files. The columns added after runs had been trained (`run_folder.LATER_WM_DIAGNOSTICS_COLUMNS`, the value's)
    are NaN where a run's file has none."""
    frame = _read_runs(paths, WM_DIAGNOSTICS_COLUMNS, [*RUN, "epoch", "step"], "world-model diagnostics")
    return frame.reindex(columns=[*frame.columns, *(c for c in LATER_WM_DIAGNOSTICS_COLUMNS if c not in frame.columns)])


def _read_runs(paths: Sequence[Path], columns: Sequence[str], key: Sequence[str], what: str) -> pd.DataFrame:
    frames, sources = [], {}
    for path in paths:
        frame = _read_table(path, columns, key, f"{what} file")
        for run in frame[RUN].drop_duplicates().itertuples(index=False, name=None):
            if run in sources:
                raise ResultsInputError(f"{what} of {cell_name(*run)} appear in {sources[run]} and {path}")
            sources[run] = path
        frames.append(frame)
    if not frames:
        raise ResultsInputError(f"no {what} files given")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------


def _palette(experiment: ExperimentConfig) -> dict[str, tuple[float, float, float]]:
    names = list(experiment.dynamics)
    return dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))


def _panels(experiment: ExperimentConfig) -> tuple[Figure, np.ndarray]:
    """A figure with one panel per (task, size): rows are tasks, columns sizes; y shared along a task's row."""
    rows, cols = len(experiment.tasks), len(experiment.sizes)
    figure = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False, sharey="row")
    for (task, size), ax in zip(_panel_keys(experiment), axes.flat, strict=True):
        ax.set_title(f"{task} · {size}")
        ax.grid(True, alpha=0.3)
    return figure, axes


def _panel_keys(experiment: ExperimentConfig) -> list[tuple[str, str]]:
    return [(task, size) for task in experiment.tasks for size in experiment.sizes]


def _label(ax: Axes, x: str, y: str) -> None:
    # Panels of a row share their y axis: label it once, on the left.
    ax.set_xlabel(x)
    ax.set_ylabel(y if ax.get_subplotspec().is_first_col() else "")


def _figure_legend(figure: Figure, experiment: ExperimentConfig) -> None:
    palette = _palette(experiment)
    handles: list = [Patch(color=palette[name], label=name) for name in experiment.dynamics]
    if experiment.reference.enabled:
        handles.append(Line2D([], [], color=REFERENCE_COLOR, ls="--", label=REFERENCE_LABEL))
    figure.legend(handles=handles, title="dynamics", loc="outside lower center", ncols=len(handles))


def learning_curves_figure(experiment: ExperimentConfig, metrics: pd.DataFrame) -> Figure:
    """Training-episode return against env steps: mean over seeds and a 95% bootstrap CI band."""
    figure, axes = _panels(experiment)
    palette = _palette(experiment)
    finished = period_curves(experiment, metrics)  # as learning_curves.csv reads them (curves.py)
    for (task, size), ax in zip(_panel_keys(experiment), axes.flat, strict=True):
        panel = finished[(finished["task"] == task) & (finished["size"] == size)]
        reference = finished[(finished["task"] == task) & (finished["dynamics"] == REFERENCE_DYNAMICS)]
        if not panel.empty:
            reference = reference[reference["env_steps"] <= panel["env_steps"].max()]
        # Mean over seeds with a 95% bootstrap band, for the reference and for the variants alike.
        curve = {"x": "env_steps", "y": "train_return_mean", "estimator": "mean", "errorbar": ("ci", 95),
                 "n_boot": 1000, "seed": 0, "ax": ax, "legend": False}  # fmt: skip
        if not reference.empty:
            # markers: its rows are 1.3M env steps apart, and a short PWM run may span only one of them
            sns.lineplot(data=reference, color=REFERENCE_COLOR, linestyle="--", marker="o", markersize=4, **curve)
        if not panel.empty:
            sns.lineplot(data=panel, hue="dynamics", hue_order=list(experiment.dynamics), palette=palette, **curve)
        _label(ax, "environment steps", "training episode return")
    _figure_legend(figure, experiment)
    return figure


def _per_cell_points(
    ax: Axes,
    experiment: ExperimentConfig,
    cells: pd.DataFrame,
    runs: pd.DataFrame,
    column: str,
    low: str | None,
    high: str | None,
    bars: bool,
) -> None:
    """One x position per dynamics variant: the cell value (bar or point, with CI if given) and per-seed dots."""
    palette = _palette(experiment)
    names = list(experiment.dynamics)
    rng = np.random.default_rng(0)  # jitter of the per-seed dots; fixed so the figures are reproducible
    for x, name in enumerate(names):
        cell = cells[cells["dynamics"] == name]
        if cell.empty:
            continue
        value = float(cell[column].iloc[0])
        if bars:
            ax.bar(x, value, width=0.6, color=palette[name], alpha=0.7)
        else:
            ax.plot([x], [value], "o", color=palette[name], markersize=8)
        if low is not None and high is not None:
            lo, hi = float(cell[low].iloc[0]), float(cell[high].iloc[0])
            if np.isfinite([lo, hi]).all():
                # clipped at 0: a percentile interval need not contain the point estimate
                yerr = [[max(value - lo, 0.0)], [max(hi - value, 0.0)]]
                ax.errorbar([x], [value], yerr=yerr, color="black", capsize=5, lw=1.5)
        seed_rows = runs[runs["dynamics"] == name]
        seeds = seed_rows[column].to_numpy(dtype=float)
        at = x + rng.uniform(-0.15, 0.15, seeds.size)
        # Seeds the collapse guard stopped (per_seed.csv `train_status`; tables from before it have none) in red.
        collapsed = (seed_rows.get("train_status", pd.Series("", index=seed_rows.index)) == COLLAPSED).to_numpy()
        ax.scatter(at[~collapsed], seeds[~collapsed], s=14, color="0.3", alpha=0.7, zorder=3)
        if collapsed.any():
            ax.scatter(at[collapsed], seeds[collapsed], s=36, marker="x", color=COLLAPSED_COLOR, zorder=4)
    ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 3 else 0)
    ax.set_xlim(-0.6, len(names) - 0.4)


def final_returns_figure(experiment: ExperimentConfig, compare: pd.DataFrame, per_seed: pd.DataFrame) -> Figure:
    """Evaluation return per cell: mean and bootstrap 95% CI (compare.csv) with each seed's mean (dots)."""
    figure, axes = _panels(experiment)
    for (task, size), ax in zip(_panel_keys(experiment), axes.flat, strict=True):
        cells = compare[(compare["task"] == task) & (compare["size"] == size)]
        runs = per_seed[(per_seed["task"] == task) & (per_seed["size"] == size)]
        _per_cell_points(ax, experiment, cells, runs, "return_mean", "return_ci_low", "return_ci_high", bars=False)
        _reference_band(ax, compare[(compare["task"] == task) & (compare["size"] == REFERENCE_SIZE)])
        _label(ax, "dynamics", f"{RETURN_LABEL}\n(mean, 95% CI; dots: seeds, red x: collapsed)")
    return figure


def _reference_band(ax: Axes, reference: pd.DataFrame) -> None:
    """The PPO reference's evaluation return across the panel: its 95% CI as a band, its mean as a labelled line."""
    if reference.empty:
        return
    row = reference.iloc[0]
    mean, low, high = (float(row[k]) for k in ("return_mean", "return_ci_low", "return_ci_high"))
    if np.isfinite([low, high]).all():
        ax.axhspan(low, high, color=REFERENCE_COLOR, alpha=0.15, lw=0)
    ax.axhline(mean, color=REFERENCE_COLOR, ls="--", lw=1.5)
    ax.annotate(
        f"{REFERENCE_LABEL}: {mean:.4g}",
        xy=(0.02, mean),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize="small",
        color=REFERENCE_COLOR,
    )


def wall_clock_figure(experiment: ExperimentConfig, compare: pd.DataFrame, per_seed: pd.DataFrame) -> Figure:
    """Training seconds per cell: mean over seeds (bar) and each seed (dots)."""
    figure, axes = _panels(experiment)
    for (task, size), ax in zip(_panel_keys(experiment), axes.flat, strict=True):
        cells = compare[(compare["task"] == task) & (compare["size"] == size)]
        runs = per_seed[(per_seed["task"] == task) & (per_seed["size"] == size)]
        _per_cell_points(ax, experiment, cells, runs, "train_seconds", None, None, bars=True)
        _label(ax, "dynamics", SECONDS_LABEL)
        ax.set_ylim(bottom=0)
    return figure


def substeps_ablation_figure(experiment: ExperimentConfig, compare: pd.DataFrame) -> Figure:
    """Evaluation return against flow substeps K, one line per size; the deterministic variant (if any) as a
    dashed line of the same colour. One panel per task."""
    flows = {name: dyn.substeps for name, dyn in experiment.dynamics.items() if dyn.kind == "flow"}
    deterministic = [name for name, dyn in experiment.dynamics.items() if dyn.kind == "deterministic"]
    tasks = list(experiment.tasks)
    figure = Figure(figsize=(PANEL_SIZE[0] * len(tasks), PANEL_SIZE[1] + 0.4), layout="constrained")
    axes = figure.subplots(1, len(tasks), squeeze=False)[0]
    colors = dict(zip(experiment.sizes, sns.color_palette("dark", len(experiment.sizes)), strict=True))
    for task, ax in zip(tasks, axes, strict=True):
        for size in experiment.sizes:
            rows = compare[(compare["task"] == task) & (compare["size"] == size) & compare["dynamics"].isin(flows)]
            rows = rows.assign(K=rows["dynamics"].map(flows)).sort_values("K")
            mean = rows["return_mean"].to_numpy(dtype=float)
            err = np.stack([mean - rows["return_ci_low"], rows["return_ci_high"] - mean]).clip(min=0)
            ax.errorbar(
                rows["K"],
                mean,
                yerr=np.nan_to_num(err),
                marker="o",
                capsize=4,
                color=colors[size],
                label=f"{size} flow",
            )
            for name in deterministic[:1]:
                ref = compare[(compare["task"] == task) & (compare["size"] == size) & (compare["dynamics"] == name)]
                if not ref.empty:
                    ax.axhline(float(ref["return_mean"].iloc[0]), ls="--", color=colors[size], label=f"{size} {name}")
        ks = sorted(set(flows.values()))
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_title(task)
        ax.set_xlabel("flow integration substeps K")
        ax.set_ylabel(f"{RETURN_LABEL}\n(mean, 95% CI)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return figure


def wm_diagnostics_figure(experiment: ExperimentConfig, diagnostics: pd.DataFrame) -> Figure:
    """Per task four rows of (task, size) panels, means over seeds with 95% CIs:
    - the latent error of the model's own rollout over the copy baseline's against the imagined step, at each run's
      last validation (1 = no better than copying the last latent);
    - the gradient cosine against env steps (1 = the model's return gradient points where the env's does);
    - the gradient cosine of each action alone against its step, at each run's last gradient check;
    - the critic's value error at the rollout's latents over the copy baseline's, at each run's last validation
      (the value the actor's objective adds at the last imagined latent)."""
    rows = 4
    tasks, sizes = list(experiment.tasks), list(experiment.sizes)
    figure = Figure(figsize=(PANEL_SIZE[0] * len(sizes), rows * PANEL_SIZE[1] * len(tasks) + 0.6), layout="constrained")
    axes = figure.subplots(rows * len(tasks), len(sizes), squeeze=False)
    last = diagnostics[diagnostics["epoch"] == diagnostics.groupby(RUN)["epoch"].transform("max")]
    last = last.assign(
        ratio=last["wm_latent_mse"] / last["copy_latent_mse"],
        value_ratio=last["wm_value_mse"] / last["copy_value_mse"],
    )
    valued = last[np.isfinite(last["value_ratio"])]  # runs from before the value columns have NaN there
    checked = diagnostics[np.isfinite(diagnostics["grad_cosine"])]
    last_checked = checked[checked["epoch"] == checked.groupby(RUN)["epoch"].transform("max")]
    lines = {
        "hue": "dynamics",
        "hue_order": list(experiment.dynamics),
        "palette": _palette(experiment),
        "legend": False,
        "marker": "o",
        "estimator": "mean",
        "errorbar": ("ci", 95),
        "n_boot": 1000,
        "seed": 0,
    }

    def draw(ax: Axes, frame: pd.DataFrame, x: str, y: str, reference: float, title: str, xlabel: str, ylabel: str):
        if frame.empty:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(data=frame, x=x, y=y, ax=ax, **lines)
        ax.axhline(reference, ls="--", color="0.4", lw=1)
        ax.set_title(title)
        _label(ax, xlabel, ylabel)
        ax.grid(True, alpha=0.3)

    for row, task in enumerate(tasks):
        for col, size in enumerate(sizes):
            ratio_ax, cosine_ax, step_ax, value_ax = (axes[rows * row + k, col] for k in range(rows))

            def panel(frame: pd.DataFrame, task: str = task, size: str = size) -> pd.DataFrame:
                return frame[(frame["task"] == task) & (frame["size"] == size)]

            name = f"{task} · {size}"
            draw(ratio_ax, panel(last), "step", "ratio", 1.0, f"{name}: latent error at the last validation",
                 "imagined step h", "latent MSE / copy baseline")  # fmt: skip
            draw(cosine_ax, panel(checked[checked["step"] == 1]), "env_steps", "grad_cosine", 0.0,
                 f"{name}: return gradient, model vs env", "environment steps", "cosine similarity")  # fmt: skip
            draw(step_ax, panel(last_checked), "step", "grad_cosine_step", 0.0,
                 f"{name}: gradient per action, last check", "action of step h", "cosine similarity")  # fmt: skip
            draw(value_ax, panel(valued), "step", "value_ratio", 1.0, f"{name}: critic's value at imagined latents",
                 "imagined step h", "value error / copy baseline")  # fmt: skip
            for ax in (ratio_ax, step_ax, value_ax):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            for ax in (cosine_ax, step_ax):
                ax.set_ylim(-1.05, 1.05)
    _figure_legend(figure, experiment)
    return figure


def save_figure(figure: Figure, stem: Path) -> None:
    """`stem`.png and `stem`.pdf, each written atomically (temp file, then rename)."""
    for fmt in FORMATS:
        # No creation date in the PDF and no software tag in the PNG: the same inputs give the same bytes.
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        with atomic_path(stem.with_name(f"{stem.name}.{fmt}")) as tmp:
            # tight: a legend wider than a one-panel figure (several variants and the reference) is not clipped
            figure.savefig(tmp, format=fmt, dpi=150, metadata=metadata, bbox_inches="tight")
