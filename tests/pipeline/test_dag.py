"""The workflow's DAG, profiles and style, seen through the real `snakemake` (dry runs only: seconds)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from flow_mbpo_pwm.config import load_experiment
from flow_mbpo_pwm.plots import CURVES_TABLE, expected_figures

from .runner import BIN, REPO, dry_run_jobs, job_stats, rule_kind, snakemake, snakemake_env

CELL_RULES = ("train", "select", "evaluate")
REFERENCE_RULES = ("reference", "evaluate_reference", "collect", "pretrain")  # GPU jobs beside the grid


def expected_counts(config_path: str) -> dict[str, int]:
    experiment = load_experiment(REPO / config_path)
    counts = {**dict.fromkeys(CELL_RULES, len(experiment.cells())), "aggregate": 1, "plot": 1, "all": 1}
    counts["train"] = len(experiment.train_jobs())  # one job per stack of seeds (default: all seeds of a cell)
    if experiment.reference.enabled:  # one PPO reference run per task and seed, one dataset per task
        runs = len(experiment.reference_cells())
        counts |= {"reference": runs, "evaluate_reference": runs, "collect": len(experiment.tasks)}
    if experiment.pretrain.enabled:  # one pretrained world model per (task, size, dynamics variant)
        counts["pretrain"] = len(experiment.tasks) * len(experiment.sizes) * len(experiment.dynamics)
    return counts


@pytest.mark.parametrize(
    ("config_path", "cells", "train_jobs", "reference_runs"),
    [
        ("config/config.yaml", 1 * 2 * 2 * 5, 1 * 2 * 2, 5),
        ("config/smoke.yaml", 1 * 1 * 2 * 2, 1 * 1 * 2, 2),
        ("config/ablation.yaml", 5 * 5, 5, 5),
    ],
)
def test_dry_run_has_one_chain_per_cell_and_one_aggregate(tmp_path, config_path, cells, train_jobs, reference_runs):
    """One select and evaluate per (task, size, dynamics, seed); one train job per (task, size, dynamics): all
    seeds of a cell train in one process by default."""
    result = snakemake("-n", "--configfile", config_path, workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert job_stats(result.stdout) == expected_counts(config_path)
    assert expected_counts(config_path)["select"] == cells
    assert expected_counts(config_path)["train"] == train_jobs
    assert expected_counts(config_path).get("reference", 0) == reference_runs


def test_default_config_is_config_yaml(tmp_path):
    """Without --configfile the Snakefile reads config/config.yaml of the directory snakemake runs in."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config/config.yaml", tmp_path / "config/config.yaml")
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--snakefile", str(REPO / "Snakefile")],
        cwd=tmp_path,
        env=snakemake_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert job_stats(result.stdout) == expected_counts("config/config.yaml")


def test_configfile_replaces_the_default_config_instead_of_merging(tmp_path):
    """A config with other dynamics variants than config.yaml gets exactly its own variants."""
    result = snakemake("-n", "--configfile", "config/ablation.yaml", workdir=tmp_path)
    variants = {
        job.fields["wildcards"].split("dynamics=")[1].split(",")[0]
        for job in dry_run_jobs(result.stdout)
        if job.rule == "select"
    }
    assert variants == {"deterministic", "flow-k2", "flow-k4", "flow-k8", "flow-k16"}


