"""The pieces of the run loop that need no environment: tables, RNG state, config comparison, guard, progress."""

from __future__ import annotations

import io as stringio
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from flow_mbpo_pwm.config import GuardConfig
from flow_mbpo_pwm.guard import CollapseDetector, NonFiniteMonitor, nonfinite_parameters
from flow_mbpo_pwm.progress import Progress
from flow_mbpo_pwm.run_folder import VALIDATION_COLUMNS, csv_text, write_table
from flow_mbpo_pwm.train import WINDOW_MEAN_METRICS, MetricWindow
from flow_mbpo_pwm.train_state import capture_rng, config_differences, restore_rng


def test_table_round_trips_floats_exactly_and_flags_as_booleans(tmp_path):
    row = {c: "" for c in VALIDATION_COLUMNS}
    row.update(
        epoch=4,
        env_steps=64,
        val_return_mean=0.1 + 0.2,
        val_return_std=math.nan,
        val_episodes=2,
        checkpoint="work/checkpoints/epoch_000004.pt",
        flagged=True,
        flag_reason="collapsed: x, y",
    )
    path = tmp_path / "validation.csv"
    write_table(path, VALIDATION_COLUMNS, [row, {**row, "epoch": 8, "flagged": False, "flag_reason": ""}])
    table = pd.read_csv(path, keep_default_na=False)
    assert float(table["val_return_mean"][0]) == 0.1 + 0.2  # repr-exact
    assert list(table["flagged"]) == [True, False]
    assert table["flag_reason"][0] == "collapsed: x, y"
    assert math.isnan(pd.read_csv(path)["val_return_std"][0])


def test_table_refuses_a_row_with_wrong_columns():
    with pytest.raises(ValueError, match="columns"):
        csv_text(("a", "b"), [{"a": 1}])


