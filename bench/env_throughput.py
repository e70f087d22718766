"""Ant env throughput: ant-steps/s (one ant-step = one 1/60 s env step = 16 substeps) and cold-start compile time.

    PYTHONPATH=src python bench/env_throughput.py --out bench/env_throughput.json
    PYTHONPATH=src python bench/env_throughput.py --device cuda --num-envs 128 1024 4096 16384 --out gpu.json

Defaults: N in {1, 64} on CPU, {128, 1024, 4096, 16384} on CUDA (device: cuda if available). Each N: build the
env, reset, warm up (kernel loads and, on CUDA, CUDA-graph capture), then time `--steps` steps of random actions
(pre-generated on the device, so the timing is the env alone) with a device sync at both ends. The cold-start
time is measured in a subprocess with a fresh, empty WARP_CACHE_PATH: import, build, reset and first step of a
small env, i.e. every kernel compiled from scratch. Prints a table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import flow_mbpo_pwm  # noqa: F401
except ImportError:  # runnable from a checkout without PYTHONPATH or an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from flow_mbpo_pwm.envs import make

CPU_SIZES = (1, 64)
GPU_SIZES = (128, 1024, 4096, 16384)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(num_envs: int, device: str, steps: int, warmup: int, overrides: dict) -> dict:
    t0 = time.perf_counter()
    env = make("ant", num_envs, device, seed=0, **overrides)
    env.reset()
    _sync(env.device)
    build_s = time.perf_counter() - t0
    g = torch.Generator(device=env.device).manual_seed(0)
    actions = torch.rand(8, num_envs, env.act_dim, generator=g, device=env.device) * 2 - 1
    t0 = time.perf_counter()
    for i in range(warmup):
        env.step(actions[i % 8])
    _sync(env.device)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        obs, *_ = env.step(actions[i % 8])
    _sync(env.device)
    elapsed = time.perf_counter() - t0
    return {
        "num_envs": num_envs,
        "steps": steps,
        "seconds": elapsed,
        "ant_steps_per_s": num_envs * steps / elapsed,
        "env_steps_per_s": steps / elapsed,
        "build_and_reset_s": build_s,
        "warmup_s": warmup_s,
        "cuda_graph": bool(getattr(env, "graph_captured", False)),
        "finite": bool(torch.isfinite(obs).all()),
    }


def cold_start(device: str, overrides: dict) -> dict:
    """Time import + build + reset + first step in a fresh interpreter with an empty Warp kernel cache."""
    with tempfile.TemporaryDirectory(prefix="warp-cold-") as cache:
        env = dict(os.environ, WARP_CACHE_PATH=cache)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--cold-child",
            "--device",
            device,
            "--overrides",
            json.dumps(overrides),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        total = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:], "wall_s": total}
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    child["wall_s_including_interpreter"] = total
    return child


def _cold_child(device: str, overrides: dict) -> None:
    t0 = time.perf_counter()
    env = make("ant", 2, device, seed=0, **overrides)
    env.reset()
    env.step(torch.zeros(2, env.act_dim, device=env.device))
    _sync(env.device)
    print(json.dumps({"cold_start_s": time.perf_counter() - t0, "cuda_graph": bool(env.graph_captured)}))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        import newton
        import warp as wp

        info["warp"] = wp.config.version
        info["newton"] = newton.__version__
    except Exception:  # noqa: BLE001 -- informational only
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-envs", type=int, nargs="+", help="N values (default: 1 64 on CPU, 128..16384 on CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per N (default 200 CPU / 1000 CUDA)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--solver", default="semi_implicit", choices=["semi_implicit", "featherstone"])
    p.add_argument("--collide-every-substep", action="store_true")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-start compile measurement")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.cold_child:
        _cold_child(args.device, json.loads(args.overrides))
        return
    is_cuda = torch.device(args.device).type == "cuda"
    sizes = args.num_envs or (GPU_SIZES if is_cuda else CPU_SIZES)
    steps = args.steps or (1000 if is_cuda else 200)
    overrides = {"solver": args.solver}
    if args.collide_every_substep:
        overrides["collide_every_substep"] = True

    result = {"machine": machine(), "device": args.device, "overrides": overrides, "runs": []}
    if not args.no_cold:
        result["cold_start"] = cold_start(args.device, overrides)
    for n in sizes:
        result["runs"].append(measure(n, args.device, steps, args.warmup, overrides))

    print(
        f"Ant throughput on {args.device} ({result['machine'].get('gpu', result['machine']['cpu'])}), "
        f"solver {args.solver}, collide {'every substep' if args.collide_every_substep else 'once per step'}"
    )
    print(f"{'num_envs':>9} {'ant-steps/s':>13} {'env-steps/s':>12} {'cuda graph':>10} {'build s':>8}")
    for r in result["runs"]:
        print(
            f"{r['num_envs']:>9} {r['ant_steps_per_s']:>13,.0f} {r['env_steps_per_s']:>12,.1f} "
            f"{str(r['cuda_graph']):>10} {r['build_and_reset_s']:>8.1f}"
        )
    if "cold_start" in result:
        cold = result["cold_start"]
        print(
            f"cold start (empty kernel cache): {cold.get('cold_start_s', float('nan')):.1f} s"
            + (f"  ERROR: {cold['error']}" if "error" in cold else "")
        )
    if args.out:
        from flow_mbpo_pwm.io import write_json

        write_json(args.out, result)


if __name__ == "__main__":
    main()
