"""How far does PWM's actor optimiser move a gait when its gradients say nothing about the gait?
The PPO reference's deterministic policy is cloned onto PWM's actor (400-200-100, Mish, LayerNorm, tanh) reading the
observation standardised per entry (the input that holds the gait on the CPU, bench/RESULTS.md "Which input lets
PWM's actor hold the gait?"), on observations of the reference's own noisy play (its exploration form,
`clip(mu + std eps)`). Then the clone takes Adam steps as PWM's actor does (`pwm.betas`, the gradient's norm clipped
to `pwm.actor_grad_clip`) along gradients that carry no information: `fresh`, a new Gaussian direction every step;
`fixed`, one Gaussian direction for every step (what a gradient that is consistent but unrelated to the return
does). At each of `--at` steps the moved actor plays its first episodes on the CPU env (deterministic): return,
falls, and how far its action moved on the collected observations (mean |a_k - a_0|, validation.csv's
`policy_shift` form).

Why: docs/results/2026-12-07-det-observed: released, PWM's update took the cloned 5.3k gait apart within 125 epochs
(one actor step each, lr 5e-4) although its data, encoder and env actions were all the gait's. Adam moves every
weight by about the learning rate per step whatever the gradient's size, so step size alone might do it; if an
uninformative gradient at PWM's step size leaves the gait standing for 125 steps, the collapse needs a gradient that
points away from the gait. Usage (CPU: ~1 min per row of 16 ants x 1,000 steps):

    PYTHONPATH=src python bench/adam_drift.py --config config/config.yaml \\
        --reference-policy results/ant/reference/seed0/policy.pt --lrs 5e-4 5e-5 --at 25 125 250 --out drift.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import clone, diagnostics
from flow_mbpo_pwm.config import EvaluationConfig, load_experiment, with_overrides
from flow_mbpo_pwm.models.actor import Actor
from flow_mbpo_pwm.reference_policy import load_reference_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clone_inputs import episodes, fit  # noqa: E402
from train_epoch import Column, report, require_files, table, write_record  # noqa: E402

DIRECTIONS = ("fresh", "fixed")


@torch.no_grad()
def noisy_play(reference: Any, config: Any, count: int, std: float, seed: int) -> torch.Tensor:
    """The observations of `count` first episodes of the reference played with its exploration noise, `[n, obs]`."""
    generator = torch.Generator().manual_seed(seed)

    def policy(obs: torch.Tensor) -> torch.Tensor:
        mean = reference(obs)
        return (mean + std * torch.randn(mean.shape, generator=generator)).clamp(-1.0, 1.0)

    _, record = episodes(policy, config, count, seed)
    return record.obs[diagnostics.first_episode_steps(record.dones)]


def adam_steps(actor: Actor, lr: float, config: Any, direction: str, seed: int) -> Iterator[Actor]:
    """A copy of `actor` after each Adam step (PWM's betas and gradient clip) along an uninformative gradient:
    `fixed`, one Gaussian direction; `fresh`, a new one every step. Endless: the caller stops."""
    moved = copy.deepcopy(actor)
    params = list(moved.mu_net.parameters())
    optimizer = torch.optim.Adam(params, lr=lr, betas=tuple(config.pwm.betas))
    generator = torch.Generator().manual_seed(seed)
    fixed = [torch.randn(p.shape, generator=generator) for p in params]
    while True:
        grads = fixed if direction == "fixed" else [torch.randn(p.shape, generator=generator) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params, config.pwm.actor_grad_clip)
        optimizer.step()
        yield moved


def drift(
    actor: Actor, obs: torch.Tensor, config: Any, lr: float, direction: str, at: list[int], seed: int, count: int
) -> Iterator[dict[str, Any]]:
    """Rows of `actor` moved by `adam_steps`, one at each of `at` steps: its first `count` episodes and how far its
    action moved on `obs`."""
    with torch.no_grad():
        start = actor.act(obs)
    for step, moved in enumerate(adam_steps(actor, lr, config, direction, seed), start=1):
        if step in at:
            with torch.no_grad():
                shift = (moved.act(obs) - start).abs().mean().item()
            stats, _ = episodes(moved.act, config, count)
            yield {"lr": lr, "direction": direction, "steps": step, "action_shift": shift, **stats}
        if step >= max(at):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="experiment YAML: the cell's actor and optimiser")
    parser.add_argument("--task", default="ant")
    parser.add_argument("--size", default="5M")
    parser.add_argument("--dynamics", default="deterministic")
    parser.add_argument("--reference-policy", type=Path, required=True, help="the reference's policy.pt")
    parser.add_argument("--collect-envs", type=int, default=32, help="episodes of noisy play for the observations")
    parser.add_argument("--noise-std", type=float, default=0.4, help="the reference's exploration std (its floor)")
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps of the clone's fit")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=1e-3, help="the clone fit's learning rate")
    parser.add_argument("--lrs", nargs="+", type=float, default=[5e-4, 5e-5], help="the actor's learning rates")
    parser.add_argument("--directions", nargs="+", choices=DIRECTIONS, default=list(DIRECTIONS))
    parser.add_argument("--at", nargs="+", type=int, default=[25, 125, 250], help="Adam steps at which to play")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--envs", type=int, default=16, help="episodes per row, side by side")
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    require_files(parser, args.config, args.reference_policy)
    if min(args.collect_envs, args.steps, args.batch, args.envs, args.episode_length, *args.at) < 1:
        parser.error("--collect-envs, --steps, --batch, --envs, --episode-length and --at must be >= 1")
    if min(args.lrs) <= 0 or args.noise_std < 0:
        parser.error("--lrs must be > 0 and --noise-std >= 0")
    device = torch.device("cpu")
    config = load_experiment(args.config).cell(args.task, args.size, args.dynamics, 0)
    config = with_overrides(config, run={"device": "cpu"}, env={"episode_length": args.episode_length})
    reference, _ = load_reference_policy(args.reference_policy, device)
    obs = noisy_play(reference, config, args.collect_envs, args.noise_std, EvaluationConfig().seed_base + 1)
    labels = clone.reference_labels(reference, obs)
    started = time.monotonic()
    actor = fit(lambda o: o, obs, labels, config, args, standardize=True)
    fitted = time.monotonic() - started

    def rows() -> Iterator[dict[str, Any]]:
        yield {"lr": 0.0, "direction": "clone", "steps": 0, "action_shift": 0.0, "observations": len(obs),
               "fit_seconds": round(fitted, 1), **episodes(actor.act, config, args.envs)[0]}  # fmt: skip
        for lr in args.lrs:
            for direction in args.directions:
                yield from drift(actor, obs, config, lr, direction, sorted(args.at), args.seed, args.envs)

    line = table([
        Column("lr", "lr", ".0e", 7), Column("gradient", "direction", "", 8), Column("steps", "steps", "", 5),
        Column("|a - a0|", "action_shift", ".3f"), Column("return", "return_mean", ".0f", 8),
        Column("+-", "return_std", ".0f", 6), Column("falls", "falls"),
    ])  # fmt: skip
    write_record(args.out, device, args, report(rows(), line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
