"""Measure the Ant calibration: rest height under zero torque and robustness under random torques.

    python -m flow_mbpo_pwm.envs.calibrate --num-envs 16 --seconds 10 --out calib.json [--override key=value ...]

Prints the numbers recorded in CALIBRATION.md. The same functions back the calibration tests (small N there).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import torch

from . import make

# Capsule/sphere surface points per body, in body coordinates: (point, radius). Torso: sphere centre;
# thigh: both capsule ends; foot: both capsule ends. Used to measure penetration/tunnelling.
_R_CAP = 0.08


def _surface_points(env) -> torch.Tensor:
    """Lowest surface height [N] over the torso sphere and every capsule end (negative = below the ground)."""
    import warp as wp

    body_q = wp.to_torch(env.state_0.body_q).view(env.num_envs, 9, 7)
    pos, quat = body_q[..., :3], body_q[..., 3:]
    lows = [pos[:, 0, 2] - 0.25]
    signs = [(1, 1), (-1, 1), (-1, -1), (1, -1)]  # leg 1..4 directions in the torso frame
    for leg, (sx, sy) in enumerate(signs):
        for body, length in ((1 + 2 * leg, 0.2), (2 + 2 * leg, 0.4)):
            tip_local = torch.tensor([sx * length, sy * length, 0.0])
            tip = pos[:, body] + _rotate(quat[:, body], tip_local)
            lows.append(pos[:, body, 2] - _R_CAP)
            lows.append(tip[:, 2] - _R_CAP)
    return torch.stack(lows, dim=1).min(dim=1).values


def _rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate v by quaternions q [.., 4] (x, y, z, w)."""
    xyz, w = q[..., :3], q[..., 3:]
    v = v.expand_as(xyz)
    t = 2.0 * torch.cross(xyz, v, dim=-1)
    return v + w * t + torch.cross(xyz, t, dim=-1)


def standing(env, seconds: float) -> dict[str, Any]:
    """Zero torque from the dflex reset distribution for `seconds`; torso heights after the first second."""
    env.reset()
    steps = int(round(seconds * 60))
    zeros = torch.zeros(env.num_envs, env.act_dim)
    heights, terminated_any = [], False
    for i in range(steps):
        obs, _, terminated, truncated, info = env.step(zeros)
        terminated_any |= bool(terminated.any())
        if i >= 60:
            heights.append(info["final_obs"][:, 0])
    h = torch.stack(heights)
    q, _ = env.joint_state()
    ankles = q[:, [8, 10, 12, 14]].abs().rad2deg()
    return {
        "seconds": seconds,
        "num_envs": env.num_envs,
        "terminated": terminated_any,
        "min_height_after_1s": float(h.min()),
        "final_height_mean": float(h[-1].mean()),
        "final_height_min": float(h[-1].min()),
        "final_height_max": float(h[-1].max()),
        "final_penetration_cm": float(-_surface_points(env).min() * 100),
        "final_abs_ankle_deg_min": float(ankles.min()),
        "nan": bool(torch.isnan(h).any()),
    }


def random_torques(env, steps: int, seed: int = 0) -> dict[str, Any]:
    """Uniform random actions in [-1, 1] (torques up to 200 N m) for `steps` steps."""
    env.reset()
    g = torch.Generator().manual_seed(seed)
    min_height, max_speed, max_pen, terminations, nonfinite = math.inf, 0.0, -math.inf, 0, 0
    for _ in range(steps):
        a = torch.rand(env.num_envs, env.act_dim, generator=g) * 2 - 1
        obs, _, terminated, _, info = env.step(a)
        fo = info["final_obs"]
        nonfinite += int((~torch.isfinite(fo)).any(dim=1).sum())
        min_height = min(min_height, float(fo[:, 0].min()))
        max_speed = max(max_speed, float(fo[:, 5:8].norm(dim=1).max()))
        max_pen = max(max_pen, float(-_surface_points(env).min()))
        terminations += int(terminated.sum())
    return {
        "steps": steps,
        "num_envs": env.num_envs,
        "min_torso_height": min_height,
        "max_torso_speed": max_speed,
        "max_penetration_cm": max_pen * 100,
        "terminations": terminations,
        "nonfinite_rows": nonfinite,
        "physics_failures": int(env.physics_failures.item()),
    }


def main(argv: list[str] | None = None) -> None:
    from ..io import write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--random-steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--override", action="append", default=[], help="calibration key=value (JSON value)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    overrides = {}
    for item in args.override:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    env = make("ant", args.num_envs, args.device, args.seed, **overrides)
    result = {
        "overrides": overrides,
        "standing": standing(env, args.seconds),
        "random_torques": random_torques(env, args.random_steps, args.seed),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
