"""`plot`: every expected figure is written as a readable PNG and PDF with one panel per (task, size)."""

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from flow_mbpo_pwm.aggregate import aggregate, grid_runs
from flow_mbpo_pwm.plots import (
    CURVES_TABLE,
    expected_figures,
    final_returns_figure,
    learning_curves_figure,
    plot,
    read_metrics,
    read_wm_diagnostics,
    substeps_ablation_figure,
    wall_clock_figure,
    wm_diagnostics_figure,
)

try:
    from .fixtures_results import run_dir, small_experiment, write_metrics, write_results, write_wm_diagnostics
except ImportError:  # tests/results is not a package
    from fixtures_results import run_dir, small_experiment, write_metrics, write_results, write_wm_diagnostics

ABLATION = {"deterministic": {}, "flow-k2": {"kind": "flow", "substeps": 2}, "flow-k8": {"kind": "flow", "substeps": 8}}


def returns(cell):
    return np.random.default_rng(cell[3]).normal(100.0 + 10 * len(cell[2]), 5.0, size=8)


def results_tree(tmp_path, experiment):
    """compare.csv and per_seed.csv from the real `aggregate`, and one metrics.csv and wm_diagnostics.csv per run."""
    root = tmp_path / "results"
    episodes, summaries = write_results(root, experiment, returns)
    compare, per_seed = root / "compare.csv", root / "per_seed.csv"
    assert aggregate(experiment, episodes, summaries, compare, per_seed, 200) == 0
    metrics = [write_metrics(run_dir(root, *cell) / "metrics.csv", cell) for cell in grid_runs(experiment)]
    diagnostics = [
        write_wm_diagnostics(run_dir(root, *cell) / "wm_diagnostics.csv", cell) for cell in experiment.cells()
    ]
    return compare, per_seed, metrics, diagnostics


def assert_images(out_dir, stems):
    for stem in stems:
        image = matplotlib.image.imread(out_dir / f"{stem}.png")
        assert image.shape[0] > 300 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # not a blank canvas
        pdf = (out_dir / f"{stem}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and len(pdf) > 2000


def test_plot_writes_every_expected_figure(tmp_path):
    experiment = small_experiment()
    assert expected_figures(experiment) == ["learning_curves", "final_returns", "wall_clock", "wm_diagnostics"]
    compare, per_seed, metrics, diagnostics = results_tree(tmp_path, experiment)
    out = tmp_path / "figures"
    assert plot(experiment, compare, per_seed, metrics, out, diagnostics) == 0
    assert_images(out, expected_figures(experiment))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{stem}.{fmt}" for stem in expected_figures(experiment) for fmt in ("png", "pdf")] + [CURVES_TABLE]
    )


def test_substeps_ablation_only_when_flow_substeps_differ(tmp_path):
    experiment = small_experiment(dynamics=ABLATION, sizes=("tiny",))
    assert expected_figures(experiment)[-1] == "substeps_ablation"
    compare, per_seed, metrics, diagnostics = results_tree(tmp_path, experiment)
    out = tmp_path / "figures"
    assert plot(experiment, compare, per_seed, metrics, out, diagnostics) == 0
    assert_images(out, expected_figures(experiment))

    figure = substeps_ablation_figure(experiment, pd.read_csv(compare))
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "8"]
    assert ax.get_xlabel() == "flow integration substeps K"
    assert len(ax.get_legend().get_texts()) == 2  # tiny flow line + tiny deterministic reference
    same_k = small_experiment(
        dynamics={"deterministic": {}, "flow": {}, "flow-rk4": {"kind": "flow", "integrator": "rk4"}}
    )
    assert "substeps_ablation" not in expected_figures(same_k)


