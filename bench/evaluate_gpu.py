"""GPU check of `flow-mbpo-pwm evaluate` on the Ant: an untrained policy of each (size, dynamics) evaluated for N
full-length episodes on CUDA; checks the outputs' invariants and times the stage. Usage:

    python bench/evaluate_gpu.py OUT.json [--episodes 100] [--episode-length 1000] [--sizes 5M 48M]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.checkpoints import save_policy
from flow_mbpo_pwm.config import load_experiment, with_overrides
from flow_mbpo_pwm.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--sizes", nargs="+", default=["5M", "48M"])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    experiment = load_experiment(
        {
            "tasks": {"ant": {"episode_length": args.episode_length}},
            "sizes": args.sizes,
            "evaluation": {"episodes": args.episodes, "num_envs": 100},
        }
    )
    results = []
    for size in args.sizes:
        for dynamics in ("deterministic", "flow"):
            config = with_overrides(experiment.cell("ant", size, dynamics, 0), run={"device": args.device})
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                agent = PWM(37, 8, config, torch.device(args.device))
                meta = {
                    "task": "ant",
                    "size": size,
                    "dynamics": dynamics,
                    "seed": 0,
                    "epoch": 0,
                    "env_steps": 0,
                    "obs_dim": 37,
                    "act_dim": 8,
                    "val_return": 0.0,
                    "config": config.to_dict(),
                }
                save_policy(tmp / "best.pt", agent, meta)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                rc = evaluate(
                    config, experiment.evaluation, tmp / "best.pt", args.episodes, tmp / "e.csv", tmp / "t.h5"
                )
                seconds = time.perf_counter() - start
                table = pd.read_csv(tmp / "e.csv")
                with h5py.File(tmp / "t.h5") as f:
                    rewards, lengths = f["rewards"][()], f["lengths"][()]
                results.append(
                    {
                        "size": size,
                        "dynamics": dynamics,
                        "rc": rc,
                        "seconds": round(seconds, 2),
                        "rows": len(table),
                        "episodes_distinct": int(table.episode.nunique()),
                        "length_mean": float(table.length.mean()),
                        "terminated": int(table.terminated.sum()),
                        "truncated": int(table.truncated.sum()),
                        "return_mean": float(table["return"].mean()),
                        "returns_match_h5": bool(np.allclose(table["return"], rewards.astype(np.float64).sum(1))),
                        "lengths_match_h5": bool((lengths == table.length.to_numpy()).all()),
                        "env_steps_per_s": round(float(table.length.sum()) / seconds),
                    }
                )
                print(results[-1], flush=True)
    args.out.write_text(
        json.dumps(
            {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu", "results": results},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
