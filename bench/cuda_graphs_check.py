"""Captured == eager on the GPU: the critic and world-model phases replayed from their CUDA graphs give the same
losses, parameters and generator state as the same phases run eagerly from the same state.

For each (size, dynamics) it builds the Ant exactly as bench/train_epoch.py does, trains a few epochs with CUDA
graphs (so both phases are warmed up, captured and replayed), then from one snapshot of the agent's state runs each
phase once replayed and once eagerly (the same Python code, same Adam, same generator state) and compares; then
runs the two captured phases side by side on two streams (PWM's epoch) and one after the other, from the same
state, `--side-by-side-repeats` times, and asks for bitwise equality (algorithms/graphs.py's `side_by_side`). A
second, whole-run comparison trains a CUDA-graph agent and an eager agent from the same seeds for a few epochs and
reports how far their losses drift apart (the env's contact solver is not bitwise
deterministic on the GPU, so this one is reported, not asserted).

    PYTHONPATH=src python bench/cuda_graphs_check.py --out bench/out/cuda_graphs_check.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_epoch import build, machine  # noqa: E402


def _state_tensors(agent: Any) -> list[torch.Tensor]:
    tensors = [*agent.parameters(), *agent.buffers()]
    for optimizer in (agent.actor_optimizer, agent.critic_optimizer, agent.wm_optimizer):
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


def snapshot(agent: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [t.detach().clone() for t in _state_tensors(agent)], agent.generator.get_state()


def restore(agent: Any, snap: tuple[list[torch.Tensor], torch.Tensor]) -> None:
    with torch.no_grad():
        for t, saved in zip(_state_tensors(agent), snap[0], strict=True):
            t.copy_(saved)
    agent.generator.set_state(snap[1])


def max_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = x.double(), y.double()
        worst = max(worst, float(((x - y).abs() / (y.abs() + 1e-6)).max()) if x.numel() else 0.0)
    return worst


def compare_phase(agent: Any, captured_fn: Any, eager_fn: Any) -> dict[str, Any]:
    snap = snapshot(agent)
    out_c = captured_fn()
    torch.cuda.synchronize()
    state_c, gen_c = snapshot(agent)
    restore(agent, snap)
    out_e = eager_fn()
    torch.cuda.synchronize()
    state_e, gen_e = snapshot(agent)
    restore(agent, (state_c, gen_c))  # continue from the captured result
    values_c = list(out_c.values()) if isinstance(out_c, dict) else list(out_c)
    values_e = list(out_e.values()) if isinstance(out_e, dict) else list(out_e)
    return {
        "outputs_captured": [float(v) for v in values_c],
        "outputs_eager": [float(v) for v in values_e],
        "outputs_max_rel_diff": max_rel(values_c, values_e),
        "state_max_rel_diff": max_rel(state_c, state_e),
        "state_bitwise_equal": all(torch.equal(x, y) for x, y in zip(state_c, state_e, strict=True)),
        "generator_state_equal": bool(torch.equal(gen_c, gen_e)),
    }


def phase_check(size: str, dynamics: str, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda")
    args.cuda_graphs, args.capture_imagination = True, False
    config, env, agent, buffers = build(size, dynamics, args, device)
    obs = env.reset()
    for _ in range(2):
        obs, _ = agent.epoch(env, obs, buffers, 0.0)
    agent.train_world_model(buffers, 1)
    for _ in range(3):  # eager warm-up, capture, replay of both phases
        obs, _ = agent.epoch(env, obs, buffers, 0.3)
    captured = [str(name[0] if isinstance(name, tuple) else name) for name in agent.graphs.captured()]
    steps = config.pwm.wm_steps
    wm = compare_phase(
        agent,
        lambda: agent.world_model_steps(buffers, steps),
        lambda: agent._world_model_steps(buffers, steps, agent.live_seeds()),
    )
    rollout, obs = agent.imagine(env, obs, buffers, with_grad=False)
    inputs = (rollout.latents, rollout.rewards, rollout.next_values, rollout.dones)
    live = agent.live_seeds()
    rows = rollout.rewards.shape[0] * rollout.rewards.shape[2]
    critic = compare_phase(
        agent,
        lambda: agent.critic_step(rollout),
        lambda: agent._critic_updates(*inputs, agent.critic_orders(rows, live), training=live),
    )

    def critic_and_world_model(concurrent: bool) -> Any:
        def phases() -> dict[str, torch.Tensor]:
            agent.concurrent_phases = concurrent
            try:
                (loss, norm), wm_metrics = agent.critic_and_world_model(rollout, buffers, steps, live)
            finally:
                agent.concurrent_phases = True
            return {"critic_loss": loss, "critic_grad_norm": norm, **wm_metrics}

        return phases

    # The two captured phases side by side on two streams against one after the other, from the same state, a few
    # times (a race between them would show as a difference now and then): the same kernels, so bitwise equal.
    side = [
        compare_phase(agent, critic_and_world_model(True), critic_and_world_model(False))
        for _ in range(args.side_by_side_repeats)
    ]
    return {
        "size": size, "dynamics": dynamics, "captured": captured, "world_model": wm, "critic": critic,
        "side_by_side": side,
    }  # fmt: skip


def run_check(size: str, dynamics: str, args: argparse.Namespace, graphs: bool) -> list[dict[str, float]]:
    device = torch.device("cuda")
    args.cuda_graphs = graphs
    torch.manual_seed(0)
    args.capture_imagination = graphs and args.imagination
    config, env, agent, buffers = build(size, dynamics, args, device)
    obs = env.reset()
    for _ in range(2):
        obs, _ = agent.epoch(env, obs, buffers, 0.0)
    agent.train_world_model(buffers, 1)
    rows = []
    for e in range(args.run_epochs):
        obs, metrics = agent.epoch(env, obs, buffers, e / 100)
        rows.append({k: float(metrics[k]) for k in ("wm_loss", "critic_loss", "actor_loss", "wm_grad_norm")})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["5M"])
    parser.add_argument("--dynamics", nargs="+", default=["deterministic", "flow"])
    parser.add_argument("--task", default="ant")
    parser.add_argument("--num-envs", type=int, default=128)
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--substeps", type=int, default=4)
    parser.add_argument("--integrator", default="heun")
    parser.add_argument("--run-epochs", type=int, default=6, help="epochs of the whole-run comparison (0 skips)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="phase check: max relative difference allowed")
    parser.add_argument(
        "--imagination",
        action="store_true",
        help="whole-run comparison with the imagination + actor step captured too (Ant patched, see train_epoch.py)",
    )
    parser.add_argument("--skip-phase-check", action="store_true")
    parser.add_argument(
        "--side-by-side-repeats",
        type=int,
        default=5,
        help="phase check: times the critic and world-model phases run side by side against one after the other",
    )
    parser.add_argument(
        "--actor-saturation-coef",
        type=float,
        default=0.1,
        help="pwm.actor_saturation_coef: the configs' 0.1 (the imagination's penalised step); 0 is PWM's actor loss",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.wm_batch, args.warmup_epochs, args.epochs = None, 2, 5
    # What train_epoch.build reads beyond these: a lone seed, eager, FP32.
    args.seeds, args.compile, args.tf32 = 1, False, False
    results, ok = [], True
    for size in args.sizes:
        for dynamics in args.dynamics:
            cell = {"size": size, "dynamics": dynamics} if args.skip_phase_check else phase_check(size, dynamics, args)
            for phase in () if args.skip_phase_check else ("world_model", "critic"):
                r = cell[phase]
                good = r["outputs_max_rel_diff"] <= args.rtol and r["generator_state_equal"]
                ok &= good
                print(
                    f"{size} {dynamics:>13} {phase:>11}: outputs max rel diff {r['outputs_max_rel_diff']:.2e}, "
                    f"state max rel diff {r['state_max_rel_diff']:.2e}, bitwise {r['state_bitwise_equal']}, "
                    f"generator equal {r['generator_state_equal']} -> {'OK' if good else 'FAIL'}",
                    flush=True,
                )
            for r in [] if args.skip_phase_check else cell["side_by_side"]:
                good = r["outputs_max_rel_diff"] == 0 and r["state_bitwise_equal"] and r["generator_state_equal"]
                ok &= good
                print(
                    f"{size} {dynamics:>13} side by side / one after the other: outputs max rel diff "
                    f"{r['outputs_max_rel_diff']:.2e}, state bitwise {r['state_bitwise_equal']}, generator equal "
                    f"{r['generator_state_equal']} -> {'OK' if good else 'FAIL'}",
                    flush=True,
                )
            if args.run_epochs > 0:
                cell["run_graphs"] = run_check(size, dynamics, args, True)
                cell["run_eager"] = run_check(size, dynamics, args, False)
                for g, e in zip(cell["run_graphs"], cell["run_eager"], strict=True):
                    print(f"  graphs {g}\n  eager  {e}", flush=True)
            results.append(cell)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": machine(torch.device("cuda")), "ok": ok, "cells": results}, indent=2) + "\n"
    )
    print("ALL OK" if ok else "SOME CHECKS FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