def test_figures_have_one_panel_per_task_and_size(tmp_path):
    two_tasks = small_experiment(tasks=("ant", "ant-b"))
    compare, per_seed, metrics, diagnostics = results_tree(tmp_path, two_tasks)
    compare, per_seed, metrics_frame = pd.read_csv(compare), pd.read_csv(per_seed), read_metrics(metrics)

    curves = learning_curves_figure(two_tasks, metrics_frame)
    assert len(curves.axes) == 4  # 2 tasks x 2 sizes
    assert [ax.get_title() for ax in curves.axes] == ["ant · tiny", "ant · 5M", "ant-b · tiny", "ant-b · 5M"]
    assert [ax.get_ylabel() for ax in curves.axes] == ["training episode return", ""] * 2  # y shared per row
    for ax in curves.axes:
        assert ax.get_xlabel() == "environment steps"
        assert len(ax.get_lines()) == 2  # one mean line per dynamics variant
        assert len(ax.collections) == 2  # one CI band per dynamics variant
    legend = curves.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["deterministic", "flow"]

    final = final_returns_figure(two_tasks, compare, per_seed)
    assert len(final.axes) == 4
    assert [t.get_text() for t in final.axes[0].get_xticklabels()] == ["deterministic", "flow"]
    assert "evaluation episode return" in final.axes[0].get_ylabel()
    # the CI error bar of each variant spans compare.csv's interval
    bars = [c for c in final.axes[0].collections if c.__class__.__name__ == "LineCollection"]
    assert len(bars) == 2
    row = compare[(compare["task"] == "ant") & (compare["size"] == "tiny") & (compare["dynamics"] == "flow")]
    segment = bars[1].get_segments()[0]
    assert segment[:, 1] == pytest.approx([row["return_ci_low"].iloc[0], row["return_ci_high"].iloc[0]])

    clock = wall_clock_figure(two_tasks, compare, per_seed)
    assert len(clock.axes) == 4 and clock.axes[0].get_ylabel() == "training wall-clock (seconds)"
    heights = [p.get_height() for p in clock.axes[0].patches]
    assert heights == pytest.approx([110.0, 110.0])  # mean of 100 + 10 * seed over seeds 0, 1, 2


def test_reference_is_a_band_in_final_returns_and_a_clipped_curve_in_learning_curves(tmp_path):
    experiment = small_experiment(reference=True)
    compare, per_seed, metrics, diagnostics = results_tree(tmp_path, experiment)
    assert plot(experiment, compare, per_seed, metrics, tmp_path / "figures", diagnostics) == 0
    assert_images(tmp_path / "figures", expected_figures(experiment))
    compare, per_seed, metrics_frame = pd.read_csv(compare), pd.read_csv(per_seed), read_metrics(metrics)
    # The reference trains on many more env steps than PWM: its curve must stop at PWM's last env step.
    reference_metrics = metrics_frame["dynamics"] == "ppo"
    metrics_frame.loc[reference_metrics, "env_steps"] *= 3
    curves = learning_curves_figure(experiment, metrics_frame)
    pwm_max = metrics_frame.loc[~reference_metrics, "env_steps"].max()
    for ax in curves.axes:
        assert len(ax.get_lines()) == 3  # two variants + the reference
        assert max(line.get_xdata().max() for line in ax.get_lines()) <= pwm_max
    assert [t.get_text() for t in curves.legends[0].get_texts()] == ["deterministic", "flow", "PPO reference (rsl-rl)"]

    final = final_returns_figure(experiment, compare, per_seed)
    row = compare[compare["dynamics"] == "ppo"].iloc[0]
    for ax in final.axes:
        labels = [t.get_text() for t in ax.texts]
        assert labels == [f"PPO reference (rsl-rl): {row['return_mean']:.4g}"]
        lines = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert lines[0].get_ydata()[0] == pytest.approx(row["return_mean"])
    assert [t.get_text() for t in final.axes[0].get_xticklabels()] == ["deterministic", "flow"]


def test_plot_refuses_inputs_that_are_not_the_grid(tmp_path, capsys):
    experiment = small_experiment()
    compare, per_seed, metrics, diagnostics = results_tree(tmp_path, experiment)
    out = tmp_path / "figures"
    assert plot(experiment, compare, per_seed, metrics[:-1], out, diagnostics) == 1
    assert "missing metrics for 1 cell(s): ant/5M-flow/seed2" in capsys.readouterr().err
    assert plot(experiment, compare, per_seed, [*metrics, metrics[0]], out, diagnostics) == 1
    assert "appear in" in capsys.readouterr().err
    frame = pd.read_csv(compare)
    frame.iloc[:-1].to_csv(compare, index=False)
    assert plot(experiment, compare, per_seed, metrics, out, diagnostics) == 1
    assert "missing compare.csv rows for 1 cell(s): ant/5M-flow\n" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "stem",
    ["learning_curves", "final_returns", "wall_clock", "substeps_ablation", "wm_diagnostics", "compare", "per_seed"],
)
def test_report_captions_exist_and_are_valid_rst(stem):
    from docutils.core import publish_doctree

    caption = Path(__file__).parents[2] / "workflow" / "report" / f"{stem}.rst"
    # halt_level 2: any docutils warning (broken markup) raises instead of rendering garbage in the report
    tree = publish_doctree(caption.read_text(), settings_overrides={"halt_level": 2, "report_level": 2})
    assert len(tree.astext().split()) > 20


