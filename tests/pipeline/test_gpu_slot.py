"""workflow/scripts/gpu_slot.py gives concurrent jobs distinct GPUs, waits when all are taken, frees a GPU when its
job ends however it ends, and leaves CPU-only machines and SLURM jobs alone. Real processes and real locks; the
GPU pool is given through CUDA_VISIBLE_DEVICES since this machine has no GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .runner import REPO

SCRIPT = REPO / "workflow/scripts/gpu_slot.py"
# The job: report the GPU it got, then hold it until the test removes the "hold" file.
JOB = (
    "import os, pathlib, sys, time\n"
    "out = pathlib.Path(sys.argv[1])\n"
    "out.write_text(os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>'))\n"
    "while pathlib.Path(sys.argv[2]).exists():\n"
    "    time.sleep(0.05)\n"
)


def start(
    tmp_path: Path, name: str, env_overrides: dict[str, str], hold: bool = True, tag: str | None = None
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env["FLOW_MBPO_PWM_GPU_LOCKS"] = str(tmp_path / "locks")
    env.update(env_overrides)
    holdfile = tmp_path / f"{name}.hold"
    if hold:
        holdfile.touch()
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *(["--tag", tag] if tag else []), "--"]
        + [sys.executable, "-c", JOB, str(tmp_path / f"{name}.gpu"), str(holdfile)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    time.sleep(0.05)
    return path.read_text()


def test_concurrent_jobs_get_distinct_gpus_and_the_third_waits(tmp_path):
    pool = {"CUDA_VISIBLE_DEVICES": "0,1"}
    first, second = start(tmp_path, "a", pool), start(tmp_path, "b", pool)
    gpus = {wait_for(tmp_path / "a.gpu"), wait_for(tmp_path / "b.gpu")}
    assert gpus == {"0", "1"}

    third = start(tmp_path, "c", pool)
    time.sleep(1.0)
    assert not (tmp_path / "c.gpu").exists()  # both GPUs busy: it waits instead of doubling up
    # a and b start together, so either may hold either GPU: a crashed job (no clean-up of its own) frees its own.
    freed = (tmp_path / "a.gpu").read_text()
    first.kill()
    first.wait()
    assert wait_for(tmp_path / "c.gpu") == freed
    assert "busy; waiting" in _finish(third, tmp_path / "c.hold")
    _finish(second, tmp_path / "b.hold")


def test_jobs_per_gpu_spreads_jobs_over_gpus_first_then_shares_them(tmp_path):
    pool = {"CUDA_VISIBLE_DEVICES": "0,1", "FLOW_MBPO_PWM_JOBS_PER_GPU": "2"}
    jobs = []
    for name in "abc":
        jobs.append(start(tmp_path, name, pool))
        wait_for(tmp_path / f"{name}.gpu")  # one at a time, so the order of claims is known
    assert [(tmp_path / f"{n}.gpu").read_text() for n in "abc"] == ["0", "1", "0"]
    fourth = start(tmp_path, "d", pool)
    assert wait_for(tmp_path / "d.gpu") == "1"
    fifth = start(tmp_path, "e", pool)
    time.sleep(1.0)
    assert not (tmp_path / "e.gpu").exists()  # 2 GPUs x 2 slots taken: the fifth waits
    for job, name in zip([*jobs, fourth], "abcd", strict=True):
        _finish(job, tmp_path / f"{name}.hold")
    wait_for(tmp_path / "e.gpu")
    _finish(fifth, tmp_path / "e.hold")


def test_jobs_of_one_tag_go_to_different_gpus_before_the_emptiest_gpu(tmp_path):
    """Two stacks of one cell (tag) go to different GPUs even where the GPU without one holds more other jobs: the
    case of a flow cell's seeds split over two jobs, started after the deterministic jobs had spread."""
    pool = {"CUDA_VISIBLE_DEVICES": "0,1", "FLOW_MBPO_PWM_JOBS_PER_GPU": "3"}
    jobs = {}
    for name in "abc":  # untagged: spread, then shared -> a 0, b 1, c 0
        jobs[name] = start(tmp_path, name, pool)
        wait_for(tmp_path / f"{name}.gpu")
    jobs["d"] = start(tmp_path, "d", pool, tag="train:ant:5M:flow")
    assert wait_for(tmp_path / "d.gpu") == "1"  # the GPU with fewer jobs
    _finish(jobs.pop("b"), tmp_path / "b.hold")  # now GPU 0 holds a, c; GPU 1 holds d
    jobs["e"] = start(tmp_path, "e", pool, tag="train:ant:5M:flow")
    assert wait_for(tmp_path / "e.gpu") == "0"  # away from its sibling, though GPU 0 holds more jobs
    jobs["f"] = start(tmp_path, "f", pool)
    assert wait_for(tmp_path / "f.gpu") == "1"  # untagged: the GPU with fewer jobs
    for name, job in jobs.items():
        _finish(job, tmp_path / f"{name}.hold")


def test_a_bad_tag_is_refused(tmp_path):
    job = start(tmp_path, "a", {"CUDA_VISIBLE_DEVICES": "0"}, hold=False, tag="x; rm -rf /")
    assert job.wait(timeout=30) == 2 and "--tag" in job.stderr.read()


def test_a_bad_jobs_per_gpu_value_is_refused(tmp_path):
    job = start(tmp_path, "a", {"CUDA_VISIBLE_DEVICES": "0", "FLOW_MBPO_PWM_JOBS_PER_GPU": "zero"}, hold=False)
    assert job.wait(timeout=30) == 2 and "positive integer" in job.stderr.read()


def test_without_a_gpu_the_job_runs_on_the_cpu_unchanged(tmp_path):
    job = start(tmp_path, "cpu", {"CUDA_VISIBLE_DEVICES": "", "PATH": "/nonexistent"}, hold=False)
    assert job.wait(timeout=30) == 0
    assert (tmp_path / "cpu.gpu").read_text() == ""
    assert "running on the CPU" in job.stderr.read()


def test_no_nvidia_smi_means_cpu(tmp_path):
    env = {"PATH": str(tmp_path / "empty-bin")}  # nvidia-smi cannot be found
    job = start(tmp_path, "nosmi", env, hold=False)
    assert job.wait(timeout=30) == 0
    assert (tmp_path / "nosmi.gpu").read_text() == "<unset>"


def test_inside_a_slurm_job_the_scheduler_choice_stands(tmp_path):
    job = start(tmp_path, "slurm", {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}, hold=False)
    assert job.wait(timeout=30) == 0
    assert (tmp_path / "slurm.gpu").read_text() == "3"
    assert not (tmp_path / "locks").exists()


def test_exit_status_of_the_command_is_kept(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--", sys.executable, "-c", "raise SystemExit(7)"],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
    )
    assert result.returncode == 7


def _finish(job: subprocess.Popen, holdfile: Path) -> str:
    holdfile.unlink(missing_ok=True)
    assert job.wait(timeout=30) == 0
    return job.stderr.read()
