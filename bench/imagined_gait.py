"""Does a gait, acted out by PWM's actor on the world model's own latents, pay in the model what it pays in the env?

PWM's actor is updated through, and its critic is fitted to, the model's closed loop: from `z_0 = E(o_0)` the actor
acts on the imagined latent, `a_t = tanh(mu(z_t))`, `z_{t+1} = f(z_t, a_t)`, and is paid `R(z_t, a_t)`. The
world-model diagnostics replay recorded actions (open loop), so a model that predicts the gait's rewards well
along the data's own actions can still imagine the actor's gait falling apart once the actor reads imagined
latents. Here, on the actor's own deterministic episodes (the env's closed loop), at every step h of windows of
`--length` steps (one window every `--length` steps, inside one episode):

- `real`: the env's reward r_h under the policy (its own closed loop);
- `closed`: the model's closed loop, R(z_h, tanh(mu(z_h))) with z_h imagined from the window's first observation;
- `open`: the model along the recorded actions, R(z_h, a_h) (what the horizon errors measure);
- `action gap`: mean |tanh(mu(z_h)) - a_h| per action entry, how far the imagined policy's actions are from
  the real ones at the same step.

And why the actions part, along the recorded actions (so the actions cannot be the cause): the open loop's latent
z_h against the real E(o_h), as mean squared error per entry in raw latent units (`latent mse`) and in the actor's
input units (`input mse`: after its `pwm.latent_norm` standardisation), and how far that moves the actor's action,
mean |tanh(mu(z_h)) - tanh(mu(E(o_h)))| per entry (`input drift`). The first row gives the real latents' and inputs'
variance per entry over the windows, the spread those errors compare with. Row "step h" is the window's h-th step:
h - 1 model steps from E(o_0).

Then the discounted sums over the first H (`pwm.horizon`) steps: `closed` against `real` is validation.csv's
`imagined_reward_term` against `real_reward_term` (diagnostics.objective_split / real_terms) for this actor.

Why: released from a 5.3k PPO gait cloned onto its latent, PWM's actor lost the gait within 125 epochs, and at the
release its critic valued the gait's states at ~140 against real returns-to-go of ~520
(docs/results/2026-12-07-det-observed). A critic fitted to imagined closed loops that fall apart would sit low.

    PYTHONPATH=src python bench/imagined_gait.py --config CONFIG --world-model WORLD_MODEL.pt --dataset ant.h5 \\
        --actor actor.pt --envs 16 --length 48 [--device cuda] --out imagined_gait.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import diagnostics
from flow_mbpo_pwm.config import ConfigError, load_experiment, with_overrides
from flow_mbpo_pwm.data.datasets import read_dataset
from flow_mbpo_pwm.devices import resolve_device
from flow_mbpo_pwm.models.world_model import rollout_latents

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clone_inputs import cloned_agent, episodes  # noqa: E402
from train_epoch import Column, add_world_model_arguments, report, require_files, table, write_record  # noqa: E402


@torch.no_grad()
def imagined_curves(world_model: Any, actor: Any, windows: diagnostics.Windows) -> dict[str, torch.Tensor]:
    """The rewards per step of the env, of the model's closed loop under `actor` and of the model along the recorded
    actions, from each window's first observation, and the actions' gap: `[B, L]` each (float64)."""
    length = windows.actions.shape[1]
    z_closed = z_open = world_model.encode(windows.obs[:, 0])
    closed, opened, gap = [], [], []
    for h in range(length):
        action = actor.act(z_closed)
        closed.append(world_model.reward(z_closed, action))
        opened.append(world_model.reward(z_open, windows.actions[:, h]))
        gap.append((action - windows.actions[:, h]).abs().mean(-1))
        z_closed = world_model.next(z_closed, action)
        z_open = world_model.next(z_open, windows.actions[:, h])
    stacked = {"closed": closed, "open": opened, "action_gap": gap}
    return {"real": windows.rewards.double(), **{k: torch.stack(v, 1).double() for k, v in stacked.items()}}


@torch.no_grad()
def latent_errors(world_model: Any, actor: Any, windows: diagnostics.Windows) -> dict[str, torch.Tensor]:
    """Along the recorded actions, the imagined latent against the real `E(o_h)` per step: squared error per entry
    raw (`latent_mse`) and in the actor's input units (`input_mse`), and the actor's action moved by it
    (`input_drift`, mean |a| per entry): `[B, L]` each (float64)."""
    real = world_model.encode(windows.obs[:, :-1])  # E(o_0) .. E(o_{L-1})
    imagined = torch.cat([real[:, :1], rollout_latents(world_model, real[:, 0], windows.actions[:, :-1])], 1)
    errors = {
        "latent_mse": (imagined - real).pow(2).mean(-1),
        "input_mse": (actor.input_norm(imagined) - actor.input_norm(real)).pow(2).mean(-1),
        "input_drift": (actor.act(imagined) - actor.act(real)).abs().mean(-1),
    }
    return {k: v.double() for k, v in errors.items()}


@torch.no_grad()
def spreads(world_model: Any, actor: Any, windows: diagnostics.Windows) -> dict[str, float]:
    """The real latents' and the actor's inputs' variance per entry over every step of the windows."""
    real = world_model.encode(windows.obs[:, :-1]).flatten(0, 1)
    return {
        "latent_var": float(real.double().var(0).mean()),
        "input_var": float(actor.input_norm(real).double().var(0).mean()),
    }


