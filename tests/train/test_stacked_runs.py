"""Several seeds of one cell in one `train` process (a stack, `--seed 0 2 --run-dir A B`): each seed's run folder
is exactly what a lone run of that seed writes; a seed that collapses stops alone while its siblings finish; a
preempted stack resumes to the same end. The real CLI in a subprocess, as Snakemake runs it.

The task is a MuJoCo HalfCheetah (6 actions) with a binned reward head: no network layer of width one, so a seed
in a stack is bitwise the seed alone (tests/algorithms/test_stacked_seeds.py explains the width-one exception),
given MKL's strict reproducibility mode (`STRICT_MKL`: without it MKL's products depend on memory alignment)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import TINY_EXPERIMENT, assert_same_run, deep_update, run_cli, subprocess_env

from flow_mbpo_pwm.train import EXIT_COLLAPSED, EXIT_PREEMPTED, INJECT_NAN_ENV

STACK_EXPERIMENT = deep_update(
    TINY_EXPERIMENT,
    {
        "tasks": {"cheetah": {"task": "gym:HalfCheetah-v5", "num_envs": 2, "episode_length": 12}},
        "seeds": [0, 1, 2],
        "train": {"world_model": {"reward_head": "binned"}, "pwm": {"epochs": 16}},
    },
)
STACK_EXPERIMENT["tasks"] = {"cheetah": STACK_EXPERIMENT["tasks"]["cheetah"]}
STRICT_MKL = {"MKL_CBWR": "AUTO,STRICT"}


def train_args(config: Path, seeds: list[int], run_dirs: list[Path]) -> list[str]:
    return [
        sys.executable, "-m", "flow_mbpo_pwm.cli", "train", "--config", str(config), "--task", "cheetah",
        "--size", "tiny", "--dynamics", "flow", "--seed", *map(str, seeds), "--run-dir", *map(str, run_dirs),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted stack of seeds 0 and 2, and each of them trained alone."""
    root = tmp_path_factory.mktemp("stacked")
    config = root / "experiment.yaml"
    config.write_text(yaml.safe_dump(STACK_EXPERIMENT))
    stack = [root / "stack" / "seed0", root / "stack" / "seed2"]
    done = run_cli(train_args(config, [0, 2], stack), **STRICT_MKL)
    assert done.returncode == 0, done.stdout + done.stderr
    lone = {}
    for seed in (0, 2):
        lone[seed] = root / "lone" / f"seed{seed}"
        done = run_cli(train_args(config, [seed], [lone[seed]]), **STRICT_MKL)
        assert done.returncode == 0, done.stdout + done.stderr
    return config, stack, lone


def test_each_seed_of_a_stack_writes_what_its_lone_run_writes(reference):
    config, stack, lone = reference
    for run_dir, seed in zip(stack, (0, 2), strict=True):
        assert_same_run(lone[seed], run_dir)
        summary = json.loads((run_dir / "train_summary.json").read_text())
        assert summary["seed"] == seed and summary["status"] == "completed"
        assert summary["env_steps"] == 16 * 4 * 2  # this seed's envs only
        assert (run_dir / "work" / "state.pt").exists()


def test_a_seed_that_collapses_stops_alone_and_its_sibling_finishes(reference, tmp_path):
    config, _, lone = reference
    stack = [tmp_path / "seed0", tmp_path / "seed2"]
    done = run_cli(train_args(config, [0, 2], stack), **STRICT_MKL, **{INJECT_NAN_ENV: "2:5"})
    assert done.returncode == EXIT_COLLAPSED, done.stdout + done.stderr
    assert "seed 2: STOPPED by the collapse guard: non-finite values" in done.stdout
    diagnostics = json.loads((stack[1] / "work" / "diagnostics.json").read_text())
    assert diagnostics["seed"] == 2 and diagnostics["reason"] == "non-finite"
    assert not (stack[1] / "final.pt").exists()
    assert json.loads((stack[1] / "train_summary.json").read_text())["status"] == "collapsed"
    assert not (stack[0] / "work" / "diagnostics.json").exists()
    assert_same_run(lone[0], stack[0])
    # Rerun: the stopped seed stays stopped (its diagnostics say why), the finished one is complete already.
    again = run_cli(train_args(config, [0, 2], stack), **STRICT_MKL)
    assert again.returncode == EXIT_COLLAPSED and "stopped by the collapse guard" in again.stdout
    assert_same_run(lone[0], stack[0])


