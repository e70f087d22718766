"""How well each world-model variant fits the Ant offline, on one dataset, per update: the question is whether
flow's loss space ("chart") decides its fit.

The deterministic residual model is trained on the latent MSE in simplex coordinates, E(o') vs z'. The flow model
with `project: simnorm` learns its velocity in log-simplex coordinates, log z' - log z. There, entries that are
nearly zero (down to log 1e-12 = -27.6) can dominate the squared error although they hardly move z'.
`project: none` learns it in simplex coordinates, the deterministic model's loss space.

The data: Ant transitions under smooth random torques (an Ornstein-Uhlenbeck process clipped to [-1, 1]). The
ant moves its legs and body but does not run. Training windows come from some env streams, held-out windows from
the others. Every variant trains the same config cell (default 5M, loss weights 20 : 0.1) from the same seed, on
the same buffer. Every `--every` updates it reports, at steps 1 and H of its own rollout on the held-out
windows, the latent error over the copy-the-last-latent baseline (`diagnostics.horizon_errors`, as validation
reports it).

    PYTHONPATH=src python bench/flow_chart_probe.py --updates 600 --every 100 --out bench/out/flow_chart.json

Prints a table per report and writes every row as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
import yaml

from flow_mbpo_pwm import envs
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import load_experiment
from flow_mbpo_pwm.data.datasets import stream_buffer
from flow_mbpo_pwm.diagnostics import (
    EpisodeRecord,
    JointStateReturns,
    StartStates,
    cut_windows,
    gradient_cosines,
    horizon_errors,
    nanmean,
)

VARIANTS = {  # name -> dynamics settings (merged over the preset named by `kind`)
    "det-residual": {"kind": "deterministic", "residual": True},
    "flow-log-simplex": {"kind": "flow", "integrator": "heun", "substeps": 4, "project": "simnorm"},
    "flow-simplex": {"kind": "flow", "integrator": "heun", "substeps": 4, "project": "none"},
    "flow-log-detached": {"kind": "flow", "integrator": "heun", "substeps": 4, "detach_source": True},
    "flow-log-detached-endpoint": {
        "kind": "flow",
        "integrator": "heun",
        "substeps": 4,
        "detach_source": True,
        "endpoint_coef": 1.0,
    },
    "flow-log-detached-simplex-metric": {
        "kind": "flow",
        "integrator": "heun",
        "substeps": 4,
        "detach_source": True,
        "loss_metric": "simplex",
    },
    "flow-simplex-detached": {
        "kind": "flow",
        "integrator": "heun",
        "substeps": 4,
        "project": "none",
        "detach_source": True,
    },
}


def ou_step(action: torch.Tensor, generator: torch.Generator, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the smooth random torques (Ornstein-Uhlenbeck, stationary std ~0.95 `scale`): the process's new
    state and the torque, clipped to [-1, 1]."""
    action = 0.85 * action + 0.5 * scale * torch.randn(action.shape, generator=generator)
    return action, action.clamp(-1.0, 1.0)


def ant_streams(num_envs: int, steps: int, seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """`steps` transitions of `num_envs` Ants under OU random torques, as dataset fields `[E, T, ...]`."""
    env = envs.make("ant", num_envs, "cpu", seed)
    generator = torch.Generator().manual_seed(seed)
    fields: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminated", "truncated")
    }
    obs, action = env.reset(), torch.zeros(num_envs, env.act_dim)
    for _ in range(steps):
        action, clipped = ou_step(action, generator, scale)
        next_obs, reward, terminated, truncated, info = env.step(clipped)
        for name, value in zip(fields, (obs, clipped, reward, info["final_obs"], terminated, truncated), strict=True):
            fields[name].append(value)
        obs = next_obs
    return {name: torch.stack(values, dim=1) for name, values in fields.items()}


def gradient_starts(count: int, horizon: int, seed: int, scale: float = 1.0, warm_steps: int = 60) -> StartStates:
    """`count` saved Ant states (one per env, after `warm_steps` OU-torque steps) with the H OU actions taken from
    each: the start states of the gradient check, as validation records them."""
    env = envs.make("ant", count, "cpu", seed)
    generator = torch.Generator().manual_seed(seed)
    obs, action = env.reset(), torch.zeros(count, env.act_dim)
    steps = []
    for t in range(warm_steps + horizon):
        if t == warm_steps:
            start_obs, (joint_q, joint_qd) = obs, env.joint_state()
        action, clipped = ou_step(action, generator, scale)
        if t >= warm_steps:
            steps.append(clipped)
        obs, *_ = env.step(clipped)
    return StartStates(obs=start_obs, joint_q=joint_q, joint_qd=joint_qd, actions=torch.stack(steps, dim=1))


