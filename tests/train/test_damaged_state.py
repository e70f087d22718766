"""A damaged resume state (`work/state.pt`) or run-folder config is refused with one clear message that names the
file and says which file to delete to start afresh, exit code 1, and nothing in the run folder is changed."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from train_helpers import TINY_EXPERIMENT, cli_args, deep_update

from flow_mbpo_pwm import exit_codes, io
from flow_mbpo_pwm.cli import main as cli_main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A completed 2-epoch run whose declared outputs are removed, so rerunning it resumes from work/state.pt."""
    root = tmp_path_factory.mktemp("finished")
    config = root / "experiment.yaml"
    config.write_text(yaml.safe_dump(deep_update(TINY_EXPERIMENT, {"train": {"pwm": {"epochs": 2}}})))
    run_dir = root / "run"
    assert cli_main(cli_args(config, run_dir)[3:]) == 0
    for name in ("final.pt", "metrics.csv", "validation.csv", "train_summary.json"):
        (run_dir / name).unlink()
    return config, run_dir


def flip_tensor_bytes(path):
    """Flip bytes inside the largest float tensor of the file: the zip stays readable, only a weight changes."""
    state = torch.load(path, weights_only=True)
    tensors = [t for t in _tensors(state) if t.is_floating_point() and t.numel() >= 64]
    needle = max(tensors, key=lambda t: t.numel()).contiguous().numpy().tobytes()[:64]
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at > 0
    data[at + 8] ^= 0x01
    path.write_bytes(bytes(data))


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def without_key(path, key="buffer"):
    state = io.torch_load(path)
    del state[key]
    io.torch_save(path, state)  # a valid integrity record: only the missing key is wrong


def policy_instead(path):
    shutil.copy(next((path.parent / "checkpoints").glob("epoch_*.pt")), path)


def directory_instead(path):
    path.unlink()
    path.mkdir()


DAMAGES = {
    "bytes flipped in a weight tensor": (flip_tensor_bytes, "damaged checkpoint"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "damaged or not a torch"),
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "not a checkpoint": (lambda p: p.write_text("hello"), "damaged or not a torch"),
    "a policy checkpoint": (policy_instead, "not a training state"),
    "a key missing": (without_key, "lacks the keys ['buffer']"),
    "a directory": (directory_instead, "is a directory"),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_damaged_state_is_refused_naming_the_file_to_delete(finished_run, tmp_path, capsys, damage):
    config, finished = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    state = run_dir / "work" / "state.pt"
    make, message = DAMAGES[damage]
    make(state)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert cli_main(cli_args(config, run_dir)[3:]) == exit_codes.BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("flow-mbpo-pwm train: ") and err.count("\n") == 1, err  # one line, no traceback
    assert str(state) in err and message in err, err
    assert f"delete {state}" in err and "to start this run afresh" in err, err
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing deleted
    assert not (run_dir / "final.pt").exists()


def test_deleting_the_named_state_starts_the_run_afresh(finished_run, tmp_path):
    config, finished = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "work" / "state.pt").write_bytes(b"")
    assert cli_main(cli_args(config, run_dir)[3:]) == exit_codes.BAD_INPUT
    (run_dir / "work" / "state.pt").unlink()
    assert cli_main(cli_args(config, run_dir)[3:]) == 0
    assert (run_dir / "final.pt").is_file()


@pytest.mark.parametrize("text", ["tasks: [unclosed\n", "- just\n- a list\n"], ids=["malformed", "not a mapping"])
def test_damaged_run_folder_config_is_refused(finished_run, tmp_path, capsys, text):
    config, finished = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    work_config = run_dir / "work" / "config.yaml"
    work_config.write_text(text)
    capsys.readouterr()
    assert cli_main(cli_args(config, run_dir)[3:]) == exit_codes.BAD_INPUT
    err = capsys.readouterr().err
    assert str(work_config) in err and "damaged" in err and f"delete {work_config}" in err, err
    assert work_config.read_text() == text
