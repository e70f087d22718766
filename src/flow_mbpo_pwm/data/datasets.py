"""Offline datasets in HDF5: export a finished run's replay buffer, and load one back for world-model pretraining.

Several cells can share one dataset (e.g. pretrain every size and dynamics variant on the same data), so the
format is plain and self-describing rather than a pickled buffer:

    /observations       [E, T, obs_dim] float32   E parallel env streams, T steps each, oldest first
    /actions            [E, T, act_dim] float32
    /rewards            [E, T]          float32
    /next_observations  [E, T, obs_dim] float32   pre-reset terminal observation at episode ends
    /terminated         [E, T]          bool
    /truncated          [E, T]          bool
    attrs: format = "flow-mbpo-pwm/dataset/1", obs_dim, act_dim, num_envs, steps, task, and the source run's
           size, dynamics, seed, epochs (where exported from a run).

Each env stream is contiguous in time, so an episode never spans two streams and the replay buffer's "never
sample across an episode boundary" rule holds after loading. The oldest steps of a stream may start mid-episode
(the buffer is a ring); the buffer treats them as an episode without a start, which is harmless for H-step slices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import io

DATASET_FORMAT = "flow-mbpo-pwm/dataset/1"
FIELDS = ("observations", "actions", "rewards", "next_observations", "terminated", "truncated")


class DatasetError(ValueError):
    """A dataset file that is missing, malformed, or does not fit the task it is used for."""


def _check_shapes(data: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
    missing = [f for f in FIELDS if f not in data]
    if missing:
        raise DatasetError(f"dataset is missing fields {missing}")
    obs = data["observations"]
    if obs.ndim != 3:
        raise DatasetError(f"observations must be [envs, steps, obs_dim], got shape {list(obs.shape)}")
    num_envs, steps, obs_dim = obs.shape
    act_dim = data["actions"].shape[-1] if data["actions"].ndim == 3 else -1
    expected = {
        "actions": (num_envs, steps, act_dim),
        "rewards": (num_envs, steps),
        "next_observations": (num_envs, steps, obs_dim),
        "terminated": (num_envs, steps),
        "truncated": (num_envs, steps),
    }
    for name, shape in expected.items():
        if tuple(data[name].shape) != shape:
            raise DatasetError(f"{name} has shape {list(data[name].shape)}, expected {list(shape)}")
    return num_envs, steps, obs_dim, act_dim


def write_dataset(path: str | Path, data: dict[str, torch.Tensor], attrs: dict[str, Any]) -> int:
    """Write `data` (the FIELDS, each [E, T, ...]) atomically to an HDF5 file; returns the number of transitions."""
    import h5py

    num_envs, steps, obs_dim, act_dim = _check_shapes(data)
    with io.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in FIELDS:
            value = data[name].detach().cpu()
            value = value.bool() if name in ("terminated", "truncated") else value.float()
            f.create_dataset(name, data=value.numpy(), chunks=True, compression="gzip", compression_opts=1)
        f.attrs["format"] = DATASET_FORMAT
        f.attrs.update({"obs_dim": obs_dim, "act_dim": act_dim, "num_envs": num_envs, "steps": steps})
        f.attrs.update({k: v for k, v in attrs.items() if v is not None})
    return num_envs * steps


def read_dataset(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The FIELDS as CPU tensors [E, T, ...] and the file's attributes; `DatasetError` names what is wrong."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file does not exist")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != DATASET_FORMAT:
                raise DatasetError(f"{path}: not a dataset of format {DATASET_FORMAT} (format={attrs.get('format')!r})")
            missing = [name for name in FIELDS if name not in f]
            if missing:
                raise DatasetError(f"{path}: missing datasets {missing}")
            data = {name: torch.from_numpy(f[name][()]) for name in FIELDS}
    except OSError as err:
        raise DatasetError(f"{path}: not a readable HDF5 file ({err})") from err
    _check_shapes(data)
    attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in attrs.items()}
    return data, attrs
