"""A run that goes bad stops with a clear error and no final model (its records up to the stop are its outputs,
status "collapsed"); a run folder never mixes two configs."""

from __future__ import annotations

import json

import pandas as pd
import yaml
from train_helpers import LEARNING_RUN, cli_args, deep_update, run_cli

from flow_mbpo_pwm import io
from flow_mbpo_pwm.cli import main as cli_main
from flow_mbpo_pwm.train import EXIT_COLLAPSED, INJECT_NAN_ENV


def test_injected_nan_stops_the_run_with_diagnostics_and_no_final_model(tmp_path, write_experiment):
    """...and its records up to the stop as outputs, with status "collapsed", so a workflow can go on and report
    it; a rerun does not retry it, and re-makes those outputs if they were deleted (Snakemake deletes a failed
    job's declared outputs)."""
    config = write_experiment({"train": {"pwm": {"epochs": 12}}})
    run_dir = tmp_path / "run"
    done = run_cli(cli_args(config, run_dir), **{INJECT_NAN_ENV: "5"})
    assert done.returncode == EXIT_COLLAPSED, done.stdout + done.stderr
    # The poisoned actor's NaN actions never reach the env (its envs act with zero torque, so a stack's other seeds
    # run on); the guard's next check (every 2 epochs) finds the non-finite parameter and metrics.
    assert "STOPPED by the collapse guard: non-finite values by epoch 6" in done.stdout
    diagnostics = json.loads((run_dir / "work" / "diagnostics.json").read_text())
    assert diagnostics["reason"] == "non-finite" and diagnostics["epoch"] == 6
    assert "actor_loss" in diagnostics["nonfinite_metrics"]
    assert any(name.startswith("actor.") for name in diagnostics["nonfinite_parameters"])
    assert diagnostics["last_metrics"]["epoch"] == 4
    assert not (run_dir / "final.pt").exists()
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["status"] == "collapsed" and summary["stopped"] == {"epoch": 6, "reason": "non-finite"}
    assert summary["epochs"] == 6
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics["epoch"]) == [2, 4]  # the logged windows before the stop (log_every 2)
    outputs = {name: (run_dir / name).read_bytes() for name in ("metrics.csv", "validation.csv", "train_summary.json")}
    # The state saved at epoch 3 predates the NaN; no state was saved after it. A rerun is refused, not retried.
    again = run_cli(cli_args(config, run_dir))
    assert again.returncode == EXIT_COLLAPSED and "stopped by the collapse guard" in again.stdout
    for name in (*outputs, "wm_diagnostics.csv"):
        (run_dir / name).unlink()
    once_more = run_cli(cli_args(config, run_dir))
    assert once_more.returncode == EXIT_COLLAPSED and not (run_dir / "final.pt").exists()
    assert {name: (run_dir / name).read_bytes() for name in outputs} == outputs


def test_validation_collapse_flags_rows_and_stops(tmp_path, write_experiment):
    # A learning run (whose validation returns move) with a hair-trigger criterion: any validation below the best
    # so far is a "collapse" (fraction just below 1, patience 1), so the run stops at its first dip.
    guard = {"collapse_after_epochs": 0, "collapse_fraction": 0.999999, "collapse_patience": 1}
    config = write_experiment(deep_update(LEARNING_RUN, {"train": {"run": {"validate_every": 10, "guard": guard}}}))
    run_dir = tmp_path / "run"
    done = run_cli(cli_args(config, run_dir))
    assert done.returncode == EXIT_COLLAPSED, done.stdout + done.stderr
    diagnostics = json.loads((run_dir / "work" / "diagnostics.json").read_text())
    assert diagnostics["reason"] == "validation collapse"
    rows = pd.read_csv(run_dir / "work" / "validation.csv", keep_default_na=False)
    assert len(rows) >= 2 and list(rows["flagged"]) == [False] * (len(rows) - 1) + [True]
    assert rows["flag_reason"].iloc[-1].startswith("collapsed: validation return")
    assert rows["val_return_mean"].iloc[-1] < rows["val_return_mean"].iloc[:-1].max()
    assert diagnostics["epoch"] == rows["epoch"].iloc[-1] < 300
    assert not (run_dir / "final.pt").exists()
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["status"] == "collapsed" and summary["stopped"]["reason"] == "validation collapse"
    assert [c["flagged"] for c in summary["checkpoints"]] == list(rows["flagged"])


