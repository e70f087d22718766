"""How much of a gait survives the exploration noise it is trained with?
PWM trains on, and imagines with, its stochastic policy `tanh(mu + sigma eps)` (noise before the tanh; sigma at the
floor 0.24 from ~2M env steps, 0.37 at the start); the PPO reference explores with `clip(mu + sigma eps)` (noise on
the action, sigma floored at 0.4). Here one policy (a PPO reference's policy.pt or snapshot) plays its first episodes
deterministically and with each form of noise at each `--stds`, side by side on the CPU env: return, falls, mean |a|.

Why: in docs/results/2026-12-07-det-frozen the 5.3k gait cloned onto PWM's actor validated at 5.2k while held, yet its
training episodes, the same actor with PWM's noise (sigma 0.37), returned 1.25-1.46k without falling. Was it the
noise? No: the PPO gait keeps 5,273 / 5,214 under PWM's noise at 0.24 / 0.37 (bench/RESULTS.md); the training env is
driven by the imagined actions, open loop through the model (`pwm.env_actions`).

    PYTHONPATH=src python bench/noise_robustness.py --config config/config.yaml \\
        --policy results/ant/reference/seed0/policy.pt --stds 0.1 0.24 0.37 --out noise.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import diagnostics
from flow_mbpo_pwm.config import load_experiment, with_overrides
from flow_mbpo_pwm.reference_policy import load_reference_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clone_inputs import episodes  # noqa: E402
from train_epoch import Column, report, table, write_record  # noqa: E402

EDGE = 1e-3  # the deterministic action is pulled this far inside (-1, 1) before atanh (|mu| <= 3.8 before noise)


def with_noise(policy: Callable, form: str, std: float, generator: torch.Generator) -> Callable:
    """`policy` (obs -> its mean action m, beyond [-1, 1] where the env clips it) with exploration noise of `form`:
    "pwm": `tanh(atanh(clip(m)) + std eps)`, PWM's actor's sample around the same deterministic action; "ppo":
    `clip(m + std eps, -1, 1)`, rsl-rl's Gaussian as the env clips it; "none": `clip(m)`."""

    def act(obs: torch.Tensor) -> torch.Tensor:
        mean = policy(obs)
        if form == "none":
            return mean.clamp(-1.0, 1.0)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        if form == "pwm":
            return torch.tanh(torch.atanh(mean.clamp(-1.0 + EDGE, 1.0 - EDGE)) + std * eps)
        if form == "ppo":
            return (mean + std * eps).clamp(-1.0, 1.0)  # around the unclipped mean, as rsl-rl samples
        raise ValueError(f"unknown noise form {form!r} (none, pwm, ppo)")

    return act


def settings(stds: list[float]) -> list[tuple[str, float]]:
    """The deterministic play first, then each form at each std."""
    return [("none", 0.0), *((form, std) for std in stds for form in ("pwm", "ppo"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="experiment YAML: the env the policy plays")
    parser.add_argument("--task", default="ant")
    parser.add_argument("--policy", type=Path, required=True, help="a reference's policy.pt or snapshot")
    parser.add_argument("--stds", type=float, nargs="+", default=[0.1, 0.24, 0.37])
    parser.add_argument("--envs", type=int, default=16, help="episodes per setting, side by side")
    parser.add_argument("--seed", type=int, default=0, help="the noise's generator")
    parser.add_argument("--episode-length", type=int, default=0, help="steps per episode (0: the config's)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if not args.policy.is_file():
        parser.error(f"--policy {args.policy}: no such file")
    if any(not 0 < s < 10 for s in args.stds) or args.envs < 1 or args.episode_length < 0:
        parser.error("--stds must be in (0, 10), --envs >= 1 and --episode-length >= 0")
    experiment = load_experiment(args.config)
    config = experiment.cell(args.task, experiment.sizes[0], "deterministic", experiment.seeds[0])  # its env alone
    if args.episode_length:
        config = with_overrides(config, env={"episode_length": args.episode_length})
    policy, meta = load_reference_policy(args.policy)
    policy.eval()

    def rows() -> Iterator[dict[str, Any]]:
        for form, std in settings(args.stds):
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(args.seed)
            stats, record = episodes(with_noise(policy, form, std, generator), config, args.envs)
            yield {
                "noise": form,
                "std": std,
                **stats,
                "action_magnitude": diagnostics.action_columns(record)["action_magnitude"],
                "seconds": time.perf_counter() - start,
            }

    print(f"{args.policy} ({meta.get('env_steps', '?')} env steps), {args.envs} episodes per setting")
    line = table([
        Column("noise", "noise", "", 5), Column("std", "std", ".2f", 4), Column("return", "return_mean", ".0f", 7),
        Column("+-", "return_std", ".0f", 5), Column("falls", "falls"), Column("mean |a|", "action_magnitude", ".3f"),
    ])  # fmt: skip
    measured = report(rows(), line)
    write_record(args.out, torch.device("cpu"), args, measured)
    return 0


if __name__ == "__main__":
    sys.exit(main())
