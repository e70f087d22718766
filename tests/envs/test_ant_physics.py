"""The Ant's physics and task definition: mass, free fall, the calibration (standing, random torques),
observation and reward terms on hand-set states, termination height, masked stochastic reset, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flow_mbpo_pwm.config import EnvConfig
from flow_mbpo_pwm.envs import make, make_from_config
from flow_mbpo_pwm.envs.ant import (
    RESET_JOINT_NOISE,
    RESET_POS_NOISE,
    RESET_ROT_NOISE,
    RESET_VEL_NOISE,
    START_HEIGHT,
    START_HINGES,
    AntCalibration,
)
from flow_mbpo_pwm.envs.calibrate import random_torques, standing

START_Q = torch.tensor([0.0, 0.0, START_HEIGHT, 0.0, 0.0, 0.0, 1.0, *START_HINGES])


def placed(
    env,
    root_pos=(0.0, 0.0, START_HEIGHT),
    root_quat=(0.0, 0.0, 0.0, 1.0),
    hinges=START_HINGES,
    root_vel=(0.0,) * 6,
    hinge_vel=(0.0,) * 8,
):
    q = torch.tensor([*root_pos, *root_quat, *hinges], dtype=torch.float32).repeat(env.num_envs, 1)
    qd = torch.tensor([*root_vel, *hinge_vel], dtype=torch.float32).repeat(env.num_envs, 1)
    return q, qd


def rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    return r @ v


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def test_total_and_body_masses(ant_env):
    masses = ant_env.body_masses()
    assert masses.sum(dim=1) == pytest.approx(torch.full((ant_env.num_envs,), 182.2), rel=0.01)
    expected = [96.78] + [7.83, 13.52] * 4  # torso, then thigh/foot of legs 1..4 (dflex's values)
    assert masses[0].tolist() == pytest.approx(expected, rel=0.005)


def test_free_fall_matches_half_g_t_squared(ant_env):
    """High above the ground with zero velocity: no contact, no internal force; the torso falls g t^2 / 2."""
    ant_env.reset()
    height0 = 5.0
    ant_env.set_joint_state(*placed(ant_env, root_pos=(0.0, 0.0, height0)))
    steps = 12
    for _ in range(steps):
        obs, _, terminated, truncated, _ = ant_env.step(torch.zeros(ant_env.num_envs, 8))
    assert not (terminated | truncated).any()
    t = steps / 60.0
    g = 9.81
    drop = height0 - obs[:, 0]
    assert drop == pytest.approx(torch.full_like(drop, 0.5 * g * t * t), rel=0.01)
    vz = -obs[:, 6]  # dflex frame: obs[5:8] = (vx, vz, -vy) of Newton's Z-up velocity -> index 6 is height rate
    assert (-vz) == pytest.approx(torch.full_like(vz, -g * t), rel=0.01)
    # it stays upright and the legs keep their pose while falling
    assert obs[:, 27] == pytest.approx(torch.ones_like(drop), abs=1e-4)
    assert obs[:, 11:19] == pytest.approx(torch.tensor(START_HINGES).repeat(ant_env.num_envs, 1), abs=1e-3)


def test_stands_10_seconds_above_termination_height():
    """Calibration: zero torque from the dflex reset distribution, 10 s of simulated time (CALIBRATION.md).
    A fresh env (building one is cheap once kernels are loaded) so the start states do not depend on test order."""
    result = standing(make("ant", 4, "cpu", seed=0), seconds=10.0)
    assert not result["terminated"] and not result["nan"]
    assert result["min_height_after_1s"] > 0.30  # measured 0.323 (16 ants)
    assert result["final_height_min"] > 0.335 and result["final_height_max"] < 0.36  # measured 0.345-0.347
    assert result["final_penetration_cm"] < 1.0  # measured 0.29 cm
    assert result["final_abs_ankle_deg_min"] > 28.0  # ankles rest on their 30 deg limit


def test_random_torques_neither_explode_nor_tunnel():
    result = random_torques(make("ant", 4, "cpu", seed=1), steps=300, seed=1)
    assert result["nonfinite_rows"] == 0 and result["physics_failures"] == 0
    assert result["max_torso_speed"] < 8.0  # measured ~2.8 m/s over 16 x 1000 steps
    assert result["max_penetration_cm"] < 5.0  # nothing sinks into the ground (measured 2.0 cm)
    assert result["min_torso_height"] > 0.2


def test_observation_and_reward_terms_on_hand_set_state(ant_env):
    ant_env.reset()
    half = math.pi / 12
    root_quat = (0.0, 0.0, math.sin(half), math.cos(half))  # 30 deg yaw
    hinges = (0.1, 0.9, -0.2, -0.8, 0.3, -1.1, -0.3, 1.2)
    root_vel = (1.5, 0.3, -0.2, 0.1, 0.2, 0.3)  # Newton: linear (x, y, z), angular (x, y, z), world frame
    hinge_vel = (0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 0.0, 3.0)
    pos = (1.0, 2.0, 0.5)
    obs = ant_env.set_joint_state(*placed(ant_env, pos, root_quat, hinges, root_vel, hinge_vel))[0]
    result = ant_env.evaluate_state()

    q = np.array(root_quat)
    c = np.array([-math.sin(math.pi / 4), 0.0, 0.0, math.cos(math.pi / 4)])  # dflex start rotation
    up = rotate(q, np.array([0.0, 0.0, 1.0]))[2]
    to_target = np.array([10_000.0 - pos[0], -pos[1], 0.0])
    heading = rotate(q, np.array([1.0, 0.0, 0.0])) @ (to_target / np.linalg.norm(to_target))
    expected = np.concatenate(
        [
            [pos[2]],
            quat_mul(c, q),
            [root_vel[0], root_vel[2], -root_vel[1]],  # dflex Y-up frame
            [root_vel[3], root_vel[5], -root_vel[4]],
            hinges,
            0.1 * np.array(hinge_vel),
            [up, heading],
            np.zeros(8),  # previous action (none since the reset)
        ]
    )
    assert obs.numpy() == pytest.approx(expected, abs=2e-4)
    terms = result["reward_terms"][0].numpy()
    forward, up_term, heading_term, height_term, penalty = terms
    assert forward == pytest.approx(1.5, abs=1e-5)
    assert up_term == pytest.approx(0.1 * up, abs=1e-5)
    assert heading_term == pytest.approx(heading, abs=1e-5)
    assert height_term == pytest.approx(0.5 - 0.27, abs=1e-5)
    assert penalty == 0.0  # dflex's Ant has action penalty 0
    assert float(result["reward"][0]) == pytest.approx(float(terms.sum()), abs=1e-5)
    assert not result["terminated"].any()


def test_termination_at_calibrated_height(ant_env):
    assert AntCalibration().termination_height == 0.27
    ant_env.reset()
    q, qd = placed(ant_env)
    q[:, 2] = torch.tensor([0.265, 0.275, 0.2699, 0.2701])
    ant_env.set_joint_state(q, qd)
    result = ant_env.evaluate_state()
    assert result["terminated"].tolist() == [True, False, True, False]
    assert not result["truncated"].any()


def test_masked_reset_touches_only_done_envs(ant_env):
    ant_env.reset()
    for _ in range(5):
        ant_env.step(torch.full((ant_env.num_envs, 8), 0.3))
    before = ant_env.state_dict()
    mask = torch.tensor([True, False, True, False])
    obs = ant_env.reset_envs(mask)
    after = ant_env.state_dict()
    for key in ("body_q", "body_qd", "joint_q", "joint_qd", "prev_actions", "episode_step", "reset_count", "obs"):
        b = before[key].reshape(ant_env.num_envs, -1)  # per-env rows (bodies, coordinates, dofs flattened)
        a = after[key].reshape(ant_env.num_envs, -1)
        assert torch.equal(a[~mask], b[~mask]), key  # untouched, bitwise
        assert not torch.equal(a[mask], b[mask]), key  # re-sampled
    assert torch.equal(after["reset_count"] - before["reset_count"], mask.int())
    assert (after["episode_step"][mask] == 0).all() and (after["prev_actions"][mask] == 0).all()
    assert torch.equal(obs, after["obs"])


def test_reset_noise_stays_in_dflex_ranges(ant_env):
    qs, qds = [], []
    everyone = torch.ones(ant_env.num_envs, dtype=torch.bool)
    for _ in range(25):
        ant_env.reset_envs(everyone)
        q, qd = ant_env.joint_state()
        qs.append(q)
        qds.append(qd)
    q, qd = torch.cat(qs), torch.cat(qds)
    tol = 1e-4  # FK/IK round trip
    pos_noise = q[:, :3] - START_Q[:3]
    hinge_noise = q[:, 7:] - START_Q[7:]
    angle = 2 * torch.acos(q[:, 6].abs().clamp(max=1.0))
    for noise, bound in (
        (pos_noise, RESET_POS_NOISE),
        (hinge_noise, RESET_JOINT_NOISE),
        (qd, RESET_VEL_NOISE),
        (angle, RESET_ROT_NOISE),
    ):
        assert noise.abs().max() <= bound + tol
        assert noise.abs().max() > 0.8 * bound  # the noise really spans its range (100 draws)
    assert pos_noise.mean(dim=0).abs().max() < 0.3 * RESET_POS_NOISE  # centred


def test_seeded_determinism_and_seed_sensitivity():
    """Same seed, same actions: bitwise identical trajectories, auto-resets included; another seed differs."""

    def rollout(seed: int) -> torch.Tensor:
        env = make("ant", 2, "cpu", seed, episode_length=7)
        g = torch.Generator().manual_seed(0)
        frames = [env.reset()]
        for _ in range(16):
            obs, reward, _, truncated, info = env.step(torch.rand(2, 8, generator=g) * 2 - 1)
            frames += [obs, info["final_obs"], reward[:, None].expand(2, 37)]
        assert truncated.dtype == torch.bool
        return torch.stack(frames)

    first, second, other = rollout(3), rollout(3), rollout(4)
    assert torch.equal(first, second)
    assert not torch.equal(first[0], other[0])


def test_truncation_at_episode_length_and_auto_reset():
    env = make_from_config(EnvConfig(task="ant", num_envs=3, episode_length=5), "cpu", seed=0, num_envs=2)
    assert env.num_envs == 2 and env.max_episode_steps == 5 and env.solver_name == "semi_implicit"
    env.reset()
    for i in range(5):
        obs, _, terminated, truncated, info = env.step(torch.zeros(2, 8))
        assert not terminated.any()
        assert bool(truncated.all()) == (i == 4)
    # post-reset obs: fresh start height, zero previous action; final_obs: the settled pre-reset state
    assert ((obs[:, 0] - START_HEIGHT).abs() <= RESET_POS_NOISE + 1e-4).all()
    assert (obs[:, 29:] == 0).all()
    assert not torch.equal(obs, info["final_obs"])
    assert env.state_dict()["episode_step"].tolist() == [0, 0]


def test_featherstone_solver_runs_and_resumes_bitwise():
    env = make("ant", 2, "cpu", 0, solver="featherstone")
    env.reset()
    g = torch.Generator().manual_seed(5)
    for _ in range(10):
        env.step(torch.rand(2, 8, generator=g) * 2 - 1)
    saved = env.state_dict()
    actions = [torch.rand(2, 8, generator=g) * 2 - 1 for _ in range(10)]
    first = [env.step(a)[0] for a in actions]
    env.load_state_dict(saved)
    second = [env.step(a)[0] for a in actions]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.isfinite(torch.stack(first)).all()
    assert (torch.stack(first)[:, :, 0] > 0.27).all()


def test_bad_calibration_and_solver_raise():
    with pytest.raises(ValueError, match="contact_ke"):
        make("ant", 1, "cpu", 0, contact_ke=-1.0)
    with pytest.raises(ValueError, match="solver 'xpbd'"):
        make("ant", 1, "cpu", 0, solver="xpbd")


def test_deterministic_mode_matches_default_on_cpu():
    """`deterministic=True` (sorted contacts, ordered atomics; meant for CUDA) changes nothing on CPU."""
    finals = []
    for deterministic in (False, True):
        env = make("ant", 2, "cpu", 0, deterministic=deterministic)
        env.reset()
        g = torch.Generator().manual_seed(6)
        for _ in range(20):
            obs = env.step(torch.rand(2, 8, generator=g) * 2 - 1)[0]
        finals.append(obs)
    assert torch.equal(finals[0], finals[1])


def test_dflex_calibration_makes_an_idle_ant_fall_within_a_hundred_steps():
    """`env.calibration: dflex`: with dflex's own constants a zero-torque ant sinks below the termination height
    within tens of steps (dflex's Ant did; the default calibration keeps it standing, tested above)."""
    env = make_from_config(EnvConfig(task="ant", num_envs=8, episode_length=1000, calibration="dflex"), "cpu", seed=0)
    assert env.calibration.contact_ke == 4.0e4 and env.calibration.joint_attach_ke == 1.0e4
    env.reset()
    ended = torch.zeros(8, dtype=torch.bool)
    for _ in range(100):
        obs, _, terminated, _, _ = env.step(torch.zeros(8, 8))
        ended |= terminated
        assert torch.isfinite(obs).all()
    assert ended.all()


def test_calibration_applies_to_the_ant_only():
    with pytest.raises(ValueError, match="only apply to the Ant"):
        make_from_config(EnvConfig(task="gym:InvertedPendulum-v5", calibration="dflex"), "cpu", seed=0)
