"""A real single-node SLURM cluster on this machine, for running the SLURM profile end to end.

Needs root and Debian's `slurmctld`, `slurmd`, `slurm-client` and `munge` (`.ci/run` installs them). Facts this
relies on (measured with slurm 22.05, see ../shared/specs/pipeline.md):
- munged refuses to run as root: it runs as the `munge` user, with /run/munge created first;
- no systemd and no cgroups here: daemons run in the foreground as our children; proctrack/linuxproc, task/none;
- a fake GPU is a gres line with `File=` pointing at an existing device file (without it the node goes INVAL);
- without accounting (no slurmdbd) the status command must be squeue, and MinJobAge must keep finished jobs in
  squeue long enough for the executor to see them end (600 s);
- `SlurmdParameters=config_overrides` lets the node advertise the CPUs, memory and GPUs a real GPU node has, so
  the profile's requests (e.g. 64 GB for train) are tested unchanged on a small machine.
- the Snakemake job step strips `SLURM_CONF` before its nested `srun`, so the configuration must be where SLURM
  looks by itself: /etc/slurm/slurm.conf (a real node's; never touched here) or, next in line,
  /run/slurm/conf/slurm.conf (where slurmd caches a configless cluster's files): it is written there.
State and logs live in a scratch folder. Daemons are stopped by their PIDs, and the files in /run/slurm/conf are
removed again.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged")
RUNTIME_CONF = Path("/run/slurm/conf")
MARKER = "# written by tests/pipeline/slurm_cluster.py"
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "munge", "unmunge")


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None if it can."""
    if os.geteuid() != 0:
        return "starting SLURM daemons needs root"
    if Path("/etc/slurm/slurm.conf").exists():
        return "/etc/slurm/slurm.conf exists (a configured SLURM node): the test cluster would clash with it"
    foreign = [p for p in RUNTIME_CONF.glob("*.conf") if MARKER not in p.read_text(errors="replace")]
    if foreign:
        return f"{foreign[0]} exists and was not written by this test"
    missing = [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}; .ci/run installs them with apt-get)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (the munge package creates it)"
    if not Path("/etc/munge/munge.key").is_file():
        return "no /etc/munge/munge.key (the munge package creates it)"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlurmCluster:
    """One node (`cpus`, `memory_mb`, `gpus` fake GPUs of type `gpu_type`), one partition `partition`."""

    def __init__(
        self,
        root: Path,
        *,
        cpus: int = 32,
        memory_mb: int = 256_000,
        gpus: int = 2,
        gpu_type: str = "h200",
        partition: str = "ci",
    ):
        self.root = root
        self.cpus, self.memory_mb, self.gpus, self.gpu_type = cpus, memory_mb, gpus, gpu_type
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.conf = RUNTIME_CONF / "slurm.conf"
        self._processes: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, snakemake) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 90.0) -> None:
        for sub in ("state", "spool", "log", "devices"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._start_munge()
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait_for_idle_node(timeout)

    def stop(self) -> None:
        """Stop the daemons this object started, by PID (slurmd first, munged last); remove its config files."""
        for name in ("slurmd", "slurmctld", "munged"):
            process = self._processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for path in (self.conf, self.conf.with_name("gres.conf")):
            if path.exists() and MARKER in path.read_text(errors="replace"):
                path.unlink()

    def logs(self) -> str:
        """The daemons' log tails, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        # One fake device file per GPU: slurmd only checks that it exists.
        devices = []
        for index in range(self.gpus):
            device = self.root / "devices" / f"fake-gpu{index}"
            device.touch()
            devices.append(device)
        log = self.root / "log"
        RUNTIME_CONF.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "\n".join(
                [
                    MARKER,
                    "ClusterName=ci",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={log / 'slurmctld.log'}",
                    f"SlurmdLogFile={log / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SchedulerType=sched/backfill",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "MinJobAge=600",
                    "SlurmdParameters=config_overrides",
                    "GresTypes=gpu",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb}"
                    f" Gres=gpu:{self.gpu_type}:{self.gpus} State=UNKNOWN",
                    f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        self.conf.with_name("gres.conf").write_text(
            MARKER + "\n" + "".join(f"NodeName={self.node} Name=gpu Type={self.gpu_type} File={d}\n" for d in devices)
        )

    def _start_munge(self) -> None:
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
            return  # a munged is already serving this machine: use it, and leave it running
        munge = pwd.getpwnam("munge")
        for folder in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, munge.pw_uid, munge.pw_gid)
        self._spawn("munged", [_which("munged"), "--foreground", "--force"], user=munge.pw_name)
        deadline = time.monotonic() + 20
        while subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
            if self._processes["munged"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start:\n{self.logs()}")
            time.sleep(0.2)

    def _spawn(self, name: str, command: list[str], user: str | None = None) -> None:
        log = open(self.root / "log" / f"{name}.out.log", "ab")  # noqa: SIM115 (the daemon keeps it open)
        env = {**os.environ, **self.env}
        self._processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, user=user, start_new_session=True
        )

    def _wait_for_idle_node(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        env = {**os.environ, **self.env}
        state = ""
        while time.monotonic() < deadline:
            for name in ("slurmctld", "slurmd"):
                if self._processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {self._processes[name].returncode}:\n{self.logs()}")
            result = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True, check=False
            )
            state = result.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"node not idle after {timeout:.0f} s (state {state!r}):\n{self.logs()}")
