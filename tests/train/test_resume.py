"""Resume is exact: a run killed after a periodic save (SIGKILL), preempted at a random moment (SIGTERM) or
interrupted by Ctrl-C (SIGINT) and restarted with the same command ends with bitwise the same final weights, and
the same metric and validation rows (none duplicated), as an uninterrupted run. The real CLI runs in a
subprocess, as Snakemake runs it."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

from train_helpers import assert_same_run, cli_args, killed_and_rerun, run_cli, subprocess_env, wait_for

from flow_mbpo_pwm.train import EXIT_INTERRUPTED, EXIT_PREEMPTED

# Long enough that a signal lands mid-run, short enough for CI; saves every 3 epochs, logs every 2.
RESUME_RUN = {"train": {"pwm": {"epochs": 24}}}


def test_killed_and_preempted_runs_resume_bitwise(tmp_path, write_experiment):
    config = write_experiment(RESUME_RUN)
    reference = tmp_path / "reference"
    done = run_cli(cli_args(config, reference))
    assert done.returncode == 0, done.stderr + done.stdout

    # (b) SIGKILL right after the first periodic state save, then the same command again.
    killed = tmp_path / "killed"
    again = killed_and_rerun(config, killed)
    assert again.returncode == 0, again.stderr + again.stdout
    assert "resumed from" in again.stdout
    assert_same_run(reference, killed)

    # (c) SIGTERM at a random moment of the training loop: state saved, exit code 75, then the same command again.
    _signal_and_resume(tmp_path, config, reference, signal.SIGTERM, EXIT_PREEMPTED, "preempted")
    # (d) Ctrl-C (SIGINT) likewise: state saved, its own exit code 130, and the resumed run is bitwise the same.
    _signal_and_resume(tmp_path, config, reference, signal.SIGINT, EXIT_INTERRUPTED, "interrupted")


def _signal_and_resume(tmp_path: Path, config: Path, reference: Path, sig: int, code: int, word: str) -> None:
    """Send `sig` at a random moment of training, expect exit `code` with the state saved, rerun, compare.
    The moment is drawn within the reference run's training time; if the run still finished first (a faster
    machine than the reference's moment), it is redone with a shorter window."""
    name = signal.Signals(sig).name
    window = 0.8 * json.loads((reference / "train_summary.json").read_text())["train_seconds"]
    for attempt in range(4):
        interrupted = tmp_path / f"{name}{attempt}"
        delay = random.Random().uniform(0.0, window)
        print(f"{name} {delay:.3f} s after training started")  # shown on failure, to reproduce
        log_path = tmp_path / f"{name}{attempt}.log"
        proc = subprocess.Popen(
            cli_args(config, interrupted), stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=subprocess_env()
        )
        wait_for(proc, lambda: "training on" in log_path.read_text())  # noqa: B023 (used before the next loop)
        time.sleep(delay)
        proc.send_signal(sig)
        rc = proc.wait(timeout=300)
        log = log_path.read_text()
        if "completed" in log and not (interrupted / "work" / "diagnostics.json").exists():
            window /= 2  # finished before the signal
            continue
        assert rc == code, log
        assert f"{word} ({name})" in log and "state saved" in log
        assert not (interrupted / "final.pt").exists()
        again = run_cli(cli_args(config, interrupted))
        assert again.returncode == 0, again.stderr + again.stdout
        assert "resumed from" in again.stdout
        assert_same_run(reference, interrupted)
        return
    raise AssertionError(f"every run finished before its {name}")