def test_run_folders_and_shell_lines_follow_the_contract(tmp_path):
    result = snakemake("-n", "-p", "--configfile", "config/smoke.yaml", workdir=tmp_path)
    jobs = dry_run_jobs(result.stdout)
    # One train job per cell: its seeds train together, each into its own run folder.
    train = next(j for j in jobs if j.rule == "train" and "tiny-flow" in j.fields["output"])
    assert train.name == "train_ant_tiny_flow_seed0_1"
    runs = ["results/ant/tiny-flow/seed0", "results/ant/tiny-flow/seed1"]
    assert train.fields["output"].split(", ") == [
        f"{run}/{name}"
        for run in runs
        for name in ("metrics.csv", "validation.csv", "wm_diagnostics.csv", "train_summary.json")
    ]
    # Resumable training state (work/) is never a declared output: Snakemake would delete it when a job fails.
    assert not [job for job in jobs if "/work/" in job.fields.get("output", "")]
    assert train.fields["log"] == "logs/train/ant/tiny-flow/seed0_1.log"
    assert train.fields["benchmark"] == "benchmarks/train/ant/tiny-flow/seed0_1.tsv"
    assert train.resources["gpu"] == "1" and train.resources["seeds"] == "2"
    # The paper's protocol: training starts from the cell's pretrained world model, with the task's offline data.
    assert train.fields["input"].split(", ") == [
        "results/ant/pretrain/tiny-flow/world_model.pt",
        "results/ant/offline/dataset.h5",
    ]
    shell = re.search(
        r"flow-mbpo-pwm train --config (results/config/[0-9a-f]{16}\.yaml) --task ant --size tiny --dynamics flow"
        rf" --seed 0 1 --run-dir {runs[0]} {runs[1]} --world-model-init results/ant/pretrain/tiny-flow/world_model\.pt"
        r" --offline-data results/ant/offline/dataset\.h5 > logs/train/ant/tiny-flow/seed0_1\.log 2>&1",
        result.stdout,
    )
    assert shell is not None, result.stdout
    select = next(j for j in jobs if j.rule == "select" and "dynamics=flow, seed=1" in j.fields["wildcards"])
    assert select.fields["input"].split(", ") == [f"{runs[1]}/train_summary.json", f"{runs[1]}/validation.csv"]
    # A dry run writes nothing: the effective config file is written only when jobs run (its content is checked
    # by the smoke run, tests/pipeline/test_smoke_local.py).
    assert not (tmp_path / "results").exists()
    figures = {
        f"results/figures/{stem}.{ext}"
        for stem in expected_figures(load_experiment(REPO / "config/smoke.yaml"))
        for ext in ("png", "pdf")
    }
    plot = next(j for j in jobs if j.rule == "plot")
    assert set(plot.fields["output"].split(", ")) == figures | {f"results/figures/{CURVES_TABLE}"}


def test_rule_graph_is_train_select_evaluate_aggregate_plot(tmp_path):
    result = snakemake("--rulegraph", "--configfile", "config/smoke.yaml", workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    labels = re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", result.stdout, flags=re.MULTILINE)
    names = {node: rule_kind(label) for node, label in labels}
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)$", result.stdout, flags=re.MULTILINE)}
    assert edges == {
        ("train", "select"),
        ("select", "evaluate"),
        ("evaluate", "aggregate"),
        ("train", "aggregate"),  # train_summary.json
        ("train", "plot"),  # metrics.csv learning curves, wm_diagnostics.csv
        ("aggregate", "plot"),
        ("aggregate", "all"),
        ("plot", "all"),
        ("reference", "evaluate_reference"),
        ("evaluate_reference", "aggregate"),
        ("reference", "aggregate"),  # train_summary.json
        ("reference", "plot"),  # metrics.csv learning curve
        ("reference", "collect"),
        ("collect", "all"),
        ("collect", "pretrain"),  # the paper's protocol: reference -> collect -> pretrain -> train
        ("collect", "train"),  # the offline data seeds the replay buffer
        ("pretrain", "train"),
    }


def test_reference_and_collect_folders_and_shell_lines(tmp_path):
    result = snakemake("-n", "-p", "--configfile", "config/smoke.yaml", workdir=tmp_path)
    jobs = dry_run_jobs(result.stdout)
    reference = next(j for j in jobs if j.rule == "reference" and "seed=1" in j.fields["wildcards"])
    run = "results/ant/reference/seed1"
    assert reference.fields["output"].split(", ") == [
        f"{run}/policy.pt",
        f"{run}/metrics.csv",
        f"{run}/validation.csv",
        f"{run}/train_summary.json",
    ]
    assert reference.fields["log"] == "logs/reference/ant/reference/seed1.log"
    assert re.search(
        rf"flow-mbpo-pwm reference --config results/config/[0-9a-f]{{16}}\.yaml --task ant --seed 1 --run-dir {run}"
        r" > logs/reference/ant/reference/seed1\.log 2>&1",
        result.stdout,
    )
    evaluate = next(j for j in jobs if j.rule == "evaluate_reference" and "seed=1" in j.fields["wildcards"])
    assert evaluate.fields["output"].split(", ") == [f"{run}/eval/episodes.csv", f"{run}/eval/trajectories.h5"]
    assert "--size reference --dynamics ppo --seed 1" in result.stdout
    collect = next(j for j in jobs if j.rule == "collect")
    assert collect.fields["output"] == "results/ant/offline/dataset.h5"
    assert collect.fields["input"] == "results/ant/reference/seed0/train_summary.json"  # collect.seed 0
    pretrain = next(j for j in jobs if j.rule == "pretrain" and "dynamics=flow" in j.fields["wildcards"])
    assert pretrain.fields["input"] == "results/ant/offline/dataset.h5"
    assert pretrain.fields["output"].split(", ") == [
        "results/ant/pretrain/tiny-flow/world_model.pt",
        "results/ant/pretrain/tiny-flow/pretrain_metrics.csv",
    ]
    assert re.search(
        r"flow-mbpo-pwm pretrain --config results/config/[0-9a-f]{16}\.yaml --task ant --size tiny --dynamics flow"
        r" --dataset results/ant/offline/dataset\.h5 --out results/ant/pretrain/tiny-flow/world_model\.pt"
        r" > logs/pretrain/ant/tiny-flow\.log 2>&1",
        result.stdout,
    )


