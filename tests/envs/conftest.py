"""Session-scoped envs: Newton model builds and Warp kernel loads are the slow part, so every test shares a few
small envs. Tests that need a known state put it there themselves (reset, set_joint_state, load_state_dict)."""

from __future__ import annotations

import pytest

from flow_mbpo_pwm.envs import make

N_ENVS = 4


@pytest.fixture(scope="session")
def ant_env():
    return make("ant", N_ENVS, "cpu", seed=0)


@pytest.fixture(scope="session")
def gym_env():
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    return make("gym:InvertedPendulum-v5", N_ENVS, "cpu", seed=0)


@pytest.fixture(params=["ant", "gym"])
def env(request):
    """The interface tests run against both backends."""
    return request.getfixturevalue(f"{request.param}_env")


@pytest.fixture(params=["ant", "gym"])
def task(request):
    return "ant" if request.param == "ant" else "gym:InvertedPendulum-v5"
