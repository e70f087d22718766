"""bench/stack_phases.py runs (it had bit-rotted once: the rollout it builds lacked fields PWM's Rollout grew): a
tiny stack of 1 and 2 seeds of both dynamics on the CPU, one row per cell and stack with every phase timed."""

import json
import subprocess
import sys

from bench_helpers import ROOT


def test_stack_phases_times_every_phase_of_a_tiny_stack_on_the_cpu(tmp_path):
    out = tmp_path / "phases.json"
    args = ["--config", "config/smoke.yaml", "--sizes", "tiny", "--dynamics", "deterministic", "flow"]
    args += ["--seeds", "1", "2", "--device", "cpu", "--repeats", "1", "--out", str(out)]
    subprocess.run([sys.executable, "bench/stack_phases.py", *args], cwd=ROOT, check=True, capture_output=True)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["dynamics"], r["seeds"]) for r in rows] == [
        ("deterministic", 1),
        ("deterministic", 2),
        ("flow", 1),
        ("flow", 2),
    ]
    for row in rows:
        # The imagination is the epoch less the two phases timed apart, so on a busy machine (one repeat each) it can
        # come out at or below 0: only the phases timed themselves must be positive.
        assert all(row[f"{phase}_ms"] > 0 for phase in ("world_model", "critic", "epoch")), row
        assert row["imagination_ms"] == row["epoch_ms"] - row["world_model_ms"] - row["critic_ms"], row
    assert [r["ratio_to_first"] for r in rows if r["seeds"] == 1] == [1.0, 1.0]
