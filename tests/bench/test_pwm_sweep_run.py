"""bench/pwm_sweep.py `run`, the driver of every deciding run on the GPU, for real on the CPU: the smoke config's
protocol (PPO reference -> collect -> pretrain -> a stacked train -> held-out evaluation) in a copy of the repository,
so its results/ and .snakemake/ stay out of the checkout."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the virtualenv's bin: snakemake and flow-mbpo-pwm live here


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_sweep_with_its_own_reference_runs_the_protocol_and_evaluates_that_reference(tmp_path):
    """A sweep-level `config:` (here the reference's budget and the clone's) reaches the reference the dataset comes
    from, and `evaluate_reference: true` evaluates that reference beside the points; each seed of the stack is held
    out on the config's 100 episodes. A `clone: true` point clones that reference's policy after its pretraining and
    trains from it, on the world model it shares with the other point."""
    repo = tmp_path / "repo"
    for part in ("bench", "workflow", "config", "profiles"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__", "out"))
    shutil.copy(ROOT / "Snakefile", repo / "Snakefile")
    work = tmp_path / "work"
    sweep = {"base": "config/smoke.yaml", "task": "ant", "size": "tiny", "seeds": [0, 1], "epochs": 20,
             "work": str(work), "config": {"reference": {"env_steps": 4096}, "clone": {"steps": 40, "batch": 64}},
             "evaluate_reference": True,
             "points": {"det": {"dynamics": "deterministic"},
                        "det-clone": {"dynamics": "deterministic", "clone": True,
                                      "pwm": {"actor_delay_epochs": 5}}}}  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "bench/pwm_sweep.py", "run", str(tmp_path / "sweep.yaml")], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    log = done.stdout
    for line in ("dataset: snakemake", "PPO reference: evaluation exit 0", "det: pretrain exit 0", "det: train exit 0",
                 "det: held-out exit 0", "det-clone: clone exit 0", "det-clone: train exit 0",
                 "det-clone: held-out exit 0", "sweep done"):  # fmt: skip
        assert line in log, log

    reference = repo / "results" / "ant" / "reference" / "seed0"
    assert yaml.safe_load((reference / "work" / "settings.yaml").read_text())["reference"]["env_steps"] == 4096
    assert (repo / "results" / "ant" / "offline" / "dataset.h5").is_file()
    assert len(rows(reference / "eval" / "episodes.csv")) == 100
    for seed in (0, 1):
        run = work / "det" / f"seed{seed}"
        assert len(rows(run / "episodes.csv")) == 100
        assert {int(r["epoch"]) for r in rows(run / "metrics.csv")} >= {20}
    clone = work / "det-clone"
    # the two points' pretraining settings agree (the actor's delay is no pretraining setting): det pretrains once,
    # det-clone clones on a copy of that world model
    assert "det-clone: pretrain shared with det" in log and "det-clone: pretrain exit" not in log, log
    for name in ("world_model.pt", "pretrain_metrics.csv", "pretrain.log"):
        assert (clone / name).read_bytes() == (work / "det" / name).read_bytes(), name
    assert [int(r["step"]) for r in rows(clone / "clone_metrics.csv")] == [40]
    assert "actor from " + str(clone / "actor.pt") in (clone / "train.log").read_text()
    for seed in (0, 1):
        assert len(rows(clone / f"seed{seed}" / "episodes.csv")) == 100
