"""HDF5 datasets: the file format round-trips and bad files are refused by name."""

from __future__ import annotations

import h5py
import pandas as pd
import pytest
import torch

from flow_mbpo_pwm import io
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
    # Equal, except that each stream's last step is marked truncated: the seam after it (fill_buffer).
    expected_truncated = saved["truncated"].clone()
    expected_truncated[-1] = ~saved["terminated"][-1]
    for name in loaded:
        assert torch.equal(loaded[name], expected_truncated if name == "truncated" else saved[name]), name
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
    from flow_mbpo_pwm.algorithms.stack import stack_draws
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
            # (the agent is a stack of one seed: batches and losses carry a leading seed axis)
            losses = [agent.world_model_loss(stack_draws([held_out.sample(64, generator)])) for _ in range(8)]
        return tuple(float(sum(getattr(x, k) for x in losses) / 8) for k in ("total", "dynamics", "reward"))

    before = held_out_losses()
    agent.train_world_model(train_data, 300)
    after = held_out_losses()
    print("held-out world-model loss (total, dynamics, reward) before", before, "after", after)
    assert after[0] < 0.5 * before[0] and after[1] < 0.7 * before[1] and after[2] < before[2], (before, after)


def test_pretrain_then_train_starts_from_the_pretrained_world_model_and_the_offline_data(finished_runs, tmp_path):
    """The paper's protocol end to end on CPU: export -> `pretrain` -> `train --world-model-init --offline-data`."""
    import yaml

    from flow_mbpo_pwm import io
    from flow_mbpo_pwm.cli import main
    from flow_mbpo_pwm.data.datasets import export_run

    _, runs = finished_runs
    dataset = tmp_path / "d.h5"
    assert export_run(runs[0], dataset) == 0
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump({**PRETRAIN_EXPERIMENT, "pretrain": {"steps": 20, "log_every": 10}}))
    wm_path = tmp_path / "pretrain" / "world_model.pt"
    cell = ["--config", str(config_path), "--task", "pendulum", "--size", "tiny", "--dynamics", "deterministic"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["pretrain", *cell, "--dataset", str(dataset), "--out", str(wm_path)]) == 0
        metrics = pd.read_csv(tmp_path / "pretrain" / "pretrain_metrics.csv")
        assert list(metrics["step"]) == [10, 20] and (metrics["wm_loss"] > 0).all()
        assert main(["train", *cell, "--seed", "1", "--run-dir", str(tmp_path / "run"), "--epochs", "5",
                     "--world-model-init", str(wm_path), "--offline-data", str(dataset)]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    # Pretrained, the agent learns from the first epoch; without it the first log window (epochs 1-5) only collects.
    first_row = pd.read_csv(tmp_path / "run" / "metrics.csv").iloc[0]
    assert first_row["actor_loss"] != 0.0 and first_row["wm_loss"] > 0.0
    # The run's buffer holds the 480 offline transitions before its own 5 x 4 x 4.
    state = io.torch_load(tmp_path / "run" / "work" / "state.pt")
    assert state["buffer"]["num_added"] == 120 + 5 * 4
    assert torch.equal(state["buffer"]["obs"][:120], io.torch_load(runs[0] / "work" / "state.pt")["buffer"]["obs"])


def test_a_standardised_latent_is_fitted_on_the_offline_data_through_the_pretrained_encoder(
    finished_runs, tmp_path, capsys
):
    """`pwm.latent_norm: standardize` under the paper's protocol: the run's actor and critics start with the
    per-entry statistics of the pretrained encoder on the offline observations; without the offline data in the
    buffer the run is refused before any work."""
    import yaml

    from flow_mbpo_pwm import checkpoints, io
    from flow_mbpo_pwm.algorithms.pwm import SeedAgent
    from flow_mbpo_pwm.cli import main
    from flow_mbpo_pwm.config import load_experiment
    from flow_mbpo_pwm.data.datasets import export_run

    _, runs = finished_runs
    dataset = tmp_path / "d.h5"
    assert export_run(runs[0], dataset) == 0
    experiment = {**PRETRAIN_EXPERIMENT, "pretrain": {"steps": 20, "log_every": 10}}
    experiment["train"] = {**experiment["train"], "pwm": {**experiment["train"]["pwm"], "latent_norm": "standardize"}}
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(experiment))
    wm_path = tmp_path / "pretrain" / "world_model.pt"
    cell = ["--config", str(config_path), "--task", "pendulum", "--size", "tiny", "--dynamics", "deterministic"]
    assert main(["pretrain", *cell, "--dataset", str(dataset), "--out", str(wm_path)]) == 0
    train = ["train", *cell, "--seed", "1", "--epochs", "2", "--world-model-init", str(wm_path)]
    assert main([*train, "--run-dir", str(tmp_path / "alone")]) == 2
    assert "pwm.latent_norm" in capsys.readouterr().err
    assert not (tmp_path / "alone" / "metrics.csv").exists() and not (tmp_path / "alone" / "work").exists()
    assert main([*train, "--run-dir", str(tmp_path / "run"), "--offline-data", str(dataset)]) == 0

    agent = SeedAgent(4, 1, load_experiment(config_path).cell("pendulum", "tiny", "deterministic", 1), 1, "cpu")
    checkpoints.load_world_model(wm_path, agent)
    with torch.no_grad():
        z = agent.world_model.encode(read_dataset(dataset)[0]["observations"].reshape(-1, 4)).double()
    modules = io.torch_load(tmp_path / "run" / "work" / "state.pt")["agent"]["modules"]
    for net in ("actor", "critic"):  # fitted at the start, never trained: as fitted after 2 epochs
        torch.testing.assert_close(modules[f"{net}.input_norm.mean"], z.mean(0).float())
        torch.testing.assert_close(modules[f"{net}.input_norm.std"], z.std(0, unbiased=False).float() + 1e-5)


