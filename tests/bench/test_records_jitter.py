"""bench/records_jitter.py: the recorded seeds' action jitter against their best validation, which the config's
`pwm.actor_smoothness_coef` comment quotes."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from bench_helpers import ROOT, load_bench_script


@pytest.fixture(scope="module")
def jitter():
    return load_bench_script("records_jitter")


def write_seed(folder, point, seed, jitters, returns):
    epochs = [250 * (i + 1) for i in range(len(returns))]
    table = pd.DataFrame({"epoch": epochs, "val_return_mean": returns, "action_jitter": jitters})
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "runs" / f"{point}-seed{seed}-validation.csv", index=False)


def test_seeds_are_read_once_grouped_by_their_late_jitter_and_standing_seeds_left_out(jitter, tmp_path, capsys):
    a, b = tmp_path / "2026-01-01-a", tmp_path / "2026-01-02-b"
    # Epochs 250..1250: the last 750 epochs are 500..1250, whose median jitter counts (the early 0.9 does not).
    write_seed(a, "det", 0, [0.9, 0.1, 0.1, 0.2, 0.1], [1300, 2000, 3000, 4000, 3900])
    write_seed(a, "det", 1, [0.9, 0.4, 0.5, 0.4, 0.4], [1300, 2000, 2500, 2600, 2400])
    write_seed(a, "flow", 0, [0.0] * 5, [1300, 1350, 1400, 1390, 1380])  # never left standing
    pd.DataFrame({"epoch": [250], "val_return_mean": [1300.0]}).to_csv(a / "runs" / "old-seed0-validation.csv")
    write_seed(b, "det", 1, [0.9, 0.4, 0.5, 0.4, 0.4], [1300, 2000, 2500, 2600, 2400])  # the same seed, named again
    frame = jitter.seeds(tmp_path)
    assert sorted(zip(frame["point"], frame["seed"], strict=True)) == [("det", 0), ("det", 1), ("flow", 0)]
    assert frame.set_index(["point", "seed"]).loc[("det", 0), "jitter"] == pytest.approx(0.1)
    groups = jitter.groups(frame).set_index("jitter")
    assert groups["seeds"].tolist() == [1, 0, 1]
    assert groups["mean"].iloc[0] == 4000 and groups["mean"].iloc[2] == 2600 and math.isnan(groups["mean"].iloc[1])
    assert jitter.main([str(tmp_path)]) == 0
    assert "2 of 3" in capsys.readouterr().out
    assert jitter.main([str(tmp_path / "none")]) == 1
    assert len(jitter.seeds(tmp_path, until="2026-01-01")) == 3 and jitter.seeds(tmp_path, until="2025-12-31").empty


def test_the_numbers_the_config_quotes_are_the_records(jitter, capsys):
    assert jitter.main(["--until", "2026-12-03"]) == 0
    out = capsys.readouterr().out
    comment = (ROOT / "src" / "flow_mbpo_pwm" / "config.py").read_text()
    for number in ("3,261", "2,735", "4,587", "3,359"):
        assert number in comment and number in out
