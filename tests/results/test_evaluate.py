"""`evaluate` runs exactly N held-out episodes on a real Gymnasium task, records them consistently, uses seeds
disjoint from training and validation, refuses a checkpoint that does not fit the cell before stepping any env, and
leaves no partial output behind when it fails."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from flow_mbpo_pwm import checkpoints, envs, io
from flow_mbpo_pwm.checkpoints import load_policy
from flow_mbpo_pwm.cli import main
from flow_mbpo_pwm.config import with_overrides
from flow_mbpo_pwm.evaluate import EPISODE_COLUMNS, evaluate

TASK, TIME_LIMIT_TASK = "pendulum", "swing"  # the Gymnasium-backed tasks of the `experiment` fixture (conftest.py)


class EnvSpy:
    """Wraps `envs.make_from_config` to record how evaluate built its env and how often it stepped it."""

    def __init__(self, monkeypatch):
        self.calls, self.resets, self.steps = [], 0, 0
        real = envs.make_from_config

        def make_from_config(env_config, device, seed, num_envs=None):
            self.calls.append({"seed": seed, "num_envs": num_envs, "task": env_config.task})
            env = real(env_config, device, seed=seed, num_envs=num_envs)
            reset, step = env.reset, env.step

            def counted_reset(*args, **kwargs):
                self.resets += 1
                return reset(*args, **kwargs)

            def counted_step(*args, **kwargs):
                self.steps += 1
                return step(*args, **kwargs)

            env.reset, env.step = counted_reset, counted_step
            return env

        monkeypatch.setattr(envs, "make_from_config", make_from_config)


def cpu_cell(experiment, task: str, size: str = "tiny", dynamics: str = "deterministic", seed: int = 3):
    return with_overrides(experiment.cell(task, size, dynamics, seed), run={"device": "cpu"})


@pytest.fixture
def cell(experiment):
    return cpu_cell(experiment, TASK)


@pytest.fixture
def checkpoint(tmp_path, cell, task_dims, save_checkpoint):
    return save_checkpoint(tmp_path / "best.pt", cell, *task_dims, epoch=40, val_return=3.0)


@pytest.mark.parametrize("task", [TASK, TIME_LIMIT_TASK])
def test_writes_exactly_n_consistent_episodes_on_held_out_seeds(
    tmp_path, experiment, save_checkpoint, env_dims, monkeypatch, task
):
    cell = cpu_cell(experiment, task)
    episode_length = cell.env.episode_length
    checkpoint = save_checkpoint(tmp_path / "best.pt", cell, *env_dims(cell.env.task), epoch=40, val_return=3.0)
    spy = EnvSpy(monkeypatch)
    episodes = 7  # 2 envs: env 0 plays 4 episodes, env 1 plays 3
    out_csv, out_h5 = tmp_path / "episodes.csv", tmp_path / "trajectories.h5"
    assert evaluate(cell, experiment.evaluation, checkpoint, episodes, out_csv, out_h5) == 0

    table = pd.read_csv(out_csv)
    assert list(table.columns) == list(EPISODE_COLUMNS)
    assert len(table) == episodes and list(table.episode) == list(range(episodes))
    assert (table[["task", "size", "dynamics", "seed"]] == [task, "tiny", "deterministic", 3]).all().all()
    assert (table.length >= 1).all() and (table.length <= episode_length).all()
    assert (table.terminated | table.truncated).all()
    assert (table.length[~table.terminated] == episode_length).all()  # only the time limit ends them early
    if task == TASK:  # the pole falls: at least one episode ends before the time limit, by termination
        assert (table.terminated & (table.length < episode_length)).any()
    else:  # Pendulum-v1 never terminates: every episode runs to the time limit
        assert table.truncated.all() and not table.terminated.any()
        assert (table.length == episode_length).all()

    # Seeds: the one env was seeded with the evaluation seed, disjoint from the training and validation seeds.
    (call,) = spy.calls
    eval_seed = experiment.evaluation.seed_base + cell.run.seed
    assert call["seed"] == eval_seed and call["num_envs"] == 2
    assert (table.eval_seed == eval_seed).all()
    train_seeds = set(experiment.seeds)
    validation_seeds = {cell.run.validation_seed_base + s for s in experiment.seeds}
    eval_seeds = {experiment.evaluation.seed_base + s for s in experiment.seeds}
    assert not eval_seeds & (train_seeds | validation_seeds)

    with h5py.File(out_h5, "r") as f:
        obs, actions, rewards, lengths = (f[k][()] for k in ("observations", "actions", "rewards", "lengths"))
        attrs = dict(f.attrs)
    obs_dim, act_dim = obs.shape[2], actions.shape[2]
    assert obs.shape == (episodes, episode_length, obs_dim) and actions.shape == (episodes, episode_length, act_dim)
    assert rewards.shape == (episodes, episode_length)
    np.testing.assert_array_equal(lengths, table.length)
    np.testing.assert_allclose(table["return"], rewards.astype(np.float64).sum(axis=1), rtol=0, atol=1e-9)
    padding = np.arange(episode_length)[None, :] >= lengths[:, None]
    assert not rewards[padding].any() and not obs[padding].any() and not actions[padding].any()
    assert (np.abs(actions) <= 1).all()
    assert attrs["checkpoint_epoch"] == 40 and attrs["task"] == task and attrs["size"] == "tiny"
    assert attrs["dynamics"] == "deterministic" and attrs["seed"] == 3

    # The recorded actions are the deterministic policy's actions on the recorded observations.
    policy, _ = load_policy(checkpoint, "cpu")
    with torch.no_grad():
        replayed = policy(torch.from_numpy(obs[~padding])).numpy()
    np.testing.assert_allclose(replayed, actions[~padding], atol=1e-6)


@pytest.mark.parametrize("tf32", [True, False])
def test_the_policy_runs_at_the_cells_matrix_precision(tmp_path, experiment, checkpoint, cell, tf32):
    """Held-out episodes run the policy as the validation that selected it did: TF32 matrix products on CUDA where
    the cell trains with `run.tf32` (a process-wide switch, so it is read back after the run), and the trajectories
    record which."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = not tf32
    cell = with_overrides(cell, run={"tf32": tf32})
    out_h5 = tmp_path / "trajectories.h5"
    try:
        assert evaluate(cell, experiment.evaluation, checkpoint, 2, tmp_path / "episodes.csv", out_h5) == 0
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    with h5py.File(out_h5) as f:
        assert bool(f.attrs["tf32"]) is tf32