def test_a_frozen_encoder_stays_as_pretrained_while_the_rest_of_the_world_model_trains(finished_runs, tmp_path, capsys):
    """`pwm.freeze_encoder`: after online epochs the encoder's weights are the pretrained ones bitwise, the dynamics
    and reward heads have moved; without a pretrained world model the run is refused before any work."""
    import yaml

    from flow_mbpo_pwm import io
    from flow_mbpo_pwm.cli import main
    from flow_mbpo_pwm.data.datasets import export_run

    _, runs = finished_runs
    dataset = tmp_path / "d.h5"
    assert export_run(runs[0], dataset) == 0
    experiment = {**PRETRAIN_EXPERIMENT, "pretrain": {"steps": 20, "log_every": 10}}
    experiment["train"] = {**experiment["train"], "pwm": {**experiment["train"]["pwm"], "freeze_encoder": True}}
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(experiment))
    wm_path = tmp_path / "pretrain" / "world_model.pt"
    cell = ["--config", str(config_path), "--task", "pendulum", "--size", "tiny", "--dynamics", "deterministic"]
    assert main(["pretrain", *cell, "--dataset", str(dataset), "--out", str(wm_path)]) == 0
    train = ["train", *cell, "--seed", "1", "--epochs", "5"]
    assert main([*train, "--run-dir", str(tmp_path / "scratch")]) == 2
    assert "pwm.freeze_encoder" in capsys.readouterr().err
    assert not (tmp_path / "scratch" / "work").exists()
    assert main([*train, "--run-dir", str(tmp_path / "run"), "--world-model-init", str(wm_path),
                 "--offline-data", str(dataset)]) == 0  # fmt: skip

    pretrained = io.torch_load(wm_path)["world_model"]
    trained = io.torch_load(tmp_path / "run" / "work" / "state.pt")["agent"]["modules"]
    encoder = [k for k in pretrained if k.startswith("encoder.")]
    assert encoder and all(torch.equal(trained[f"world_model.{k}"], pretrained[k]) for k in encoder)
    rest = [k for k in pretrained if not k.startswith("encoder.") and pretrained[k].is_floating_point()]
    assert any(not torch.equal(trained[f"world_model.{k}"], pretrained[k]) for k in rest)
    assert (pd.read_csv(tmp_path / "run" / "metrics.csv")["wm_loss"] > 0).all()


