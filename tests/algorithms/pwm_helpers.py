"""Small real configurations for PWM tests (a Gymnasium MuJoCo task through the env registry)."""

from __future__ import annotations

from flow_mbpo_pwm.config import DYNAMICS_PRESETS, SIZE_PRESETS, EnvConfig, TrainConfig, with_overrides

TASK = "gym:InvertedPendulum-v5"


def small_config(
    dynamics: str = "deterministic",
    num_envs: int = 4,
    horizon: int = 4,
    world_model=None,
    dynamics_overrides=None,
    **pwm,
) -> TrainConfig:
    config = TrainConfig(
        task_name="pendulum", size="tiny", dynamics_name=dynamics,
        env=EnvConfig(task=TASK, num_envs=num_envs, episode_length=200),
        world_model=SIZE_PRESETS["tiny"], dynamics=DYNAMICS_PRESETS[dynamics],
    )  # fmt: skip
    small = {
        "horizon": horizon, "actor_units": [64, 32], "critic_units": [64, 32], "critic_iterations": 2,
        "critic_minibatches": 2, "wm_batch": 16, "wm_steps": 2, "wm_warmup_steps": 5, "buffer_size": 4000,
        "epochs": 10,
    }  # fmt: skip
    return with_overrides(
        config, pwm={**small, **pwm}, world_model=world_model or {}, dynamics=dynamics_overrides or {}
    )
