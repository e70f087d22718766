"""The batched env contract (docs/contracts.md "Environments"), checked on the Ant and on a Gymnasium task."""

from __future__ import annotations

import sys

import pytest
import torch

from flow_mbpo_pwm.config import EnvConfig
from flow_mbpo_pwm.envs import make, make_from_config

N_ENVS = 4  # the session envs of conftest.py


def random_actions(env, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(env.num_envs, env.act_dim, generator=generator) * 2.0 - 1.0


def test_shapes_dtypes_and_attributes(env):
    assert env.num_envs == N_ENVS and env.device == torch.device("cpu")
    assert env.max_episode_steps >= 1
    obs = env.reset()
    assert obs.shape == (N_ENVS, env.obs_dim) and obs.dtype == torch.float32
    obs, reward, terminated, truncated, info = env.step(torch.zeros(N_ENVS, env.act_dim))
    assert obs.shape == (N_ENVS, env.obs_dim) and obs.dtype == torch.float32
    assert reward.shape == (N_ENVS,) and reward.dtype == torch.float32
    assert terminated.shape == (N_ENVS,) and terminated.dtype == torch.bool
    assert truncated.shape == (N_ENVS,) and truncated.dtype == torch.bool
    assert info["final_obs"].shape == (N_ENVS, env.obs_dim) and info["final_obs"].dtype == torch.float32
    for t in (obs, reward, terminated, truncated, info["final_obs"]):
        assert t.device == env.device
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()


def test_ant_dimensions(ant_env):
    assert (ant_env.obs_dim, ant_env.act_dim, ant_env.max_episode_steps) == (37, 8, 1000)


def test_final_obs_equals_obs_except_for_done_rows(env):
    env.reset()
    g = torch.Generator().manual_seed(1)
    seen_done = False
    for _ in range(40):
        obs, _, terminated, truncated, info = env.step(random_actions(env, g))
        done = terminated | truncated
        assert torch.equal(info["final_obs"][~done], obs[~done])
        if done.any():
            seen_done = True
            assert not torch.equal(info["final_obs"][done], obs[done])
    if env.task != "ant":  # InvertedPendulum falls within 40 random steps; the Ant does not (see test_ant_*)
        assert seen_done


def test_state_dict_continues_bitwise(env):
    """Run k steps, save, run m more; restore, run the same m actions: identical (CPU)."""
    env.reset()
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        env.step(random_actions(env, g))
    saved = env.state_dict()
    actions = [random_actions(env, g) for _ in range(12)]
    first = [env.step(a) for a in actions]
    env.load_state_dict(saved)
    assert torch.equal(env.current_obs(), saved["obs"].to(env.current_obs().dtype))
    second = [env.step(a) for a in actions]
    for (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) in zip(first, second, strict=True):
        assert torch.equal(o1, o2) and torch.equal(r1, r2)
        assert torch.equal(te1, te2) and torch.equal(tr1, tr2)
        assert torch.equal(i1["final_obs"], i2["final_obs"])


def test_state_dict_survives_torch_save_weights_only(env, tmp_path):
    from flow_mbpo_pwm.io import torch_load

    env.reset()
    path = tmp_path / "env.pt"
    torch.save(env.state_dict(), path)
    restored = torch_load(path)
    env.load_state_dict(restored)


def test_wrong_action_shape_raises_naming_expected_shape(env):
    env.reset()
    with pytest.raises(ValueError, match=rf"\({N_ENVS}, {env.act_dim}\)"):
        env.step(torch.zeros(N_ENVS, env.act_dim + 1))
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(N_ENVS + 1, env.act_dim))
    with pytest.raises(ValueError, match="torch.Tensor"):
        env.step([[0.0] * env.act_dim] * N_ENVS)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_actions_raise_and_leave_state_untouched(env, bad):
    env.reset()
    before = env.state_dict()
    actions = torch.zeros(N_ENVS, env.act_dim)
    actions[1, 0] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        env.step(actions)
    after = env.state_dict()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


def test_unchecked_nonfinite_actions_become_zero_and_are_counted(env):
    """check_actions=False (the CUDA default): no host check; NaN is applied as 0 and counted."""
    env.reset()
    saved = env.state_dict()
    env.check_actions = False
    try:
        count0 = int(env.nonfinite_actions.item())
        nan_actions = torch.zeros(N_ENVS, env.act_dim)
        nan_actions[0, 0] = float("nan")
        obs_nan = env.step(nan_actions)[0]
        assert int(env.nonfinite_actions.item()) == count0 + 1
        assert torch.isfinite(obs_nan).all()
        with pytest.raises(ValueError, match="non-finite"):
            env.raise_if_nonfinite_actions()
        env.load_state_dict(saved)
        obs_zero = env.step(torch.zeros(N_ENVS, env.act_dim))[0]
        assert torch.equal(obs_nan, obs_zero)
    finally:
        env.check_actions = True
        env.load_state_dict(saved)


