"""`flow-mbpo-pwm select`: choose the policy checkpoint to evaluate from a finished run.

The score is the held-out validation return that training recorded for every policy checkpoint
(`val_return_mean` of `run.validation_episodes` deterministic episodes on validation seeds) — never the noisy
training curve. Selection reads only the declared outputs of `train` (`train_summary.json`, `validation.csv`)
and the checkpoint files they list, and cross-checks them: a run folder whose records disagree is refused rather
than guessed about.

Rules, in order:
1. Every checkpoint listed in `train_summary.json` is a candidate (of a completed run, or of one the collapse guard
   stopped: then its checkpoints end at the stop, and the last ones are flagged); `validation.csv` must list
   exactly the same epochs with the same paths, returns and flags, and every listed file must exist (else: error,
   nothing written).
2. A candidate is rejected, with the reason recorded, if its validation return is NaN or infinite, if the collapse
   guard flagged it, or if its file cannot be loaded as a policy of this run (unsafe or corrupt contents, wrong
   format, or metadata naming another run or epoch).
3. The highest validation return wins. Ties go to the later epoch: with equal evidence, the policy trained longer
   is preferred, and the choice does not depend on the order the files are listed in.
4. No candidate left: exit non-zero, naming every rejection, and write nothing.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flow_mbpo_pwm import io
from flow_mbpo_pwm.io import CheckpointError
from flow_mbpo_pwm.run_folder import COMPLETED, TRAIN_STATUSES, VALIDATION_COLUMNS

CRITERION = (
    "highest val_return_mean (deterministic policy, validation seeds) recorded during training; "
    "ties -> later epoch; NaN/Inf returns, checkpoints flagged by the collapse guard and unreadable "
    "checkpoints are rejected"
)
CELL_KEYS = ("task", "size", "dynamics", "seed")


class SelectionError(io.InputError):
    """The run folder cannot be selected from: missing or inconsistent records, or no usable checkpoint."""


@dataclass
class Candidate:
    epoch: int
    env_steps: int
    path: str  # relative to the run folder, as train recorded it
    val_return: float
    flagged: bool
    flag_reason: str
    rejection: str = ""  # empty while the candidate is acceptable

    def report(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "env_steps": self.env_steps,
            "path": self.path,
            # JSON has no NaN/Inf: a non-finite return is written as null and explained in `rejected`.
            "val_return": self.val_return if math.isfinite(self.val_return) else None,
            "flagged": self.flagged,
            "flag_reason": self.flag_reason,
            "accepted": not self.rejection,
        }


@dataclass
class Selection:
    cell: dict[str, Any]
    chosen: Candidate | None
    candidates: list[Candidate] = field(default_factory=list)
    train_status: str = COMPLETED  # the run's status in its train summary (run_folder.TRAIN_STATUSES)

    @property
    def rejected(self) -> list[Candidate]:
        return [c for c in self.candidates if c.rejection]

    def report(self) -> dict[str, Any]:
        if self.chosen is None:
            raise SelectionError("no candidate was chosen")
        return {
            **self.cell,
            "train_status": self.train_status,
            "chosen": {"epoch": self.chosen.epoch, "path": self.chosen.path, "val_return": self.chosen.val_return},
            "criterion": CRITERION,
            "candidates": [c.report() for c in self.candidates],
            "rejected": [{"epoch": c.epoch, "reason": c.rejection} for c in self.rejected],
        }


def select(run_dir: Path, out: Path, report: Path) -> int:
    """Stage entry point: write `out` (best.pt) and `report` (selection.json); non-zero exit if impossible."""
    try:
        selection = choose_checkpoint(run_dir)
        write_selection(run_dir, selection, out, report)
    except (SelectionError, CheckpointError) as err:
        print(f"flow-mbpo-pwm select: {err}", file=sys.stderr)
        return 1
    chosen = selection.chosen
    for cand in selection.rejected:  # in the job's log too, not only in selection.json: a damaged file needs a look
        print(f"flow-mbpo-pwm select: rejected epoch {cand.epoch}: {cand.rejection}", file=sys.stderr)
    print(
        f"{run_dir}: selected epoch {chosen.epoch} (val_return {chosen.val_return:.3f}) from "
        f"{len(selection.candidates)} checkpoints, {len(selection.rejected)} rejected"
    )
    return 0


def choose_checkpoint(run_dir: Path, device: str = "cpu") -> Selection:
    """Apply the selection rules (module docstring) to a finished run folder; raises `SelectionError`."""
    run_dir = Path(run_dir)
    summary = _read_summary(run_dir / "train_summary.json")
    cell = {key: summary[key] for key in CELL_KEYS}
    candidates = _candidates(run_dir, summary)
    _cross_check(run_dir / "validation.csv", cell, candidates)

    for cand in candidates:
        cand.rejection = record_problem(cand) or _load_problem(run_dir / cand.path, cand, cell, device)

    chosen = best(candidates)
    if chosen is None:
        reasons = "; ".join(f"epoch {c.epoch}: {c.rejection}" for c in candidates)
        raise SelectionError(f"{run_dir}: every checkpoint was rejected, nothing to evaluate ({reasons})")
    return Selection(cell=cell, chosen=chosen, candidates=candidates, train_status=summary["status"])


def record_problem(cand: Candidate) -> str:
    """Rule 2 as far as the records decide it: why a candidate's validation record rules it out ("" if it
    does not). The checkpoint file itself is checked by `_load_problem`."""
    if not math.isfinite(cand.val_return):
        return f"validation return is {cand.val_return} (not finite)"
    if cand.flagged:
        return f"flagged by the collapse guard: {cand.flag_reason or 'no reason recorded'}"
    return ""


def best(candidates: list[Candidate]) -> Candidate | None:
    """Rule 3: the highest validation return among the candidates not rejected, ties to the later epoch; None
    when every one was rejected."""
    acceptable = [c for c in candidates if not c.rejection]
    return max(acceptable, key=lambda c: (c.val_return, c.epoch)) if acceptable else None


def write_selection(run_dir: Path, selection: Selection, out: Path, report: Path) -> None:
    """`best.pt` = the chosen checkpoint, byte-for-byte its tensors, with `meta["selection"]` added."""
    chosen = selection.chosen
    checkpoint = io.torch_load(Path(run_dir) / chosen.path)
    checkpoint["meta"]["selection"] = {
        "epoch": chosen.epoch,
        "val_return": chosen.val_return,
        "source": chosen.path,
        "criterion": CRITERION,
        "candidates": len(selection.candidates),
        "rejected": len(selection.rejected),
    }
    io.torch_save(out, checkpoint)
    io.write_json(report, selection.report())


# --------------------------------------------------------------------------------------------------------------
# Reading and cross-checking the run's records
# --------------------------------------------------------------------------------------------------------------


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        summary = io.read_json(path)
    except (FileNotFoundError, ValueError) as err:
        raise SelectionError(f"{err} (select needs the declared outputs of a completed `train`)") from err
    if not isinstance(summary, dict):
        raise SelectionError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    missing = [k for k in (*CELL_KEYS, "status", "checkpoints") if k not in summary]
    if missing:
        raise SelectionError(f"{path}: missing keys {missing}")
    if summary["status"] not in TRAIN_STATUSES:
        raise SelectionError(f"{path}: status is {summary['status']!r}, not one of {list(TRAIN_STATUSES)}")
    if not isinstance(summary["checkpoints"], list) or not summary["checkpoints"]:
        raise SelectionError(f"{path}: lists no checkpoints, nothing to select from")
    return summary


def _candidates(run_dir: Path, summary: dict[str, Any]) -> list[Candidate]:
    where = run_dir / "train_summary.json"
    candidates = []
    for i, entry in enumerate(summary["checkpoints"]):
        missing = [k for k in ("epoch", "env_steps", "path", "val_return", "flagged") if k not in entry]
        if missing:
            raise SelectionError(f"{where}: checkpoints[{i}] is missing keys {missing}")
        cand = Candidate(
            epoch=int(entry["epoch"]),
            env_steps=int(entry["env_steps"]),
            path=str(entry["path"]),
            val_return=_as_float(entry["val_return"]),
            flagged=_as_bool(entry["flagged"], f"{where}: checkpoints[{i}].flagged"),
            flag_reason=str(entry.get("flag_reason") or ""),
        )
        # Paths are relative to the run folder and stay inside it: a record can never point elsewhere.
        file = (run_dir / cand.path).resolve()
        if Path(cand.path).is_absolute() or not file.is_relative_to(run_dir.resolve()):
            raise SelectionError(
                f"{where}: checkpoint path {cand.path!r} (epoch {cand.epoch}) is not inside the run folder"
            )
        if not file.is_file():
            raise SelectionError(
                f"{run_dir / cand.path}: checkpoint of epoch {cand.epoch} listed in {where} does not exist"
            )
        candidates.append(cand)
    epochs = [c.epoch for c in candidates]
    if len(set(epochs)) != len(epochs):
        raise SelectionError(
            f"{where}: lists epoch(s) {sorted({e for e in epochs if epochs.count(e) > 1})} more than once"
        )
    return candidates


def _cross_check(path: Path, cell: dict[str, Any], candidates: list[Candidate]) -> None:
    """`validation.csv` must record exactly the checkpoints the summary lists, with the same values."""
    import pandas as pd

    if not path.is_file():
        raise SelectionError(f"{path}: no such file (select needs the declared outputs of a completed `train`)")
    try:
        table = pd.read_csv(path, keep_default_na=False, dtype={"checkpoint": str, "flag_reason": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SelectionError(f"{path}: not a readable CSV ({err})") from err
    missing = [c for c in VALIDATION_COLUMNS if c not in table.columns]
    if missing:
        raise SelectionError(f"{path}: missing columns {missing}")
    rows: dict[int, dict[str, Any]] = {}
    for i, row in enumerate(table.to_dict("records")):
        where = f"{path}: row {i + 1}"
        for key in CELL_KEYS:
            if str(row[key]) != str(cell[key]):
                raise SelectionError(f"{where}: {key} is {row[key]!r} but train_summary.json says {cell[key]!r}")
        epoch = int(row["epoch"])
        if epoch in rows:
            raise SelectionError(f"{where}: epoch {epoch} appears more than once")
        rows[epoch] = row
    listed = {c.epoch for c in candidates}
    if set(rows) != listed:
        only_csv, only_summary = sorted(set(rows) - listed), sorted(listed - set(rows))
        raise SelectionError(
            f"{path}: disagrees with train_summary.json on which checkpoints exist "
            f"(only in validation.csv: epochs {only_csv}; only in the summary: {only_summary})"
        )
    for cand in candidates:
        row, where = rows[cand.epoch], f"{path}: epoch {cand.epoch}"
        if str(row["checkpoint"]) != cand.path:
            raise SelectionError(f"{where}: checkpoint {row['checkpoint']!r} but train_summary.json says {cand.path!r}")
        if not _same_number(_as_float(row["val_return_mean"]), cand.val_return):
            raise SelectionError(
                f"{where}: val_return_mean {row['val_return_mean']} but train_summary.json says {cand.val_return}"
            )
        if _as_bool(row["flagged"], f"{where}: flagged") != cand.flagged:
            raise SelectionError(f"{where}: flagged={row['flagged']} but train_summary.json says {cand.flagged}")
        if int(row["env_steps"]) != cand.env_steps:
            raise SelectionError(f"{where}: env_steps {row['env_steps']} but train_summary.json says {cand.env_steps}")


def _load_problem(file: Path, cand: Candidate, cell: dict[str, Any], device: str) -> str:
    """Why this checkpoint cannot be used as this run's policy of this epoch ("" if it can)."""
    from flow_mbpo_pwm.checkpoints import load_policy

    try:
        _, meta = load_policy(file, device)
    except CheckpointError as err:
        return f"unreadable checkpoint: {err}"
    for key in CELL_KEYS:
        if str(meta.get(key)) != str(cell[key]):
            return f"{file}: meta {key} is {meta.get(key)!r} but this run's is {cell[key]!r}"
    if meta.get("epoch") != cand.epoch:
        return f"{file}: meta epoch is {meta.get('epoch')!r} but it is listed as epoch {cand.epoch}"
    return ""


def _as_float(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    try:
        return float(value)  # float("nan"), float("inf") parse; CSV writes NaN as "nan" or ""
    except (TypeError, ValueError):
        return math.nan


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise SelectionError(f"{where}: {value!r} is not a boolean")


def _same_number(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
