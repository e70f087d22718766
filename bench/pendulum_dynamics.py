"""World-model dynamics on a cheap CPU testbed: how soon PWM balances InvertedPendulum with each dynamics variant.

On the Ant a flow deciding run costs a session's whole GPU time. On the CPU, PWM balances InvertedPendulum in a few
hundred epochs with the settings of tests/train/test_learning.py (`train_helpers.LEARNING_RUN`: 16 envs, episodes of
at most 100 steps, H = 4, latent 64, the preset's loss weights 1 : 1). So a flow change that helps the Ant can be
tried here first: each variant trains its seeds as one stack (one real `flow-mbpo-pwm train` process), one variant
after another. `--coefs 20 0.1` runs it at the Ant configs' old weights, where flow stays up less than
deterministic; `--actor-saturation 0.1` adds the actor penalty the configs train with since 2026-12-02, which
changes little here (bench/RESULTS.md).

    PYTHONPATH=src python bench/pendulum_dynamics.py --variants det flow-log flow-simplex --seeds 0 1 2 3 \
        --epochs 500 --work /tmp/pend --out bench/out/pendulum_dynamics.json

`--latent-dim 512` gives the world model the Ant presets' latent (64 SimNorm groups of 8) on the same task: does
flow's gap on the Ant come from the latent's size? Not measured yet: an 8-seed deterministic stack ran 0.13
epochs/s on the 2-core VM (~65 min for 500 epochs), flow slower, so it needs a longer CPU job than a session's tail.

Variants (`VARIANTS`): the product's dynamics (residual deterministic; flow Heun K = 4 in the log-simplex chart with
its source detached) and flow changes. Per variant and seed it prints the first validation epoch at which the
deterministic validation return reached BALANCED (of 100), the best, and the mean over the later half of the
validations (does it stay up?), and writes them with every validation return as JSON. Validation every 20 epochs,
8 episodes. A finished variant's runs are read, not retrained (delete its folder under --work to rerun it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "train"))
from train_helpers import LEARNING_RUN, TINY_EXPERIMENT  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_epoch import machine  # noqa: E402

from flow_mbpo_pwm.config import deep_merge, load_experiment  # noqa: E402

FLOW = {"kind": "flow", "integrator": "heun", "substeps": 4, "detach_source": True}
VARIANTS = {
    "det": {"kind": "deterministic", "residual": True},  # config/config.yaml's deterministic
    "flow-log": FLOW,  # config/config.yaml's flow
    "flow-simplex": {**FLOW, "project": "none"},  # the flow loss in simplex coordinates
    "flow-endpoint": {**FLOW, "endpoint_coef": 1.0},  # plus the deterministic model's latent loss on its endpoint
    "flow-metric": {**FLOW, "loss_metric": "simplex"},  # the flow loss's chart errors weighted to the simplex's size
}
BALANCED = 95.0  # validation return that counts as balanced (100 = upright for the whole episode)


def experiment(
    variants: list[str],
    seeds: list[int],
    epochs: int,
    latent_dim: int | None = None,
    coefs: tuple[float, float] | None = None,
    actor_saturation: float | None = None,
) -> dict:
    config = deep_merge(TINY_EXPERIMENT, LEARNING_RUN)
    if latent_dim is not None:  # the Ant's presets have 512 (64 SimNorm groups of 8); the testbed's 64
        config["train"]["world_model"]["latent_dim"] = latent_dim
    config["dynamics"] = {name: VARIANTS[name] for name in variants}
    config["seeds"] = seeds
    config["collect"] = {"seed": seeds[0]}  # unused here (no offline data), but it must name one of the seeds
    config["train"]["pwm"]["epochs"] = epochs
    if coefs is not None:  # the world-model loss's weights for every variant (default the preset's 1 : 1)
        config["train"]["pwm"]["wm_dynamics_coef"], config["train"]["pwm"]["wm_reward_coef"] = coefs
    if actor_saturation is not None:  # the actor's saturation penalty (default the preset's 0; the configs' 0.1)
        config["train"]["pwm"]["actor_saturation_coef"] = actor_saturation
    return config


def train(config_path: Path, variant: str, seeds: list[int], work: Path) -> float:
    """One stack of the variant's seeds through the real CLI; seconds it took (0 if it had finished before)."""
    runs = [work / variant / f"seed{seed}" for seed in seeds]
    if all((run / "validation.csv").exists() for run in runs):
        return 0.0
    cell = ["--task", "pendulum", "--size", "tiny", "--dynamics", variant]
    command = [sys.executable, "-m", "flow_mbpo_pwm.cli", "train", "--config", str(config_path), *cell,
               "--seed", *map(str, seeds), "--run-dir", *map(str, runs)]  # fmt: skip
    began = time.perf_counter()
    with open(work / f"{variant}.log", "w") as log:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=ROOT, env=env)
    return time.perf_counter() - began


def summary(run: Path) -> dict:
    validation = pd.read_csv(run / "validation.csv")
    returns = validation["val_return_mean"]
    balanced = validation["epoch"][returns >= BALANCED]
    return {
        "first_balanced_epoch": int(balanced.iloc[0]) if len(balanced) else None,
        "best": float(returns.max()),
        "later_half_mean": float(returns.iloc[len(returns) // 2 :].mean()),
        "returns": [round(float(r), 1) for r in returns],
        "epochs": [int(e) for e in validation["epoch"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--latent-dim", type=int, default=None, help="world-model latent size (default: 64)")
    parser.add_argument(
        "--coefs", type=float, nargs=2, default=None, metavar=("DYNAMICS", "REWARD"),
        help="the world-model loss's weights for every variant (default: the preset's 1 1; the Ant configs' 20 0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--actor-saturation", type=float, default=None, metavar="C",
        help="pwm.actor_saturation_coef for every variant (default: the preset's 0; the configs' 0.1)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("/tmp/pendulum_dynamics"))
    parser.add_argument("--out", type=Path, default=None, help="JSON of every variant's runs")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    config_path = args.work / "experiment.yaml"
    config = experiment(args.variants, args.seeds, args.epochs, args.latent_dim, args.coefs, args.actor_saturation)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    rows = []
    print(f"{'variant':14s} {'seed':>4s} {'first >= 95 at':>14s} {'best':>6s} {'later-half mean':>15s}")
    for variant in args.variants:
        seconds = train(config_path, variant, args.seeds, args.work)
        for seed in args.seeds:
            run = args.work / variant / f"seed{seed}"
            row = {"variant": variant, "seed": seed, "train_seconds": seconds, **summary(run)}
            rows.append(row)
            first = row["first_balanced_epoch"]
            print(f"{variant:14s} {seed:>4d} {'never' if first is None else first:>14} {row['best']:>6.0f}"
                  f" {row['later_half_mean']:>15.1f}")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cell = load_experiment(config).cell("pendulum", "tiny", args.variants[0], args.seeds[0])
        facts = {
            "machine": machine(torch.device("cpu")),
            "epochs": args.epochs,
            "latent_dim": cell.world_model.latent_dim,
            "coefs": [cell.pwm.wm_dynamics_coef, cell.pwm.wm_reward_coef],  # as resolved: the preset's unless --coefs
            "actor_saturation_coef": cell.pwm.actor_saturation_coef,
            "rows": rows,
        }
        args.out.write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