def test_from_scratch_is_one_switch_away(tmp_path):
    """`pretrain.enabled: false`: no pretraining, and training neither waits for nor reads the offline data."""
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    path = tmp_path / "scratch.yaml"
    path.write_text(yaml.safe_dump({**config, "pretrain": {"enabled": False}}))
    result = snakemake("-n", "-p", "--configfile", str(path), workdir=tmp_path / "work")
    assert result.returncode == 0, result.stderr
    assert "pretrain" not in job_stats(result.stdout)
    assert not [j for j in dry_run_jobs(result.stdout) if j.rule == "train" and j.fields.get("input")]
    assert "--world-model-init" not in result.stdout and "--offline-data" not in result.stdout


def test_clone_is_one_switch_away_and_feeds_every_train_job_of_its_cell(tmp_path):
    """`clone.enabled: true`: one clone per (task, size, dynamics variant), from the pretrained world model, the
    dataset and the final policy of the reference the dataset comes from; every train job starts from it."""
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    path = tmp_path / "clone.yaml"
    path.write_text(yaml.safe_dump({**config, "clone": {"enabled": True, "steps": 50}}))
    result = snakemake("-n", "-p", "--configfile", str(path), workdir=tmp_path / "work")
    assert result.returncode == 0, result.stderr
    assert job_stats(result.stdout)["clone"] == job_stats(result.stdout)["pretrain"] == 2
    jobs = dry_run_jobs(result.stdout)
    clone = next(j for j in jobs if j.rule == "clone" and "dynamics=flow" in j.fields["wildcards"])
    folder = "results/ant/pretrain/tiny-flow"
    assert clone.fields["input"].split(", ") == [
        f"{folder}/world_model.pt",
        "results/ant/offline/dataset.h5",
        "results/ant/reference/seed0/policy.pt",
    ]
    assert clone.fields["output"].split(", ") == [f"{folder}/actor.pt", f"{folder}/clone_metrics.csv"]
    assert re.search(
        r"flow-mbpo-pwm clone --config results/config/[0-9a-f]{16}\.yaml --task ant --size tiny --dynamics flow"
        rf" --dataset results/ant/offline/dataset\.h5 --world-model {folder}/world_model\.pt"
        rf" --reference-policy results/ant/reference/seed0/policy\.pt --out {folder}/actor\.pt",
        result.stdout,
    )
    train = [j for j in jobs if j.rule.startswith("train")]
    assert len(train) == 2 and all("actor.pt" in j.fields["input"] for j in train)
    assert result.stdout.count(f"--actor-init {folder}/actor.pt") == 1
    default = snakemake("-n", "--configfile", "config/smoke.yaml", workdir=tmp_path / "default")
    assert "clone" not in job_stats(default.stdout)


def test_disabled_reference_removes_its_jobs(tmp_path):
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    path = tmp_path / "no_reference.yaml"
    path.write_text(yaml.safe_dump({**config, "reference": {"enabled": False}, "pretrain": {"enabled": False}}))
    result = snakemake("-n", "--configfile", str(path), workdir=tmp_path / "work")
    assert result.returncode == 0, result.stderr
    assert set(job_stats(result.stdout)) == {*CELL_RULES, "aggregate", "plot", "all"}


def test_table_target_builds_only_what_the_table_needs(tmp_path):
    """`snakemake results/compare.csv` builds only what the table needs: no plot job."""
    result = snakemake("-n", "results/compare.csv", "--configfile", "config/smoke.yaml", workdir=tmp_path)
    assert "plot" not in job_stats(result.stdout) and "all" not in job_stats(result.stdout)


