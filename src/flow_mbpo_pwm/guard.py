"""The collapse guard: stop a run that has gone bad instead of letting it produce results.

Two checks (config.run.guard, `GuardConfig`):
- Non-finite values. Every epoch, `NonFiniteMonitor.observe` ORs "is any of these metrics NaN/Inf" into one
  boolean vector that stays on the device (no host sync inside the epoch). Every `check_every` epochs, and before
  anything is saved, the training loop reads it once, together with one finiteness test of all parameters.
- Collapse of the validation return. After `collapse_after_epochs`, a validation return below
  `collapse_fraction` x the best validation return so far (when that best is positive) flags the validation row and
  its checkpoint; `collapse_patience` flagged rows in a row stop the run. A non-finite validation return is
  flagged too.
A stopped run writes `work/diagnostics.json` and never writes `final.pt`; its tables and summary (status
"collapsed") say where it stopped, and selection only takes its checkpoints from before (flagged ones are refused).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from flow_mbpo_pwm.config import GuardConfig


class CollapseError(RuntimeError):
    """The run collapsed (non-finite values or a validation collapse). `diagnostics` goes to diagnostics.json."""

    def __init__(self, message: str, diagnostics: dict):
        super().__init__(message)
        self.diagnostics = diagnostics


class NonFiniteMonitor:
    """An on-device OR of `~isfinite` per named metric, read on the host only when asked."""

    def __init__(self, names: Iterable[str], device: torch.device):
        self.names = list(names)
        self.seen = torch.zeros(len(self.names), dtype=torch.bool, device=device)

    def observe(self, metrics: dict[str, torch.Tensor]) -> None:
        values = torch.stack([metrics[name].detach().float().reshape(()) for name in self.names])
        self.seen |= ~torch.isfinite(values)

    def read(self) -> list[str]:
        """Names of the metrics that were non-finite at least once (one device -> host copy)."""
        flags = self.seen.tolist()
        return [name for name, bad in zip(self.names, flags, strict=True) if bad]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.seen.copy_(state["seen"])


def nonfinite_parameters(modules: dict[str, nn.Module]) -> list[str]:
    """Names ("actor.net.0.weight", ...) of parameters holding NaN/Inf. One sync for the common all-finite case:
    a sum of per-tensor sums is finite only if every entry is (an overflow to Inf is a collapse too)."""
    params = [(f"{prefix}.{name}", p) for prefix, module in modules.items() for name, p in module.named_parameters()]
    if not params:
        return []
    total = torch.stack([p.detach().float().sum() for _, p in params]).sum()
    if bool(torch.isfinite(total)):
        return []
    return [name for name, p in params if not bool(torch.isfinite(p.detach()).all())]


@dataclass
class CollapseDetector:
    """Flags validation returns that collapsed relative to the best so far (state saved with the run)."""

    config: GuardConfig
    best: float = -math.inf
    streak: int = 0
    history: list[float] = field(default_factory=list)

    def update(self, epoch: int, val_return: float) -> str:
        """Record a validation result; return the flag reason ("" when not flagged)."""
        reason = ""
        if not math.isfinite(val_return):
            reason = f"non-finite validation return {val_return}"
        elif (
            epoch >= self.config.collapse_after_epochs
            and self.best > 0
            and val_return < self.config.collapse_fraction * self.best
        ):
            reason = (
                f"collapsed: validation return {val_return:.4g} < {self.config.collapse_fraction:g} x best "
                f"{self.best:.4g}"
            )
        if math.isfinite(val_return):
            self.best = max(self.best, val_return)
        self.streak = self.streak + 1 if reason else 0
        self.history.append(val_return)
        return reason

    @property
    def should_stop(self) -> bool:
        return self.streak >= self.config.collapse_patience

    def state_dict(self) -> dict:
        return {"best": self.best, "streak": self.streak, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.streak = int(state["streak"])
        self.history = [float(v) for v in state["history"]]
