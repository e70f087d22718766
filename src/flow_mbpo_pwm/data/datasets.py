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

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flow_mbpo_pwm import io

if TYPE_CHECKING:
    from flow_mbpo_pwm.data.replay import ReplayBuffer

DATASET_FORMAT = "flow-mbpo-pwm/dataset/1"
FIELDS = ("observations", "actions", "rewards", "next_observations", "terminated", "truncated")


class DatasetError(io.InputError):
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


# Buffer field names (data/replay.py) -> dataset field names.
_BUFFER_FIELDS = {
    "obs": "observations",
    "action": "actions",
    "reward": "rewards",
    "next_obs": "next_observations",
    "terminated": "terminated",
    "truncated": "truncated",
}


def export_run(run_dir: str | Path, out: str | Path) -> int:
    """`flow-mbpo-pwm export-dataset`: write the replay buffer of a completed run (`work/state.pt`) to `out`.
    Returns the exit code: 0, or 1 with the reason on stderr for a folder that holds no completed run."""
    try:
        count = export_run_dataset(run_dir, out)
    except (DatasetError, io.CheckpointError) as err:
        print(f"flow-mbpo-pwm export-dataset: {err}", file=sys.stderr)
        return 1
    print(f"{run_dir}: exported {count} transitions to {out}")
    return 0


def export_run_dataset(run_dir: str | Path, out: str | Path) -> int:
    """Write the replay buffer of the completed run in `run_dir` to `out`; returns the number of transitions.
    Raises `DatasetError` naming the problem."""
    from flow_mbpo_pwm.config import load_train_config
    from flow_mbpo_pwm.data.replay import ReplayBuffer
    from flow_mbpo_pwm.run_folder import RunFolder

    folder = RunFolder(Path(run_dir))
    if not folder.summary.is_file():
        raise DatasetError(f"{folder.root}: no train_summary.json; export needs a completed training run")
    if not folder.state.is_file():
        raise DatasetError(f"{folder.state}: missing; export reads the replay buffer of the run's final state")
    config = load_train_config(folder.work_config)
    state = io.torch_load(folder.state)
    if not isinstance(state, dict) or not isinstance(state.get("buffer"), dict):
        raise DatasetError(f"{folder.state}: damaged training state, it holds no replay buffer")
    if state.get("epoch") != config.pwm.epochs:
        raise DatasetError(
            f"{folder.state}: holds epoch {state.get('epoch')}, not the final epoch {config.pwm.epochs} "
            "(the run is not complete)"
        )
    saved = state["buffer"]
    try:
        buffer = ReplayBuffer(
            capacity=int(saved["slots"]) * int(saved["num_envs"]),
            num_envs=int(saved["num_envs"]),
            obs_dim=int(saved["obs_dim"]),
            act_dim=int(saved["act_dim"]),
            horizon=int(saved["horizon"]),
        )
        buffer.load_state_dict(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise DatasetError(f"{folder.state}: damaged replay buffer ({type(err).__name__}: {err})") from err
    # [T, E, ...] oldest first -> [E, T, ...]
    data = {_BUFFER_FIELDS[k]: v.transpose(0, 1).contiguous() for k, v in buffer.chronological().items()}
    attrs = {
        "task": config.env.task,
        "episode_length": config.env.episode_length,
        "source_task_name": config.task_name,
        "source_size": config.size,
        "source_dynamics": config.dynamics_name,
        "source_seed": config.run.seed,
        "source_epochs": config.pwm.epochs,
    }
    return write_dataset(out, data, attrs)


def load_dataset(
    path: str | Path, device: str | torch.device, obs_dim: int, act_dim: int, horizon: int
) -> ReplayBuffer:
    """A replay buffer on `device` holding the whole dataset (one buffer env per dataset stream), ready for
    `PWM.train_world_model`. Raises `DatasetError` when the dataset does not fit the task (obs/act sizes) or is
    too short for `horizon`."""
    return stream_buffer(read_matching_dataset(path, obs_dim, act_dim, horizon), device, horizon)


def stream_buffer(data: dict[str, torch.Tensor], device: str | torch.device, horizon: int) -> ReplayBuffer:
    """A replay buffer on `device` with one env column per stream of `data` (already checked), holding all of it."""
    from flow_mbpo_pwm.data.replay import ReplayBuffer

    num_envs, steps, obs_dim = data["observations"].shape
    act_dim = data["actions"].shape[-1]
    buffer = ReplayBuffer(steps * num_envs, num_envs, obs_dim, act_dim, device=device, horizon=horizon)
    fill_buffer(buffer, data)
    return buffer


def read_matching_dataset(path: str | Path, obs_dim: int, act_dim: int, horizon: int) -> dict[str, torch.Tensor]:
    """The dataset's fields (CPU tensors [E, T, ...]) after checking that it fits the task and the horizon."""
    data, attrs = read_dataset(path)
    check_fits(path, data, attrs, obs_dim, act_dim, horizon)
    return data


def check_fits(
    path: str | Path, data: dict[str, torch.Tensor], attrs: dict[str, Any], obs_dim: int, act_dim: int, horizon: int
) -> None:
    """Raise `DatasetError` unless the dataset's sizes are the task's and its streams hold a `horizon` window."""
    _, steps, data_obs, data_act = _check_shapes(data)
    if (data_obs, data_act) != (obs_dim, act_dim):
        raise DatasetError(
            f"{path}: holds obs_dim={data_obs}, act_dim={data_act} (task {attrs.get('task')!r}) but this run has "
            f"obs_dim={obs_dim}, act_dim={act_dim}"
        )
    if steps < horizon + 1:
        raise DatasetError(f"{path}: {steps} steps per stream, fewer than horizon + 1 = {horizon + 1}")


def fill_buffer(buffer: ReplayBuffer, data: dict[str, torch.Tensor]) -> int:
    """Append the dataset's E streams (`[E, T, ...]`) to `buffer`, whose N env columns each hold one time stream.

    Streams go in groups of N, one per column, in the file's order (so when the data outgrow the buffer, the ring
    keeps the last streams — for a collected dataset, the reference's later, better policies). A short last group
    is completed with streams from its own start. Each stream's last step is marked truncated: the next thing in
    that column (another stream, or the training run's own data) does not continue it, so no sampled window
    crosses the seam. Returns the number of transitions added."""
    num_streams, steps = data["rewards"].shape
    n = buffer.num_envs
    fields = {name: data[name].to(buffer.device) for name in FIELDS}
    fields["truncated"] = fields["truncated"].clone()
    fields["truncated"][:, -1] |= ~fields["terminated"][:, -1]
    added = 0
    for start in range(0, num_streams, n):
        streams = (torch.arange(n) % (min(num_streams, start + n) - start) + start).to(buffer.device)
        group = {name: value.index_select(0, streams) for name, value in fields.items()}
        for t in range(steps):
            buffer.add(*(group[_BUFFER_FIELDS[k]][:, t] for k in _BUFFER_FIELDS))
        added += n * steps
    return added
