# Grid helpers shared by every rule: the validated experiment, run-folder paths, wildcard constraints.

import dataclasses
import json
import os
import re
import shlex
import sys
from pathlib import Path

import yaml

from flow_mbpo_pwm import fingerprints
from flow_mbpo_pwm.config import ConfigError, load_experiment
from flow_mbpo_pwm.io import write_text
from flow_mbpo_pwm.plots import CURVES_TABLE, expected_figures

# The schema (validated in the Snakefile) catches unknown keys and wrong types; load_experiment adds the
# cross-field rules of the typed config (every cell must resolve), so a bad config stops here, before any job.
try:
    EXPERIMENT = load_experiment(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None


wildcard_constraints:
    # Exactly the configured names (already checked against config.NAME_PATTERN), so no other string can reach
    # a shell line, and '{size}-{dynamics}' splits one way only even when a variant name holds a '-'.
    task="|".join(map(re.escape, EXPERIMENT.tasks)),
    size="|".join(map(re.escape, EXPERIMENT.sizes)),
    dynamics="|".join(map(re.escape, EXPERIMENT.dynamics)),
    seed="|".join(str(seed) for seed in EXPERIMENT.seeds),


RUN = "results/{task}/{size}-{dynamics}/seed{seed}"
LOG = "{task}/{size}-{dynamics}/seed{seed}"


# The settings' baseline values (`make schema`): a fingerprint leaves them out, so a package version that adds a
# setting at the value that keeps the old behaviour reruns nothing (flow_mbpo_pwm/fingerprints.py).
SETTINGS_BASELINE = yaml.safe_load(
    Path(workflow.basedir, "workflow", "schemas", "settings_baseline.yaml").read_text()
)


def _fingerprint(kind: str, settings: dict) -> str:
    return fingerprints.fingerprint(kind, settings, SETTINGS_BASELINE)


# The CLI reads the experiment from a file, but Snakemake's `config` may come from several files plus `--config`
# overrides. So the effective config is written to a content-addressed file (atomically, once): a concurrent
# invocation with another config writes another file and can never change what a running job reads.
EXPERIMENT_DIGEST = fingerprints.digest(config)
EXPERIMENT_FILE = f"results/config/{EXPERIMENT_DIGEST}.yaml"


def _write_experiment_file() -> None:
    """Write EXPERIMENT_FILE if jobs are going to run. Not at parse time: `snakemake -n`, `--lint`, `--rulegraph`
    and `--dag` must leave results/ untouched, and only once the DAG is built does `workflow` know whether this is a
    dry run (no executor at all for lint and graphs). Not as a rule's output either: a new digest would then be a
    changed input of every job, and any config edit would rerun them all."""
    if workflow.executor_plugin is None or workflow.dryrun:
        return
    if not Path(EXPERIMENT_FILE).is_file():
        text = yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False)
        write_text(EXPERIMENT_FILE, text)


def experiment_file(wildcards, output) -> str:
    """The effective config's path (written when the first job that reads it is scheduled). Taking `output` makes
    it a derived parameter, which Snakemake leaves out of its params rerun trigger: a changed config reruns only
    the jobs whose own settings changed (`cell_digest`, `evaluation_digest`, `EXPERIMENT_DIGEST` below), not
    every job."""
    _write_experiment_file()
    return EXPERIMENT_FILE


# The software environments of the rules, used only with `--software-deployment-method conda`. The envs' post-deploy scripts
# install this repository's package from here: Snakemake runs them from copies in .snakemake/conda/.
os.environ.setdefault("FLOW_MBPO_PWM_SOURCE", workflow.basedir)
PIPELINE_ENV = "../envs/pipeline.yaml"
STATS_ENV = "../envs/stats.yaml"


def cell_digest(wildcards) -> str:
    """Fingerprint of one cell's fully resolved training config (a params rerun trigger)."""
    cell = EXPERIMENT.cell(
        wildcards.task, wildcards.size, wildcards.dynamics, int(wildcards.seed)
    )
    return _fingerprint("cell", fingerprints.cell_settings(cell))


def evaluation_digest(wildcards) -> str:
    """Fingerprint of what evaluation depends on: the cell and the `evaluation` section."""
    evaluation = {
        f: getattr(EXPERIMENT.evaluation, f)
        for f in ("episodes", "num_envs", "seed_base")
    }
    return fingerprints.digest(
        {"cell": cell_digest(wildcards), "evaluation": evaluation}
    )


def all_cells(pattern: str) -> list[str]:
    """`pattern` (with {task}, {size}, {dynamics}, {seed}) expanded over every cell of the grid."""
    return [
        pattern.format(task=task, size=size, dynamics=dynamics, seed=seed)
        for task, size, dynamics, seed in EXPERIMENT.cells()
    ]


# The model-free PPO reference (rsl-rl), one run per task and seed, and the offline dataset collected from the
# snapshots of one of them. Its cell keys in the tables are size "reference", dynamics "ppo".
REFERENCE = "results/{task}/reference/seed{seed}"
REFERENCE_LOG = "{task}/reference/seed{seed}"
DATASET = "results/{task}/offline/dataset.h5"