def test_episode_k_of_env_i_is_episode_k_times_num_envs_plus_i(tmp_path, experiment, cell, checkpoint):
    """An independent, step-by-step replay of the same seeded env gives the same episodes in the documented order."""
    episodes, num_envs = 5, experiment.evaluation.num_envs
    out_csv = tmp_path / "episodes.csv"
    assert evaluate(cell, experiment.evaluation, checkpoint, episodes, out_csv, tmp_path / "t.h5") == 0
    table = pd.read_csv(out_csv)

    policy, _ = load_policy(checkpoint, "cpu")
    env = envs.make_from_config(cell.env, "cpu", seed=experiment.evaluation.seed_base + 3, num_envs=num_envs)
    per_env = [[] for _ in range(num_envs)]  # (return, length) of each finished episode, per env
    running, length = [0.0] * num_envs, [0] * num_envs
    obs = env.reset()
    while min(len(e) for e in per_env) < episodes:
        with torch.no_grad():
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
        for i in range(num_envs):
            running[i] += float(reward[i])
            length[i] += 1
            if terminated[i] or truncated[i]:
                per_env[i].append((running[i], length[i]))
                running[i], length[i] = 0.0, 0
    expected = [per_env[e % num_envs][e // num_envs] for e in range(episodes)]
    np.testing.assert_allclose(table["return"], [r for r, _ in expected], atol=1e-4)
    assert list(table.length) == [n for _, n in expected]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"obs_dim": +1}, "obs"),
        ({"act_dim": +1}, "act"),
        ({"size": "5M"}, "size"),
        ({"dynamics": "flow"}, "dynamics"),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_cell_is_refused_before_any_step(
    tmp_path, experiment, cell, task_dims, save_checkpoint, monkeypatch, capsys, change, named
):
    obs_dim, act_dim = task_dims
    ckpt_cell = cell
    if "obs_dim" in change:
        obs_dim += change["obs_dim"]
    if "act_dim" in change:
        act_dim += change["act_dim"]
    if "size" in change:  # a real checkpoint of the other size preset, evaluated in this cell
        ckpt_cell = experiment.cell(TASK, change["size"], "deterministic", 3)
    if "dynamics" in change:
        ckpt_cell = experiment.cell(TASK, "tiny", change["dynamics"], 3)
    checkpoint = save_checkpoint(tmp_path / "best.pt", ckpt_cell, obs_dim, act_dim, epoch=40)

    spy = EnvSpy(monkeypatch)
    out_csv, out_h5 = tmp_path / "episodes.csv", tmp_path / "trajectories.h5"
    assert evaluate(cell, experiment.evaluation, checkpoint, 3, out_csv, out_h5) != 0
    err = capsys.readouterr().err
    assert str(checkpoint) in err and named in err
    assert spy.resets == 0 and spy.steps == 0
    assert not out_csv.exists() and not out_h5.exists()


def nan_policy_checkpoint(checkpoint):
    """The real checkpoint with its actor's weights set to NaN (a policy whose actions are NaN)."""
    data = io.torch_load(checkpoint)
    data["actor"] = {k: torch.full_like(v, float("nan")) for k, v in data["actor"].items()}
    io.torch_save(checkpoint, data)
    return checkpoint