def test_rng_capture_and_restore_continue_every_generator_identically():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.normal()  # leave a cached gaussian in numpy's state
    state = capture_rng(torch.device("cpu"))
    first = (torch.rand(5), np.random.normal(size=3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    # Through torch.save/load(weights_only=True), as the state file goes.
    buffer = stringio.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restore_rng(torch.load(buffer, weights_only=True), torch.device("cpu"))
    second = (torch.rand(5), np.random.normal(size=3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2] == second[2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rng_restores_from_a_state_loaded_onto_the_gpu():
    """A run's state is read with map_location=its device, so on CUDA the RNG tensors arrive there; torch's setters
    take CPU byte tensors only (every stacked resume on an H200 failed with "RNG state must be a torch.ByteTensor"
    until restore_rng moved them back)."""
    device = torch.device("cuda")
    torch.manual_seed(5)
    state = capture_rng(device)
    first = (torch.rand(4), torch.rand(4, device=device))
    torch.manual_seed(6)
    on_gpu = torch.utils._pytree.tree_map(lambda v: v.to(device) if isinstance(v, torch.Tensor) else v, state)
    restore_rng(on_gpu, device)
    second = (torch.rand(4), torch.rand(4, device=device))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_config_differences_name_every_changed_key():
    saved = {"pwm": {"epochs": 10, "betas": [0.7, 0.95]}, "run": {"seed": 0, "guard": {"check_every": 5}}}
    requested = {"pwm": {"epochs": 12, "betas": (0.7, 0.95)}, "run": {"seed": 0, "guard": {"check_every": 7}}}
    diffs = config_differences(saved, requested)
    assert diffs == [("pwm.epochs", 10, 12), ("run.guard.check_every", 5, 7)]
    assert config_differences(saved, saved) == []
    # A key the saved config lacks is no difference when requested at the typed default (added by an upgrade).
    added = {**requested, "pwm": {**requested["pwm"], "new_coef": 1.0}}
    defaults = {"pwm": {"new_coef": 1.0}}
    assert config_differences(requested, added, defaults) == []
    off_default = {**requested, "pwm": {**requested["pwm"], "new_coef": 2.0}}
    assert config_differences(requested, off_default, defaults) == [("pwm.new_coef", None, 2.0)]
    assert config_differences(requested, added) == [("pwm.new_coef", None, 1.0)]


def test_nonfinite_monitor_remembers_which_metric_went_bad():
    monitor = NonFiniteMonitor(["a", "b"], torch.device("cpu"))
    monitor.observe({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    assert monitor.read() == []
    monitor.observe({"a": torch.tensor(1.0), "b": torch.tensor(math.inf)})
    monitor.observe({"a": torch.tensor(1.0), "b": torch.tensor(3.0)})  # later finite values do not clear it
    assert monitor.read() == ["b"]


def test_nonfinite_parameters_names_the_poisoned_tensor():
    modules = {"actor": nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))}
    assert nonfinite_parameters(modules) == []
    with torch.no_grad():
        modules["actor"][1].bias.fill_(math.nan)
    assert nonfinite_parameters(modules) == ["actor.1.bias"]


def test_collapse_detector_flags_after_warmup_and_stops_after_patience():
    detector = CollapseDetector(GuardConfig(collapse_after_epochs=20, collapse_fraction=0.5, collapse_patience=2))
    assert detector.update(10, 100.0) == ""
    assert detector.update(15, 1.0) == ""  # before collapse_after_epochs: never flagged
    reason = detector.update(20, 40.0)
    assert reason.startswith("collapsed") and not detector.should_stop
    assert detector.update(25, 60.0) == ""  # a good validation resets the streak
    assert detector.update(30, 10.0) and detector.update(35, math.nan).startswith("non-finite")
    assert detector.should_stop
    restored = CollapseDetector(detector.config)
    restored.load_state_dict(detector.state_dict())
    assert (restored.best, restored.streak) == (100.0, 2)


def test_collapse_detector_ignores_a_best_that_is_not_positive():
    detector = CollapseDetector(GuardConfig(collapse_after_epochs=0, collapse_patience=1))
    assert detector.update(1, -50.0) == "" and detector.update(2, -500.0) == ""


def test_metric_window_means_losses_and_counts_episodes():
    window = MetricWindow(torch.device("cpu"))

    def metrics(loss, episodes, ret_sum, ret_max):
        m = {k: torch.tensor(loss) for k in WINDOW_MEAN_METRICS}
        m.update(
            episodes_finished=torch.tensor(episodes),
            episode_return_sum=torch.tensor(ret_sum),
            episode_return_max=torch.tensor(ret_max),
        )
        return m

    window.add(metrics(1.0, 0.0, 0.0, -math.inf))
    window.add(metrics(3.0, 2.0, 30.0, 20.0))
    values = window.read()
    assert values["wm_loss"] == 2.0 and values["actor_grad_norm"] == 2.0
    assert (values["train_episodes"], values["train_return_mean"], values["train_return_max"]) == (2, 15.0, 20.0)
    window.reset()
    window.add(metrics(1.0, 0.0, 0.0, -math.inf))
    values = window.read()
    assert values["train_episodes"] == 0 and math.isnan(values["train_return_mean"])
    assert math.isnan(values["train_return_max"])


def test_progress_writes_flushed_lines_without_a_terminal():
    stream = stringio.StringIO()
    progress = Progress(total_epochs=10, start_epoch=2, name="cell", stream=stream)
    progress.message("resumed")
    progress.advance(4)
    progress.report({"wm_loss": 0.125, "train_return_mean": math.nan})
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[cell] resumed"
    assert lines[1].startswith("[cell] epoch 4/10 wm_loss=0.125 train_return_mean=nan")


def test_progress_draws_a_bar_on_a_terminal():
    stream = stringio.StringIO()
    progress = Progress(total_epochs=10, start_epoch=0, name="cell", stream=stream, use_bar=True)
    progress.advance(5)
    progress.report({"wm_loss": 0.125})
    progress.message("validation")
    progress.close()
    text = stream.getvalue()
    assert "5/10" in text and "wm_loss=0.125" in text and "[cell] validation" in text


def test_policy_shift_reads_the_last_validations_checkpoint_and_is_nan_without_a_usable_one(tmp_path):
    """`SeedRun._policy_shift` against the checkpoint the last validation row names: 0 for the same policy; NaN at the
    first validation, for a checkpoint that is gone, and for one that cannot be loaded (a diagnostic never stops a
    run)."""
    from types import SimpleNamespace

    from flow_mbpo_pwm import checkpoints
    from flow_mbpo_pwm import io as flow_io
    from flow_mbpo_pwm.algorithms.pwm import SeedAgent
    from flow_mbpo_pwm.config import TrainConfig
    from flow_mbpo_pwm.diagnostics import EpisodeRecord
    from flow_mbpo_pwm.train import SeedRun

    config, device = TrainConfig(), torch.device("cpu")
    agent = SeedAgent(5, 2, config, 0, device)
    meta = {"task": "t", "size": "s", "dynamics": "deterministic", "seed": 0, "epoch": 4, "env_steps": 64,
            "obs_dim": 5, "act_dim": 2, "val_return": 1.0, "config": config.to_dict()}  # fmt: skip
    checkpoints.save_policy(tmp_path / "epoch_4.pt", agent, meta)
    obs = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(0))
    record = EpisodeRecord(obs, agent.act(obs), torch.zeros(3, 2), obs, torch.zeros(3, 2, dtype=torch.bool))

    def shift(rows: list[dict]) -> float:
        run = SimpleNamespace(folder=SimpleNamespace(root=tmp_path), validation_rows=rows, device=device)
        return SeedRun._policy_shift(run, record)  # type: ignore[arg-type]

    assert shift([{"checkpoint": "epoch_4.pt"}]) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        agent.actor.mu_net[0].bias.add_(1.0)  # the policy moved since: its actions now differ
    record = record._replace(actions=agent.act(obs))
    assert shift([{"checkpoint": "epoch_4.pt"}]) > 0.01
    assert math.isnan(shift([]))  # the first validation
    assert math.isnan(shift([{"checkpoint": "gone.pt"}]))
    flow_io.torch_save(tmp_path / "other.pt", {"format": "something else"})
    assert math.isnan(shift([{"checkpoint": "other.pt"}]))