def reference_runs(pattern: str) -> list[str]:
    """`pattern` (with {task}, {seed}) over every reference run; empty when `reference.enabled` is false."""
    return [
        pattern.format(task=task, seed=seed)
        for task, _, _, seed in EXPERIMENT.reference_cells()
    ]


def datasets() -> list[str]:
    """The offline dataset of every task (needs the reference, so none when it is disabled)."""
    if not EXPERIMENT.reference.enabled:
        return []
    return [DATASET.format(task=task) for task in EXPERIMENT.tasks]


def reference_dir(wildcards) -> str:
    return REFERENCE.format(**wildcards)


def _reference_settings_digest(task: str, seed: int) -> str:
    settings = fingerprints.reference_run_settings(EXPERIMENT, task, seed)
    return _fingerprint("reference", settings)


def reference_digest(wildcards) -> str:
    """Fingerprint of one reference run's settings (a params rerun trigger)."""
    return _reference_settings_digest(wildcards.task, int(wildcards.seed))


def reference_evaluation_digest(wildcards) -> str:
    """Fingerprint of what a reference run's evaluation depends on: its settings and `evaluation`."""
    evaluation = {
        f: getattr(EXPERIMENT.evaluation, f)
        for f in ("episodes", "num_envs", "seed_base")
    }
    return fingerprints.digest(
        {"reference": reference_digest(wildcards), "evaluation": evaluation}
    )


def collect_reference_dir(wildcards) -> str:
    """The reference run whose snapshots `collect` uses: seed `collect.seed` of the task."""
    return REFERENCE.format(task=wildcards.task, seed=EXPERIMENT.collect.seed)


def collect_summary(wildcards) -> str:
    return f"{collect_reference_dir(wildcards)}/train_summary.json"


def collect_digest(wildcards) -> str:
    """Fingerprint of what the dataset depends on: the `collect` section and its reference run's settings."""
    reference = _reference_settings_digest(wildcards.task, EXPERIMENT.collect.seed)
    settings = {"reference": reference, **fingerprints.collect_settings(EXPERIMENT)}
    return _fingerprint("collect", settings)


# The paper's protocol (`pretrain:`): one world model per (task, size, dynamics variant), pretrained offline on the
# task's dataset; every seed of the cell starts training from it and, with `pretrain.seed_buffer`, from the data.
PRETRAINED = "results/{task}/pretrain/{size}-{dynamics}"


def pretrain_digest(wildcards) -> str:
    """Fingerprint of what a pretrained world model depends on (a params rerun trigger): the `pretrain` section and
    the cell's settings pretraining uses (`config.pretraining_settings`; not its epochs, actor, critic...).
    """
    return _fingerprint(
        "pretrain",
        fingerprints.pretrain_settings(EXPERIMENT, _seedless_cell(wildcards)),
    )


def clone_digest(wildcards) -> str:
    """Fingerprint of what a cloned actor depends on besides its input files (a params rerun trigger): the `clone`
    section and the cell's actor settings (`fingerprints.clone_settings`)."""
    return _fingerprint(
        "clone", fingerprints.clone_settings(EXPERIMENT, _seedless_cell(wildcards))
    )


def _seedless_cell(wildcards):
    """The cell's config for what is shared by all its seeds (pretraining, cloning): built with the first seed,
    which the settings fingerprinted from it leave out."""
    return EXPERIMENT.cell(
        wildcards.task, wildcards.size, wildcards.dynamics, EXPERIMENT.seeds[0]
    )


def clone_reference_policy(wildcards) -> str:
    """The policy a cell's actor is cloned from: the final policy of the reference the dataset comes from."""
    return f"{collect_reference_dir(wildcards)}/policy.pt"


def train_inputs(task: str, size: str, dynamics: str) -> dict[str, str]:
    """The pretrained world model, the cloned actor (with `clone.enabled`) and the offline data a cell's training
    starts from (none from scratch)."""
    if not EXPERIMENT.pretrain.enabled:
        return {}
    cell = {"task": task, "size": size, "dynamics": dynamics}
    inputs = {"world_model": f"{PRETRAINED.format(**cell)}/world_model.pt"}
    if EXPERIMENT.clone.enabled:
        inputs["actor"] = f"{PRETRAINED.format(**cell)}/actor.pt"
    if EXPERIMENT.pretrain.seed_buffer:
        inputs["offline_data"] = DATASET.format(task=task)
    return inputs


def offline_flags(inputs: dict[str, str]) -> str:
    """`train`'s flags for the inputs of `train_inputs`, quoted."""
    flags = {
        "world_model": "--world-model-init",
        "actor": "--actor-init",
        "offline_data": "--offline-data",
    }
    return " ".join(
        f"{flag} {shlex.quote(str(inputs[name]))}"
        for name, flag in flags.items()
        if name in inputs
    )


