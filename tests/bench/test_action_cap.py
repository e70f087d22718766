"""bench/action_cap.py runs: the pinned 5.3k PPO reference (bench/carried/reference-config.tar.gz) plays a few short
Ant episodes on the CPU, as it is and with its actions capped, and the rows say what the env received."""

import json
import subprocess
import sys
import tarfile

from bench_helpers import ROOT

POLICY = "results/ant/reference/seed0/policy.pt"


def test_action_cap_plays_the_reference_capped_and_reports_the_actions_it_applied(tmp_path):
    with tarfile.open(ROOT / "bench" / "carried" / "reference-config.tar.gz") as archive:
        archive.extract(POLICY, tmp_path, filter="data")
    out = tmp_path / "cap.json"
    args = ["--policies", str(tmp_path / POLICY), "--caps", "1", "0.5", "--envs", "2", "--episode-length", "30"]
    subprocess.run([sys.executable, "bench/action_cap.py", *args, "--out", str(out)], cwd=ROOT, check=True)
    record = json.loads(out.read_text())
    whole, capped = record["rows"]
    assert record["args"]["policies"] == [str(tmp_path / POLICY)]
    assert (whole["cap"], capped["cap"]) == (1.0, 0.5) and whole["policy_env_steps"] == 330_825_728
    # what the env received: nothing beyond the cap, so nothing saturated and no entry above 0.5 on average
    assert capped["action_saturation"] == 0.0 and 0 < capped["action_magnitude"] <= 0.5
    # the running policy pushes harder than the cap lets it (bench/RESULTS.md: mean |a| 0.93 over whole episodes)
    assert whole["action_magnitude"] > capped["action_magnitude"]
    for row in (whole, capped):
        assert row["return_std"] >= 0 and 0 <= row["action_jitter"] <= 2, row
