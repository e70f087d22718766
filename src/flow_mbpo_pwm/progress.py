"""Live progress of a training run: a tqdm bar on a terminal, plain flushed log lines in a batch job.

Batch jobs (SLURM, Snakemake logs) get one line per metrics row, so a `tail -f` of the log shows the run moving;
a terminal gets a bar with the latest numbers in its postfix. Either way, nothing here touches device tensors:
the training loop hands over host values it has already read.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


class Progress:
    def __init__(
        self, total_epochs: int, start_epoch: int, name: str, stream: TextIO | None = None, use_bar: bool | None = None
    ):
        self.stream = stream if stream is not None else sys.stdout
        self.total = total_epochs
        self.name = name
        self.epoch = start_epoch
        self._start_time = time.monotonic()
        self._start_epoch = start_epoch
        if use_bar is None:
            use_bar = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_epochs, initial=start_epoch, desc=name, unit="epoch", file=self.stream, dynamic_ncols=True
            )

    def message(self, text: str) -> None:
        """A line that must be seen (start, resume, warm-up, validation, preemption)."""
        if self._bar is not None:
            self._bar.write(f"[{self.name}] {text}", file=self.stream)
        else:
            print(f"[{self.name}] {text}", file=self.stream, flush=True)

    def advance(self, epoch: int) -> None:
        """Called every epoch with the number of completed epochs; cheap (no I/O without a bar)."""
        if self._bar is not None:
            self._bar.update(epoch - self.epoch)
        self.epoch = epoch

    def report(self, values: dict[str, Any]) -> None:
        """One metrics row's worth of numbers: the bar's postfix, or one log line."""
        if self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in values.items()}, refresh=True)
            return
        elapsed = time.monotonic() - self._start_time
        rate = (self.epoch - self._start_epoch) / elapsed if elapsed > 0 else float("nan")
        fields = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        print(
            f"[{self.name}] epoch {self.epoch}/{self.total} {fields} ({rate:.3g} epochs/s)",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
