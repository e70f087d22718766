"""Does a pretrained world model see what running is worth, and where its action gradient points, gait by gait?
For every PPO snapshot of the offline dataset (untrained -> standing -> running), two measurements:

- Value: on the dataset's own windows of that snapshot (every `--stride`-th start, H steps, no termination inside),
  the world model's discounted H-step return along the data's actions, open loop from z_0 = E(o_0) (PWM's
  imagination, with the actions given) and teacher-forced (R(E(o_t), a_t) at every step), against the true one:
  means, the open loop's mean absolute error and its correlation with the truth across windows.
- Gradient: the snapshot's deterministic policy plays `--envs` episodes; at `--starts` saved joint states the
  product's gradient check (`diagnostics.gradient_cosines`: the model's autograd gradient of the H-step return with
  respect to the next H actions against the env's finite differences from that state, step `--eps`, by default the
  config's `run.grad_check_eps`) gives one cosine each. The env against itself is the control: its finite
  differences at `--eps` against those at `--control-eps` (default eps / 3) from the same state. Where contacts
  make the env's own gradient ill-defined, that cosine is low too, and bounds what any model could reach.
- The same gradients as a policy update sums them: every start's action gradients pushed through the snapshot
  policy's Jacobian and summed over the starts (`through_policy`), model against env (`pi cos`) and env against
  itself (`pi env`). Per-state disagreements that are noise cancel in the sum; a bias does not. Open loop, each
  window's later actions held, is the form of PWM's own update: its actor reads sg(z_i) (the reference's `detach:
  True`), so an action moves later rewards through the states only, never later actions. What the sum leaves out
  of PWM's update: the critic's term gamma^H V(z_H), and the imagined states (here the env's).

Why: PWM's actor climbs the model's gradient of the imagined return. Every change in docs/results/README.md's
plateau table left the deterministic cell at ~3k; if the model's value or gradient were good on standing states and
poor on running ones, the first-order gradient would not lead past the plateau. CPU is enough (a 16-step gradient
check of 256 ant rows takes ~5 s):

    PYTHONPATH=src python bench/model_by_gait.py --config CONFIG --world-model WORLD_MODEL.pt \\
        --dataset results/ant/offline/dataset.h5 --reference-dir results/ant/reference/seed0 \\
        --out bench/out/model_by_gait.json

`--world-model` takes a pretrained world_model.pt (`pretrain`) or a run's final.pt: the world model after the run's
online training, which is the one PWM's actor climbed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import checkpoints, diagnostics, envs, io
from flow_mbpo_pwm.algorithms.pwm import SeedAgent
from flow_mbpo_pwm.config import load_experiment, with_overrides
from flow_mbpo_pwm.data.datasets import read_dataset
from flow_mbpo_pwm.reference_policy import POLICY_GROUP, load_reference_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_epoch import Column, add_world_model_arguments, report, require_files, table, write_record  # noqa: E402


def windows(data: dict[str, torch.Tensor], streams: slice, horizon: int, stride: int) -> tuple[torch.Tensor, ...]:
    """The snapshot's windows of `horizon` steps that start every `stride` steps of its streams and lie in an episode
    still running: first observations `[B, obs_dim]`, every step's observation `[B, H, obs_dim]`, actions `[B, H,
    act_dim]`, rewards `[B, H]`."""
    obs, actions, rewards = data["observations"][streams], data["actions"][streams], data["rewards"][streams]
    ended = data["terminated"][streams].cumsum(1) > 0  # from the terminal step on
    starts = range(0, obs.shape[1] - horizon + 1, stride)
    alive = torch.cat([~ended[:, t + horizon - 1] for t in starts])
    pick = [torch.cat([x[:, t : t + horizon] for t in starts])[alive] for x in (obs, actions, rewards)]
    return pick[0][:, 0], *pick


@torch.no_grad()
def value_row(world_model: Any, batch: tuple[torch.Tensor, ...], gamma: float) -> dict[str, float]:
    first, obs, actions, rewards = batch
    horizon = actions.shape[1]
    discounts = gamma ** torch.arange(horizon, dtype=rewards.dtype)
    z, open_loop = world_model.encode(first), []
    for t in range(horizon):
        open_loop.append(world_model.reward(z, actions[:, t]))
        z = world_model.next(z, actions[:, t])
    forced = world_model.reward(world_model.encode(obs.flatten(0, 1)), actions.flatten(0, 1)).view(-1, horizon)
    true, model = (rewards * discounts).sum(1), (torch.stack(open_loop, 1) * discounts).sum(1)
    return {
        "windows": len(true),
        "true_return": true.mean().item(),
        "model_open_loop": model.mean().item(),
        "model_teacher_forced": (forced * discounts).sum(1).mean().item(),
        "open_loop_abs_error": (model - true).abs().mean().item(),
        "open_loop_correlation": torch.corrcoef(torch.stack([true, model]))[0, 1].item() if len(true) > 1 else 0.0,
    }


def gradient_row(world_model: Any, policy: Any, config: Any, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    horizon, gamma = config.pwm.horizon, config.pwm.gamma
    env = envs.make_from_config(config.env, "cpu", seed=seed, num_envs=args.envs)
    recorder = diagnostics.EpisodeRecorder(env.max_episode_steps, args.envs, env.obs_dim, env.act_dim, "cpu")
    at = tuple(diagnostics.start_steps(env.max_episode_steps, horizon, args.starts))
    with torch.no_grad():
        returns = diagnostics.first_episode_returns(env, lambda o: policy(o).clamp(-1.0, 1.0), recorder, at)
    rows = 2 * horizon * env.act_dim  # every perturbed action sequence of the finite differences, side by side
    check = envs.make_from_config(
        config.env, "cpu", seed=seed, num_envs=rows, episode_length=horizon, deterministic=True
    )
    starts, env_returns = recorder.start_states(horizon), diagnostics.JointStateReturns(check, gamma)
    agreements = diagnostics.gradient_cosines(world_model, starts, env_returns, gamma, args.eps)
    cosines = [a.cosine for a in agreements]
    model, env_wide = (torch.stack([getattr(a, name) for a in agreements]) for name in ("model", "env"))
    env_narrow = env_gradients(starts, env_returns, args.control_eps, args.eps)
    through = through_policy(policy, starts, model, env_wide, env_narrow)
    env_self = env_self_cosines(env_wide, env_narrow)
    return {
        "policy_return": returns.mean().item(),
        "gradient_cosine_median": finite_median(cosines),
        "gradient_cosine_first_step_median": finite_median([a.per_step[0] for a in agreements]),
        "gradient_cosines": cosines,  # NaN where either gradient is zero (no direction to compare)
        "env_self_cosine_median": finite_median(env_self),
        "env_self_cosines": env_self,
        "policy_gradient_cosine": diagnostics.cosine(through[0], through[1]),
        "policy_env_self_cosine": diagnostics.cosine(through[1], through[2]),
    }


def env_gradients(
    starts: diagnostics.StartStates, env_returns: diagnostics.JointStateReturns, eps: float, bounds_eps: float
) -> torch.Tensor:
    """The env's finite-difference gradients of the H-step return at every start state, step `eps`, `[S, H, A]`,
    along the actions the gradient check perturbs (kept `bounds_eps` inside the bounds, as its are)."""
    gradients = []
    for s in range(starts.obs.shape[0]):
        actions = starts.actions[s].clamp(-1.0 + bounds_eps, 1.0 - bounds_eps)
        returns = env_returns.at(starts.joint_q[s], starts.joint_qd[s])
        gradients.append(diagnostics.finite_difference_gradient(returns, actions, eps))
    return torch.stack(gradients)


def env_self_cosines(wide: torch.Tensor, narrow: torch.Tensor) -> list[float]:
    """Start by start, the cosine between the env's gradients at two finite-difference steps (`env_gradients`)."""
    return [diagnostics.cosine(w, n) for w, n in zip(wide, narrow, strict=True)]


def through_policy(policy: Any, starts: diagnostics.StartStates, *gradients: torch.Tensor) -> list[torch.Tensor]:
    """Each of `gradients` (action gradients `[S, H, A]` of every start's window) summed into one over the policy's
    parameters, sum_s sum_t (d pi(o_st) / d theta)^T g_st, as an update of the policy would sum them (none where the
    env clips the action); one forward pass of the policy for all of them. The cosine of two such sums says whether
    per-state disagreements cancel over a batch of states or add up to another update."""
    params = [p for p in policy.parameters() if p.is_floating_point()]
    with torch.enable_grad():
        for p in params:
            p.requires_grad_(True)
        actions = policy.actor({POLICY_GROUP: starts.obs_window.flatten(0, 1)}).view(gradients[0].shape)
        inside = (actions.detach().abs() < 1.0).to(actions.dtype)
        sums = []
        for g in gradients:
            grads = torch.autograd.grad(
                (actions * inside * g.to(actions.dtype)).sum(), params, allow_unused=True, retain_graph=True
            )
            sums.append(torch.cat([grad.flatten() for grad in grads if grad is not None]))
    return sums


def load_world_model(path: Path, agent: SeedAgent) -> Any:
    """The world model of `path`: a pretrained world model loaded into `agent`, or a run's final agent's."""
    data = io.torch_load(path, map_location="cpu")
    if isinstance(data, dict) and data.get("format") == checkpoints.AGENT_FORMAT:
        return checkpoints.load_agent(path)[0].world_model.eval()
    checkpoints.load_world_model(path, agent)
    return agent.world_model.eval()


def finite_median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_model_arguments(parser, "experiment YAML: the cell's world model")
    parser.add_argument("--reference-dir", type=Path, required=True, help="the reference run the dataset is from")
    parser.add_argument("--snapshots", type=int, nargs="+", help="the dataset's snapshot indices (default: all)")
    parser.add_argument("--stride", type=int, default=48, help="steps between the windows' starts")
    parser.add_argument("--envs", type=int, default=4, help="episodes per snapshot for the gradient check")
    parser.add_argument("--starts", type=int, default=12, help="gradient checks per snapshot")
    parser.add_argument("--eps", type=float, help="finite-difference step (default: the config's run.grad_check_eps)")
    parser.add_argument("--control-eps", type=float, help="the env's second step, for its self-agreement (eps / 3)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    require_files(parser, args.config, args.world_model, args.dataset)
    steps = [e for e in (args.eps, args.control_eps) if e is not None]
    if min(args.stride, args.envs, args.starts) < 1 or min(steps, default=1) <= 0:
        parser.error("--stride, --envs and --starts must be >= 1, --eps and --control-eps > 0")
    torch.set_num_threads(1)  # Warp's CPU kernels are single-threaded; the comparisons do not depend on it
    config = load_experiment(args.config).cell(args.task, args.size, args.dynamics, 0)
    config = with_overrides(config, run={"device": "cpu"})
    args.eps = config.run.grad_check_eps if args.eps is None else args.eps
    args.control_eps = args.eps / 3 if args.control_eps is None else args.control_eps
    data, attrs = read_dataset(args.dataset)
    snapshots = json.loads(attrs["snapshots"])
    per = int(attrs["streams_per_snapshot"])
    obs_dim, act_dim = data["observations"].shape[-1], data["actions"].shape[-1]
    agent = SeedAgent(obs_dim, act_dim, config, 0, torch.device("cpu"))
    world_model = load_world_model(args.world_model, agent)

    def rows():
        for k in args.snapshots if args.snapshots is not None else range(len(snapshots)):
            snapshot = snapshots[k]
            policy, _ = load_reference_policy(args.reference_dir / snapshot["path"], torch.device("cpu"))
            batch = windows(data, slice(k * per, (k + 1) * per), config.pwm.horizon, args.stride)
            episode = data["rewards"][k * per : (k + 1) * per].sum(1).mean().item()
            yield {
                "snapshot": k,
                "env_steps": snapshot["env_steps"],
                "env_steps_m": snapshot["env_steps"] / 1e6,
                "dataset_episode_return": episode,
                **value_row(world_model, batch, config.pwm.gamma),
                **gradient_row(world_model, policy, config, args, int(attrs["env_seed_base"]) + k),
            }

    line = table([
        Column("M steps", "env_steps_m", ".0f"), Column("noisy ep", "dataset_episode_return", ".0f"),
        Column("policy", "policy_return", ".0f", 7), Column("true H", "true_return", ".2f", 7),
        Column("model H", "model_open_loop", ".2f"), Column("forced", "model_teacher_forced", ".2f", 7),
        Column("|err|", "open_loop_abs_error", ".2f", 6), Column("corr", "open_loop_correlation", ".2f", 5),
        Column("cos", "gradient_cosine_median", ".2f", 5), Column("cos a0", "gradient_cosine_first_step_median", ".2f"),
        Column("env", "env_self_cosine_median", ".2f", 5), Column("pi cos", "policy_gradient_cosine", ".2f"),
        Column("pi env", "policy_env_self_cosine", ".2f"),
    ])  # fmt: skip

    write_record(args.out, torch.device("cpu"), args, report(rows(), line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
