"""The whole smoke DAG through profiles/local, for real, in a scratch directory (the checkout's results/ is never
touched): compare.csv, figures and the HTML report come out; a second invocation has nothing to do; editing the
config reruns only what the edit concerns."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flow_mbpo_pwm.config import load_experiment
from flow_mbpo_pwm.plots import CURVES_TABLE, expected_figures

from .runner import BIN, REPO, job_stats, snakemake, snakemake_env

pytestmark = pytest.mark.slow

SMOKE = REPO / "config/smoke.yaml"


def describe_failure(result, workdir) -> str:
    logs = sorted((workdir / "logs").rglob("*.log")) if (workdir / "logs").exists() else []
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs)
    return f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n{tails}"


def check_smoke_results(workdir) -> None:
    """What a finished smoke run must have produced (shared with the SLURM end-to-end test)."""
    experiment = load_experiment(SMOKE)
    compare = pd.read_csv(workdir / "results/compare.csv")
    assert sorted(zip(compare["task"], compare["size"], compare["dynamics"], strict=True)) == [
        ("ant", "reference", "ppo"),  # the PPO reference (rsl-rl)
        ("ant", "tiny", "deterministic"),
        ("ant", "tiny", "flow"),
    ]
    assert (compare["n_seeds"] == len(experiment.seeds)).all()
    assert (compare["n_episodes"] == len(experiment.seeds) * experiment.evaluation.episodes).all()
    assert compare["return_mean"].notna().all()
    per_seed = pd.read_csv(workdir / "results/per_seed.csv")
    assert len(per_seed) == len(experiment.cells()) + len(experiment.reference_cells())
    for stem in expected_figures(experiment):
        png = workdir / "results/figures" / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert (workdir / "results/figures" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    # The learning curves at the smoke's env steps: both PWM cells against the reference, from the real metrics.
    curves = pd.read_csv(workdir / "results/figures" / CURVES_TABLE)
    assert set(curves["dynamics"]) == {"deterministic", "flow", "ppo"}
    pwm = curves[curves["dynamics"] != "ppo"]
    assert set(pwm["env_steps"]) == set(experiment.evaluation.curve_env_steps)
    assert pwm[["train_return_mean", "reference_train_return", "ratio_to_reference"]].notna().all(axis=None)
    for task, size, dynamics, seed in experiment.cells():
        run = workdir / f"results/{task}/{size}-{dynamics}/seed{seed}"
        episodes = pd.read_csv(run / "eval/episodes.csv")
        assert len(episodes) == experiment.evaluation.episodes
        assert (run / "work/state.pt").is_file()  # the undeclared resume state survives the run
    for task, _, _, seed in experiment.reference_cells():
        run = workdir / f"results/{task}/reference/seed{seed}"
        assert len(pd.read_csv(run / "eval/episodes.csv")) == experiment.evaluation.episodes
        assert len(list((run / "snapshots").glob("step_*.pt"))) == experiment.reference.snapshots
        assert (run / "work/state.pt").is_file()
    from flow_mbpo_pwm.data.datasets import read_dataset

    data, attrs = read_dataset(workdir / "results/ant/offline/dataset.h5")
    assert data["observations"].shape[0] == experiment.reference.snapshots * experiment.collect.num_envs


def check_shareable_modes(workdir) -> None:
    """Every file the pipeline wrote has the mode umask 022 gives (0644), so a lab group can read results/: the
    tables, checkpoints (policy, best, final, resume state), figures and the effective config."""
    results = workdir / "results"
    run = results / "ant/tiny-flow/seed0"
    (config_file,) = (results / "config").glob("*.yaml")
    # The effective config the jobs read is the one snakemake validated (written only by a run, not a dry run).
    assert load_experiment(config_file) == load_experiment(SMOKE)
    named = [
        results / "compare.csv",
        results / "per_seed.csv",
        next((results / "figures").glob("*.png")),
        next((results / "figures").glob("*.pdf")),
        config_file,
        run / "final.pt",
        run / "best.pt",
        run / "selection.json",
        run / "eval/trajectories.h5",
        run / "work/state.pt",
        next((run / "work/checkpoints").glob("epoch_*.pt")),
    ]
    files = [p for p in results.rglob("*") if p.is_file()]
    assert set(named) <= set(files)
    wrong = {
        str(p.relative_to(workdir)): oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != 0o644
    }
    assert wrong == {}
    assert not [p for p in files if p.name.endswith(".tmp")]  # no temp file of an atomic write left behind


def test_smoke_pipeline_end_to_end_through_the_local_profile(tmp_path):
    workdir = tmp_path / "smoke"
    args = ("--profile", "profiles/local", "--configfile", str(SMOKE), "--cores", "2")
    previous_umask = os.umask(0o022)  # inherited by snakemake and its jobs: the usual umask of a shared cluster
    try:
        result = snakemake(*args, workdir=workdir, timeout=1500)
    finally:
        os.umask(previous_umask)
    assert result.returncode == 0, describe_failure(result, workdir)
    # The profile's cap on concurrent GPU jobs (printed as `gpu=1` or `gpu=Resource("gpu", 1)`).
    assert re.search(r"Provided resources: gpu=(Resource\(\"gpu\", )?1\b", result.stdout + result.stderr)
    check_smoke_results(workdir)
    check_shareable_modes(workdir)

    again = snakemake(*args, workdir=workdir)
    assert again.returncode == 0, again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr

    # The HTML report picks up the figures and tables with their captions.
    report = snakemake("--configfile", str(SMOKE), "--report", str(tmp_path / "report.html"), workdir=workdir)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report.html").stat().st_size > 10_000

    # Editing the config reruns only the jobs whose own settings changed.
    config = yaml.safe_load(SMOKE.read_text())
    more_seeds = tmp_path / "more_seeds.yaml"
    more_seeds.write_text(yaml.safe_dump({**config, "seeds": [*config["seeds"], 7]}))
    plan = snakemake("-n", "--configfile", str(more_seeds), workdir=workdir)
    # One new train job per cell, of seed 7 alone: the finished stacks of seeds 0 and 1 are left as they are.
    assert job_stats(plan.stdout) == {
        "train": 2, "select": 2, "evaluate": 2, "reference": 1, "evaluate_reference": 1, "aggregate": 1, "plot": 1,
        "all": 1,
    }  # fmt: skip
    more_episodes = tmp_path / "more_episodes.yaml"
    more_episodes.write_text(yaml.safe_dump({**config, "evaluation": {**config["evaluation"], "episodes": 120}}))
    plan = snakemake("-n", "--configfile", str(more_episodes), workdir=workdir)
    assert job_stats(plan.stdout) == {"evaluate": 4, "evaluate_reference": 2, "aggregate": 1, "plot": 1, "all": 1}
    longer = tmp_path / "longer.yaml"
    longer.write_text(
        yaml.safe_dump({**config, "train": {**config["train"], "pwm": {**config["train"]["pwm"], "epochs": 25}}})
    )
    plan = snakemake("-n", "--configfile", str(longer), workdir=workdir)
    # Changed training settings retrain every cell: one job per cell's stack of seeds.
    assert job_stats(plan.stdout) == {"train": 2, "select": 4, "evaluate": 4, "aggregate": 1, "plot": 1, "all": 1}


def test_killed_training_job_resumes_from_its_saved_state(tmp_path):
    """A training job killed outright (node loss, kill -9 of snakemake and the job) leaves its work/ folder; after
    `snakemake --unlock`, the next invocation (`rerun-incomplete` is in the profile) reruns the job, which
    continues from work/state.pt."""
    workdir = tmp_path / "resume"
    run = workdir / "results/ant/tiny-flow/seed0"
    args = ["--profile", "profiles/local", "--configfile", str(SMOKE), "--cores", "2"]
    target = "results/ant/tiny-flow/seed0/train_summary.json"
    process = subprocess.Popen(
        [str(BIN / "snakemake"), target, *args, "--directory", str(workdir)],
        cwd=REPO, env=snakemake_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # Killed after the state save of a training epoch (the first save, at epoch 0, only records the offline start:
    # the pretrained world model and the dataset in the buffer). Epoch 10 validates, then saves its state.
    # Both seeds of the stack (0 and 1) save their states together (io.torch_save_all).
    checkpoint, state = run / "work/checkpoints/epoch_000010.pt", run / "work/state.pt"
    sibling = run.parent / "seed1/work/state.pt"
    try:
        deadline = time.monotonic() + 600
        while not (
            checkpoint.exists()
            and all(s.exists() and s.stat().st_mtime > checkpoint.stat().st_mtime for s in (state, sibling))
        ):
            assert process.poll() is None, "snakemake ended before training saved any state"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (run / "train_summary.json").exists()
    assert processes_working_in(workdir) == []  # the training job died with snakemake

    # As after any crash of snakemake itself: release its lock on the folder, then run again.
    assert snakemake("--unlock", *args, workdir=workdir).returncode == 0
    result = snakemake(target, *args, workdir=workdir, timeout=900)
    assert result.returncode == 0, describe_failure(result, workdir)
    log = (workdir / "logs/train/ant/tiny-flow/seed0_1.log").read_text()  # seeds 0 and 1 train as one stack
    assert re.search(r"resumed from (\S+state\.pt,? )+at epoch [1-9]", log), log[-3000:]  # every seed's state
    summary = json.loads((run / "train_summary.json").read_text())
    assert (
        summary["status"] == "completed"
        and summary["epochs"] == load_experiment(SMOKE).cell("ant", "tiny", "flow", 0).pwm.epochs
    )


def processes_working_in(folder, wait: float = 10.0) -> list[int]:
    """PIDs of live processes whose working directory is `folder` (waits a little for the kernel to reap)."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for proc in os.listdir("/proc"):
            if not proc.isdigit():
                continue
            try:
                cwd = os.readlink(f"/proc/{proc}/cwd")
                state = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if cwd == str(folder) and state != "Z":
                found.append(int(proc))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_seed_that_collapses_is_reported_and_the_table_still_comes_out(tmp_path, monkeypatch):
    """One seed of a stack goes non-finite after its first validation. Its job still counts as done (train exits 3,
    which the rule takes as done), so Snakemake keeps its sibling's outputs; the collapsed seed is evaluated at its
    checkpoint from before the collapse, and the tables say it collapsed."""
    config = yaml.safe_load(SMOKE.read_text())
    config = {
        **config,
        "dynamics": {"deterministic": config["dynamics"]["deterministic"]},
        "reference": {"enabled": False},
        "pretrain": {"enabled": False},
    }
    path = tmp_path / "collapse.yaml"
    path.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "collapse"
    monkeypatch.setenv("FLOW_MBPO_PWM_INJECT_NAN_EPOCH", "1:15")  # seed 1, after its validation at epoch 10
    args = ("results/compare.csv", "--profile", "profiles/local", "--configfile", str(path), "--cores", "2")
    result = snakemake(*args, workdir=workdir, timeout=1200)
    assert result.returncode == 0, describe_failure(result, workdir)
    runs = {seed: workdir / f"results/ant/tiny-deterministic/seed{seed}" for seed in (0, 1)}
    assert json.loads((runs[0] / "train_summary.json").read_text())["status"] == "completed"
    collapsed = json.loads((runs[1] / "train_summary.json").read_text())
    assert collapsed["status"] == "collapsed" and collapsed["stopped"] == {"epoch": 20, "reason": "non-finite"}
    assert (runs[0] / "final.pt").is_file() and not (runs[1] / "final.pt").exists()
    assert json.loads((runs[1] / "selection.json").read_text())["chosen"]["epoch"] == 10
    compare = pd.read_csv(workdir / "results/compare.csv")
    assert list(compare["n_collapsed"]) == [1] and list(compare["n_seeds"]) == [2]
    per_seed = pd.read_csv(workdir / "results/per_seed.csv").set_index("seed")
    assert per_seed.loc[1, "train_status"] == "collapsed" and per_seed.loc[0, "train_status"] == "completed"
