"""bench/train_epoch.py runs: a tiny deterministic epoch timed on the CPU, lone and as a stack of 2 seeds (with the
actor's consistency term and the critic's real bootstrap), and its JSON record (written with `write_record`, which
bench/state_save.py and bench/validation_episodes.py share) holds the machine, the arguments (paths as text) and one
row per cell with every phase's time."""

import json
import subprocess
import sys

from bench_helpers import ROOT, load_bench_script


def test_train_epoch_times_each_phase_and_writes_its_record(tmp_path):
    records = {}
    for seeds in (1, 2):
        out = tmp_path / f"epoch_{seeds}.json"
        args = ["--device", "cpu", "--sizes", "tiny", "--dynamics", "deterministic", "--seeds", str(seeds)]
        args += ["--epochs", "1", "--warmup-epochs", "1", "--num-envs", "4", "--episode-length", "50"]
        args += ["--out", str(out), "--actor-consistency-coef", str(seeds - 1)]  # the stack with the actor's term
        args += ["--critic-bootstrap", "real" if seeds == 2 else "imagined"]  # and the critic's real bootstrap
        subprocess.run([sys.executable, "bench/train_epoch.py", *args], cwd=ROOT, check=True, capture_output=True)
        records[seeds] = json.loads(out.read_text())
    for seeds, record in records.items():
        assert record["machine"]["device"] == "cpu" and record["args"]["out"] == str(tmp_path / f"epoch_{seeds}.json")
        [row] = record["rows"]
        assert row["seeds"] == seeds and row["num_envs"] == 4, row
        assert row["actor_consistency_coef"] == seeds - 1
        assert row["critic_bootstrap"] == ("real" if seeds == 2 else "imagined")
        for phase in ("env_ms", "actor_ms", "critic_ms", "world_model_ms", "total_ms", "epoch_unsplit_ms"):
            assert row[phase] > 0, (phase, row)


def test_a_bench_table_right_aligns_each_value_under_its_title(capsys):
    """`table`: the header line printed once, each row's values formatted by their specs at their column's width (the
    title's, or more where asked)."""
    bench = load_bench_script("train_epoch")
    line = bench.table([bench.Column("steps", "n", ","), bench.Column("r", "ret", ".1f", 6)])
    assert capsys.readouterr().out == "steps      r\n"
    assert line({"n": 12345, "ret": 2.345}) == "12,345    2.3"
    assert line({"n": 7, "ret": -1.0}) == "    7   -1.0"
