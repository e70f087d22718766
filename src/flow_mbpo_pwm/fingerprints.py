"""Fingerprints of settings: what a stage's result depends on, as the short digest that decides whether it is stale
(the workflow's params rerun trigger), and stable across package versions.

A fingerprint is the SHA-256 (first 16 hex digits) of a stage's settings flattened to dotted keys, leaving out every
key whose value is its **baseline** value. The baseline (workflow/schemas/settings_baseline.yaml, written by
`make schema`) holds each setting's value from when the setting entered the package, and is only ever added to.
So:
- a setting changed in the config changes the fingerprint;
- a package version that adds a setting, at the value that keeps the old behaviour, changes no fingerprint: a grid
  in flight does not rerun every job after an upgrade (before, every cell's digest changed with every new key);
- a package default that changes still reruns what it touches: the setting now differs from its baseline value.

`make schema` registers a new setting at its default, taken to be the value that keeps the old behaviour (the
assumption train's resume check makes too, `train_state.config_differences`). A new setting whose default changes
behaviour must be registered at the old behaviour's value by hand. The value registered is the setting's in the
default experiment's first cell (ant, 5M, deterministic, seed 0) and first reference run: a new setting whose
default differs between sizes, dynamics or tasks counts in the fingerprints of the cells where it differs from that.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from flow_mbpo_pwm.config import ExperimentConfig, TrainConfig, flatten, pretraining_settings, to_plain

KINDS = ("cell", "pretrain", "clone", "reference", "collect")


def cell_settings(cell: TrainConfig) -> dict[str, Any]:
    """A cell's fully resolved training config: what `train`, `select` and `evaluate` depend on."""
    return cell.to_dict()


def pretrain_settings(experiment: ExperimentConfig, cell: TrainConfig) -> dict[str, Any]:
    """What a pretrained world model depends on: the `pretrain` section and the cell's settings that pretraining
    uses (not the grid seed: the pretraining's own seed is `pretrain.seed`)."""
    settings = pretraining_settings(cell)
    settings.pop("seed")
    return {"pretrain": dataclasses.asdict(experiment.pretrain), **settings}


def clone_settings(experiment: ExperimentConfig, cell: TrainConfig) -> dict[str, Any]:
    """What a cloned actor depends on besides its input files (the world model, the dataset, the reference's
    policy): the `clone` section and the cell's actor settings (its shape and initial log-std)."""
    pwm = cell.to_dict()["pwm"]
    actor = {name: pwm[name] for name in ("actor_units", "init_logstd", "min_logstd", "latent_norm")}
    return {"clone": dataclasses.asdict(experiment.clone), "actor": actor}


def reference_run_settings(experiment: ExperimentConfig, task: str, seed: int) -> dict[str, Any]:
    """What one PPO reference run depends on (`reference.reference_settings`)."""
    from flow_mbpo_pwm.reference import reference_settings

    return reference_settings(experiment, task, seed)


def collect_settings(experiment: ExperimentConfig) -> dict[str, Any]:
    """The `collect` section (the dataset also depends on its reference run: the caller adds that run's
    fingerprint)."""
    return {"collect": dataclasses.asdict(experiment.collect)}


def current_defaults() -> dict[str, dict[str, Any]]:
    """Every setting of every kind at the package's defaults today: the default experiment's first cell, its
    pretraining, its first reference run and its collection. `make schema` adds the keys the baseline lacks."""
    experiment = ExperimentConfig()
    task, size, dynamics, seed = next(iter(experiment.cells()))
    cell = experiment.cell(task, size, dynamics, seed)
    data = {
        "cell": cell_settings(cell),
        "pretrain": pretrain_settings(experiment, cell),
        "clone": clone_settings(experiment, cell),
        "reference": reference_run_settings(experiment, task, seed),
        "collect": collect_settings(experiment),
    }
    return {kind: to_plain(flatten(settings)) for kind, settings in data.items()}


def missing_from(baseline: dict[str, dict[str, Any]]) -> list[str]:
    """`kind:key` of every current setting that the baseline lacks (`make schema` adds them)."""
    return [
        f"{kind}:{key}"
        for kind, settings in current_defaults().items()
        for key in settings
        if key not in baseline.get(kind, {})
    ]


def extended(baseline: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The baseline with every missing setting added at its current default; its existing entries unchanged."""
    return {kind: {**defaults, **baseline.get(kind, {})} for kind, defaults in current_defaults().items()}


def fingerprint(kind: str, settings: dict[str, Any], baseline: dict[str, dict[str, Any]]) -> str:
    """The digest of `settings` (nested plain data) without the keys at their `baseline[kind]` values."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of settings {kind!r} (known: {', '.join(KINDS)})")
    known = baseline.get(kind, {})
    missing = object()
    kept = {key: value for key, value in to_plain(flatten(settings)).items() if known.get(key, missing) != value}
    return digest({"kind": kind, "settings": kept})


def digest(data: Any) -> str:
    """First 16 hex digits of the SHA-256 of `data` as sorted JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