# Stacks of seeds: the seeds of a cell that one `train` job trains together, in one process. A seed that has
# started keeps its stack, which `train` records in the run folder (work/stack.yaml), so finished and preempted
# stacks are never regrouped and adding seeds adds jobs of the new seeds only (ExperimentConfig.train_jobs).
# Not final.pt: a seed stopped by the collapse guard has none, and nothing downstream reads it (select takes the
# policy checkpoints that train_summary.json lists).
TRAIN_OUTPUTS = {
    "metrics": "metrics.csv",
    "validation": "validation.csv",
    "wm_diagnostics": "wm_diagnostics.csv",
    "summary": "train_summary.json",
}


def _recorded_stack(task: str, size: str, dynamics: str, seed: int):
    run = RUN.format(task=task, size=size, dynamics=dynamics, seed=seed)
    try:
        recorded = yaml.safe_load(Path(run, "work", "stack.yaml").read_text())
        return tuple(int(s) for s in recorded["seeds"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _train_resources(seeds: int) -> dict:
    """One GPU per job, however many seeds it trains. A profile's `set-resources: train:` (profiles/slurm)
    applies to every train job (rules named per stack), its `mem_mb` per seed: times the job's seeds.
    """
    settings = getattr(workflow, "resource_settings", None)
    profile = getattr(settings, "overwrite_resources", {}).get("train", {})
    # Values as the profile gives them (Snakemake may hold them as parsed Resource objects).
    resources = {name: getattr(value, "raw", value) for name, value in profile.items()}
    if "mem_mb" in resources:
        resources["mem_mb"] = int(resources["mem_mb"]) * seeds
    return {**resources, "gpu": 1, "seeds": seeds}


@dataclasses.dataclass(frozen=True)
class TrainJob:
    task: str
    size: str
    dynamics: str
    stack: tuple

    def runs(self) -> list[str]:
        cell = {"task": self.task, "size": self.size, "dynamics": self.dynamics}
        return [RUN.format(**cell, seed=seed) for seed in self.stack]

    @property
    def rule(self) -> str:
        name = f"train_{self.task}_{self.size}_{self.dynamics}_seed{'_'.join(map(str, self.stack))}"
        return re.sub(r"[^0-9A-Za-z_]", "_", name)

    @property
    def outputs(self) -> dict[str, str]:
        return {
            f"{key}_seed{seed}": f"{run}/{name}"
            for seed, run in zip(self.stack, self.runs())
            for key, name in TRAIN_OUTPUTS.items()
        }

    @property
    def log(self) -> str:
        seeds = "_".join(map(str, self.stack))
        return f"logs/train/{self.task}/{self.size}-{self.dynamics}/seed{seeds}.log"

    @property
    def benchmark(self) -> str:
        return self.log.replace("logs/", "benchmarks/", 1).removesuffix(".log") + ".tsv"

    @property
    def inputs(self) -> dict[str, str]:
        return train_inputs(self.task, self.size, self.dynamics)

    @property
    def offline(self) -> str:
        return offline_flags(self.inputs)

    @property
    def seeds(self) -> str:
        return " ".join(map(str, self.stack))

    @property
    def run_dirs(self) -> str:
        return " ".join(map(shlex.quote, self.runs()))

    @property
    def cell(self) -> str:
        """Fingerprint of the stack's fully resolved training configs (a params rerun trigger)."""
        cells = [
            EXPERIMENT.cell(self.task, self.size, self.dynamics, seed)
            for seed in self.stack
        ]
        return fingerprints.digest(
            [_fingerprint("cell", fingerprints.cell_settings(cell)) for cell in cells]
        )

    @property
    def resources(self) -> dict:
        return _train_resources(len(self.stack))


TRAIN_JOBS = [TrainJob(*job) for job in EXPERIMENT.train_jobs(_recorded_stack)]


FIGURES = list(expected_figures(EXPERIMENT))


def report_caption(stem: str) -> str:
    """Caption of a figure or table in the HTML report (`snakemake --report`), kept in workflow/report/."""
    return str(Path(workflow.basedir, "workflow", "report", f"{stem}.rst"))


def run_dir(wildcards) -> str:
    return RUN.format(**wildcards)


FIGURES_DIR = "results/figures"


def figures_dir(wildcards) -> str:
    return FIGURES_DIR


# GPU jobs start through this wrapper: on a workstation it pins each job to a free GPU (or the CPU if there is
# none); inside a SLURM job it changes nothing. See workflow/scripts/gpu_slot.py.
_GPU_SLOT_SCRIPT = " ".join(
    shlex.quote(part)
    for part in (
        sys.executable,
        str(Path(workflow.basedir, "workflow", "scripts", "gpu_slot.py")),
    )
)


def gpu_slot_tagged(tag: str = ""):
    """Command prefix that binds a GPU job to one GPU; with a tag, for jobs of one kind that should not share a
    GPU while another is free of their kind (the train jobs of one cell): gpu_slot.py places a job away from held
    jobs of the same tag. A function of `resources`, so Snakemake does not treat the (machine-specific)
    interpreter and repository paths in it as a rerun trigger."""
    option = f" --tag {shlex.quote(tag)}" if tag else ""

    def prefix(wildcards, resources) -> str:
        return f"{_GPU_SLOT_SCRIPT}{option} --" if resources.get("gpu", 0) else ""

    return prefix


gpu_slot = gpu_slot_tagged()
