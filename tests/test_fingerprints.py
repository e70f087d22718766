"""Fingerprints of settings (`flow_mbpo_pwm.fingerprints`): they change with a setting's value, not with a new
setting at its baseline value, and a baseline is only ever extended."""

from __future__ import annotations

import dataclasses

import pytest

from flow_mbpo_pwm import fingerprints
from flow_mbpo_pwm.config import ExperimentConfig, flatten, to_plain


def baseline() -> dict:
    return fingerprints.extended({})


def default_cell():
    experiment = ExperimentConfig()
    return experiment, experiment.cell("ant", "5M", "deterministic", 0)


def test_a_new_setting_at_its_baseline_value_leaves_the_fingerprint_as_it_was():
    """A package version that adds `pwm.new_knob` (registered at 0.0 by `make schema`) must not rerun a cell that
    was fingerprinted without it."""
    _, cell = default_cell()
    before = cell.to_dict()
    after = {**before, "pwm": {**before["pwm"], "new_knob": 0.0}}
    base = baseline()
    registered = {**base, "cell": {**base["cell"], "pwm.new_knob": 0.0}}
    assert fingerprints.fingerprint("cell", after, registered) == fingerprints.fingerprint("cell", before, base)
    # Set to another value, it counts; and an unregistered key always counts.
    changed = {**before, "pwm": {**before["pwm"], "new_knob": 0.5}}
    assert fingerprints.fingerprint("cell", changed, registered) != fingerprints.fingerprint("cell", before, base)
    assert fingerprints.fingerprint("cell", after, base) != fingerprints.fingerprint("cell", before, base)


def test_every_setting_that_changes_changes_the_fingerprint_and_equal_settings_give_equal_ones():
    experiment, cell = default_cell()
    base = baseline()
    reference = fingerprints.fingerprint("cell", fingerprints.cell_settings(cell), base)
    again = experiment.cell("ant", "5M", "deterministic", 0)
    assert fingerprints.fingerprint("cell", fingerprints.cell_settings(again), base) == reference
    for other in (
        experiment.cell("ant", "48M", "deterministic", 0),
        experiment.cell("ant", "5M", "flow", 0),
        experiment.cell("ant", "5M", "deterministic", 1),
        dataclasses.replace(cell, pwm=dataclasses.replace(cell.pwm, actor_lr=1e-3)),
        dataclasses.replace(cell, pwm=dataclasses.replace(cell.pwm, actor_units=(400, 200))),
        dataclasses.replace(cell, pwm=dataclasses.replace(cell.pwm, latent_norm="standardize")),
    ):
        assert fingerprints.fingerprint("cell", fingerprints.cell_settings(other), base) != reference


def test_a_changed_default_still_changes_the_fingerprint():
    """The baseline keeps a setting's value from when it was added: a package default that moves away from it
    reruns what depends on it (a real change of behaviour), unlike a new setting."""
    _, cell = default_cell()
    settings = fingerprints.cell_settings(cell)
    base = baseline()
    moved = {**base, "cell": {**base["cell"], "pwm.horizon": 32}}  # the baseline from a version whose default was 32
    assert fingerprints.fingerprint("cell", settings, moved) != fingerprints.fingerprint("cell", settings, base)


def test_extending_a_baseline_adds_missing_settings_and_never_rewrites_one():
    base = baseline()
    older = {kind: dict(entries) for kind, entries in base.items()}
    del older["cell"]["pwm.actor_saturation_threshold"]  # a setting added since
    older["cell"]["pwm.horizon"] = 32  # a default that changed since
    assert fingerprints.missing_from(older) == ["cell:pwm.actor_saturation_threshold"]
    grown = fingerprints.extended(older)
    assert grown["cell"]["pwm.actor_saturation_threshold"] == 0.0
    assert grown["cell"]["pwm.horizon"] == 32
    assert fingerprints.missing_from(grown) == []


def test_every_kind_has_its_settings_and_unknown_kinds_are_refused():
    experiment, cell = default_cell()
    defaults = fingerprints.current_defaults()
    assert set(defaults) == set(fingerprints.KINDS)
    assert defaults["cell"] == flatten(to_plain(cell.to_dict()))
    assert "pretrain.steps" in defaults["pretrain"] and "seed" not in defaults["pretrain"]
    assert "reference.env_steps" in defaults["reference"] and "collect.noise_scale" in defaults["collect"]
    with pytest.raises(ValueError, match="unknown kind"):
        fingerprints.fingerprint("celll", {}, baseline())
