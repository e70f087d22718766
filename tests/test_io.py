"""Atomic writes never leave half-written files; checkpoints never unpickle code."""

import pickle

import pytest
import torch

from flow_mbpo_pwm import io


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.csv"
    io.write_text(target, "old\n")
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_torch_round_trip(tmp_path):
    path = tmp_path / "ckpt.pt"
    io.torch_save(path, {"format": "x", "w": torch.arange(3.0), "meta": {"epoch": 7}})
    loaded = io.torch_load(path)
    assert loaded["meta"]["epoch"] == 7 and torch.equal(loaded["w"], torch.arange(3.0))


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_torch_load_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"x": Payload()}, f)
    with pytest.raises(io.CheckpointError, match="evil.pt"):
        io.torch_load(path)


def test_torch_load_names_missing_and_garbage_files(tmp_path):
    with pytest.raises(io.CheckpointError, match="does not exist"):
        io.torch_load(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(io.CheckpointError, match="garbage.pt"):
        io.torch_load(garbage)
