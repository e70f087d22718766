"""`select` picks the best validated checkpoint, rejects NaN/Inf, flagged and unreadable ones with a reason, and
refuses run folders whose records are missing or disagree — writing nothing in that case."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from flow_mbpo_pwm import io
from flow_mbpo_pwm.checkpoints import load_policy
from flow_mbpo_pwm.cli import main
from flow_mbpo_pwm.select import select


def run_select(run_dir):
    out, report = run_dir / "best.pt", run_dir / "selection.json"
    return select(run_dir, out, report), out, report


def test_picks_the_highest_validation_return_and_ties_go_to_the_later_epoch(tmp_path, make_run):
    run_dir = make_run(tmp_path / "run", [(10, 3.0, ""), (20, 8.5, ""), (30, 8.5, ""), (40, 2.0, "")])
    rc, out, report = run_select(run_dir)
    assert rc == 0
    selection = json.loads(report.read_text())
    assert selection["chosen"] == {"epoch": 30, "path": "work/checkpoints/epoch_000030.pt", "val_return": 8.5}
    assert [c["epoch"] for c in selection["candidates"]] == [10, 20, 30, 40]
    assert selection["rejected"] == []
    assert "ties" in selection["criterion"]

    # best.pt is the chosen checkpoint, tensors unchanged, with the selection recorded in its meta.
    best, source = io.torch_load(out), io.torch_load(run_dir / "work/checkpoints/epoch_000030.pt")
    assert best["meta"]["epoch"] == 30 and best["meta"]["selection"]["epoch"] == 30
    assert best["meta"]["selection"]["val_return"] == 8.5
    for part in ("encoder", "actor"):
        assert best[part].keys() == source[part].keys()
        assert all(torch.equal(best[part][k], source[part][k]) for k in best[part])
    _, meta = load_policy(out, "cpu")  # still a loadable policy
    assert meta["selection"]["source"] == "work/checkpoints/epoch_000030.pt"


def test_nan_inf_and_flagged_checkpoints_are_never_chosen(tmp_path, make_run):
    run_dir = make_run(
        tmp_path / "run",
        [(10, 4.0, ""), (20, math.nan, ""), (30, math.inf, ""), (40, 99.0, "collapse: 0.5 < 0.1 x best"),
         (50, 5.0, "")],
    )  # fmt: skip
    rc, _, report = run_select(run_dir)
    assert rc == 0
    selection = json.loads(report.read_text())
    assert selection["chosen"]["epoch"] == 50
    reasons = {r["epoch"]: r["reason"] for r in selection["rejected"]}
    assert sorted(reasons) == [20, 30, 40]
    assert "nan" in reasons[20] and "inf" in reasons[30]
    assert "collapse guard" in reasons[40] and "0.5 < 0.1 x best" in reasons[40]
    # JSON has no NaN: the report stays strict JSON.
    json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


class NotATensor:
    """An arbitrary object: a weights-only load must refuse to unpickle it."""

    def __init__(self):
        self.payload = "anything"


@pytest.mark.parametrize("kind", ["pickled_object", "truncated", "bytes_flipped", "nan_weights"])
def test_an_unreadable_checkpoint_is_rejected_naming_the_file(tmp_path, make_run, flip_bytes, capsys, kind):
    run_dir = make_run(tmp_path / "run", [(10, 1.0, ""), (20, 7.0, "")])
    bad = run_dir / "work/checkpoints/epoch_000020.pt"  # the best one by validation return
    if kind == "pickled_object":
        torch.save({"format": "flow-mbpo-pwm/policy/1", "meta": NotATensor()}, bad)
    elif kind == "truncated":
        bad.write_bytes(bad.read_bytes()[:100])
    elif kind == "bytes_flipped":  # inside a weight tensor: still a loadable file, refused by its integrity record
        flip_bytes(bad)
    else:  # an intact file of a policy whose weights are not finite
        data = io.torch_load(bad)
        data["encoder"] = {k: torch.full_like(v, float("inf")) for k, v in data["encoder"].items()}
        io.torch_save(bad, data)
    rc, out, report = run_select(run_dir)
    assert rc == 0
    selection = json.loads(report.read_text())
    assert selection["chosen"]["epoch"] == 10
    (rejected,) = selection["rejected"]
    assert rejected["epoch"] == 20 and str(bad) in rejected["reason"]
    if kind == "bytes_flipped":
        assert "damaged checkpoint" in rejected["reason"]
    assert f"rejected epoch 20: unreadable checkpoint: {bad}" in capsys.readouterr().err
    assert io.torch_load(out)["meta"]["epoch"] == 10


def test_a_checkpoint_naming_another_epoch_is_rejected(tmp_path, make_run, experiment, task_dims, save_checkpoint):
    run_dir = make_run(tmp_path / "run", [(10, 1.0, ""), (20, 7.0, "")])
    config = experiment.cell("pendulum", "tiny", "deterministic", 0)
    save_checkpoint(run_dir / "work/checkpoints/epoch_000020.pt", config, *task_dims, epoch=10, val_return=7.0)
    rc, _, report = run_select(run_dir)
    assert rc == 0
    selection = json.loads(report.read_text())
    assert selection["chosen"]["epoch"] == 10
    assert "epoch" in selection["rejected"][0]["reason"]


def test_every_candidate_rejected_is_an_error_and_writes_nothing(tmp_path, make_run, capsys):
    run_dir = make_run(tmp_path / "run", [(10, math.nan, ""), (20, 5.0, "collapse")])
    rc, out, report = run_select(run_dir)
    assert rc != 0
    err = capsys.readouterr().err
    assert "every checkpoint was rejected" in err and "epoch 10" in err and "epoch 20" in err
    assert not out.exists() and not report.exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temp files left either


def test_a_listed_checkpoint_missing_on_disk_is_an_error_naming_it(tmp_path, make_run, capsys):
    run_dir = make_run(tmp_path / "run", [(10, 1.0, ""), (20, 2.0, "")])
    missing = run_dir / "work/checkpoints/epoch_000010.pt"
    missing.unlink()
    rc, out, report = run_select(run_dir)
    assert rc != 0
    assert str(missing) in capsys.readouterr().err
    assert not out.exists() and not report.exists()


def test_validation_rows_that_disagree_with_the_summary_are_an_error(tmp_path, make_run, capsys):
    run_dir = make_run(tmp_path / "run", [(10, 1.0, ""), (20, 2.0, "")])
    table = pd.read_csv(run_dir / "validation.csv")
    table.loc[table.epoch == 20, "val_return_mean"] = 50.0  # the CSV claims a better score than the summary
    table.to_csv(run_dir / "validation.csv", index=False)
    rc, out, report = run_select(run_dir)
    assert rc != 0
    err = capsys.readouterr().err
    assert "validation.csv" in err and "epoch 20" in err
    assert not out.exists() and not report.exists()


def test_a_validation_row_without_a_listed_checkpoint_is_an_error(tmp_path, make_run, capsys):
    run_dir = make_run(tmp_path / "run", [(10, 1.0, ""), (20, 2.0, "")])
    summary = io.read_json(run_dir / "train_summary.json")
    summary["checkpoints"] = summary["checkpoints"][:1]
    io.write_json(run_dir / "train_summary.json", summary)
    rc, _, _ = run_select(run_dir)
    assert rc != 0
    assert "only in validation.csv: epochs [20]" in capsys.readouterr().err


def test_a_checkpoint_path_outside_the_run_folder_is_refused(tmp_path, make_run, capsys):
    run_dir = make_run(tmp_path / "run", [(10, 1.0, "")])
    summary = io.read_json(run_dir / "train_summary.json")
    summary["checkpoints"][0]["path"] = "../elsewhere.pt"
    io.write_json(run_dir / "train_summary.json", summary)
    rc, _, _ = run_select(run_dir)
    assert rc != 0
    assert "not inside the run folder" in capsys.readouterr().err


def test_a_collapsed_run_is_selected_from_before_its_collapse_and_an_unknown_status_is_refused(
    tmp_path, make_run, capsys
):
    run_dir = make_run(tmp_path / "run", [(10, 4.0, ""), (20, 6.0, ""), (30, 0.1, "collapsed: 0.1 < 0.1 x best")])
    summary_path = run_dir / "train_summary.json"
    summary = json.loads(summary_path.read_text())
    io.write_json(summary_path, {**summary, "status": "collapsed", "stopped": {"epoch": 30, "reason": "x"}})
    rc, _, report = run_select(run_dir)
    assert rc == 0
    selection = json.loads(report.read_text())
    assert selection["chosen"]["epoch"] == 20 and selection["train_status"] == "collapsed"
    io.write_json(summary_path, {**summary, "status": "running"})
    rc, _, _ = run_select(run_dir)
    assert rc != 0 and "status is 'running'" in capsys.readouterr().err


def test_an_incomplete_run_is_refused(tmp_path, make_run, capsys):
    run_dir = make_run(tmp_path / "run", [(10, 1.0, "")])
    (run_dir / "train_summary.json").unlink()
    rc, _, _ = run_select(run_dir)
    assert rc != 0
    assert "train_summary.json" in capsys.readouterr().err


def test_the_command_line_runs_select(tmp_path, make_run):
    run_dir = make_run(tmp_path / "run", [(10, 1.0, ""), (20, 2.0, "")])
    out, report = tmp_path / "out/best.pt", tmp_path / "out/selection.json"
    assert main(["select", "--run-dir", str(run_dir), "--out", str(out), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["chosen"]["epoch"] == 20 and out.is_file()


def test_select_and_evaluate_a_real_training_run(tmp_path, experiment):
    """The chain train -> select -> evaluate on what `train` really writes (a few epochs of a tiny agent)."""
    from flow_mbpo_pwm.config import with_overrides
    from flow_mbpo_pwm.evaluate import evaluate
    from flow_mbpo_pwm.train import train

    config = with_overrides(
        experiment.cell("pendulum", "tiny", "deterministic", 0),
        pwm={"epochs": 2, "horizon": 4, "wm_warmup_steps": 2, "wm_steps": 1, "wm_batch": 8, "buffer_size": 2000,
             "critic_iterations": 1, "critic_minibatches": 1, "actor_units": (16,), "critic_units": (16,)},
        run={"log_every": 1, "validate_every": 1, "validation_episodes": 2, "save_state_every": 1, "device": "cpu"},
    )  # fmt: skip
    run_dir = tmp_path / "run"
    assert train(config, run_dir) == 0
    rc, out, report = run_select(run_dir)
    assert rc == 0
    selection = json.loads(report.read_text())
    validation = pd.read_csv(run_dir / "validation.csv")
    assert [c["epoch"] for c in selection["candidates"]] == list(validation.epoch) == [1, 2]
    best = validation[validation.val_return_mean == validation.val_return_mean.max()].epoch.max()
    assert selection["chosen"]["epoch"] == best

    out_csv, out_h5 = tmp_path / "eval/episodes.csv", tmp_path / "eval/trajectories.h5"
    assert evaluate(config, experiment.evaluation, out, 3, out_csv, out_h5) == 0
    assert len(pd.read_csv(out_csv)) == 3


def test_an_output_path_that_is_a_folder_is_an_io_error_and_writes_nothing(tmp_path, make_run, capsys):
    run_dir = make_run(tmp_path / "run", [(10, 1.0, "")])
    out, report = tmp_path / "best.pt", tmp_path / "selection.json"
    out.mkdir()
    code = main(["select", "--run-dir", str(run_dir), "--out", str(out), "--report", str(report)])
    assert code == 74
    err = capsys.readouterr().err
    assert str(out) in err and "a folder is where a file belongs" in err, err
    assert not report.exists() and list(out.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