def test_a_preempted_stack_resumes_to_the_uninterrupted_end(reference, tmp_path):
    config, stack_reference, _ = reference
    stack = [tmp_path / "seed0", tmp_path / "seed2"]
    log_path = tmp_path / "preempted.log"
    proc = subprocess.Popen(
        train_args(config, [0, 2], stack),
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env=subprocess_env(**STRICT_MKL),
    )
    deadline = time.monotonic() + 300
    while not (stack[0] / "work" / "state.pt").exists():  # after the first periodic save: mid-run
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=300)
    log = log_path.read_text()
    assert rc == EXIT_PREEMPTED, log
    assert "preempted (SIGTERM)" in log and not (stack[0] / "final.pt").exists()
    again = run_cli(train_args(config, [0, 2], stack), **STRICT_MKL)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed from" in again.stdout
    for reference_dir, run_dir in zip(stack_reference, stack, strict=True):
        assert_same_run(reference_dir, run_dir)
    # A stack resumes only as the same stack: a folder saved by seeds [0, 2] is refused to a lone seed-0 run.
    (stack[0] / "final.pt").unlink()
    alone = run_cli(train_args(config, [0], [stack[0]]))
    assert alone.returncode != 0 and "saved by a run training the seeds [0, 2] together" in alone.stdout + alone.stderr
    # ... and the folder still records its stack (what the workflow groups by), not the refused one.
    assert yaml.safe_load((stack[0] / "work" / "stack.yaml").read_text()) == {"seeds": [0, 2]}


def test_a_stack_saved_with_a_validation_env_per_seed_is_refused_by_name(reference, tmp_path):
    """States saved before a stack's validations ran in one env hold each seed's own validation env: such a stack
    does not resume, and the error says why and what to delete (a lone run's state is the same either way)."""
    from flow_mbpo_pwm import envs, io

    config, stack_reference, _ = reference
    stack = [tmp_path / "seed0", tmp_path / "seed2"]
    for source, target in zip(stack_reference, stack, strict=True):
        shutil.copytree(source, target)
        (target / "final.pt").unlink()  # then the run resumes from its last state
    for seed, run_dir in zip((0, 2), stack, strict=True):
        state = io.torch_load(run_dir / "work" / "state.pt")
        lone = envs.make("gym:HalfCheetah-v5", 2, "cpu", seed=500_000 + seed, episode_length=12)
        state["val_env"] = lone.state_dict()
        io.torch_save(run_dir / "work" / "state.pt", state)
    done = run_cli(train_args(config, [0, 2], stack))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "its validation env does not fit this run" in done.stdout + done.stderr
    assert "saved before their validations ran in one env (2026-12-04) cannot resume" in done.stdout + done.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_preempted_stack_resumes_on_the_gpu(tmp_path):
    """On CUDA a state is read onto the GPU (`map_location`), which once broke every resume there (the RNG states
    arrived as CUDA tensors); the CPU tests above cannot see that. Bitwise equality is not asked of the GPU here
    (its reductions may differ run to run); the resumed stack must finish at the same epochs."""
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(deep_update(STACK_EXPERIMENT, {"train": {"run": {"device": "cuda"}}})))
    stack = [tmp_path / "seed0", tmp_path / "seed2"]
    log_path = tmp_path / "preempted.log"
    proc = subprocess.Popen(
        train_args(config, [0, 2], stack), stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=subprocess_env()
    )
    deadline = time.monotonic() + 300
    while not (stack[0] / "work" / "state.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == EXIT_PREEMPTED, log_path.read_text()
    again = run_cli(train_args(config, [0, 2], stack))
    assert again.returncode == 0 and "resumed from" in again.stdout, again.stdout + again.stderr
    for run_dir in stack:
        summary = json.loads((run_dir / "train_summary.json").read_text())
        assert summary["status"] == "completed" and summary["epochs"] == 16
        assert (run_dir / "final.pt").exists()