ERRORS = ("latent_mse", "input_mse", "input_drift")  # latent_errors' curves


def discounted(rewards: torch.Tensor, gamma: float, horizon: int) -> float:
    """Mean over the windows of `sum_{t<horizon} gamma^t r_t`."""
    return float(diagnostics.discounted_sums(rewards[:, :horizon], gamma).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_model_arguments(parser, "experiment YAML: the cell the actor was cloned for")
    parser.add_argument("--actor", type=Path, required=True, help="the cloned actor.pt (`clone`)")
    parser.add_argument("--envs", type=int, default=16, help="deterministic episodes, side by side")
    parser.add_argument("--length", type=int, default=48, help="steps per window (>= the config's horizon)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: the model, the actor and the env")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    require_files(parser, args.config, args.world_model, args.dataset, args.actor)
    torch.set_num_threads(1)
    try:
        device = resolve_device(args.device, "--device")
    except ConfigError as error:
        parser.error(str(error))
    config = load_experiment(args.config).cell(args.task, args.size, args.dynamics, 0)
    config = with_overrides(config, run={"device": str(device)})
    horizon, gamma = config.pwm.horizon, config.pwm.gamma
    if args.envs < 1 or args.length < horizon:
        parser.error(f"--envs must be >= 1 and --length >= the horizon ({horizon})")
    if config.pwm.reward_norm != "none":
        parser.error("the rewards are compared raw: use a config with pwm.reward_norm: none")
    data = read_dataset(args.dataset)[0]
    member = cloned_agent(config, data, args.world_model, args.actor, device).members[0]
    world_model = member.world_model.eval()
    stats, record = episodes(member.act, config, args.envs, device=device)
    windows = diagnostics.cut_windows(record, args.length, stride=args.length)
    if windows.obs.shape[0] == 0:
        raise SystemExit(f"no window of {args.length} steps inside an episode: every episode ended sooner")
    actor = member.actor
    curves = {**imagined_curves(world_model, actor, windows), **latent_errors(world_model, actor, windows)}
    stats = {**stats, "windows": windows.obs.shape[0], **spreads(world_model, actor, windows)}
    print(f"{args.envs} episodes: return {stats['return_mean']:.0f} +- {stats['return_std']:.0f}, "
          f"{stats['falls']} falls; {stats['windows']} windows of {args.length} steps; variance per entry of the "
          f"real latents {stats['latent_var']:.5f}, of the actor's inputs {stats['input_var']:.3f}")  # fmt: skip

    def rows():
        for h in sorted({1, 2, 4, 8, horizon, 2 * horizon, args.length} & set(range(1, args.length + 1))):
            yield {"step": h, **{k: float(v[:, h - 1].mean()) for k, v in curves.items()}}
        for name, length in ((f"sum over H = {horizon}", horizon), (f"sum over {args.length}", args.length)):
            sums = {k: discounted(curves[k], gamma, length) for k in ("real", "closed", "open")}
            means = {k: float(curves[k][:, :length].mean()) for k in ("action_gap", *ERRORS)}
            yield {"step": name, **sums, **means}

    line = table([
        Column("step", "step", "", 16), Column("real", "real", ".3f", 8), Column("closed", "closed", ".3f", 8),
        Column("open", "open", ".3f", 8), Column("action gap", "action_gap", ".3f", 10),
        Column("latent mse", "latent_mse", ".5f", 10), Column("input mse", "input_mse", ".3f", 9),
        Column("input drift", "input_drift", ".3f", 11),
    ])  # fmt: skip
    measured = report(rows(), line)
    write_record(args.out, device, args, [stats, *measured])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