def test_wm_diagnostics_figure_shows_the_copy_ratio_and_the_gradient_cosine(tmp_path, capsys):
    two_tasks = small_experiment(tasks=("ant", "ant-b"))
    compare, per_seed, metrics, diagnostics = results_tree(tmp_path, two_tasks)
    frame = read_wm_diagnostics(diagnostics)
    figure = wm_diagnostics_figure(two_tasks, frame)
    assert len(figure.axes) == 16  # per task a ratio row, two cosine rows and a value row, one panel per size
    ratio_ax, cosine_ax, step_ax, value_ax = figure.axes[0], figure.axes[2], figure.axes[4], figure.axes[6]
    assert ratio_ax.get_title() == "ant · tiny: latent error at the last validation"
    assert ratio_ax.get_ylabel() == "latent MSE / copy baseline" and cosine_ax.get_ylabel() == "cosine similarity"
    # one mean line per dynamics variant (plus the dashed reference); the flow fixture sits at ~half the baseline
    lines = [line for line in ratio_ax.get_lines() if line.get_linestyle() != "--"]
    assert len(lines) == 2
    flow_ratio = lines[1].get_ydata()
    assert list(lines[1].get_xdata()) == [1, 2, 3, 4] and all(0.4 < r < 0.6 for r in flow_ratio)
    # the cosine is drawn only where it was measured (NaN at the first validation)
    cosine_lines = [line for line in cosine_ax.get_lines() if line.get_linestyle() != "--"]
    assert all(len(line.get_xdata()) == 2 for line in cosine_lines)
    # per action step at the last check (epoch 75 of the fixture: cosine / step)
    step_lines = [line for line in step_ax.get_lines() if line.get_linestyle() != "--"]
    assert len(step_lines) == 2 and list(step_lines[0].get_xdata()) == [1, 2, 3, 4]
    assert step_ax.get_title() == "ant · tiny: gradient per action, last check"
    # the critic's value error over its copy baseline: the fixture's 2x for both variants
    value_lines = [line for line in value_ax.get_lines() if line.get_linestyle() != "--"]
    assert len(value_lines) == 2 and all(np.allclose(line.get_ydata(), 2.0) for line in value_lines)
    assert value_ax.get_ylabel() == "value error / copy baseline"

    out = tmp_path / "figures"
    assert plot(two_tasks, compare, per_seed, metrics, out, diagnostics[:-1]) == 1
    assert "missing world-model diagnostics for 1 cell(s)" in capsys.readouterr().err


def test_wm_diagnostics_figure_says_when_the_cosine_or_the_value_was_never_measured(tmp_path):
    experiment = small_experiment()
    *_, diagnostics = results_tree(tmp_path, experiment)
    frame = read_wm_diagnostics(diagnostics).assign(grad_cosine=float("nan"))
    figure = wm_diagnostics_figure(experiment, frame)
    sizes = len(experiment.sizes)
    for ax in figure.axes[sizes : 3 * sizes]:  # both cosine rows
        assert [t.get_text() for t in ax.texts] == ["not measured"]
    # nor the value, in runs from before its columns: read as NaN, and said so, not drawn as zero
    for path in diagnostics:
        pd.read_csv(path).drop(columns=["wm_value_mse", "copy_value_mse"]).to_csv(path, index=False)
    frame = read_wm_diagnostics(diagnostics)
    assert frame["wm_value_mse"].isna().all() and frame["copy_value_mse"].isna().all()
    figure = wm_diagnostics_figure(experiment, frame)
    for ax in figure.axes[3 * sizes :]:
        assert [t.get_text() for t in ax.texts] == ["not measured"]


def test_a_collapsed_seed_is_a_red_cross_in_final_returns(tmp_path):
    """per_seed.csv's `train_status`: a seed the collapse guard stopped is drawn apart from the others."""
    from matplotlib.colors import to_rgba

    from flow_mbpo_pwm.plots import COLLAPSED_COLOR

    experiment = small_experiment()
    compare, per_seed, _, _ = results_tree(tmp_path, experiment)
    compare, per_seed = pd.read_csv(compare), pd.read_csv(per_seed)

    def crosses(frame: pd.DataFrame) -> int:
        figure = final_returns_figure(experiment, compare, frame)
        red = to_rgba(COLLAPSED_COLOR)
        return sum(
            len(c.get_offsets())
            for ax in figure.axes
            for c in ax.collections
            if len(c.get_facecolors()) and np.allclose(c.get_facecolors()[0], red)
        )

    assert crosses(per_seed) == 0
    collapsed = per_seed.copy()
    one = (collapsed["size"] == "tiny") & (collapsed["dynamics"] == "flow") & (collapsed["seed"] == 1)
    collapsed.loc[one, "train_status"] = "collapsed"
    assert crosses(collapsed) == 1
    assert crosses(per_seed.drop(columns="train_status")) == 0  # a table from before the column