def test_changed_config_is_refused_on_resume(tmp_path, write_experiment, capsys):
    run_dir = tmp_path / "run"
    first = write_experiment({"train": {"pwm": {"epochs": 2}}})
    assert cli_main(cli_args(first, run_dir)[3:]) == 0
    changed = write_experiment({"train": {"pwm": {"epochs": 2, "wm_lr": 1e-3}}}, name="changed.yaml")
    assert cli_main(cli_args(changed, run_dir)[3:]) == 2
    err = capsys.readouterr().err
    assert "pwm.wm_lr" in err and "different configuration" in err


def test_rerun_of_a_completed_run_rewrites_its_outputs_without_training(tmp_path, write_experiment, capsys):
    # What a job that died while writing its final outputs (or whose outputs Snakemake deleted) does on restart.
    run_dir = tmp_path / "run"
    config = write_experiment({"train": {"pwm": {"epochs": 2}}})
    assert cli_main(cli_args(config, run_dir)[3:]) == 0
    summary = json.loads((run_dir / "train_summary.json").read_text())
    metrics = (run_dir / "metrics.csv").read_text()
    for name in ("final.pt", "metrics.csv", "validation.csv", "train_summary.json"):
        (run_dir / name).unlink()
    capsys.readouterr()
    assert cli_main(cli_args(config, run_dir)[3:]) == 0
    assert "resumed from" in capsys.readouterr().out
    again = json.loads((run_dir / "train_summary.json").read_text())
    assert again["checkpoints"] == summary["checkpoints"] and again["epochs"] == 2
    assert (run_dir / "metrics.csv").read_text() == metrics and (run_dir / "final.pt").is_file()


def test_run_saved_before_a_config_key_existed_resumes_only_at_that_keys_default(tmp_path, write_experiment, capsys):
    """A package upgrade that adds a config key (here `pwm.wm_dynamics_coef`) must not strand runs in flight:
    their saved config lacks the key, and requesting it at its default (the old behaviour) resumes them."""
    run_dir = tmp_path / "run"
    config = write_experiment({"train": {"pwm": {"epochs": 2}}})
    assert cli_main(cli_args(config, run_dir)[3:]) == 0
    for name in ("final.pt", "metrics.csv", "validation.csv", "train_summary.json"):
        (run_dir / name).unlink()
    saved = yaml.safe_load((run_dir / "work" / "config.yaml").read_text())
    del saved["pwm"]["wm_dynamics_coef"]
    (run_dir / "work" / "config.yaml").write_text(yaml.safe_dump(saved))
    state = io.torch_load(run_dir / "work" / "state.pt")
    del state["config"]["pwm"]["wm_dynamics_coef"]
    io.torch_save(run_dir / "work" / "state.pt", state)
    changed = write_experiment({"train": {"pwm": {"epochs": 2, "wm_dynamics_coef": 20.0}}}, name="changed.yaml")
    capsys.readouterr()
    assert cli_main(cli_args(changed, run_dir)[3:]) == 2
    assert "pwm.wm_dynamics_coef" in capsys.readouterr().err
    assert cli_main(cli_args(config, run_dir)[3:]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert (run_dir / "final.pt").is_file()


def test_run_tf32_sets_the_matrix_product_precision_where_the_run_starts(tmp_path, write_experiment):
    """`run.tf32` is process-wide (torch.backends.cuda.matmul.allow_tf32): `train` sets it from its config before it
    builds anything, either way."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    try:
        for tf32 in (True, False):
            config = write_experiment({"train": {"pwm": {"epochs": 1}, "run": {"tf32": tf32}}}, name=f"{tf32}.yaml")
            torch.backends.cuda.matmul.allow_tf32 = not tf32
            assert cli_main(cli_args(config, tmp_path / f"run-{tf32}")[3:]) == 0
            assert torch.backends.cuda.matmul.allow_tf32 is tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
