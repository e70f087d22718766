"""HDF5 datasets: the file format round-trips and bad files are refused by name."""

from __future__ import annotations

import h5py
import pytest
import torch

from flow_mbpo_pwm.data.datasets import DATASET_FORMAT, DatasetError, read_dataset, write_dataset


def _random_data(num_envs=3, steps=7, obs_dim=4, act_dim=2):
    g = torch.Generator().manual_seed(0)
    return {
        "observations": torch.randn(num_envs, steps, obs_dim, generator=g),
        "actions": torch.rand(num_envs, steps, act_dim, generator=g) * 2 - 1,
        "rewards": torch.randn(num_envs, steps, generator=g),
        "next_observations": torch.randn(num_envs, steps, obs_dim, generator=g),
        "terminated": torch.rand(num_envs, steps, generator=g) < 0.2,
        "truncated": torch.rand(num_envs, steps, generator=g) < 0.2,
    }


def test_dataset_round_trips_exactly(tmp_path):
    data = _random_data()
    path = tmp_path / "d.h5"
    assert write_dataset(path, data, {"task": "gym:X", "seed": 3}) == 21
    loaded, attrs = read_dataset(path)
    for name, value in data.items():
        assert loaded[name].dtype == value.dtype and torch.equal(loaded[name], value), name
    assert attrs["format"] == DATASET_FORMAT and attrs["task"] == "gym:X"
    assert (attrs["num_envs"], attrs["steps"], attrs["obs_dim"], attrs["act_dim"]) == (3, 7, 4, 2)


def test_inconsistent_shapes_are_refused_before_writing(tmp_path):
    data = _random_data()
    data["rewards"] = data["rewards"][:, :-1]
    with pytest.raises(DatasetError, match="rewards has shape"):
        write_dataset(tmp_path / "d.h5", data, {})
    assert not (tmp_path / "d.h5").exists()


def test_missing_or_foreign_files_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        read_dataset(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(DatasetError, match="not a dataset of format"):
        read_dataset(tmp_path / "other.h5")
