"""Can PWM's actor act on the world model's imagined latents as on the real ones and still hold the gait?

`flow-mbpo-pwm clone` with `clone.imagined_steps: k` (clone.py), its imagined latents drawn once instead of every
step: a pool of `--pool` dataset windows of k transitions, the world model rolled from E(o_0) along their recorded
actions (`clone.imagined_latents`), and each clone step fits the actor on `--batch` real latents and `--batch`
imagined ones of the pool against the reference's actions at the real states. The world model is fixed during a
clone, so a pool is the stage's own augmentation, drawn once: on this 2-core CPU the stage's k model steps per
clone step (4,096 windows) would take seconds each, the pool a quarter of a minute in all. Writes the actor as the
stage does (actor.pt, clone_metrics.csv beside it), so that `bench/imagined_gait.py` measures it beside the plain
clone: its return on the env, and its action gap on the model's closed loop.

Why: cloned on real latents only, the 5.3k PPO gait's clone acted 0.34 per action entry differently after one
model step along the recorded actions, 0.68 at step 4 (bench/RESULTS.md), so PWM's gradient at h >= 1 is taken
where the actor does not act as it does in the env.

    PYTHONPATH=src python bench/imagined_clone.py --config CONFIG --world-model wm.pt --dataset ant.h5 \\
        --reference-policy policy.pt --imagined-steps 4 --pool 16384 --steps 3000 --out actor_imagined.pt
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from flow_mbpo_pwm import clone
from flow_mbpo_pwm.config import ConfigError, load_experiment, with_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_epoch import add_world_model_arguments, require_files  # noqa: E402

POOL_CHUNK = 4096  # windows rolled per call: bounded memory


class PooledCloning(clone.Cloning):
    """The clone stage with its imagined latents drawn once, from `pool` windows (see the top)."""

    def __init__(self, *args, pool: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.pool = pool

    def _imagined(self, batch: int) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None:
        if self.windows is None:
            return None
        generator = torch.Generator(device=self.device).manual_seed(self.config.run.seed + 1)
        sizes = [min(POOL_CHUNK, self.pool - start) for start in range(0, self.pool, POOL_CHUNK)]
        drawn = [
            clone.imagined_latents(self.agent.world_model, self.reference, self.windows, n, generator) for n in sizes
        ]
        latents, labels = torch.cat([z for z, _ in drawn]), torch.cat([a for _, a in drawn])

        def imagined(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            pick = torch.randint(len(latents), (batch,), generator=g, device=latents.device)
            return latents[pick], labels[pick]

        return imagined


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_model_arguments(parser, "experiment YAML: the cell's actor and world model")
    parser.add_argument("--reference-policy", type=Path, required=True, help="the reference's policy.pt")
    parser.add_argument("--imagined-steps", type=int, default=4, help="k: model steps per window (0: plain clone)")
    parser.add_argument("--pool", type=int, default=16384, help="windows rolled once")
    parser.add_argument("--imagined-weight", type=float, default=1.0, help="the imagined latents' loss weight")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=4096, help="real latents, and imagined ones, per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, required=True, help="actor.pt to write (clone_metrics.csv beside it)")
    args = parser.parse_args(argv)
    require_files(parser, args.config, args.world_model, args.dataset, args.reference_policy)
    if args.imagined_steps < 0 or args.imagined_weight < 0 or min(args.pool, args.steps, args.batch) < 1:
        parser.error("--imagined-steps and --imagined-weight must be >= 0, --pool, --steps and --batch >= 1")
    try:
        config = load_experiment(args.config).cell(args.task, args.size, args.dynamics, 0)
        config = with_overrides(config, run={"device": args.device})
        cloning = PooledCloning(
            config, args.world_model, args.dataset, args.reference_policy, args.out, args.imagined_steps,
            args.imagined_weight, pool=args.pool,
        )  # fmt: skip
    except ConfigError as error:
        parser.error(str(error))
    return cloning.run(args.steps, args.batch, args.lr, log_every=max(args.steps // 10, 1))


if __name__ == "__main__":
    raise SystemExit(main())
