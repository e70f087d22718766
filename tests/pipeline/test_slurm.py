"""The smoke pipeline through profiles/slurm on a real single-node SLURM cluster started on this machine.

Only what a one-node test cluster must differ in is overridden on the command line: partition and account (the
profile has placeholders), the status command (no accounting database here, so squeue instead of sacct) and how
soon the first status check comes. Everything else is the profile as shipped, incl. the GPU model and the memory
and CPUs per GPU (the node advertises a GPU node's resources; its GPUs are fake, so jobs run on the CPU).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from .runner import BIN, REPO, snakemake_env
from .slurm_cluster import SlurmCluster, unavailable_reason
from .test_smoke_local import SMOKE, check_smoke_results, describe_failure

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def test_smoke_pipeline_end_to_end_through_the_slurm_profile(tmp_path):
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no SLURM cluster can be started here: {reason}")
    workdir = tmp_path / "smoke"
    with SlurmCluster(tmp_path / "cluster", partition="ci") as cluster:
        command = [
            str(BIN / "snakemake"),
            "--profile", "profiles/slurm",
            "--configfile", str(SMOKE),
            "--directory", str(workdir),
            "--default-resources", "slurm_partition=ci", "slurm_account=ci",
            "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "2",
        ]  # fmt: skip
        env = {**snakemake_env(), **cluster.env}
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
        output = result.stdout + result.stderr
        assert result.returncode == 0, describe_failure(result, workdir) + "\n" + cluster.logs()
        submitted = output.count("has been submitted with SLURM jobid")
        # train (one job per stack: both seeds of a cell), select and evaluate of every cell, the reference and its
        # evaluation of every seed, collect and the pretraining of each dynamics variant went through sbatch;
        # aggregate and plot ran locally.
        assert submitted == 2 + 2 * 4 + 2 * 2 + 1 + 2, output[-3000:]
        check_smoke_results(workdir)
        for rule in ("train_ant_tiny_flow_seed0_1", "select", "evaluate", "reference", "evaluate_reference", "collect",
                     "pretrain"):  # fmt: skip
            assert f"\nrule {rule}:" in output and f"localrule {rule}:" not in output
        for rule in ("aggregate", "plot"):
            assert f"localrule {rule}:" in output
    assert not os.path.exists("/run/slurm/conf/slurm.conf")  # the test cluster is gone, config included
