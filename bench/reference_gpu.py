"""Time the PPO reference (rsl-rl) on one GPU: env steps/s and held-out return against wall time.

Runs the real `flow-mbpo-pwm reference` stage (in process) into a fresh folder, then `evaluate` on the final
policy (100 held-out episodes by default), and prints one table row per snapshot plus the throughput. Writes
everything as JSON.

    PYTHONPATH=src python bench/reference_gpu.py --config config/config.yaml --max-minutes 10 --out bench/out/ref.json
    # knobs: --num-envs 4096 --env-steps 400000000 --entropy-coef 0.0 --min-noise-std 0.0 --learning-rate 1e-3
    #        --schedule adaptive --seed 0 --episodes 100

Needs CUDA for meaningful numbers (it runs on the CPU too, slowly).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--task", default="ant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--env-steps", type=int, default=None, help="override reference.env_steps")
    parser.add_argument("--max-minutes", type=float, default=None, help="override reference.max_minutes")
    parser.add_argument("--num-envs", type=int, default=None, help="override reference.num_envs")
    parser.add_argument("--entropy-coef", type=float, default=None, help="override reference.entropy_coef")
    parser.add_argument("--learning-rate", type=float, default=None, help="override reference.learning_rate")
    parser.add_argument("--min-noise-std", type=float, default=None, help="override reference.min_noise_std")
    parser.add_argument("--schedule", choices=("adaptive", "fixed"), default=None, help="override reference.schedule")
    parser.add_argument("--episodes", type=int, default=100, help="held-out evaluation episodes (0 = skip)")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--out", type=Path, default=Path("bench/out/reference_gpu.json"))
    args = parser.parse_args(argv)

    from flow_mbpo_pwm import io
    from flow_mbpo_pwm.config import load_experiment
    from flow_mbpo_pwm.evaluate import run_episodes
    from flow_mbpo_pwm.reference import evaluation_cell, reference

    experiment = load_experiment(args.config)
    changes = {"num_envs": args.num_envs, "entropy_coef": args.entropy_coef, "learning_rate": args.learning_rate,
               "min_noise_std": args.min_noise_std, "schedule": args.schedule}  # fmt: skip
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes:
        experiment = dataclasses.replace(experiment, reference=dataclasses.replace(experiment.reference, **changes))
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="reference_gpu_"))
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    start = time.monotonic()
    code = reference(
        experiment, args.task, args.seed, run_dir, device=args.device, env_steps=args.env_steps,
        max_minutes=args.max_minutes,
    )  # fmt: skip
    wall = time.monotonic() - start
    if code != 0:
        print(f"reference exited with {code}", file=sys.stderr)
        return code
    summary = io.read_json(run_dir / "train_summary.json")
    validation = pd.read_csv(run_dir / "validation.csv")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    result = {
        "gpu": gpu,
        "config": str(args.config),
        "reference": dataclasses.asdict(experiment.reference),
        "overrides": {"env_steps": args.env_steps, "max_minutes": args.max_minutes, **changes},
        "wall_seconds_total": round(wall, 1),
        "train_seconds": summary["train_seconds"],
        "env_steps": summary["env_steps"],
        "iterations": summary["epochs"],
        "stopped_by": summary["stopped_by"],
        "env_steps_per_second": summary["env_steps"] / summary["train_seconds"],
        "validation": validation[["iteration", "env_steps", "wall_seconds", "val_return_mean"]].to_dict("records"),
        "train_curve": metrics[["env_steps", "wall_seconds", "train_return_mean"]].to_dict("records"),
    }
    if args.episodes > 0:
        cell = evaluation_cell(experiment, args.task, args.seed, args.device)
        episodes = run_episodes(cell, experiment.evaluation, run_dir / "policy.pt", args.episodes)
        result["heldout_return_mean"] = float(episodes["returns"].mean())
        result["heldout_return_std"] = float(episodes["returns"].std())
        result["heldout_episodes"] = args.episodes

    print(f"\nPPO reference (rsl-rl) on {gpu}: {result['env_steps']:,} env steps in {result['train_seconds']:.0f} s "
          f"= {result['env_steps_per_second'] / 1e6:.3f}M env steps/s (updates included), stopped by "
          f"{result['stopped_by']}")  # fmt: skip
    print(f"{'iteration':>10} {'env steps':>14} {'wall s':>8} {'validation return':>18}")
    for row in result["validation"]:
        it, steps, wall_s, ret = (row[k] for k in ("iteration", "env_steps", "wall_seconds", "val_return_mean"))
        print(f"{it:>10} {steps:>14,} {wall_s:>8.1f} {ret:>18.1f}")
    if "heldout_return_mean" in result:
        print(f"held-out evaluation of the final policy: {result['heldout_return_mean']:.1f} "
              f"+- {result['heldout_return_std']:.1f} over {args.episodes} episodes")  # fmt: skip
    io.write_json(args.out, result)
    print(f"wrote {args.out} (run folder {run_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