def nan_actions_after_loading(monkeypatch):
    """Policies whose actions are NaN although their checkpoint is finite (a checkpoint with NaN weights is refused
    by `load_policy`), to reach the checks that guard the episodes themselves."""
    real = checkpoints.load_policy

    def load_policy(path, device="cpu"):
        policy, meta = real(path, device)
        with torch.no_grad():
            for p in policy.actor.parameters():
                p.fill_(float("nan"))
        return policy, meta

    monkeypatch.setattr(checkpoints, "load_policy", load_policy)


def test_a_checkpoint_with_nan_weights_is_refused_before_any_step(
    tmp_path, experiment, cell, checkpoint, monkeypatch, capsys
):
    spy = EnvSpy(monkeypatch)
    out_csv, out_h5 = tmp_path / "episodes.csv", tmp_path / "trajectories.h5"
    assert evaluate(cell, experiment.evaluation, nan_policy_checkpoint(checkpoint), 3, out_csv, out_h5) != 0
    err = capsys.readouterr().err
    assert str(checkpoint) in err and "actor weight" in err and "NaN or Inf" in err
    assert spy.resets == 0 and spy.steps == 0
    assert not out_csv.exists() and not out_h5.exists()


def test_a_damaged_checkpoint_is_refused_before_any_step(
    tmp_path, experiment, cell, checkpoint, flip_bytes, monkeypatch, capsys
):
    flip_bytes(checkpoint)  # bits flipped inside a weight tensor of the file
    spy = EnvSpy(monkeypatch)
    out_csv, out_h5 = tmp_path / "episodes.csv", tmp_path / "trajectories.h5"
    assert evaluate(cell, experiment.evaluation, checkpoint, 3, out_csv, out_h5) == 1
    err = capsys.readouterr().err
    assert str(checkpoint) in err and "damaged checkpoint" in err
    assert spy.resets == 0 and spy.steps == 0
    assert not out_csv.exists() and not out_h5.exists()


@pytest.mark.parametrize("host_check", [True, False])
def test_nan_actions_fail_loudly_and_leave_nothing(
    tmp_path, experiment, cell, checkpoint, monkeypatch, capsys, host_check
):
    """With the env's host check (CPU default) the env refuses the action; without it (the Ant's CUDA default:
    NaN replaced by zero torque and only counted) evaluate's own check on the recorded actions must catch it."""
    real = envs.make_from_config
    monkeypatch.setattr(envs, "make_from_config", lambda *a, **k: real(*a, **k, check_actions=host_check))
    nan_actions_after_loading(monkeypatch)
    out_csv, out_h5 = tmp_path / "episodes.csv", tmp_path / "trajectories.h5"
    if host_check:
        with pytest.raises(ValueError, match="NaN"):
            evaluate(cell, experiment.evaluation, checkpoint, 3, out_csv, out_h5)
    else:
        assert evaluate(cell, experiment.evaluation, checkpoint, 3, out_csv, out_h5) != 0
        assert "non-finite actions in episode(s) [0, 1, 2]" in capsys.readouterr().err
    assert not out_csv.exists() and not out_h5.exists()


def test_a_failed_write_leaves_no_partial_output(tmp_path, experiment, cell, checkpoint):
    out_h5 = tmp_path / "trajectories.h5"
    out_csv = tmp_path / "episodes.csv"
    out_csv.mkdir()  # the CSV cannot be written: the trajectories written just before must go too
    with pytest.raises(OSError):
        evaluate(cell, experiment.evaluation, checkpoint, 3, out_csv, out_h5)
    assert not out_h5.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"best.pt", "episodes.csv"}  # no temp files either


def test_a_missing_checkpoint_is_refused(tmp_path, experiment, cell, capsys):
    missing = tmp_path / "best.pt"
    assert evaluate(cell, experiment.evaluation, missing, 3, tmp_path / "e.csv", tmp_path / "t.h5") != 0
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "e.csv").exists() and not (tmp_path / "t.h5").exists()


def test_the_command_line_runs_evaluate(tmp_path, experiment_yaml, checkpoint):
    out_csv, out_h5 = tmp_path / "out/episodes.csv", tmp_path / "out/trajectories.h5"
    argv = ["evaluate", "--config", str(experiment_yaml), "--task", TASK, "--size", "tiny", "--dynamics",
            "deterministic", "--seed", "3", "--device", "cpu", "--checkpoint", str(checkpoint), "--episodes", "3",
            "--out-csv", str(out_csv), "--out-h5", str(out_h5)]  # fmt: skip
    assert main(argv) == 0
    assert list(pd.read_csv(out_csv).episode) == [0, 1, 2]