def test_a_stack_reads_its_offline_data_once_and_fills_every_seeds_buffer_with_it(finished_runs, tmp_path, monkeypatch):
    """`train` of two stacked seeds with `--offline-data`: the file is read once for the stack, and each seed's
    replay buffer starts with all of it, as a lone run's does."""
    import yaml

    from flow_mbpo_pwm import io
    from flow_mbpo_pwm.cli import main
    from flow_mbpo_pwm.data import datasets

    _, runs = finished_runs
    dataset = tmp_path / "d.h5"
    assert datasets.export_run(runs[0], dataset) == 0
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(PRETRAIN_EXPERIMENT))
    reads = []
    read = datasets.read_matching_dataset
    monkeypatch.setattr(datasets, "read_matching_dataset", lambda *args: reads.append(args[0]) or read(*args))
    cell = ["--config", str(config_path), "--task", "pendulum", "--size", "tiny", "--dynamics", "deterministic"]
    folders = [tmp_path / "seed0", tmp_path / "seed1"]
    assert main(["train", *cell, "--seed", "0", "1", "--run-dir", *map(str, folders), "--epochs", "2",
                 "--offline-data", str(dataset)]) == 0  # fmt: skip
    assert reads == [str(dataset)]
    offline = io.torch_load(runs[0] / "work" / "state.pt")["buffer"]["obs"]
    for folder in folders:
        buffer = io.torch_load(folder / "work" / "state.pt")["buffer"]
        assert buffer["num_added"] == 120 + 2 * 4
        assert torch.equal(buffer["obs"][:120], offline)