def test_actions_are_clipped_to_unit_box(env):
    env.reset()
    saved = env.state_dict()
    g = torch.Generator().manual_seed(3)
    big = random_actions(env, g) * 7.0
    obs_big = env.step(big)[0]
    env.load_state_dict(saved)
    obs_clipped = env.step(big.clamp(-1.0, 1.0))[0]
    assert torch.equal(obs_big, obs_clipped)


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="unknown task 'humanoid'"):
        make("humanoid", 2, "cpu", 0)


@pytest.mark.parametrize("num_envs", [0, -3, 1.5, True])
def test_bad_num_envs_raises(task, num_envs):
    with pytest.raises(ValueError, match="num_envs"):
        make(task, num_envs, "cpu", 0)


def test_unknown_override_raises_naming_it(task):
    with pytest.raises(ValueError, match="frobnicate"):
        make(task, 2, "cpu", 0, frobnicate=1)


@pytest.mark.parametrize("seed", [-1, 1.0, None])
def test_bad_seed_raises(task, seed):
    with pytest.raises(ValueError, match="seed"):
        make(task, 2, "cpu", seed)


def test_bad_episode_length_raises(task):
    with pytest.raises(ValueError, match="episode_length"):
        make(task, 2, "cpu", 0, episode_length=0)


def test_unknown_gym_id_raises():
    pytest.importorskip("gymnasium")
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        make("gym:NoSuchEnv-v0", 2, "cpu", 0)


def test_make_from_config_gym_truncates_at_episode_length():
    pytest.importorskip("mujoco")
    cfg = EnvConfig(task="gym:InvertedPendulum-v5", num_envs=3, episode_length=3)
    env = make_from_config(cfg, "cpu", seed=5, num_envs=2)
    assert env.num_envs == 2 and env.max_episode_steps == 3
    env.reset()
    flags = [env.step(torch.zeros(2, 1))[3] for _ in range(3)]
    assert not flags[0].any() and not flags[1].any() and flags[2].all()


def test_gym_seeded_determinism():
    pytest.importorskip("mujoco")
    runs = []
    for _ in range(2):
        env = make("gym:InvertedPendulum-v5", 3, "cpu", seed=11)
        g = torch.Generator().manual_seed(4)
        traj = [env.reset()]
        traj += [env.step(random_actions(env, g))[0] for _ in range(30)]
        runs.append(torch.stack(traj))
    assert torch.equal(runs[0], runs[1])
    other = make("gym:InvertedPendulum-v5", 3, "cpu", seed=12).reset()
    assert not torch.equal(other, runs[0][0])


def test_gym_classic_control_resume_across_auto_resets():
    """Pendulum keeps its whole dynamic state in `unwrapped.state`: resume is exact there too."""
    pytest.importorskip("gymnasium")
    env = make("gym:Pendulum-v1", 2, "cpu", seed=0, episode_length=8)
    env.reset()
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        env.step(random_actions(env, g))
    saved = env.state_dict()
    actions = [random_actions(env, g) for _ in range(12)]  # crosses an auto-reset at step 8
    first = [env.step(a) for a in actions]
    env.load_state_dict(saved)
    second = [env.step(a) for a in actions]
    assert any(step[3].any() for step in first)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_gym_discrete_action_space_is_refused():
    pytest.importorskip("gymnasium")
    with pytest.raises(ValueError, match="Box observation and action spaces"):
        make("gym:CartPole-v1", 2, "cpu", 0)


def test_missing_gymnasium_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # as if the optional extra were not installed
    with pytest.raises(ImportError, match=r"flow-mbpo-pwm\[gym\]"):
        make("gym:InvertedPendulum-v5", 1, "cpu", 0)


def test_a_list_of_seeds_makes_blocks_each_drawing_as_a_lone_env_with_its_seed(task):
    """A stack of seeds steps one batched env: block s of `make(task, S * n, seed=[s_0, ...])` resets, steps, ends
    and resets its episodes exactly (bitwise) as `make(task, n, seed=s_s)` does, under the same actions."""
    seeds, n = [5, 0, 9], 2
    stacked = make(task, n * len(seeds), "cpu", seeds, episode_length=6)
    lone = [make(task, n, "cpu", seed, episode_length=6) for seed in seeds]
    generator = torch.Generator().manual_seed(0)
    obs = stacked.reset()
    for s, env in enumerate(lone):
        assert torch.equal(obs[s * n : (s + 1) * n], env.reset())
    for _ in range(14):  # more than two episodes: resets draw from every block's own streams
        actions = torch.rand(n * len(seeds), stacked.act_dim, generator=generator) * 2 - 1
        out = stacked.step(actions)
        for s, env in enumerate(lone):
            rows = slice(s * n, (s + 1) * n)
            mine = env.step(actions[rows])
            for a, b in zip(out[:4], mine[:4], strict=True):
                assert torch.equal(a[rows], b)
            assert torch.equal(out[4]["final_obs"][rows], mine[4]["final_obs"])
    assert not torch.equal(obs[:n], obs[n : 2 * n])  # the blocks really differ


@pytest.mark.parametrize("seeds", [[0, 1, 2], [0, 1.5], [-1, 2], []])
def test_seed_blocks_must_split_the_envs_evenly_and_be_valid_seeds(task, seeds):
    with pytest.raises(ValueError, match="seed"):
        make(task, 4, "cpu", seeds)
