"""Run a command on one free GPU of this machine, or on the CPU when the machine has none.

    python gpu_slot.py [--tag TAG] -- flow-mbpo-pwm train ...

Snakemake caps how many GPU jobs run at once (`resources: gpu=N`) but never says *which* GPU a job gets, so on a
multi-GPU workstation every job would land on GPU 0. This wrapper claims a GPU by taking an exclusive `flock` on
`<lock dir>/gpu-<id>.lock`, sets `CUDA_VISIBLE_DEVICES` to that GPU and `exec`s the command with the lock's file
descriptor inherited. The kernel releases the lock when the command exits, however it exits (crash, kill -9), so
a stale lock cannot exist. When every GPU is taken it waits for one.

Left alone (the command runs unchanged):
- inside a SLURM job (`SLURM_JOB_ID` set): SLURM has already chosen the GPU and set `CUDA_VISIBLE_DEVICES`;
- `FLOW_MBPO_PWM_GPU_SLOT=off`;
- no GPU visible (`CUDA_VISIBLE_DEVICES` empty or -1, or no working `nvidia-smi`): the job runs on the CPU.

Candidate GPUs are the entries of `CUDA_VISIBLE_DEVICES` when it is set (so a user can restrict the pool), else
the indices `nvidia-smi` lists. `FLOW_MBPO_PWM_JOBS_PER_GPU=k` (default 1) lets k jobs share each GPU (lock
`gpu-<id>.<slot>.lock` for slots 1..k-1). Small PWM runs leave most of an H200 idle (their kernels are
launch-bound), so several per GPU finish sooner — with CUDA MPS running, their kernels even overlap; then raise
`--resources gpu=N` to GPUs x k. Locks live in `FLOW_MBPO_PWM_GPU_LOCKS` (default
`/tmp/flow-mbpo-pwm-gpus-<uid>`), a machine-local folder, so jobs of different snakemake invocations on the same
machine share the pool.

Which GPU: the one holding the fewest jobs of the same `--tag` (the workflow tags each train job with its cell, so
the stacks of one cell — e.g. a flow cell's seeds split over two jobs — land on different GPUs whatever started
before them), then the fewest jobs, then the first listed. A job writes its tag into its lock file; claims take
turns on `claim.lock`, so every held slot's tag is written before the next claim reads it.
Standard library only: it runs before anything of the project is imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

POLL_SECONDS = 2.0


def visible_gpus(environ: dict[str, str]) -> list[str]:
    """GPU ids this job may use: CUDA_VISIBLE_DEVICES entries if set, else what nvidia-smi lists."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [entry.strip() for entry in environ["CUDA_VISIBLE_DEVICES"].split(",") if entry.strip()]
        # CUDA stops at the first invalid entry; "-1" is the conventional "no GPU".
        return [] if not ids or ids[0].startswith("-") else ids
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.strip()]


def claim(gpus: list[str], lock_dir: str, jobs_per_gpu: int = 1, tag: str = "") -> tuple[str, int]:
    """Block until a slot of one of `gpus` is free; return the GPU and the open, locked file descriptor of the slot
    taken on the GPU with the fewest held slots tagged `tag`, then the fewest held slots (module docstring)."""
    os.makedirs(lock_dir, exist_ok=True)
    waiting = False
    while True:
        with _claim_turn(lock_dir):
            taken = _take_slot(gpus, lock_dir, jobs_per_gpu, tag)
        if taken is not None:
            return taken
        if not waiting:
            print(f"gpu_slot: all of GPUs {gpus} are busy; waiting for one", file=sys.stderr, flush=True)
            waiting = True
        time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def _claim_turn(lock_dir: str) -> Iterator[None]:
    fd = os.open(os.path.join(lock_dir, "claim.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _take_slot(gpus: list[str], lock_dir: str, jobs_per_gpu: int, tag: str) -> tuple[str, int] | None:
    free: dict[str, list[int]] = {gpu: [] for gpu in gpus}  # per GPU: the fds of its free slots, locked by us now
    held_tags: dict[str, list[str]] = {gpu: [] for gpu in gpus}
    for gpu in gpus:
        for slot in range(jobs_per_gpu):
            name = f"gpu-{gpu}.lock" if slot == 0 else f"gpu-{gpu}.{slot}.lock"
            fd = os.open(os.path.join(lock_dir, name), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held_tags[gpu].append(os.pread(fd, 256, 0).decode(errors="replace"))
                os.close(fd)
                continue
            free[gpu].append(fd)
    open_gpus = [gpu for gpu in gpus if free[gpu]]
    chosen = None
    if open_gpus:
        chosen = min(open_gpus, key=lambda gpu: (held_tags[gpu].count(tag) if tag else 0, len(held_tags[gpu])))
    taken = None
    for gpu in gpus:
        for fd in free[gpu]:
            if taken is None and gpu == chosen:
                os.ftruncate(fd, 0)
                os.pwrite(fd, tag.encode(), 0)
                taken = (gpu, fd)
            else:
                os.close(fd)
    return taken


def main(argv: list[str]) -> int:
    tag = ""
    if argv[:1] == ["--tag"]:
        tag, argv = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
        if not re.fullmatch(r"[A-Za-z0-9_.:/-]{1,200}", tag):
            print(f"gpu_slot: --tag must be 1-200 of A-Z a-z 0-9 _ . : / -, got {tag!r}", file=sys.stderr)
            return 2
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: gpu_slot.py [--tag TAG] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    environ = dict(os.environ)
    if "SLURM_JOB_ID" in environ or environ.get("FLOW_MBPO_PWM_GPU_SLOT", "").lower() == "off":
        os.execvp(argv[0], argv)
    gpus = visible_gpus(environ)
    if not gpus:
        print("gpu_slot: no GPU visible; running on the CPU", file=sys.stderr, flush=True)
        os.execvp(argv[0], argv)
    lock_dir = environ.get("FLOW_MBPO_PWM_GPU_LOCKS", f"/tmp/flow-mbpo-pwm-gpus-{os.getuid()}")
    jobs_per_gpu = environ.get("FLOW_MBPO_PWM_JOBS_PER_GPU", "1")
    if not jobs_per_gpu.isdigit() or int(jobs_per_gpu) < 1:
        print(f"gpu_slot: FLOW_MBPO_PWM_JOBS_PER_GPU must be a positive integer, got {jobs_per_gpu!r}", file=sys.stderr)
        return 2
    gpu, fd = claim(gpus, lock_dir, int(jobs_per_gpu), tag)
    os.set_inheritable(fd, True)  # the lock lives exactly as long as the command
    environ["CUDA_VISIBLE_DEVICES"] = gpu
    print(f"gpu_slot: running on GPU {gpu}", file=sys.stderr, flush=True)
    os.execvpe(argv[0], argv, environ)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