def test_a_pretrained_world_model_loads_bitwise_and_refuses_another_architecture(finished_runs, tmp_path):
    from flow_mbpo_pwm import checkpoints
    from flow_mbpo_pwm.algorithms.pwm import PWM
    from flow_mbpo_pwm.config import with_overrides

    experiment, _ = finished_runs
    config = experiment.cell("pendulum", "tiny", "deterministic", 0)
    source = PWM(4, 1, config, "cpu")
    source.rew_rms.update(torch.arange(10.0))
    checkpoints.save_world_model(tmp_path / "wm.pt", source, {"steps": 3, "config": config.to_dict()})
    target = PWM(4, 1, with_overrides(config, run={"seed": 7}), "cpu")
    meta = checkpoints.load_world_model(tmp_path / "wm.pt", target)
    assert meta["steps"] == 3
    for (name, a), (_, b) in zip(source.world_model.state_dict().items(), target.world_model.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    assert torch.equal(source.rew_rms.mean, target.rew_rms.mean) and torch.equal(source.rew_rms.var, target.rew_rms.var)
    other = PWM(4, 1, with_overrides(config, world_model={"latent_dim": 24}), "cpu")
    with pytest.raises(checkpoints.CheckpointError, match="world_model.latent_dim=16"):
        checkpoints.load_world_model(tmp_path / "wm.pt", other)
    with pytest.raises(checkpoints.CheckpointError, match="obs_dim=4"):
        checkpoints.load_world_model(tmp_path / "wm.pt", PWM(5, 1, config, "cpu"))


# ------------------------------------------------------------------------------------------------------------------
# `pretrain`: resumable, bitwise on CPU; bad datasets refused before any work
# ------------------------------------------------------------------------------------------------------------------


def _pretrain(config, dataset, out, steps=40):
    from flow_mbpo_pwm.pretrain import pretrain

    return pretrain(config, dataset, steps, out, log_every=10, save_state_every=20)


def test_a_killed_pretraining_resumes_to_the_uninterrupted_result(finished_runs, tmp_path, monkeypatch):
    from flow_mbpo_pwm.config import load_experiment
    from flow_mbpo_pwm.data.datasets import export_run
    from flow_mbpo_pwm.pretrain import Pretraining

    _, runs = finished_runs
    dataset = tmp_path / "d.h5"
    export_run(runs[0], dataset)
    config = load_experiment(PRETRAIN_EXPERIMENT).cell("pendulum", "tiny", "deterministic", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _pretrain(config, dataset, tmp_path / "a" / "world_model.pt") == 0
        log = Pretraining._log

        def crash_at_step_30(self, *args):
            log(self, *args)
            if self.step == 30:
                raise KeyboardInterrupt  # killed after the state save at step 20

        monkeypatch.setattr(Pretraining, "_log", crash_at_step_30)
        with pytest.raises(KeyboardInterrupt):
            _pretrain(config, dataset, tmp_path / "b" / "world_model.pt")
        monkeypatch.setattr(Pretraining, "_log", log)
        assert io.torch_load(tmp_path / "b" / "work" / "state.pt")["step"] == 20
        assert not (tmp_path / "b" / "world_model.pt").exists()
        assert _pretrain(config, dataset, tmp_path / "b" / "world_model.pt") == 0
    finally:
        torch.set_num_threads(threads)
    a = io.torch_load(tmp_path / "a" / "world_model.pt")
    b = io.torch_load(tmp_path / "b" / "world_model.pt")
    for name, value in a["world_model"].items():
        assert torch.equal(value, b["world_model"][name]), name
    assert (tmp_path / "a" / "pretrain_metrics.csv").read_text() != ""
    rows = [path.read_text().splitlines() for path in (tmp_path / "a" / "pretrain_metrics.csv",
                                                        tmp_path / "b" / "pretrain_metrics.csv")]  # fmt: skip
    strip = [[line.split(",")[:4] + line.split(",")[5:] for line in table] for table in rows]  # drop wall_seconds
    assert strip[0] == strip[1]


def test_pretraining_refuses_a_dataset_of_another_shape(finished_runs, tmp_path):
    from flow_mbpo_pwm.config import load_experiment
    from flow_mbpo_pwm.data.datasets import DatasetError, write_dataset

    data = {
        "observations": torch.zeros(2, 3, 4),
        "actions": torch.zeros(2, 3, 1),
        "rewards": torch.zeros(2, 3),
        "next_observations": torch.zeros(2, 3, 4),
        "terminated": torch.zeros(2, 3, dtype=torch.bool),
        "truncated": torch.zeros(2, 3, dtype=torch.bool),
    }
    write_dataset(tmp_path / "short.h5", data, {"task": "gym:InvertedPendulum-v5"})
    config = load_experiment(PRETRAIN_EXPERIMENT).cell("pendulum", "tiny", "deterministic", 0)
    with pytest.raises(DatasetError, match="fewer than horizon"):
        _pretrain(config, tmp_path / "short.h5", tmp_path / "wm.pt")
    assert not (tmp_path / "wm.pt").exists()


# ------------------------------------------------------------------------------------------------------------------
# `clone`: the actor fitted to a reference policy on the pretrained latents; `train` starts from it
# ------------------------------------------------------------------------------------------------------------------


def _reference_policy(path, obs_dim=4, act_dim=1):
    """A real rsl-rl reference actor (its architecture from the default `ReferenceConfig`) with random weights,
    written as the reference stage writes its policy: any function is a target with a known answer to clone."""
    import dataclasses

    from flow_mbpo_pwm.config import ReferenceConfig
    from flow_mbpo_pwm.reference_policy import build_actor, exploration_std, save_reference_policy

    reference = ReferenceConfig()
    torch.manual_seed(5)
    actor = build_actor(reference, obs_dim, act_dim)
    meta = {"task": "pendulum", "size": "reference", "dynamics": "ppo", "seed": 0, "iteration": 3, "env_steps": 999,
            "obs_dim": obs_dim, "act_dim": act_dim, "std": exploration_std(actor).tolist(),
            "reference": dataclasses.asdict(reference)}  # fmt: skip
    save_reference_policy(path, actor, meta)
    return path


@pytest.mark.parametrize("latent_norm", ["none", "standardize"])
def test_clone_fits_the_reference_and_train_starts_every_seed_from_it_held_for_the_delay(
    finished_runs, tmp_path, latent_norm
):
    """export -> `pretrain` -> `clone` -> `train --actor-init` (2 seeds stacked, `pwm.actor_delay_epochs` 3): the
    cloned actor acts like the reference on held-back observations, far closer than the fresh actor, and loads
    bitwise; both seeds start from it and have moved by epoch 5 (the next test follows the hold epoch by epoch).
    With the latent standardised the clone fits through the dataset's statistics and carries them: the seeds' actors
    keep them (never trained), their critics fit the same from the same data in their buffers; that clone also
    learns on 2 steps of the model's imagined latents (`clone.imagined_steps`, tests/test_clone.py)."""
    import yaml

    from flow_mbpo_pwm.cli import main
    from flow_mbpo_pwm.data.datasets import export_run
    from flow_mbpo_pwm.reference_policy import load_reference_policy

    _, runs = finished_runs
    dataset = tmp_path / "d.h5"
    assert export_run(runs[0], dataset) == 0
    policy_path = _reference_policy(tmp_path / "policy.pt")
    experiment = {**PRETRAIN_EXPERIMENT, "pretrain": {"steps": 20, "log_every": 10},
                  "clone": {"enabled": True, "steps": 300, "batch": 64, "log_every": 100,
                            "imagined_steps": 2 if latent_norm == "standardize" else 0}}  # fmt: skip
    pwm = {**experiment["train"]["pwm"], "actor_delay_epochs": 3, "latent_norm": latent_norm}
    experiment["train"] = {**experiment["train"], "pwm": pwm}
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(experiment))
    wm_path, actor_path = tmp_path / "pretrain" / "world_model.pt", tmp_path / "pretrain" / "actor.pt"
    cell = ["--config", str(config_path), "--task", "pendulum", "--size", "tiny", "--dynamics", "deterministic"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["pretrain", *cell, "--dataset", str(dataset), "--out", str(wm_path)]) == 0
        assert main(["clone", *cell, "--dataset", str(dataset), "--out", str(actor_path), "--world-model",
                     str(wm_path), "--reference-policy", str(policy_path)]) == 0  # fmt: skip
        metrics = pd.read_csv(tmp_path / "pretrain" / "clone_metrics.csv")
        assert list(metrics["step"]) == [100, 200, 300]
        assert metrics["clone_loss"].iloc[-1] < 0.5 * metrics["clone_loss"].iloc[0]

        # Held back: every tenth observation, never fitted. The cloned actor against a fresh one of the same cell.
        data, _ = read_dataset(dataset)
        obs = data["observations"].reshape(-1, 4)[::10]
        reference, _ = load_reference_policy(policy_path)
        target = reference(obs).clamp(-1, 1)
        from flow_mbpo_pwm import checkpoints
        from flow_mbpo_pwm.algorithms.pwm import SeedAgent
        from flow_mbpo_pwm.config import load_experiment

        config = load_experiment(config_path).cell("pendulum", "tiny", "deterministic", 0)
        agent = SeedAgent(4, 1, config, 0, torch.device("cpu"))
        checkpoints.load_world_model(wm_path, agent)
        fresh_error = float((agent.act(obs) - target).abs().mean())
        meta = checkpoints.load_actor(actor_path, agent, wm_path)
        assert meta["imagined_steps"] == (2 if latent_norm == "standardize" else 0)
        cloned_error = float((agent.act(obs) - target).abs().mean())
        assert meta["final"]["held_back_action_error"] == pytest.approx(cloned_error, rel=1e-5)
        assert cloned_error < 0.3 * fresh_error, (cloned_error, fresh_error)
        cloned = {k: v.clone() for k, v in agent.actor.state_dict().items()}

        folders = [tmp_path / "seed0", tmp_path / "seed1"]
        assert main(["train", *cell, "--seed", "0", "1", "--run-dir", *map(str, folders), "--epochs", "5",
                     "--world-model-init", str(wm_path), "--offline-data", str(dataset), "--actor-init",
                     str(actor_path), "--debug"]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    for folder in folders:
        rows = pd.read_csv(folder / "metrics.csv")
        assert list(rows["epoch"]) == [5] and rows["actor_lr"].iloc[0] > 0  # (the row's last epoch: past the delay)
        modules = io.torch_load(folder / "work" / "state.pt")["agent"]["modules"]
        assert any(not torch.equal(modules[f"actor.{k}"], cloned[k]) for k in cloned)  # it moved after the delay
        if latent_norm == "standardize":
            for name in ("input_norm.mean", "input_norm.std"):
                assert torch.equal(modules[f"actor.{name}"], cloned[name])
                torch.testing.assert_close(modules[f"critic.{name}"], cloned[name])
            assert cloned["input_norm.std"].max() < 1.0  # fitted (unfitted: ones)


def test_the_actor_is_held_for_the_delay_and_starts_bitwise_from_the_clone(finished_runs, tmp_path):
    """Epoch by epoch through `PWM.epoch`: a cloned actor stays bitwise as loaded for `actor_delay_epochs` epochs
    (its learning rate 0) while the critic changes; the next epoch it moves."""
    from flow_mbpo_pwm import checkpoints, envs
    from flow_mbpo_pwm.algorithms.pwm import PWM
    from flow_mbpo_pwm.config import with_overrides
    from flow_mbpo_pwm.data.datasets import export_run, load_dataset

    experiment, runs = finished_runs
    config = with_overrides(experiment.cell("pendulum", "tiny", "deterministic", 0), pwm={"actor_delay_epochs": 2})
    source = PWM(4, 1, config, "cpu")
    checkpoints.save_world_model(tmp_path / "wm.pt", source, {"steps": 0, "config": config.to_dict()})
    torch.manual_seed(9)
    clone_actor = PWM(4, 1, with_overrides(config, run={"seed": 9}), "cpu").members[0].actor
    meta = {"config": config.to_dict(), "world_model_digest": checkpoints.world_model_digest(tmp_path / "wm.pt")}
    checkpoints.save_actor(tmp_path / "actor.pt", clone_actor, meta)

    agent = PWM(4, 1, config, "cpu")
    checkpoints.load_world_model(tmp_path / "wm.pt", agent.members[0])
    checkpoints.load_actor(tmp_path / "actor.pt", agent.members[0], tmp_path / "wm.pt")
    agent.members[0].warmed_up = True
    export_run(runs[0], tmp_path / "d.h5")
    buffer = load_dataset(tmp_path / "d.h5", "cpu", 4, 1, horizon=config.pwm.horizon)
    env = envs.make_from_config(config.env, "cpu", seed=0, num_envs=config.env.num_envs)
    obs = env.reset()
    loaded = {k: v.clone() for k, v in clone_actor.state_dict().items()}
    critic = {k: v.clone() for k, v in agent.members[0].critic.state_dict().items()}
    for epochs_done in range(3):
        obs, _ = agent.epoch(env, obs, buffer, config.pwm.schedule_progress(epochs_done))
        actor = agent.members[0].actor.state_dict()
        same = all(torch.equal(actor[k], loaded[k]) for k in loaded)
        assert same == (epochs_done < 2), epochs_done  # held for epochs 1-2, moved in epoch 3
    assert any(not torch.equal(v, critic[k]) for k, v in agent.members[0].critic.state_dict().items())


def test_a_cloned_actor_is_refused_for_another_world_model_or_shape(finished_runs, tmp_path):
    from flow_mbpo_pwm import checkpoints
    from flow_mbpo_pwm.algorithms.pwm import PWM
    from flow_mbpo_pwm.config import with_overrides

    experiment, _ = finished_runs
    config = experiment.cell("pendulum", "tiny", "deterministic", 0)
    for seed in (0, 1):
        agent = PWM(4, 1, with_overrides(config, run={"seed": seed}), "cpu")
        checkpoints.save_world_model(tmp_path / f"wm{seed}.pt", agent, {"steps": 0, "config": config.to_dict()})
    meta = {"config": config.to_dict(), "world_model_digest": checkpoints.world_model_digest(tmp_path / "wm0.pt")}
    checkpoints.save_actor(tmp_path / "actor.pt", agent.members[0].actor, meta)
    with pytest.raises(checkpoints.CheckpointError, match="another world model than"):
        checkpoints.load_actor(tmp_path / "actor.pt", PWM(4, 1, config, "cpu").members[0], tmp_path / "wm1.pt")
    wider = PWM(4, 1, with_overrides(config, pwm={"actor_units": [48]}), "cpu").members[0]
    with pytest.raises(checkpoints.CheckpointError, match=r"pwm.actor_units=\[32\]"):
        checkpoints.load_actor(tmp_path / "actor.pt", wider, tmp_path / "wm0.pt")
    standardizing = PWM(4, 1, with_overrides(config, pwm={"latent_norm": "standardize"}), "cpu").members[0]
    with pytest.raises(checkpoints.CheckpointError, match="pwm.latent_norm='none'"):
        checkpoints.load_actor(tmp_path / "actor.pt", standardizing, tmp_path / "wm0.pt")
    with pytest.raises(checkpoints.CheckpointError, match="not a flow-mbpo-pwm/actor/1"):
        checkpoints.load_actor(tmp_path / "wm0.pt", PWM(4, 1, config, "cpu").members[0], tmp_path / "wm0.pt")
