"""Learning is real: PWM with deterministic and with flow-matching dynamics each raise the deterministic validation
return of a real task far above what a random policy gets on the same validation seeds.

Task: Gymnasium InvertedPendulum-v5 (obs 4, act 1) through the env registry, episodes of at most 100 steps; reward 1
per step while the pole is up, so a balancing policy scores ~100 and a random policy ~3.6 (on these validation
seeds). The run is the real CLI in a subprocess (as Snakemake runs it), with the tiny size preset and small
actor/critic; seeds are fixed.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from train_helpers import LEARNING_RUN, cli_args, deep_update, run_cli

from flow_mbpo_pwm import envs
from flow_mbpo_pwm.config import load_experiment


def random_policy_return(config, episodes: int) -> float:
    """Mean first-episode return of uniform random actions on the run's validation env (same seeds)."""
    env = envs.make_from_config(config.env, "cpu", seed=config.run.validation_seed_base + config.run.seed,
                                num_envs=episodes)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    env.reset()
    returns = torch.zeros(episodes, dtype=torch.float64)
    running = torch.ones(episodes, dtype=torch.bool)
    for _ in range(env.max_episode_steps):
        actions = torch.rand(episodes, env.act_dim, generator=generator) * 2 - 1
        _, reward, terminated, truncated, _ = env.step(actions)
        returns += reward.double() * running
        running &= ~(terminated | truncated)
    return float(returns.mean())


# Flow learns the pendulum later than deterministic dynamics, and when is a lottery: at 300 epochs (the deterministic
# run's) seed 1 of seeds 0-4 had not learned (best 37), and seed 0 failed on CI (best 41) while passing on another
# machine (best 82): the same seed, rounded differently, learned at a different epoch. At 500 epochs every one of 10
# runs measured (seeds 0-6 alone, seeds 0-2 as a stack) balanced (best 100), later-half means 34-94. (The world
# model's steps doubled instead, at 300 epochs: 4 of seeds 0-4, seed 3 never learned.)
FLOW_EPOCHS = 500


@pytest.mark.parametrize("dynamics", ["deterministic", "flow"])
def test_pwm_learns_to_balance_the_pendulum(dynamics, tmp_path, write_experiment):
    flow_changes = {"train": {"pwm": {"epochs": FLOW_EPOCHS}}}
    path = write_experiment(deep_update(LEARNING_RUN, flow_changes) if dynamics == "flow" else LEARNING_RUN)
    config = load_experiment(path).cell("pendulum", "tiny", dynamics, 0)
    random_return = random_policy_return(config, 8)
    assert random_return < 15  # the task is not trivially solved

    done = run_cli(cli_args(path, tmp_path / "run", dynamics=dynamics))
    assert done.returncode == 0, done.stdout + done.stderr
    validation = pd.read_csv(tmp_path / "run" / "validation.csv")
    best = validation["val_return_mean"].max()
    print(f"{dynamics}: random {random_return:.1f}, validation returns {validation['val_return_mean'].tolist()}")
    # Far above random (random 3.6, doing nothing ~23, balancing to the end 100): the best validation (the one
    # `select` would pick) at least 45 and 6x random, and not a one-off: the later half of the validations
    # averages at least 25 points above random too. (Measured with these settings, raw-reward default:
    # deterministic, seeds 0-3, best 100, later-half means 81-91; flow, seeds 0-6, best 100, later-half means 34-94.)
    assert best >= max(45.0, 6 * random_return)
    later = validation["val_return_mean"].iloc[len(validation) // 2 :].mean()
    assert later >= random_return + 25
