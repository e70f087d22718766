"""Does PWM's actor update, from a held gait, climb its own objective, and what does the env pay for it?
A run's saved state (`work/state.pt`) is loaded whole: world model, critics, actor, the actor's Adam state and the
objectives' running std, e.g. a cloned gait held by `pwm.actor_delay_epochs` with its critic fitted, saved at the
release. From the states of the run's own training envs at that moment (the state's observations) and one fixed
draw of the exploration noise and the dynamics' draws, the actor takes the steps PWM takes: Adam with the run's
state, betas and gradient clip, on PWM's loss (the imagined H-step objective `sum_t gamma^t r_t + coef gamma^H
V(z_H)` of `tanh(mu(sg z_t) + sigma eps_t)`, scaled by the running std of objectives), at the run's learning rate or
the ones asked for. The objective is fixed (same starts, same draws), so every step is taken on the function it is
then measured on: the best case for the update. At each of `--at` steps: that objective and its two terms, the
deterministic policy's imagined objective from the same starts, how far the actor's action moved on the starts, and
the deterministic policy's first episodes on the env (return, falls).

Why: released with PWM's settings, a cloned gait is gone within 25 epochs on the CPU testbed and within 125 on the
GPU (docs/results/2026-12-07-det-observed), while the actor's loss *rises* after the release (bench/RESULTS.md,
"PWM's update releases a held gait"). Either the step climbs the model's objective and the objective is not the
env's, or the step does not climb the objective it is taken on at all. Usage (CPU: ~15 s per row of 16 ants x 1,000
steps, plus a few seconds per Adam step for the 5M model):

    PYTHONPATH=src python bench/release_steps.py --run RUN_FOLDER --lrs 5e-4 5e-5 --at 1 2 5 10 25 --out steps.json
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch

from flow_mbpo_pwm import diagnostics, envs, io
from flow_mbpo_pwm.algorithms import pwm
from flow_mbpo_pwm.algorithms.stack import stack_draws
from flow_mbpo_pwm.config import load_train_config, with_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clone_inputs import episodes  # noqa: E402
from train_epoch import Column, report, require_files, table, write_record  # noqa: E402


class Release(NamedTuple):
    """A run restored at its saved state: the agent, its training env (restored to that state), the env's saved
    state and observations (the starts), and the run's config."""

    agent: pwm.PWM
    env: Any
    env_state: dict[str, Any]
    obs: torch.Tensor
    config: Any


def restore(run: Path, device: torch.device) -> Release:
    """`run/work/state.pt` (a lone seed's) restored: agent (models, Adam states, running statistics) and env."""
    config = with_overrides(load_train_config(run / "work" / "config.yaml"), run={"device": str(device)})
    state = io.torch_load(run / "work" / "state.pt", map_location=device)
    if len(state["stack"]) != 1:
        raise SystemExit(f"{run}: a stack of {len(state['stack'])} seeds; give one seed's run folder")
    env = envs.make_from_config(config.env, device, seed=state["env"]["meta"]["seed"])
    agent = pwm.PWM(env.obs_dim, env.act_dim, config, device, cuda_graphs=False)
    agent.load_state_dict(state["agent"])
    return Release(agent, env, state["env"], state["obs"].to(device), config)


