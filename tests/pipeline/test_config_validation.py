"""Bad experiment configs stop `snakemake` before any job runs, naming the key; the schema never drifts."""

from __future__ import annotations

import importlib.util
import re

import pytest
import yaml

from flow_mbpo_pwm.config import load_experiment

from .runner import REPO, snakemake


def load_schema_script():
    spec = importlib.util.spec_from_file_location("schema_script", REPO / "workflow/scripts/schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_schema_is_the_generated_one():
    """workflow/schemas/config.schema.yaml == experiment_schema() of the typed config (`make schema` rewrites it)."""
    schema_script = load_schema_script()
    assert schema_script.SCHEMA_PATH == REPO / "workflow/schemas/config.schema.yaml"
    assert schema_script.SCHEMA_PATH.read_text() == schema_script.render()


def test_the_settings_baseline_holds_every_setting_and_make_schema_would_not_change_it():
    """workflow/schemas/settings_baseline.yaml (the fingerprints' baseline) lists every current setting of every
    kind, so no setting counts as new by mistake; `make schema` only adds to it, never rewrites an entry."""
    schema_script = load_schema_script()
    assert schema_script.BASELINE_PATH == REPO / "workflow/schemas/settings_baseline.yaml"
    from flow_mbpo_pwm import fingerprints

    assert fingerprints.missing_from(schema_script.read_baseline()) == []
    assert schema_script.BASELINE_PATH.read_text() == schema_script.render_baseline()


SHIPPED = ["config.yaml", "short.yaml", "smoke.yaml", "ablation.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_pass_schema_and_typed_config(name):
    import jsonschema

    data = yaml.safe_load((REPO / "config" / name).read_text())
    jsonschema.validate(data, yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text()))
    assert load_experiment(data).cells()


@pytest.mark.parametrize("name", SHIPPED[1:])
def test_shipped_configs_build_the_main_configs_models(name):
    """The shipped variants (short, smoke, ablation) change schedules, sizes and flow substeps, never the model
    itself: each dynamics variant is config/config.yaml's variant of its kind but for the integrator settings,
    under the same world-model loss weights and actor penalty (the predecessor's hand-edited variants drifted into
    broken settings)."""
    main, other = (load_experiment(REPO / "config" / n) for n in ("config.yaml", name))
    model = {kind: vars(v) for v in main.dynamics.values() for kind in [v.kind]}
    integration = {"integrator", "substeps"}
    for variant_name, variant in other.dynamics.items():
        mine = {k: v for k, v in vars(variant).items() if k not in integration}
        theirs = {k: v for k, v in model[variant.kind].items() if k not in integration}
        assert mine == theirs, f"{name}: dynamics variant '{variant_name}' differs from config/config.yaml's"
    weights = ("wm_dynamics_coef", "wm_reward_coef", "actor_saturation_coef")
    main_pwm, other_pwm = (e.train.pwm for e in (main, other))
    assert {w: other_pwm.get(w) for w in weights} == {w: main_pwm.get(w) for w in weights}, name


SMOKE = {"tasks": {"ant": {"num_envs": 8, "episode_length": 50}}, "sizes": ["tiny"], "seeds": [0]}

# (name, config, key the error must name). Schema errors name the key in their `ValidationError:` or
# `On instance[...]` line; typed-config errors in `config key '...'`.
BROKEN = [
    ("unknown key", {**SMOKE, "evalution": {"episodes": 10}}, "evalution"),
    ("unknown nested key", {**SMOKE, "train": {"pwm": {"epoch": 3}}}, "epoch"),
    ("wrong type", {**SMOKE, "tasks": {"ant": {"num_envs": "eight"}}}, "num_envs"),
    ("wrong type in a list", {**SMOKE, "train": {"pwm": {"actor_units": [64, "wide"]}}}, "actor_units"),
    ("out of range", {**SMOKE, "train": {"pwm": {"gamma": 1.5}}}, "gamma"),
    ("zero substeps", {**SMOKE, "dynamics": {"flow": {"kind": "flow", "substeps": 0}}}, "dynamics.flow.substeps"),
    ("task_dim 96 in a single-task run", {**SMOKE, "train": {"world_model": {"task_dim": 96}}}, "task_dim"),
    ("unknown size", {**SMOKE, "sizes": ["7M"]}, "sizes"),
    ("shell characters in a variant name", {**SMOKE, "dynamics": {"flow;rm -rf ~": {"kind": "flow"}}}, "flow;rm -rf ~"),
    ("shell characters in a task name", {**SMOKE, "tasks": {"ant $(reboot)": {}}}, "ant $(reboot)"),
    ("unknown task name", {**SMOKE, "tasks": {"antt": {}}}, "tasks.antt.task"),
    ("infinite learning rate", {**SMOKE, "train": {"pwm": {"actor_lr": float("inf")}}}, "train.pwm.actor_lr"),
    ("duplicated seeds", {**SMOKE, "seeds": [0, 1, 0]}, "seeds"),
    ("negative seed", {**SMOKE, "seeds": [-1]}, "seeds"),
    ("seed set per run", {**SMOKE, "train": {"run": {"seed": 3}}}, "seed"),
    (
        "evaluation seeds overlapping validation seeds",
        {**SMOKE, "evaluation": {"seed_base": 500_001}},
        "evaluation.seed_base",
    ),
    (
        "buffer smaller than one batch of sub-trajectories",
        {**SMOKE, "train": {"pwm": {"buffer_size": 10}}},
        "buffer_size",
    ),
]


def error_lines(output: str) -> str:
    """The lines of snakemake's output that state the error (not the schema it prints along)."""
    keep = [
        line
        for line in output.splitlines()
        if re.match(r"^(ValidationError: |On instance|WorkflowError|invalid configuration)", line)
        or "config key" in line
    ]
    return "\n".join(keep)


@pytest.mark.parametrize(("case", "bad", "key"), BROKEN, ids=[case for case, _, _ in BROKEN])
def test_broken_config_stops_snakemake_before_any_job(tmp_path, case, bad, key):
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(bad))
    workdir = tmp_path / "work"
    # A real run, not a dry run: had validation let it through, jobs would start and leave logs and results.
    result = snakemake("--cores", "1", "--configfile", str(configfile), workdir=workdir)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert key in error_lines(output), output[-3000:]
    assert not (workdir / "results").exists() and not (workdir / "logs").exists()
    assert "Job stats" not in output


def test_unknown_task_fails_the_dry_run(tmp_path):
    """A typo in a task id is caught by the config check itself, so `snakemake -n` fails before listing any job
    (instead of the dry run passing and `train` failing on the cluster)."""
    configfile = tmp_path / "typo.yaml"
    configfile.write_text(yaml.safe_dump({**SMOKE, "tasks": {"antt": {"num_envs": 8}}}))
    result = snakemake("-n", "--configfile", str(configfile), workdir=tmp_path / "work")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key 'tasks.antt.task': unknown task 'antt'" in output, output[-3000:]
    assert "Job stats" not in output and not (tmp_path / "work" / "results").exists()
