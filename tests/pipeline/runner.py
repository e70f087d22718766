"""Helpers to run the real `snakemake` on this repository's workflow, in a scratch working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the virtualenv's bin: snakemake and flow-mbpo-pwm live here


def snakemake_env() -> dict[str, str]:
    """The environment a user gets after activating the virtualenv (the rules call `flow-mbpo-pwm`)."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(*args: str, workdir: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run snakemake from the repository root; with `workdir`, outputs go there (`--directory`), not to results/."""
    command = [str(BIN / "snakemake"), *args]
    if workdir is not None:
        command += ["--directory", str(workdir)]
    return subprocess.run(
        command, cwd=REPO, env=snakemake_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def rule_kind(name: str) -> str:
    """A rule's kind: each stack's `train_<cell>_seed<seeds>` rule (workflow/rules/train.smk) is a `train`."""
    return "train" if name.startswith("train_") else name


@dataclass
class DryRunJob:
    rule: str  # the rule's kind (`rule_kind`)
    fields: dict[str, str]
    name: str = ""  # the rule's own name

    @property
    def resources(self) -> dict[str, str]:
        """`resources: a=1, b=x` parsed into a dict (values as printed)."""
        text = self.fields.get("resources", "")
        return dict(item.split("=", 1) for item in text.split(", ") if "=" in item)


def dry_run_jobs(output: str) -> list[DryRunJob]:
    """The jobs `snakemake -n` lists: one per `rule NAME:` / `localrule NAME:` block with its indented fields."""
    jobs: list[DryRunJob] = []
    for line in output.splitlines():
        header = re.match(r"^(?:local)?rule (\w+):$", line)
        if header:
            jobs.append(DryRunJob(rule_kind(header.group(1)), {}, header.group(1)))
            continue
        field = re.match(r"^    (\w+): (.*)$", line)
        if field and jobs:
            jobs[-1].fields[field.group(1)] = field.group(2)
    return jobs


def job_stats(output: str) -> dict[str, int]:
    """The `Job stats` table of a dry run: rule kind -> number of jobs (without the total)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[rule_kind(parts[0])] = counts.get(rule_kind(parts[0]), 0) + int(parts[1])
    counts.pop("total")
    return counts
