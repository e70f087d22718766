"""The run folder of one training cell: its paths and its CSV tables (docs/contracts.md "Run folder").

Outputs (`final.pt`, `metrics.csv`, `validation.csv`, `wm_diagnostics.csv`, `train_summary.json`) appear only when
training ends: completed (all of them), or stopped by the collapse guard (all but `final.pt`, with status
"collapsed"). Everything a restart needs lives in `work/`, which Snakemake never deletes.
"""

from __future__ import annotations

import csv
import io as _stringio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flow_mbpo_pwm import io

# A run's `status` in train_summary.json: it trained its whole schedule, or the collapse guard stopped it (its
# records end at the stop; selection takes its checkpoints from before, aggregate counts it in `n_collapsed`).
COMPLETED, COLLAPSED = "completed", "collapsed"
TRAIN_STATUSES = (COMPLETED, COLLAPSED)

METRICS_COLUMNS: tuple[str, ...] = (
    "task", "size", "dynamics", "seed", "epoch", "env_steps", "wall_seconds", "train_return_mean",
    "train_return_max", "train_episodes", "actor_loss", "critic_loss", "wm_loss", "wm_dynamics_loss",
    "wm_reward_loss", "actor_grad_norm", "critic_grad_norm", "wm_grad_norm", "actor_lr", "critic_lr", "wm_lr",
    "actor_std",
)  # fmt: skip

VALIDATION_COLUMNS: tuple[str, ...] = (
    "task", "size", "dynamics", "seed", "epoch", "env_steps", "val_return_mean", "val_return_std", "val_episodes",
    "checkpoint", "flagged", "flag_reason",
)  # fmt: skip

# World-model diagnostics of each validation (diagnostics.py), appended to validation.csv: latent error of the
# model's own rollout and of the copy-the-last-latent baseline at steps 1 and H (and their ratio at H), reward error
# at steps 1 and H, the critic's value error at the rollout's last latent and the copy baseline's (and their ratio),
# the model-vs-env return-gradient cosine (NaN when not measured), the actor's gradient norms of its objective's
# reward and value terms and their cosine (`diagnostics.objective_split`), the two terms' values as imagined and as
# the env paid them from the same starts (`diagnostics.real_terms`), the critic's explained variance and bias
# against the episodes' discounted returns-to-go and those returns' mean (`diagnostics.critic_fit`), and the
# validated policy's action
# jitter, saturation and magnitude (`diagnostics.action_columns`) and how far it moved since the last validation
# (`diagnostics.policy_shift`). Readers of validation.csv need only the columns above.
VALIDATION_DIAGNOSTIC_COLUMNS: tuple[str, ...] = (
    "wm_latent_mse_h1", "copy_latent_mse_h1", "wm_latent_mse_hH", "copy_latent_mse_hH", "latent_ratio_hH",
    "wm_reward_mse_h1", "wm_reward_mse_hH", "wm_value_mse_hH", "copy_value_mse_hH", "value_ratio_hH", "grad_cosine",
    "actor_grad_reward_norm", "actor_grad_value_norm", "actor_grad_terms_cosine",
    "imagined_reward_term", "real_reward_term", "imagined_value_term", "real_value_term",
    "critic_explained_variance", "critic_bias", "critic_return_mean",
    "action_jitter", "action_saturation", "action_magnitude", "policy_shift",
)  # fmt: skip

# wm_diagnostics.csv: one row per validation and imagined step 1..H (grad_cosine repeated on the rows of its epoch;
# grad_cosine_step: the cosine of the gradients with respect to that step's action alone).
WM_DIAGNOSTICS_COLUMNS: tuple[str, ...] = (
    "task", "size", "dynamics", "seed", "epoch", "env_steps", "step", "wm_latent_mse", "copy_latent_mse",
    "latent_ratio", "wm_reward_mse", "wm_value_mse", "copy_value_mse", "value_ratio", "grad_cosine",
    "grad_cosine_step",
)  # fmt: skip
# The columns each table gained after runs had saved state: a state saved before them resumes with NaN there.
LATER_VALIDATION_COLUMNS = ("wm_value_mse_hH", "copy_value_mse_hH", "value_ratio_hH", "action_jitter",
                            "action_saturation", "action_magnitude", "actor_grad_reward_norm",
                            "actor_grad_value_norm", "actor_grad_terms_cosine", "critic_explained_variance",
                            "critic_bias", "critic_return_mean", "policy_shift", "imagined_reward_term",
                            "real_reward_term", "imagined_value_term", "real_value_term")  # fmt: skip
LATER_WM_DIAGNOSTICS_COLUMNS = ("wm_value_mse", "copy_value_mse", "value_ratio")
LATER_METRICS_COLUMNS = ("actor_std",)  # the policy's exploration std (mean over action dims), since 2026-12-03


@dataclass(frozen=True)
class ResumableFolder:
    """What every resumable training folder holds (a PWM run, a PPO reference run): resumable state and the
    tables growing in `work/`, and the declared tables and summary written when the run completes."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def state(self) -> Path:
        return self.work / "state.pt"

    @property
    def stack(self) -> Path:
        """The seeds this run trains with in one process (`{"seeds": [...]}`)."""
        return self.work / "stack.yaml"

    @property
    def work_metrics(self) -> Path:
        return self.work / "metrics.csv"

    @property
    def work_validation(self) -> Path:
        return self.work / "validation.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def validation(self) -> Path:
        return self.root / "validation.csv"

    @property
    def summary(self) -> Path:
        return self.root / "train_summary.json"


@dataclass(frozen=True)
class RunFolder(ResumableFolder):
    """A PWM training run's folder (docs/contracts.md "Run folder")."""

    @property
    def work_config(self) -> Path:
        return self.work / "config.yaml"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def work_wm_diagnostics(self) -> Path:
        return self.work / "wm_diagnostics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.work / "checkpoints"

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:06d}.pt"

    @property
    def diagnostics(self) -> Path:
        return self.work / "diagnostics.json"

    @property
    def final(self) -> Path:
        return self.root / "final.pt"

    @property
    def wm_diagnostics(self) -> Path:
        return self.root / "wm_diagnostics.csv"

    @property
    def work_summary(self) -> Path:
        """A stopped run's summary, kept where Snakemake never deletes it (its declared outputs are re-made from
        the work/ copies if a later failure of its job removed them)."""
        return self.work / "train_summary.json"


def _cell(value: Any) -> str:
    # repr-exact floats so a resumed run's rows compare equal to an uninterrupted run's; NaN spelled as pandas reads it.
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)
    return str(value)


def csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    """The CSV text of `rows` (dicts with exactly `columns` as keys)."""
    buffer = _stringio.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        missing = set(columns) ^ set(row)
        if missing:
            raise ValueError(f"row keys differ from the table's columns: {sorted(missing)}")
        writer.writerow([_cell(row[c]) for c in columns])
    return buffer.getvalue()


def write_table(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole table atomically: a killed job leaves the old table or the new one, never half a row.
    Tables are small (one row per log or validation interval), so rewriting is cheap."""
    io.write_text(path, csv_text(columns, rows))
