"""Time a stack's validation episodes: each seed in its own validation env, one after the other (`train` before
2026-12-04), against every seed's envs in one batched env (`train` since), on the Ant (issue 9).

    PYTHONPATH=src python bench/validation_episodes.py --device cuda --sizes 5M --seeds 1 3 5 \
        --out bench/out/validation_episodes.json

For each size and stack of S seeds it builds the real agent of S seeds (untrained: an episode's cost does not depend
on the weights, and an untrained Ant stands to the end of every episode) and times `--repeats` validations each way,
recording every step as `train` does (diagnostics.EpisodeRecorder): S lone envs of `--episodes` copies one after the
other, and one env of S x `--episodes` copies (envs.make_for_seeds, block s seeded as seed s's lone env). The two
orders alternate from repeat to repeat; one untimed validation of each goes first. Each row also says whether the
batched returns equal the lone ones bitwise (on the CPU they must: tests/train/test_wm_diagnostics.py).

Prints a table and writes every row (plus machine facts) as JSON to --out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import diagnostics, envs
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import DYNAMICS_PRESETS, SIZE_PRESETS, EnvConfig, RunConfig, TrainConfig
from flow_mbpo_pwm.train_state import set_matmul_precision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_epoch import report, write_record  # noqa: E402

VALIDATION_SEED_BASE = RunConfig().validation_seed_base


def validate(env: Any, policy: Any, blocks: int, device: torch.device) -> torch.Tensor:
    """One validation's episodes on `env` (the returns, on the host), recorded step by step as `train` records them."""
    recorder = diagnostics.EpisodeRecorder(
        env.max_episode_steps, env.num_envs, env.obs_dim, env.act_dim, device, blocks=blocks
    )
    returns = diagnostics.first_episode_returns(env, policy, recorder).cpu()
    recorder.split()
    return returns


def bench_stack(size: str, seeds: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    config = TrainConfig(
        task_name="ant",
        size=size,
        dynamics_name="deterministic",
        env=EnvConfig(task=args.task, num_envs=args.episodes, episode_length=args.episode_length),
        world_model=SIZE_PRESETS[size],
        dynamics=DYNAMICS_PRESETS["deterministic"],
        run=RunConfig(seed=0, device=str(device), tf32=args.tf32),
    ).validate()
    validation_seeds = [VALIDATION_SEED_BASE + s for s in range(seeds)]
    together = envs.make_for_seeds(config.env, device, validation_seeds)
    alone = [envs.make_for_seeds(config.env, device, [seed]) for seed in validation_seeds]
    agent = PWM(together.obs_dim, together.act_dim, config, device, cuda_graphs=False, seeds=list(range(seeds)))

    def one_by_one() -> torch.Tensor:
        lone = zip(alone, agent.members, strict=True)
        return torch.cat([validate(env, member.act, 1, device) for env, member in lone])

    def batched() -> torch.Tensor:
        return validate(together, agent.act, seeds, device)

    ways = {"one_by_one": one_by_one, "together": batched}
    returns = {name: way() for name, way in ways.items()}  # untimed: Warp's kernels load, torch warms up
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for repeat in range(args.repeats):
        for name in list(ways)[:: 1 if repeat % 2 == 0 else -1]:
            begun = time.perf_counter()
            ways[name]()  # ends with a host read of the returns: the episodes have run
            seconds[name].append(time.perf_counter() - begun)
    one, both = statistics.median(seconds["one_by_one"]), statistics.median(seconds["together"])
    return {
        "size": size,
        "seeds": seeds,
        "episodes_per_seed": args.episodes,
        "episode_length": args.episode_length,
        "one_by_one_s": one,
        "together_s": both,
        "ratio": both / one,
        "returns_equal": torch.equal(returns["one_by_one"], returns["together"]),
        "seconds": seconds,
    }


def line(row: dict[str, Any]) -> str:
    stack_envs = row["seeds"] * row["episodes_per_seed"]
    return (
        f"{row['size']:>5} {row['seeds']:>5} {stack_envs:>5} {row['one_by_one_s']:>15.3f} {row['together_s']:>13.3f} "
        f"{row['ratio']:>6.2f} {str(row['returns_equal']):>6}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--task", default="ant", help="env registry id (default: the Newton Ant)")
    parser.add_argument("--sizes", nargs="+", default=["5M"], choices=list(SIZE_PRESETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 3, 5], help="stack sizes to time")
    parser.add_argument("--episodes", type=int, default=RunConfig().validation_episodes, help="envs per seed")
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed validations each way")
    parser.add_argument("--tf32", action="store_true", help="run.tf32: TF32 matrix products on CUDA")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if min(args.seeds) < 1 or args.episodes < 1 or args.repeats < 1:
        parser.error("--seeds, --episodes and --repeats must be >= 1")
    device = torch.device(args.device)
    set_matmul_precision(args.tf32)
    torch.set_grad_enabled(False)

    print(f"{'size':>5} {'seeds':>5} {'envs':>5} {'one by one (s)':>15} {'together (s)':>13} {'ratio':>6} {'equal':>6}")
    rows = report((bench_stack(size, seeds, args, device) for size in args.sizes for seeds in args.seeds), line)
    write_record(args.out, device, args, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
