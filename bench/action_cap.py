"""How much torque the PPO reference's gaits need: each reference policy (`policy.pt` or one of its snapshots) plays
deterministic episodes of the Ant with its actions capped at |a| <= c, for several caps c, and the table says what
each cap costs it in return and forward speed, and how saturated and how hard its actions are.

Why: PWM's actor acts through tanh, whose gradient vanishes at the bounds, and the configs' saturation penalty
(`pwm.actor_saturation_coef: 0.1`, no threshold) pulls every action towards 0. If the gaits that score 4-5k on this
Ant need torques at the bounds, neither a saturated actor (no gradient) nor a penalised one (no torque) can learn
them. One policy per row group, one cap per row; the first cap (default 1, the env's own clip) is the policy as it
is. Returns are the first episode of every env from one reset (`diagnostics.first_episode_returns`, the loop the
validations run); the env's seed is the held-out evaluation's of seed 0 (`evaluation.seed_base`), so a policy's
uncapped row is comparable with its held-out return. Usage (CPU is enough: 16 ants x 1,000 steps take ~4 s a cap):

    PYTHONPATH=src python bench/action_cap.py --policies results/ant/reference/seed0/policy.pt \\
        results/ant/reference/seed0/snapshots/step_000042205184.pt --caps 1 0.95 0.9 0.75 \\
        --out bench/out/action_cap.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import diagnostics, envs
from flow_mbpo_pwm.config import EnvConfig, EvaluationConfig
from flow_mbpo_pwm.reference_policy import load_reference_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_epoch import Column, report, table, write_record  # noqa: E402

FORWARD_VELOCITY = 5  # observation entry: the torso's velocity along +x, the reward's progress term


def play_capped(policy: Any, cap: float, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """One row: the policy's first episodes with its actions clipped to [-cap, cap]; the action columns are of the
    actions the env received."""
    env_config = EnvConfig(task=args.task, num_envs=args.envs, episode_length=args.episode_length)
    # A fresh env per row, not one reset again: every row starts from the same seeded states.
    env = envs.make_from_config(env_config, device, seed=EvaluationConfig().seed_base)
    recorder = diagnostics.EpisodeRecorder(env.max_episode_steps, env.num_envs, env.obs_dim, env.act_dim, device)
    returns = diagnostics.first_episode_returns(env, lambda obs: policy(obs).clamp(-cap, cap), recorder)
    record = recorder.record
    inside = diagnostics.first_episode_steps(record.dones).to(record.obs.dtype)
    speed = (record.obs[..., FORWARD_VELOCITY] * inside).sum() / inside.sum()
    return {
        "cap": cap,
        "return_mean": returns.mean().item(),
        "return_std": returns.std().item() if args.envs > 1 else 0.0,
        "forward_velocity": speed.item(),
        **diagnostics.action_columns(record),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+", type=Path, required=True, help="reference policy checkpoints")
    parser.add_argument("--caps", nargs="+", type=float, default=[1.0, 0.95, 0.9, 0.75], help="|a| caps, in (0, 1]")
    parser.add_argument("--envs", type=int, default=16, help="episodes per row, side by side")
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--task", default="ant", help="env registry id (default: the Newton Ant)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if not all(0 < cap <= 1 for cap in args.caps) or args.envs < 1 or args.episode_length < 1:
        parser.error("--caps must lie in (0, 1]; --envs and --episode-length must be >= 1")
    missing = [str(path) for path in args.policies if not path.is_file()]
    if missing:
        parser.error(f"no such policy file: {', '.join(missing)}")
    device = torch.device(args.device)
    torch.set_grad_enabled(False)

    line = table([
        Column("policy env steps", "policy_env_steps", ","), Column("cap", "cap", ".2f", 5),
        Column("return", "return_mean", ".0f", 8), Column("+-", "return_std", ".0f", 6),
        Column("v_x", "forward_velocity", ".2f", 5), Column("|a|", "action_magnitude", ".2f", 5),
        Column("sat", "action_saturation", ".2f", 5), Column("jitter", "action_jitter", ".3f"),
    ])  # fmt: skip

    def rows_of(path: Path) -> Iterator[dict[str, Any]]:
        policy, meta = load_reference_policy(path, device)
        for cap in args.caps:
            yield {
                "policy": str(path),
                "policy_env_steps": int(meta["env_steps"]),
                **play_capped(policy, cap, args, device),
            }

    rows = report((row for path in args.policies for row in rows_of(path)), line)
    write_record(args.out, device, args, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
