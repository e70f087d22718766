"""Markdown tables of a finished pipeline run, for docs/results/<date>-<name>/README.md and bench/RESULTS.md.

    python bench/results_summary.py RESULTS_DIR [--out summary.md]

Reads `compare.csv`, `per_seed.csv`, every run's `validation.csv` (PWM cells and the PPO reference) and
`figures/learning_curves.csv` under RESULTS_DIR (a `results/` folder) and prints: the comparison table (held-out
evaluation, 95% CIs, training metric), one row per run, the held-out validation return of every variant and of the
reference at the env steps PWM reached, each PWM run's last validation diagnostics (world model and action jitter),
and the learning curves at fixed env steps (the per-env-step comparison). Reads only CSVs (pandas), like aggregate
and plots.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

COMPARE = ["task", "size", "dynamics", "n_seeds", "n_episodes", "return_mean", "return_ci_low", "return_ci_high",
           "return_iqm", "ratio_to_deterministic", "ratio_ci_low", "ratio_ci_high", "train_best_return_mean",
           "env_steps", "train_seconds"]  # fmt: skip
PER_SEED = ["task", "size", "dynamics", "seed", "return_mean", "return_std", "train_best_return", "env_steps",
            "train_seconds"]  # fmt: skip


def markdown(frame: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def validation_curves(results: Path) -> pd.DataFrame:
    frames = [pd.read_csv(path, dtype={"size": str}) for path in sorted(results.glob("*/*/seed*/validation.csv"))]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def at_env_steps(curves: pd.DataFrame, steps: list[int]) -> pd.DataFrame:
    """Mean over seeds of the last validation at or before each env-step mark, per (task, size, dynamics)."""
    rows = []
    for key, group in curves.groupby(["task", "size", "dynamics"]):
        row = dict(zip(["task", "size", "dynamics"], key, strict=True))
        for mark in steps:
            before = group[group["env_steps"] <= mark]
            last = before.sort_values("env_steps").groupby("seed").tail(1)
            row[f"val@{mark / 1e6:.2g}M"] = last["val_return_mean"].mean() if len(last) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def last_validation(curves: pd.DataFrame) -> pd.DataFrame:
    """Per PWM run, its last validation's world-model diagnostics and the policy's action jitter, and the last
    gradient cosine measured (it is measured every few validations)."""
    pwm = curves[curves["size"] != "reference"].sort_values("epoch")
    rows = []
    for key, run in pwm.groupby(["size", "dynamics", "seed"]):
        last = run.iloc[-1]
        measured = run["grad_cosine"].dropna() if "grad_cosine" in run else pd.Series(dtype=float)
        row = dict(zip(["size", "dynamics", "seed"], key, strict=True))
        row["epoch"] = int(last["epoch"])
        row["val_return"] = last["val_return_mean"]
        for column in ("latent_ratio_hH", "wm_reward_mse_hH", "action_jitter", "action_saturation", "action_magnitude"):
            row[column] = last[column] if column in run else float("nan")
        row["last_grad_cosine"] = measured.iloc[-1] if len(measured) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def summary(results: Path) -> str:
    compare = pd.read_csv(results / "compare.csv", dtype={"size": str})
    per_seed = pd.read_csv(results / "per_seed.csv", dtype={"size": str})
    parts = ["### compare.csv (held-out evaluation, 100 episodes per run)"]
    parts += [markdown(compare[[c for c in COMPARE if c in compare]])]
    parts += ["### per_seed.csv", markdown(per_seed[[c for c in PER_SEED if c in per_seed]])]
    curves = validation_curves(results)
    if not curves.empty:
        pwm = curves[curves["size"] != "reference"]
        top = int(pwm["env_steps"].max()) if len(pwm) else int(curves["env_steps"].max())
        marks = sorted({int(top * f) for f in (0.25, 0.5, 0.75, 1.0)})
        parts += ["### Validation return (16 deterministic episodes, mean over seeds) at PWM's env steps",
                  markdown(at_env_steps(curves, marks))]  # fmt: skip
        parts += ["### Last validation per PWM run: latent error / copy at step H, reward error at step H, action "
                  "jitter, last gradient cosine", markdown(last_validation(curves))]  # fmt: skip
    table = results / "figures" / "learning_curves.csv"
    if table.is_file():
        parts += ["### figures/learning_curves.csv (training return per env step, against PPO)",
                  markdown(pd.read_csv(table, dtype={"size": str}))]  # fmt: skip
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results/ folder of a finished pipeline run")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args()
    text = summary(args.results)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
