"""bench/reference_sweep.py: PPO reference variants side by side, for real on the CPU Ant (the smoke config's tiny
reference), and its refusals of a bad sweep file before anything runs."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from bench_helpers import ROOT, load_bench_script


@pytest.fixture(scope="module")
def sweep_module():
    return load_bench_script("reference_sweep")


def write(tmp_path, sweep: dict):
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return str(path)


@pytest.mark.parametrize(
    ("variants", "named"),
    [
        ({"floor": {"min_std": 0.2}}, "unknown settings ['min_std']"),
        ({"a b": {}}, "variant name 'a b'"),
        ({}, "needs a mapping `variants"),
    ],
)
def test_a_bad_sweep_file_is_refused_naming_the_problem(sweep_module, tmp_path, variants, named):
    with pytest.raises(SystemExit, match=re.escape(named)):
        sweep_module.load(write(tmp_path, {"variants": variants}))


def test_each_variants_settings_reach_reference_gpu_as_its_flags(sweep_module, tmp_path):
    sweep = sweep_module.load(write(tmp_path, {"env_steps": 1000, "variants": {"floor": {"min_noise_std": 0.2}}}))
    cmd = sweep_module.command(sweep, "floor", tmp_path)
    assert cmd[cmd.index("--min-noise-std") + 1] == "0.2"
    assert cmd[cmd.index("--env-steps") + 1] == "1000"
    assert "--max-minutes" not in cmd


def test_variants_train_side_by_side_and_are_tabled(tmp_path):
    """Two variants of the smoke reference train at once; each is held out and gets its row, and the floor
    reaches the run (its saved settings and its policy's exploration std)."""
    sweep = {"config": "config/smoke.yaml", "seed": 0, "env_steps": 2048, "episodes": 2,
             "variants": {"control": {}, "floor": {"min_noise_std": 0.9}}}  # fmt: skip
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "bench/reference_sweep.py", "run", write(tmp_path, sweep), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + "".join(p.read_text() for p in out.glob("*.log"))
    assert "control: exit 0" in done.stdout and "floor: exit 0" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| control") or line.startswith("| floor")]
    assert len(rows) == 2, done.stdout
    assert "min_noise_std 0.9" in rows[1] and "config's" in rows[0]
    for name in ("control", "floor"):
        result = json.loads((out / f"{name}.json").read_text())
        assert result["env_steps"] >= 2048 and result["heldout_episodes"] == 2
    floor = json.loads((out / "floor.json").read_text())
    assert floor["reference"]["min_noise_std"] == 0.9
    settings = yaml.safe_load((out / "floor" / "work" / "settings.yaml").read_text())
    assert settings["reference"]["min_noise_std"] == 0.9
    with open(out / "floor" / "metrics.csv") as f:
        stds = [float(r["action_std"]) for r in csv.DictReader(f)]
    assert stds and min(stds) >= 0.9 - 1e-6
