"""Atomic file writing and safe, verified checkpoint loading.

Every file the pipeline writes goes through here: a temp file in the same folder, flushed and fsynced, then
renamed over the target. A job killed at any moment leaves either the old file or the new one, never half of one.
Files get the mode the user's umask gives (0644 under umask 022), like any other program's output, so a lab
group can share `results/`: `mkstemp` alone would leave them 0600.

A killed writer can leave its temp file (`.{name}.<random>.tmp`, hidden, so no reader's glob such as
`epoch_*.pt` ever matches it). The next write of the same target removes such temps once they are older than
`STALE_TEMP_SECONDS`: younger ones may belong to a writer that is still running.

Checkpoints (`torch_save` of a dict) carry an integrity record: a SHA-256 over every tensor's key path, dtype,
shape and bytes and every plain value, in the dict's order. `torch_load` verifies it and refuses a damaged file.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

INTEGRITY_KEY = "integrity"
INTEGRITY_ALGORITHM = "sha256"
# A temp file untouched for this long cannot belong to a live writer: the largest write (a training state of a few
# GB) takes seconds to minutes.
STALE_TEMP_SECONDS = 3600.0


class InputError(ValueError):
    """Bad input that a user can fix: its message names the file or value and says what is wrong. The CLI prints
    it (no traceback) and exits with code 1; every stage's own input error derives from it."""


class CheckpointError(InputError):
    """A checkpoint or data file that cannot be used: missing, unreadable, damaged, unsafe or of the wrong kind."""


@functools.cache
def umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only read by setting, which
    would race with other threads creating files)."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temps(target: Path) -> None:
    cutoff = time.time() - STALE_TEMP_SECONDS
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with suppress(OSError):  # gone already, or not ours to remove: ignoring it is safe
            if stale.stat().st_mtime < cutoff:
                stale.unlink()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on failure removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a JSON file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def write_csv(path: str | os.PathLike, frame: Any) -> None:
    """Write a pandas DataFrame atomically (pandas is imported by the caller, not here)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------


def integrity_digest(obj: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint dict's contents (without its integrity record), independent of device and of how
    torch lays out the file."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in obj.items() if k != INTEGRITY_KEY}, "")
    return digest.hexdigest()


def _feed(digest: Any, value: Any, where: str) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{where}\0tensor\0{value.dtype}\0{tuple(value.shape)}\0".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())  # the buffer itself: no copy of a GB replay buffer
    elif isinstance(value, dict):
        digest.update(f"{where}\0dict\0{len(value)}\0".encode())
        for key, item in value.items():
            _feed(digest, item, f"{where}/{key!r}")
    elif isinstance(value, (list, tuple)):
        digest.update(f"{where}\0{type(value).__name__}\0{len(value)}\0".encode())
        for i, item in enumerate(value):
            _feed(digest, item, f"{where}[{i}]")
    else:  # plain values: repr is exact for int, float (incl. nan/inf), str, bool, None
        digest.update(f"{where}\0{type(value).__name__}\0{value!r}\0".encode())


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` atomically; a dict gets an integrity record (any previous record is replaced)."""
    torch_save_all([(path, obj)])


def torch_save_all(items: list[tuple[str | os.PathLike, Any]]) -> None:
    """`torch_save` of several files that belong together (the states of a stack of seeds): every object is written
    to its temporary file first, then all are renamed over their targets in one burst. A crash while writing leaves
    every old file; only one between two renames (microseconds, not the seconds of a write) can mix old and new."""
    import torch

    with ExitStack() as stack:
        temporaries = [stack.enter_context(atomic_path(path)) for path, _ in items]
        for tmp, (_, obj) in zip(temporaries, items, strict=True):
            if isinstance(obj, dict):
                record = {"algorithm": INTEGRITY_ALGORITHM, "digest": integrity_digest(obj)}
                obj = {**{k: v for k, v in obj.items() if k != INTEGRITY_KEY}, INTEGRITY_KEY: record}
            torch.save(obj, tmp)


