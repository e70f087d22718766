"""bench/validation_episodes.py runs: a tiny Ant validation of stacks of 1 and 2 seeds on the CPU, timed both ways,
and the batched returns equal the seed-by-seed ones bitwise."""

import json
import subprocess
import sys

from bench_helpers import ROOT


def test_validation_episodes_times_both_ways_and_the_returns_agree(tmp_path):
    out = tmp_path / "validation.json"
    args = ["--device", "cpu", "--sizes", "tiny", "--seeds", "1", "2", "--episodes", "2", "--episode-length", "6"]
    args += ["--repeats", "1", "--out", str(out)]
    subprocess.run([sys.executable, "bench/validation_episodes.py", *args], cwd=ROOT, check=True, capture_output=True)
    rows = json.loads(out.read_text())["rows"]
    assert [r["seeds"] for r in rows] == [1, 2]
    for row in rows:
        assert row["returns_equal"] and row["one_by_one_s"] > 0 and row["together_s"] > 0, row
