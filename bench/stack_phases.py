"""The world-model and critic phases of a PWM epoch for a stack of S seeds against one seed, without physics.

These two phases are 70-90% of a captured epoch on the GPU (bench/RESULTS.md). The script times them for a
stack of S seeds and for one seed, on the same card in one run. They run on real shapes: the config's cell
(5M: batch 256 x 17 windows, 8 world-model steps; 32 critic minibatches of H x N / 4 latents), with random
replay data and a random rollout. The env is not needed, so neither is Warp: this runs wherever torch does.
It also times a whole epoch on a stand-in env with the Ant's shapes and no physics (`StandInEnv`: a fixed
random map of observation and action, pure torch, captured like the Ant), so "imagination" (the epoch minus the
two phases) is the imagination and actor phase's model work; `bench/train_epoch.py --seeds S` times it with the
real Ant.

    PYTHONPATH=src python bench/stack_phases.py --device cuda --seeds 1 5 --out bench/out/stack_phases.json

Prints a table (ms per phase per epoch; an epoch's per-seed cost and its ratio to the first stack size), and writes
the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from flow_mbpo_pwm.algorithms.pwm import PWM, Rollout
from flow_mbpo_pwm.config import load_experiment
from flow_mbpo_pwm.data.replay import ReplayBuffer
from flow_mbpo_pwm.train_state import set_matmul_precision

OBS_DIM, ACT_DIM = 37, 8  # the Ant's


def filled_buffers(agent: PWM, steps: int, generator: torch.Generator) -> list[ReplayBuffer]:
    """One replay buffer per seed holding `steps` random transitions of every env, episodes of 200 steps."""
    N, dev = agent.num_envs, agent.device
    buffers = []
    for _ in range(agent.num_seeds):
        buffer = ReplayBuffer(steps * N, N, OBS_DIM, ACT_DIM, dev, horizon=agent.config.pwm.horizon)
        for t in range(steps):
            obs = torch.randn(N, OBS_DIM, generator=generator, device=dev)
            action = torch.rand(N, ACT_DIM, generator=generator, device=dev) * 2 - 1
            reward = torch.randn(N, generator=generator, device=dev)
            truncated = torch.full((N,), (t + 1) % 200 == 0, device=dev)
            terminated = torch.zeros(N, dtype=torch.bool, device=dev)
            buffer.add(obs, action, reward, obs, terminated, truncated)
        buffers.append(buffer)
    return buffers


def random_rollout(agent: PWM, generator: torch.Generator) -> Rollout:
    H, S, N = agent.config.pwm.horizon, agent.num_seeds, agent.num_envs
    latent, dev = agent.config.world_model.latent_dim, agent.device
    logits = torch.randn(H, S, N, latent, generator=generator, device=dev)
    latents = torch.softmax(logits.view(H, S, N, -1, 8), dim=-1).view(H, S, N, latent)
    zero = torch.zeros(S, device=dev)
    return Rollout(
        objective=torch.zeros(S, N, device=dev),
        latents=latents,
        rewards=torch.randn(H, S, N, generator=generator, device=dev),
        next_values=torch.randn(H, S, N, generator=generator, device=dev),
        dones=torch.rand(H, S, N, generator=generator, device=dev) < 0.01,
        episodes=zero.double(),
        episode_return_sum=zero.double(),
        episode_return_max=zero.double(),
        saturation=torch.zeros(S, N, device=dev),  # the actor's penalty terms: the critic's phase does not read them
        smoothness=torch.zeros(S, N, device=dev),
    )


class StandInEnv:
    """The Ant's shapes without its physics: `o' = tanh(o W + a B)`, reward `o'[:, 0]`, no episode ever ends. Pure
    torch on the device, so the imagination phase is captured with it as with the Warp Ant."""

    supports_torch_graph_capture = True

    def __init__(self, num_envs: int, device: torch.device, generator: torch.Generator):
        self.num_envs = num_envs
        self.w = torch.randn(OBS_DIM, OBS_DIM, generator=generator, device=device) / OBS_DIM**0.5
        self.b = torch.randn(ACT_DIM, OBS_DIM, generator=generator, device=device) / ACT_DIM**0.5
        self.obs = torch.randn(num_envs, OBS_DIM, generator=generator, device=device)
        self.never = torch.zeros(num_envs, dtype=torch.bool, device=device)

    def step(self, action: torch.Tensor):
        self.obs.copy_(torch.tanh(self.obs @ self.w + action @ self.b))
        obs = self.obs.clone()
        return obs, obs[:, 0].clone(), self.never, self.never, {"final_obs": obs}


def time_phase(fn, repeats: int, device: torch.device) -> float:
    """Mean ms per call over `repeats` calls after 3 warm-up calls (capture happens there)."""
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3 / repeats


def measure(
    config_path: str, size: str, dynamics: str, seeds: int, device: torch.device, repeats: int, compile: bool
) -> dict:
    config = load_experiment(config_path).cell("ant", size, dynamics, 0)
    config = replace(config, run=replace(config.run, compile=compile))
    agent = PWM(OBS_DIM, ACT_DIM, config, device, seeds=tuple(range(seeds)))
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    buffers = filled_buffers(agent, 400, generator)
    began = time.perf_counter()
    agent.train_world_model(buffers, 1)  # warm: every seed trains (and `run.compile` compiles here)
    first_call_s = time.perf_counter() - began
    training = agent.training_seeds()
    rollout = random_rollout(agent, generator)
    wm_steps = config.pwm.wm_steps
    wm_ms = time_phase(lambda: agent.world_model_steps(buffers, wm_steps, training), repeats, device)
    critic_ms = time_phase(lambda: agent.critic_step(rollout, training), repeats, device)
    env = StandInEnv(seeds * agent.num_envs, device, generator)
    obs = env.obs.clone()
    epoch_ms = time_phase(lambda: agent.epoch(env, obs, buffers, 0.5), repeats, device)
    return {
        "size": size,
        "dynamics": dynamics,
        "seeds": seeds,
        "compile": compile,
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "first_call_s": first_call_s,
        "world_model_ms": wm_ms,
        "critic_ms": critic_ms,
        "epoch_ms": epoch_ms,
        "imagination_ms": epoch_ms - wm_ms - critic_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--sizes", nargs="+", default=["5M"])
    parser.add_argument("--dynamics", nargs="+", default=["deterministic", "flow"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--compile", action="store_true", help="run.compile: world-model loss, imagination and critic loss compiled"
    )
    parser.add_argument(
        "--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 matrix products (run.tf32)"
    )
    parser.add_argument("--out", default="bench/out/stack_phases.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    # TF32 matrix products: every row recorded so far (bench/RESULTS.md) was timed with them, while training runs
    # full float32 unless `run.tf32` is set; `--no-tf32` times training's default.
    set_matmul_precision(args.tf32)
    rows = []
    for size in args.sizes:
        for dynamics in args.dynamics:
            for seeds in args.seeds:
                row = measure(args.config, size, dynamics, seeds, device, args.repeats, args.compile)
                rows.append(row)
                base = next(r for r in rows if r["size"] == size and r["dynamics"] == dynamics)
                row["ratio_to_first"] = row["epoch_ms"] / base["epoch_ms"]
                print(
                    f"{size:4s} {dynamics:14s} S={seeds:2d}  world model {row['world_model_ms']:8.1f} ms  "
                    f"critic {row['critic_ms']:7.1f} ms  imagination {row['imagination_ms']:7.1f} ms  "
                    f"epoch {row['epoch_ms']:7.1f} ms  per seed {row['epoch_ms'] / seeds:7.1f} ms  "
                    f"x{row['ratio_to_first']:.2f} of S={base['seeds']}  first call {row['first_call_s']:.0f} s",
                    flush=True,
                )
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "host": platform.node(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