@torch.no_grad()
def real_terms(release: Release, policy: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per env `[N]`: `sum_t gamma^t r_t` the real env pays `policy` (closed loop, on its own observations) over H
    steps from the saved state, up to the first episode end, in the world model's reward units, and
    `gamma^H V(E(o_H))`, the critic at the real state reached (0 where the episode ended): the objective's two terms
    as the env has them."""
    env, agent, cfg = release.env, release.agent, release.config.pwm
    env.load_state_dict(release.env_state)
    obs = release.obs
    alive = torch.ones(env.num_envs, dtype=torch.bool, device=obs.device)
    rewards, paid = [], []
    for _ in range(cfg.horizon):
        paid.append(alive.clone())
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        rewards.append(reward)
        alive &= ~(terminated | truncated)
    units = diagnostics.reward_units(cfg.reward_norm, agent.members[0].rew_rms, cfg.reward_clip)
    total = diagnostics.discounted_sums(
        torch.where(torch.stack(paid, 1), units(torch.stack(rewards, 1)), 0.0), cfg.gamma
    )
    value = agent.per_seed(pwm._value, agent.per_seed(pwm._encode, obs.unsqueeze(0)))[0]
    return total, cfg.gamma**cfg.horizon * value.double() * alive


def fixed_draws(agent: pwm.PWM, rows: int, seed: int) -> list[dict[str, Any]]:
    """One imagined rollout's random inputs (exploration noise, dynamics' draws), drawn once, in the stack's form
    (a leading seed axis of 1)."""
    generator = torch.Generator(device=agent.device).manual_seed(seed)
    return [stack_draws([agent.members[0].draw_step(rows, generator)]) for _ in range(agent.config.pwm.horizon)]


def objective_terms(agent: pwm.PWM, obs: torch.Tensor, draws: list[dict[str, Any]], noisy: bool):
    """Per start `[N]`: the imagined rewards' discounted sum and `gamma^H V(z_H)` as PWM's imagination forms them
    (no episode ends inside the horizon; through the stack's parameters, whose actor entries are the leaves the
    actor's optimiser steps), the actor acting with the noise `draws` (or deterministically)."""
    gamma = agent.config.pwm.gamma
    with torch.no_grad():
        z = agent.per_seed(pwm._encode, obs.unsqueeze(0))
    rewards = torch.zeros(1, obs.shape[0], device=obs.device)
    for t, draw in enumerate(draws):
        step = draw if noisy else {**draw, "action": torch.zeros_like(draw["action"])}
        _, reward, z = agent._per_seed(agent._acting_state, pwm._imagine_step, z, step)
        rewards = rewards + gamma**t * reward
    value = agent._per_seed(agent._acting_state, pwm._value, z)
    return rewards[0], gamma ** len(draws) * value[0]


def actor_loss(agent: pwm.PWM, obs: torch.Tensor, draws: list[dict[str, Any]], value_coef: float) -> torch.Tensor:
    """PWM's actor loss `[1]` on the fixed rollout: minus the objective (the critic's term weighed by `value_coef`)
    over the running std of objectives (as saved: the fixed objective does not update it)."""
    rewards, value = objective_terms(agent, obs, draws, noisy=True)
    return -((rewards + value_coef * value) / agent.ret_stats.std()[0]).mean().reshape(1)


def adam_step(agent: pwm.PWM, obs: torch.Tensor, draws: list[dict[str, Any]], value_coef: float) -> torch.Tensor:
    """One of PWM's actor steps on the fixed objective (its Adam and gradient clip); returns the pre-clip norm."""
    loss = actor_loss(agent, obs, draws, value_coef)
    norm = agent._optimize("actor", loss, agent.config.pwm.actor_grad_clip, (True,))
    agent.members[0].actor.clamp_logstd_()
    return norm


def measure(release: Release, draws: list[dict[str, Any]], start: torch.Tensor) -> dict[str, float]:
    """The fixed objective and its terms; the deterministic policy's two terms imagined and as the real env has them
    from the same starts (`real_terms`); its action's shift on the starts from `start`."""
    agent, obs = release.agent, release.obs
    member, coef = agent.members[0], agent.config.pwm.actor_value_coef
    with torch.no_grad():
        rewards, value = objective_terms(agent, obs, draws, noisy=True)
        det_rewards, det_value = objective_terms(agent, obs, draws, noisy=False)
        shift = (member.act(obs) - start).abs().mean()
    real_rewards, real_value = real_terms(release, member.act)
    return {
        "objective": (rewards + coef * value).mean().item(),
        "reward_term": rewards.mean().item(),
        "value_term": value.mean().item(),
        "deterministic_objective": (det_rewards + coef * det_value).mean().item(),
        "imagined_rewards": det_rewards.mean().item(),
        "real_rewards": real_rewards.mean().item(),
        "imagined_value": det_value.mean().item(),
        "real_value": real_value.mean().item(),
        "action_shift": shift.item(),
    }


def steps(run: Path, lr: float | None, at: list[int], args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Rows at each of `at` Adam steps of the run's actor at `lr` (None: the run's `pwm.actor_lr`)."""
    device = torch.device(args.device)
    release = restore(run, device)
    agent, obs, config = release.agent, release.obs, release.config
    member = agent.members[0]
    lr = config.pwm.actor_lr if lr is None else lr
    agent.adams["actor"].set_lr(lr)
    draws = fixed_draws(agent, obs.shape[0], args.seed)
    with torch.no_grad():
        start = member.act(obs)
    norm = math.nan
    for step in range(max(at) + 1):
        if step in at:
            stats, _ = episodes(member.act, config, args.envs, device=device)
            yield {"lr": lr, "steps": step, "grad_norm": norm, **measure(release, draws, start), **stats}
        if step < max(at):
            norm = adam_step(agent, obs, draws, config.pwm.actor_value_coef).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a lone seed's run folder with work/state.pt")
    parser.add_argument("--lrs", nargs="*", type=float, default=[], help="actor learning rates (default: the run's)")
    parser.add_argument("--at", nargs="+", type=int, default=[0, 1, 2, 5, 10, 25], help="steps at which to measure")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fixed noise and dynamics' draws")
    parser.add_argument("--envs", type=int, default=16, help="deterministic episodes per row, side by side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    require_files(parser, args.run / "work" / "state.pt", args.run / "work" / "config.yaml")
    if min(args.envs, 1 + min(args.at)) < 1 or any(lr <= 0 for lr in args.lrs):
        parser.error("--envs must be >= 1, --at >= 0 and --lrs > 0")

    def rows() -> Iterator[dict[str, Any]]:
        for lr in args.lrs or [None]:
            yield from steps(args.run, lr, sorted(set(args.at)), args)

    line = table([
        Column("lr", "lr", ".0e", 7), Column("steps", "steps", "", 5), Column("objective", "objective", ".2f", 9),
        Column("rewards", "reward_term", ".2f", 8), Column("value", "value_term", ".2f", 7),
        Column("det. obj.", "deterministic_objective", ".2f", 9), Column("imagined r", "imagined_rewards", ".2f", 10),
        Column("real r", "real_rewards", ".2f", 7), Column("imagined V", "imagined_value", ".2f", 10),
        Column("real V", "real_value", ".2f", 7), Column("|a - a0|", "action_shift", ".3f"),
        Column("return", "return_mean", ".0f", 8), Column("+-", "return_std", ".0f", 6), Column("falls", "falls"),
    ])  # fmt: skip
    write_record(args.out, torch.device(args.device), args, report(rows(), line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
