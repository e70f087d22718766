"""Tensor operations per PWM epoch, by phase: a device-independent count of what becomes GPU kernel launches.

A captured 5M epoch on the GPU is bound by how many small kernels it runs, not by their size (bench/RESULTS.md).
So the number of operations is the quantity that kernel fusion and seed stacking must cut. This script counts
every ATen operation that PyTorch dispatches below autograd and vmap (a `TorchDispatchMode`; views, which launch
no kernel, are left out). Backward passes and the batched ops that `vmap` runs for a stack are counted too.

It runs one real epoch on the Ant (CPU is enough; Warp runs the physics, which is not counted) and counts:
- the whole epoch (`PWM.epoch`: imagination with the env stepping, actor, critic, world model);
- the critic phase and the world-model phase alone, as `bench/stack_phases.py` times them.
The rest of the epoch is imagination + actor. Counts are per epoch, for S stacked seeds.

    PYTHONPATH=src python bench/op_counts.py --seeds 1 3 --out bench/out/op_counts.json

On a GPU, one operation is usually one kernel (a foreach operation: one per chunk of tensors). Scalar reads back
to the host (`_local_scalar_dense`) are not counted: a captured run has none.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
from pathlib import Path

import torch
from stack_phases import filled_buffers, random_rollout
from torch.utils._python_dispatch import TorchDispatchMode

from flow_mbpo_pwm import envs
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import load_experiment

# Operations that only make a new view or read a scalar back: no kernel of their own on the GPU.
NOT_KERNELS = frozenset(
    {
        *("alias", "as_strided", "chunk", "detach", "diagonal", "empty", "empty_like", "empty_strided", "expand"),
        *("lift_fresh", "movedim", "narrow", "permute", "_reshape_alias", "reshape", "select", "slice", "split"),
        *("split_with_sizes", "squeeze", "t", "transpose", "unbind", "unflatten", "unsqueeze", "view", "_unsafe_view"),
        "_local_scalar_dense",
    }
)


class OperationCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        if name not in NOT_KERNELS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def counted(fn) -> collections.Counter[str]:
    with OperationCount() as mode:
        fn()
    return mode.counts


def measure(config_path: str, size: str, dynamics: str, seeds: int) -> dict:
    config = load_experiment(config_path).cell("ant", size, dynamics, 0)
    device = torch.device("cpu")
    env = envs.make_for_seeds(config.env, device, list(range(seeds)))  # as train.py builds a stack's env
    agent = PWM(env.obs_dim, env.act_dim, config, device, seeds=tuple(range(seeds)))
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    buffers = filled_buffers(agent, 400, generator)
    agent.train_world_model(buffers, 1)  # warm: every seed trains
    training = agent.training_seeds()
    obs = env.reset()
    agent.epoch(env, obs, buffers, progress=0.0)  # first-use allocations out of the way
    epoch = counted(lambda: agent.epoch(env, obs, buffers, progress=0.0))
    rollout = random_rollout(agent, generator)
    critic = counted(lambda: agent.critic_step(rollout, training))
    world_model = counted(lambda: agent.world_model_steps(buffers, config.pwm.wm_steps, training))
    phases = {"epoch": epoch, "critic": critic, "world_model": world_model}
    row = {"size": size, "dynamics": dynamics, "seeds": seeds}
    for name, counts in phases.items():
        row[name] = sum(counts.values())
        row[f"{name}_top"] = dict(counts.most_common(8))
    row["imagine_actor"] = row["epoch"] - row["critic"] - row["world_model"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--sizes", nargs="+", default=["5M"])
    parser.add_argument("--dynamics", nargs="+", default=["deterministic", "flow"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--out", default="bench/out/op_counts.json")
    args = parser.parse_args()
    rows = []
    header = f"{'size':4s} {'dynamics':14s} {'S':>2s} {'epoch':>8s} {'imagine+actor':>13s} {'critic':>8s}"
    print(header + f" {'world model':>11s}")
    for size in args.sizes:
        for dynamics in args.dynamics:
            for seeds in args.seeds:
                row = measure(args.config, size, dynamics, seeds)
                rows.append(row)
                print(
                    f"{size:4s} {dynamics:14s} {seeds:2d} {row['epoch']:8d} {row['imagine_actor']:13d} "
                    f"{row['critic']:8d} {row['world_model']:11d}",
                    flush=True,
                )
    machine = {"torch": torch.__version__, "host": platform.node(), "counted_on": "cpu"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
