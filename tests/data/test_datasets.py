"""HDF5 datasets: the file format round-trips and bad files are refused by name."""

from __future__ import annotations

import h5py
import pandas as pd
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


# ------------------------------------------------------------------------------------------------------------------
# Export of a finished run and pretraining from it (a real tiny training run on InvertedPendulum)
# ------------------------------------------------------------------------------------------------------------------

PRETRAIN_EXPERIMENT = {
    "tasks": {"pendulum": {"task": "gym:InvertedPendulum-v5", "num_envs": 4, "episode_length": 50}},
    "sizes": ["tiny"],
    "dynamics": {"deterministic": {}},
    "seeds": [0, 1],
    "train": {
        "world_model": {"units": [32, 32], "encoder_units": [32], "latent_dim": 16},
        "pwm": {"epochs": 30, "horizon": 4, "actor_units": [32], "critic_units": [32], "critic_iterations": 1,
                "critic_minibatches": 1, "wm_batch": 16, "wm_steps": 1, "wm_warmup_steps": 5, "buffer_size": 2000},
        "run": {"device": "cpu", "log_every": 5, "validate_every": 30, "save_state_every": 30,
                "validation_episodes": 2},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """Two completed training runs (seeds 0 and 1) and their config; one intra-op thread while they run."""
    from flow_mbpo_pwm.config import load_experiment
    from flow_mbpo_pwm.train import train

    root = tmp_path_factory.mktemp("runs")
    experiment = load_experiment(PRETRAIN_EXPERIMENT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for seed in (0, 1):
            config = experiment.cell("pendulum", "tiny", "deterministic", seed)
            assert train(config, root / f"seed{seed}") == 0
            runs[seed] = root / f"seed{seed}"
    finally:
        torch.set_num_threads(threads)
    return experiment, runs


def test_exported_buffer_loads_back_with_equal_contents(finished_runs, tmp_path):
    from flow_mbpo_pwm import io
    from flow_mbpo_pwm.data.datasets import export_run, load_dataset

    _, runs = finished_runs
    out = tmp_path / "seed0.h5"
    assert export_run(runs[0], out) == 0
    data, attrs = read_dataset(out)
    assert attrs["task"] == "gym:InvertedPendulum-v5" and attrs["source_seed"] == 0
    assert data["observations"].shape == (4, 30 * 4, 4)  # 4 envs x (30 epochs x 4 steps), obs_dim 4
    saved = io.torch_load(runs[0] / "work" / "state.pt")["buffer"]
    for name, field in (
        ("obs", "observations"),
        ("action", "actions"),
        ("reward", "rewards"),
        ("next_obs", "next_observations"),
        ("terminated", "terminated"),
        ("truncated", "truncated"),
    ):
        assert torch.equal(data[field], saved[name].transpose(0, 1)), field  # the buffer never wrapped: in order

    buffer = load_dataset(out, "cpu", obs_dim=4, act_dim=1, horizon=4)
    assert len(buffer) == 4 * 120 and buffer.ready()
    loaded = buffer.chronological()
    for name in loaded:
        assert torch.equal(loaded[name], saved[name]), name
    assert torch.equal(buffer.valid_start, saved["valid_start"])  # same windows as the run's own buffer


def test_export_of_a_folder_without_a_completed_run_fails_clearly(tmp_path, capsys):
    from flow_mbpo_pwm.data.datasets import export_run

    assert export_run(tmp_path / "nothing", tmp_path / "d.h5") == 1
    assert "no train_summary.json; export needs a completed training run" in capsys.readouterr().err
    assert not (tmp_path / "d.h5").exists()


def test_export_of_a_damaged_state_fails_clearly(finished_runs, tmp_path, capsys):
    import shutil

    from flow_mbpo_pwm import io
    from flow_mbpo_pwm.data.datasets import export_run

    _, runs = finished_runs
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    state = run / "work" / "state.pt"
    io.torch_save(state, {**io.torch_load(state), "buffer": [1, 2]})  # intact file, nonsense buffer
    assert export_run(run, tmp_path / "d.h5") == 1
    assert f"{state}: damaged training state, it holds no replay buffer" in capsys.readouterr().err
    state.write_bytes(state.read_bytes()[:1000])
    assert export_run(run, tmp_path / "d.h5") == 1
    assert f"{state}: damaged or not a torch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "d.h5").exists()


def test_dataset_of_another_task_is_refused(finished_runs, tmp_path):
    from flow_mbpo_pwm.data.datasets import export_run, load_dataset

    _, runs = finished_runs
    export_run(runs[0], tmp_path / "d.h5")
    with pytest.raises(DatasetError, match="obs_dim=4, act_dim=1"):
        load_dataset(tmp_path / "d.h5", "cpu", obs_dim=37, act_dim=8, horizon=4)
    with pytest.raises(DatasetError, match="fewer than horizon"):
        load_dataset(tmp_path / "d.h5", "cpu", obs_dim=4, act_dim=1, horizon=500)


def test_pretraining_lowers_world_model_loss_on_held_out_data(finished_runs, tmp_path):
    from flow_mbpo_pwm.algorithms.pwm import PWM
    from flow_mbpo_pwm.data.datasets import export_run, load_dataset

    experiment, runs = finished_runs
    export_run(runs[0], tmp_path / "train.h5")
    export_run(runs[1], tmp_path / "held_out.h5")  # another seed: other episodes
    train_data = load_dataset(tmp_path / "train.h5", "cpu", 4, 1, horizon=4)
    held_out = load_dataset(tmp_path / "held_out.h5", "cpu", 4, 1, horizon=4)
    config = experiment.cell("pendulum", "tiny", "deterministic", 0)
    agent = PWM(4, 1, config, "cpu")
    # Reward normalisation as a run would have it: statistics of the training data's rewards.
    agent.rew_rms.update(train_data.chronological()["reward"].reshape(-1))

    def held_out_losses() -> tuple[float, float, float]:
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            losses = [agent.world_model_loss(held_out.sample(64, generator)) for _ in range(8)]
        return tuple(float(sum(getattr(x, k) for x in losses) / 8) for k in ("total", "dynamics", "reward"))

    before = held_out_losses()
    agent.train_world_model(train_data, 300)
    after = held_out_losses()
    print("held-out world-model loss (total, dynamics, reward) before", before, "after", after)
    assert after[0] < 0.5 * before[0] and after[1] < 0.7 * before[1] and after[2] < before[2], (before, after)


def test_training_run_pretrains_from_a_dataset(finished_runs, tmp_path):
    from flow_mbpo_pwm.config import with_overrides
    from flow_mbpo_pwm.data.datasets import export_run
    from flow_mbpo_pwm.train import train

    experiment, runs = finished_runs
    dataset = tmp_path / "d.h5"
    export_run(runs[0], dataset)
    config = experiment.cell("pendulum", "tiny", "deterministic", 1)
    config = with_overrides(config, pwm={"epochs": 5}, run={"pretrain_dataset": str(dataset), "pretrain_steps": 20,
                                                          "validate_every": 5, "save_state_every": 5})  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train(config, tmp_path / "run") == 0
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "run" / "train_summary.json").is_file()
    # Pretrained, the agent learns from the first epoch; without it the first log window (epochs 1-5) only collects.
    first_row = pd.read_csv(tmp_path / "run" / "metrics.csv").iloc[0]
    assert first_row["actor_loss"] != 0.0 and first_row["wm_loss"] > 0.0