def test_lint_is_clean_and_writes_nothing(tmp_path):
    """`snakemake --lint` finds nothing (every rule declares its conda environment), and neither it nor the graph
    commands write into the working directory."""
    result = snakemake("--lint", "--configfile", "config/config.yaml", workdir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr
    for command in (["--rulegraph"], ["--dag"], ["-n", "-p"]):
        assert snakemake(*command, "--configfile", "config/smoke.yaml", workdir=tmp_path).returncode == 0
    assert not (tmp_path / "results").exists()


def _pinned(env_file: str) -> dict[str, str]:
    """name -> version of the pip pins of a conda env file (extras dropped)."""
    import yaml

    dependencies = yaml.safe_load((REPO / "workflow/envs" / env_file).read_text())["dependencies"]
    (pip,) = [item["pip"] for item in dependencies if isinstance(item, dict)]
    return {re.sub(r"\[.*\]", "", pin.split("==")[0]).lower(): pin.split("==")[1] for pin in pip}


@pytest.mark.parametrize("env_file", ["pipeline.yaml", "stats.yaml"])
def test_conda_environments_pin_the_versions_the_tests_run_with(env_file):
    """The envs of `--software-deployment-method conda` hold the software this suite runs with (the virtualenv of
    `make install`), so a cluster run under conda runs tested code. Pins are exact (`==`)."""
    from importlib.metadata import version

    pins = _pinned(env_file)
    assert pins, env_file
    for name, pinned in pins.items():
        assert version(name).split("+")[0] == pinned, f"{env_file}: {name}=={pinned}, but the tests run {version(name)}"
    if env_file == "pipeline.yaml":  # everything the package needs (pyproject's dependencies + the gym extra)
        from importlib.metadata import requires

        needed = {re.split(r"[<>=\[; ]", r)[0].lower() for r in requires("flow-mbpo-pwm") if "extra ==" not in r}
        assert needed <= set(pins), needed - set(pins)


def test_the_virtualenvs_constraints_pin_what_the_conda_environments_pin():
    """`make install` constrains .venv to constraints.txt: every conda pin at the same exact version (plus the
    pipeline's and tests' own tools), so a new release on the package index reaches neither the tested virtualenv
    nor a cluster's conda envs unseen."""
    lines = [line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text().splitlines()]
    constraints = dict(line.lower().split("==") for line in lines if line)
    for env_file in ("pipeline.yaml", "stats.yaml"):
        assert _pinned(env_file).items() <= constraints.items(), env_file
    assert {"snakemake", "ruff", "pytest"} <= set(constraints)


def test_every_rule_declares_an_existing_conda_environment():
    for rule_file in (REPO / "workflow/rules").glob("*.smk"):
        text = rule_file.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.MULTILINE)
        envs = re.findall(r"^    conda:\n        (\w+)$", text, flags=re.MULTILINE)
        assert len(envs) == len(rules), rule_file.name
    common = (REPO / "workflow/rules/common.smk").read_text()
    for env in re.findall(r'^\w+_ENV = "\.\./envs/(\S+)"$', common, flags=re.MULTILINE):
        assert (REPO / "workflow/envs" / env).is_file()
        assert (REPO / "workflow/envs" / env.replace(".yaml", ".post-deploy.sh")).is_file()