class BackgroundSaves:
    """`torch_save_all` in a thread, one write at a time, so that a training loop goes on while its multi-GB state
    (replay buffers) is hashed and written. `submit` first waits for the previous write, then copies every tensor
    of the objects to host memory (so the caller may change its tensors at once), then writes in the thread; `wait`
    blocks until the write is done and raises its error, if any. A process killed mid-write leaves the old files
    (the write is `torch_save_all`'s, atomic); one that exits normally waits for the write (not a daemon thread).

    The host copies are kept for the next save (the state has the same tensors every time): copying into memory
    already touched (and pinned, for tensors on a GPU) is what makes `submit` cheap, ~10x less than allocating it
    anew (bench/state_save.py)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._copies: list = []  # the previous snapshot's host tensors, in the order `_snapshot` meets them
        self.written_seconds: float | None = None  # how long the last finished write took in the thread

    @property
    def writing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, items: list[tuple[str | os.PathLike, Any]]) -> None:
        self.wait()
        previous, self._copies = iter(self._copies), []
        snapshot = [(path, self._snapshot(obj, previous)) for path, obj in items]
        self._thread = threading.Thread(target=self._write, args=(snapshot,), name="background-save")
        self._thread.start()

    def _snapshot(self, value: Any, previous: Iterator) -> Any:
        """`value` with every tensor in its dicts, lists and tuples replaced by a copy in host memory (never a view
        of the original, also for a tensor already on the CPU), reusing the previous snapshot's copy where it has
        the same shape and dtype; plain values as they are."""
        import torch

        if isinstance(value, torch.Tensor):
            copy = next(previous, None)
            if copy is None or copy.shape != value.shape or copy.dtype != value.dtype:
                copy = torch.empty(value.shape, dtype=value.dtype, pin_memory=value.is_cuda)
            copy.copy_(value.detach())
            self._copies.append(copy)
            return copy
        if isinstance(value, dict):
            return {key: self._snapshot(item, previous) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._snapshot(item, previous) for item in value)
        return value

    def _write(self, items: list[tuple[str | os.PathLike, Any]]) -> None:
        begun = time.monotonic()
        try:
            torch_save_all(items)
            self.written_seconds = time.monotonic() - begun
        except BaseException as err:  # re-raised by the caller's next `wait`
            self._error = err

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def torch_load(path: str | os.PathLike, map_location: Any = "cpu", verify: bool = True) -> Any:
    """Load a checkpoint with `weights_only=True` (tensors, containers and plain values only, never code) and,
    with `verify`, check its integrity record when it has one. The record is removed from the returned dict."""
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: damaged checkpoint: the file is empty (a write that never finished?)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors, or is no torch checkpoint at all "
            f"({_torch_reason(err)})"
        ) from err
    except PermissionError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror}); check its permissions") from err
    except Exception as err:  # torch raises whatever its parser hits on garbage (RuntimeError, KeyError, ...)
        raise CheckpointError(
            f"{path}: damaged or not a torch checkpoint, cannot be read ({_torch_reason(err)})"
        ) from err
    if isinstance(data, dict) and INTEGRITY_KEY in data:
        record = data.pop(INTEGRITY_KEY)
        if verify:
            _verify(path, data, record)
    return data


def _torch_reason(err: Exception) -> str:
    """The gist of a torch.load error on one line (torch's weights-only message is a paragraph of advice)."""
    text = str(err) or type(err).__name__
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:200] + " ..."


def _verify(path: Path, data: dict[str, Any], record: Any) -> None:
    if not isinstance(record, dict) or record.get("algorithm") != INTEGRITY_ALGORITHM:
        found = record.get("algorithm") if isinstance(record, dict) else record
        raise CheckpointError(f"{path}: unknown integrity record ({found!r}); expected {INTEGRITY_ALGORITHM}")
    if integrity_digest(data) != record.get("digest"):
        raise CheckpointError(
            f"{path}: damaged checkpoint: its contents do not match the SHA-256 integrity record written when it "
            "was saved (the file changed on disk); restore it from a copy or regenerate it"
        )