def held_out_record(data: dict[str, torch.Tensor]) -> EpisodeRecord:
    """Dataset fields `[E, T, ...]` as the `[T, E, ...]` episode record the diagnostics cut windows from."""
    t = {k: v.transpose(0, 1) for k, v in data.items()}
    return EpisodeRecord(
        obs=t["observations"],
        actions=t["actions"],
        rewards=t["rewards"],
        next_obs=t["next_observations"],
        dones=t["terminated"] | t["truncated"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--size", default="5M")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--envs", type=int, default=16, help="env streams: 3/4 train, 1/4 held out")
    parser.add_argument("--steps", type=int, default=600, help="transitions per stream")
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--wm-batch", type=int, default=None, help="override pwm.wm_batch (CPU time)")
    parser.add_argument(
        "--coefs", type=float, nargs=2, default=None, metavar=("DYNAMICS", "REWARD"),
        help="override pwm.wm_dynamics_coef and pwm.wm_reward_coef (default: the config's)",
    )  # fmt: skip
    parser.add_argument(
        "--grad-starts", type=int, default=0,
        help="also the model-vs-Ant action-gradient cosine (as validation measures it) from this many saved states",
    )  # fmt: skip
    parser.add_argument(
        "--torque-scale", type=float, default=1.0,
        help="scale of the OU torques (0.1: small actions about a standing pose, as a standing agent's data)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/out/flow_chart.json")
    args = parser.parse_args()

    start = time.perf_counter()
    data = ant_streams(args.envs, args.steps, args.seed, args.torque_scale)
    split = args.envs * 3 // 4
    train = {k: v[:split] for k, v in data.items()}
    held = held_out_record({k: v[split:] for k, v in data.items()})
    print(f"data: {args.envs} x {args.steps} Ant steps in {time.perf_counter() - start:.0f} s", flush=True)

    experiment = yaml.safe_load(Path(args.config).read_text())
    experiment["dynamics"] = VARIANTS
    pwm = experiment.setdefault("train", {}).setdefault("pwm", {})
    if args.wm_batch:
        pwm["wm_batch"] = args.wm_batch
    if args.coefs:
        pwm["wm_dynamics_coef"], pwm["wm_reward_coef"] = args.coefs
    experiment = load_experiment(experiment)
    starts = gradient_env = None
    if args.grad_starts:  # held-out states of another seed; the dedicated env of 2 H A rows, as `train` builds it
        horizon = experiment.cell("ant", args.size, args.variants[0], args.seed).pwm.horizon
        starts = gradient_starts(args.grad_starts, horizon, args.seed + 1, args.torque_scale)
        rows = 2 * horizon * data["actions"].shape[-1]
        gradient_env = envs.make("ant", rows, "cpu", args.seed, episode_length=horizon, deterministic=True)
    rows = []
    for name in args.variants:
        config = experiment.cell("ant", args.size, name, args.seed)
        agent = PWM(data["observations"].shape[-1], data["actions"].shape[-1], config, "cpu")
        agent.rew_rms.update(train["rewards"].reshape(-1))
        agent.set_learning_rates(0.0)  # pretraining's constant initial rates
        buffer = stream_buffer(train, "cpu", config.pwm.horizon)
        windows = cut_windows(held, config.pwm.horizon, stride=config.pwm.horizon)
        world_model = agent.members[0].world_model
        began, done = time.perf_counter(), 0
        while done < args.updates:
            losses = agent.world_model_steps([buffer], args.every)
            done += args.every
            errors = horizon_errors(world_model, windows)
            ratio = errors.wm_latent_mse / errors.copy_latent_mse
            cosine = math.nan
            if starts is not None:
                returns = JointStateReturns(gradient_env, config.pwm.gamma)
                agreements = gradient_cosines(world_model, starts, returns, config.pwm.gamma, config.run.grad_check_eps)
                cosine = nanmean([a.cosine for a in agreements])
            row = {
                "variant": name,
                "updates": done,
                "latent_over_copy_h1": ratio[0].item(),
                "latent_over_copy_hH": ratio[-1].item(),
                "copy_latent_mse_h1": errors.copy_latent_mse[0].item(),
                "train_wm_latent_mse": losses["wm_latent_mse"][0].item(),
                "train_wm_dynamics_loss": losses["wm_dynamics_loss"][0].item(),
                "grad_cosine": cosine,
                "seconds": time.perf_counter() - began,
            }
            rows.append(row)
            print(
                f"{name:26s} {done:6d} updates  latent/copy h1 {row['latent_over_copy_h1']:6.3f}  "
                f"h{config.pwm.horizon} {row['latent_over_copy_hH']:6.3f}  "
                f"copy MSE h1 {row['copy_latent_mse_h1']:.2e}  train latent MSE {row['train_wm_latent_mse']:.2e}  "
                f"dynamics loss {row['train_wm_dynamics_loss']:.2e}  grad cos {cosine:6.3f}  "
                f"{row['seconds']:5.0f} s",
                flush=True,
            )
    machine = {"device": platform.processor() or "cpu", "torch": torch.__version__, "threads": torch.get_num_threads()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