def test_snakefmt_is_clean():
    files = ["Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "workflow/rules").glob("*.smk"))]
    result = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def slurm_dry_run(tmp_path, profile: str = "profiles/slurm"):
    result = snakemake("--profile", profile, "-n", "--configfile", "config/smoke.yaml", workdir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return dry_run_jobs(result.stdout)


def test_slurm_profile_asks_gpus_for_gpu_rules_only(tmp_path):
    jobs = slurm_dry_run(tmp_path)
    for job in jobs:
        resources = job.resources
        if job.rule in ("train", "evaluate", *REFERENCE_RULES):
            assert resources["gpu"] == "1" and resources["gpu_model"] == "h200"
            assert int(resources["runtime"]) > 0 and int(resources["mem_mb"]) > 0
            if job.rule == "train":  # one GPU for the stack of seeds, the profile's memory per seed times seeds
                assert int(resources["mem_mb"]) == 32000 * int(resources["seeds"]) and resources["seeds"] == "2"
            assert int(resources["cpus_per_gpu"]) >= 1 and "cpus_per_task" not in resources
            assert "gres" not in resources
        elif job.rule == "select":  # a small CPU job on the cluster
            assert "gpu_model" not in resources and resources.get("gpu", "0") == "0"
            assert int(resources["runtime"]) > 0
        else:  # aggregate, plot, all run on the submit host
            assert "gpu_model" not in resources and "gpu" not in resources and "runtime" not in resources
        assert resources["slurm_partition"] and resources["slurm_account"]
    assert {job.rule for job in jobs} == {*CELL_RULES, *REFERENCE_RULES, "aggregate", "plot", "all"}


def test_slurm_profile_switches_to_l40s_in_one_line(tmp_path):
    profile = tmp_path / "profile"
    shutil.copytree(REPO / "profiles/slurm", profile)
    text = (profile / "config.yaml").read_text()
    assert text.count("&gpu_model h200") == 1
    (profile / "config.yaml").write_text(text.replace("&gpu_model h200", "&gpu_model l40s"))
    jobs = slurm_dry_run(tmp_path / "work", str(profile))
    assert {job.resources.get("gpu_model") for job in jobs if job.rule in ("train", "evaluate")} == {"l40s"}


def test_local_profile_pins_gpu_jobs_only(tmp_path):
    result = snakemake("--profile", "profiles/local", "-n", "-p", "--configfile", "config/smoke.yaml", workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    shells = [line for line in result.stdout.splitlines() if "flow-mbpo-pwm " in line and ">" in line]
    for line in shells:
        pinned = re.search(r"gpu_slot\.py (--tag \S+ )?-- flow-mbpo-pwm", line)
        gpu_stage = re.search(r"flow-mbpo-pwm (train|evaluate|reference|collect|pretrain) ", line) is not None
        assert (pinned is not None) == gpu_stage, line
        if " train " in line:  # a train job's tag is its cell, so a cell's stacks spread over the GPUs
            cell = re.search(r"--task (\S+) --size (\S+) --dynamics (\S+)", line).groups()
            assert pinned.group(1) == f"--tag train:{':'.join(cell)} ", line
    # train (one job per stack of seeds), select, evaluate, aggregate, plot + reference, its evaluation, collect,
    # pretrain
    assert len(shells) == 2 + 4 + 4 + 1 + 1 + 2 + 2 + 1 + 2


def test_adding_a_seed_trains_only_the_new_seed_and_a_started_stack_keeps_its_seeds(tmp_path):
    """Seeds 0 and 1 trained together (their run folders complete, `work/stack.yaml` recording the stack); adding
    seeds 2 and 3 to the config adds one train job, of seeds 2 and 3 only. With `train_seeds_per_job: 1` the new
    seeds get one job each, and the finished stack is still left alone."""
    smoke = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    base = {
        **smoke,
        "dynamics": {"flow": smoke["dynamics"]["flow"]},
        "reference": {"enabled": False},
        "pretrain": {"enabled": False},
    }
    for seed in (0, 1):
        run = tmp_path / f"results/ant/tiny-flow/seed{seed}"
        (run / "work").mkdir(parents=True)
        (run / "work" / "stack.yaml").write_text(yaml.safe_dump({"seeds": [0, 1]}))
        for name in ("final.pt", "metrics.csv", "validation.csv", "wm_diagnostics.csv", "train_summary.json"):
            (run / name).write_text("")

    def train_jobs(config: dict) -> list:
        path = tmp_path / "experiment.yaml"
        path.write_text(yaml.safe_dump(config))
        result = snakemake("-n", "--configfile", str(path), workdir=tmp_path)
        assert result.returncode == 0, result.stderr
        return [job for job in dry_run_jobs(result.stdout) if job.rule == "train"]

    assert train_jobs(base) == []  # seeds 0 and 1 are trained
    (added,) = train_jobs({**base, "seeds": [0, 1, 2, 3]})
    assert added.name == "train_ant_tiny_flow_seed2_3"
    assert all("/seed2/" in path or "/seed3/" in path for path in added.fields["output"].split(", "))
    one_each = train_jobs({**base, "seeds": [0, 1, 2, 3], "train_seeds_per_job": 1})
    assert sorted(job.name for job in one_each) == ["train_ant_tiny_flow_seed2", "train_ant_tiny_flow_seed3"]
