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


def _flip_a_weight_byte(path, needle: bytes) -> None:
    """Flip one byte inside a tensor's storage: the zip layout stays valid, only the weights change."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at > 0, "tensor bytes not found in the file"
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_tensor_bytes_are_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    weights = torch.full((64,), 1.25)
    io.torch_save(path, {"format": "x", "w": weights})
    _flip_a_weight_byte(path, weights.numpy().tobytes()[:16])
    with pytest.raises(io.CheckpointError, match=r"ckpt.pt: damaged checkpoint"):
        io.torch_load(path)
    assert not torch.equal(io.torch_load(path, verify=False)["w"], weights)  # the damage is real and silent


def test_changed_plain_value_is_refused_and_resave_rewrites_the_record(tmp_path):
    path = tmp_path / "ckpt.pt"
    io.torch_save(path, {"format": "x", "w": torch.arange(3.0), "meta": {"epoch": 7}})
    data = torch.load(path, weights_only=True)
    data["meta"]["epoch"] = 8  # an edit that keeps the old record
    torch.save(data, path)
    with pytest.raises(io.CheckpointError, match="damaged"):
        io.torch_load(path)
    loaded = io.torch_load(path, verify=False)
    assert "integrity" not in loaded
    io.torch_save(path, loaded)  # a deliberate re-save (e.g. select's best.pt) gets a fresh record
    assert io.torch_load(path)["meta"]["epoch"] == 8


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(p.with_name("good.pt").read_bytes()[:200]), "damaged or not a torch checkpoint"),
    ],
    ids=["empty", "directory", "truncated"],
)
def test_unusable_files_are_named(tmp_path, make, message):
    io.torch_save(tmp_path / "good.pt", {"w": torch.zeros(1000)})
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(io.CheckpointError, match=f"bad.pt: .*{message}"):
        io.torch_load(path)


def test_files_get_the_umask_mode(tmp_path):
    import os

    previous = os.umask(0o022)
    io.umask.cache_clear()
    try:
        io.write_text(tmp_path / "a.txt", "x")
        io.torch_save(tmp_path / "b.pt", {"w": torch.zeros(2)})
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    finally:
        os.umask(previous)
        io.umask.cache_clear()
    assert modes == {"a.txt": 0o644, "b.pt": 0o644}


def test_stale_temps_are_removed_and_fresh_ones_kept(tmp_path):
    import os
    import time

    stale, fresh = tmp_path / ".state.pt.abc123.tmp", tmp_path / ".state.pt.def456.tmp"
    stale.write_text("left by a killed writer")
    fresh.write_text("a writer still at work")
    old = time.time() - 2 * io.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    io.write_text(tmp_path / "state.pt", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "state.pt"]


def test_temp_names_never_match_what_readers_glob(tmp_path):
    """A temp left by a killed writer of a policy checkpoint is hidden: `train` and `select` glob `epoch_*.pt`."""
    names = []
    with pytest.raises(RuntimeError), io.atomic_path(tmp_path / "epoch_000004.pt") as tmp:
        names.append(tmp.name)
        raise RuntimeError("killed")
    (tmp_path / names[0]).write_text("half a checkpoint")  # what a SIGKILL (no cleanup) leaves
    assert names[0].startswith(".epoch_000004.pt.") and names[0].endswith(".tmp")
    assert list(tmp_path.glob("epoch_*.pt")) == [] and list(tmp_path.glob("*.pt")) == []


def test_torch_save_all_replaces_every_file_or_none(tmp_path):
    """The states of a stack are written together: a failure while writing any of them leaves every old file."""
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    io.torch_save_all([(p, {"epoch": torch.tensor(0)}) for p in paths])
    with pytest.raises(Exception):  # noqa: B017 -- whatever torch.save raises for an object it cannot pickle
        io.torch_save_all([(paths[0], {"epoch": torch.tensor(1)}), (paths[1], {"epoch": lambda: 1})])
    assert [int(io.torch_load(p)["epoch"]) for p in paths] == [0, 0]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.pt", "b.pt"]  # no temporary files left
    io.torch_save_all([(p, {"epoch": torch.tensor(2)}) for p in paths])
    assert [int(io.torch_load(p)["epoch"]) for p in paths] == [2, 2]


def test_background_saves_write_what_was_submitted_while_the_caller_goes_on(tmp_path):
    """The periodic training state is written in a thread: the file holds the tensors as they were at `submit`,
    though the caller changes them in place at once, and equals what `torch_save_all` writes."""
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    weights = torch.arange(6.0)
    state = {"epoch": 3, "w": weights, "rows": [{"x": 1.5}], "rng": (torch.tensor([7]), [torch.ones(2)])}
    saves = io.BackgroundSaves()
    assert not saves.writing and saves.written_seconds is None
    saves.submit([(paths[0], state)])
    weights.add_(100.0)  # the loop goes on training
    state["rng"][1][0].zero_()
    saves.wait()
    assert not saves.writing and saves.written_seconds > 0  # what train's log reports at the next save
    io.torch_save_all([(paths[1], {**state, "w": torch.arange(6.0), "rng": (torch.tensor([7]), [torch.ones(2)])})])
    written, expected = io.torch_load(paths[0]), io.torch_load(paths[1])
    assert torch.equal(written["w"], torch.arange(6.0)) and torch.equal(written["rng"][1][0], torch.ones(2))
    assert io.integrity_digest(written) == io.integrity_digest(expected)
    assert written["rows"] == [{"x": 1.5}] and isinstance(written["rng"], tuple)


def test_background_saves_reuse_their_host_copies_and_write_the_new_values(tmp_path):
    """The next save copies into the previous save's host tensors (same shapes), a changed shape gets a new one,
    and each file holds its own save's values."""
    path = tmp_path / "state.pt"
    saves = io.BackgroundSaves()
    weights, steps = torch.zeros(4), torch.tensor([1])
    saves.submit([(path, {"w": weights, "steps": steps})])
    first = list(saves._copies)
    saves.wait()
    weights.fill_(5.0)
    saves.submit([(path, {"w": weights, "steps": torch.tensor([1, 2])})])
    saves.wait()
    assert saves._copies[0] is first[0] and saves._copies[1] is not first[1]
    written = io.torch_load(path)
    assert torch.equal(written["w"], torch.full((4,), 5.0)) and torch.equal(written["steps"], torch.tensor([1, 2]))


def test_background_save_error_is_raised_by_the_next_wait_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    saves = io.BackgroundSaves()
    saves.submit([(path, {"epoch": torch.tensor(1)})])
    saves.submit([(path, {"epoch": torch.tensor(2), "bad": lambda: 2})])  # waits for the first, then fails
    with pytest.raises(Exception):  # noqa: B017 -- whatever torch.save raises for an object it cannot pickle
        saves.wait()
    saves.wait()  # raised once
    assert int(io.torch_load(path)["epoch"]) == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["state.pt"]
