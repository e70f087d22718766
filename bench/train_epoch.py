"""Time per PWM epoch, split into env / actor / critic / world model, for the Ant (issue 3).

For each (size preset, dynamics preset) it builds the real env, agent and replay buffer exactly as `train` does,
collects a few epochs of data, then times epochs phase by phase:
- env: the real `env.step` calls inside the imagined rollout (H per epoch);
- actor: the imagined rollout minus the env steps, plus the actor's optimiser step;
- critic: the critic's TD(lambda) steps (`critic_iterations` x `critic_minibatches`);
- world model: `wm_steps` world-model steps (batch `wm_batch` x (H+1)).
On CUDA, phases are timed with CUDA events and the device is synchronised only at the end of each timed epoch
(benchmark only: the product never synchronises inside an epoch). It also times the unsplit `PWM.epoch` (what
`train` runs) over the same number of epochs, synchronising once at the end, as a cross-check of the sum.
On CUDA the critic and world-model phases run as captured CUDA graphs (algorithms/graphs.py) unless
--no-cuda-graphs is given; run both to compare on the same card.

    PYTHONPATH=src python bench/train_epoch.py --device cpu --epochs 2 --out bench/out/train_epoch_cpu.json
    PYTHONPATH=src python bench/train_epoch.py --device cuda --epochs 20 --out bench/out/train_epoch_gpu.json

`--seeds S` times a stack of S seeds (what one `train` job of S seeds runs: one batched env of S x num_envs ants,
every network with a leading seed axis); compare its per-epoch time with `--seeds 1`. `--compile` times what
`run.compile: true` runs (compiled during the untimed warm-up epochs), `--tf32` what `run.tf32: true` runs,
`--actor-saturation-coef 0.1` what the configs' actor penalty runs (the imagination's penalised step),
`--actor-consistency-coef 1` what the actor's consistency term adds (its replayed windows through the model).

Prints a table and writes every row (plus machine facts) as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from flow_mbpo_pwm import envs
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import DYNAMICS_PRESETS, SIZE_PRESETS, EnvConfig, PWMConfig, RunConfig, TrainConfig
from flow_mbpo_pwm.data.replay import ReplayBuffer
from flow_mbpo_pwm.train_state import set_matmul_precision

PHASES = ("env", "actor", "critic", "world_model")


class Clock:
    """Host timer on CPU; CUDA events on the GPU (read after one synchronisation per epoch)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class TimedEnv:
    """Forwards to the real env, recording a (start, end) mark around every `step`."""

    def __init__(self, env: Any, clock: Clock):
        self._env, self._clock = env, clock
        self.marks: list[tuple[Any, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def step(self, actions: torch.Tensor):
        start = self._clock.mark()
        out = self._env.step(actions)
        self.marks.append((start, self._clock.mark()))
        return out


def build(size: str, dynamics: str, args: argparse.Namespace, device: torch.device):
    dyn = DYNAMICS_PRESETS[dynamics]
    if dyn.kind == "flow":
        from dataclasses import replace

        dyn = replace(dyn, substeps=args.substeps, integrator=args.integrator)
    pwm_overrides = {} if args.wm_batch is None else {"wm_batch": args.wm_batch}
    pwm_overrides["actor_saturation_coef"] = args.actor_saturation_coef
    pwm_overrides["actor_consistency_coef"] = getattr(args, "actor_consistency_coef", 0.0)
    pwm_overrides["critic_bootstrap"] = getattr(args, "critic_bootstrap", "imagined")
    config = TrainConfig(
        task_name="ant",
        size=size,
        dynamics_name=dynamics,
        env=EnvConfig(task=args.task, num_envs=args.num_envs, episode_length=args.episode_length),
        world_model=SIZE_PRESETS[size],
        dynamics=dyn,
        pwm=PWMConfig(**pwm_overrides),
        run=RunConfig(seed=0, device=str(device), compile=args.compile, tf32=args.tf32),
    ).validate()
    seeds = list(range(args.seeds))
    env = envs.make_for_seeds(config.env, device, seeds)  # config.env.num_envs is args.num_envs
    agent = PWM(env.obs_dim, env.act_dim, config, device, cuda_graphs=args.cuda_graphs, seeds=seeds)
    agent.concurrent_phases = getattr(args, "concurrent_phases", True)
    if getattr(args, "capture_imagination", False) and agent.graphs is not None:
        from probe_env_capture import make_env_capturable

        make_env_capturable(env, [torch.cuda.current_stream(device), agent.graphs.stream])
    horizon = config.pwm.horizon
    slots = (args.warmup_epochs + 2 * args.epochs + 2) * horizon + 1
    n = args.num_envs
    buffers = [ReplayBuffer(slots * n, n, env.obs_dim, env.act_dim, device, horizon=horizon) for _ in seeds]
    return config, env, agent, buffers


def bench_cell(size: str, dynamics: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    config, env, agent, buffer = build(size, dynamics, args, device)  # `buffer`: one per seed
    clock = Clock(device)
    timed_env = TimedEnv(env, clock)
    obs = env.reset()
    # Two collect-only epochs give the buffer full windows; one world-model step then marks the agent warmed up.
    for _ in range(2):
        obs, _ = agent.epoch(env, obs, buffer, 0.0)
    agent.train_world_model(buffer, 1)
    for _ in range(args.warmup_epochs):  # untimed: allocator, kernel caches, cuDNN/cuBLAS heuristics
        obs, _ = agent.epoch(env, obs, buffer, 0.0)
    clock.sync()

    per_epoch: list[dict[str, float]] = []
    for _ in range(args.epochs):
        timed_env.marks.clear()
        t0 = clock.mark()
        rollout, obs = agent.imagine(timed_env, obs, buffer, with_grad=True)
        agent.actor_step(rollout.objective, sources=buffer)
        rollout = rollout._replace(objective=rollout.objective.detach())  # as PWM.epoch: free the autograd graph
        t1 = clock.mark()
        agent.critic_step(rollout)
        t2 = clock.mark()
        agent.train_world_model(buffer, config.pwm.wm_steps)
        t3 = clock.mark()
        clock.sync()
        env_ms = sum(clock.ms(a, b) for a, b in timed_env.marks)
        per_epoch.append(
            {
                "env": env_ms,
                "actor": clock.ms(t0, t1) - env_ms,
                "critic": clock.ms(t1, t2),
                "world_model": clock.ms(t2, t3),
                "total": clock.ms(t0, t3),
            }
        )

    # The product path: unsplit epochs, no synchronisation until the end.
    epoch_ms = float("nan")
    unsplit = args.epochs if args.unsplit_epochs is None else args.unsplit_epochs
    if unsplit > 0:
        clock.sync()
        start = time.perf_counter()
        for _ in range(unsplit):
            obs, _ = agent.epoch(env, obs, buffer, 0.5)
        clock.sync()
        epoch_ms = (time.perf_counter() - start) * 1e3 / unsplit

    mean = {k: sum(e[k] for e in per_epoch) / len(per_epoch) for k in (*PHASES, "total")}
    dyn = config.dynamics
    return {
        "size": size,
        "dynamics": dynamics,
        "integrator": dyn.integrator if dyn.kind == "flow" else "",
        "substeps": dyn.substeps if dyn.kind == "flow" else 0,
        "num_envs": args.num_envs,
        "seeds": args.seeds,
        "wm_batch": config.pwm.wm_batch,
        "actor_saturation_coef": config.pwm.actor_saturation_coef,
        "actor_consistency_coef": config.pwm.actor_consistency_coef,
        "critic_bootstrap": config.pwm.critic_bootstrap,
        "epochs": args.epochs,
        **{f"{k}_ms": round(v, 3) for k, v in mean.items()},
        "epoch_unsplit_ms": round(epoch_ms, 3),
        "compile": config.run.compile,
        "tf32": config.run.tf32,
        "cuda_graphs": agent.graphs is not None,
        "concurrent_phases": agent.concurrent_phases,
        "capture_imagination": bool(getattr(env, "supports_torch_graph_capture", False)),
        "captured_phases": [str(name[0] if isinstance(name, tuple) else name) for name in agent.graphs.captured()]
        if agent.graphs is not None
        else [],
        "params": agent.parameter_counts(),
        "per_epoch": per_epoch,
    }


def machine(device: torch.device) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        facts["card"] = torch.cuda.get_device_name(device)
    return facts


def add_world_model_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """The arguments of a bench that reads one cell's pretrained world model and the offline dataset it was
    pretrained on (bench/clone_inputs.py, bench/model_by_gait.py)."""
    parser.add_argument("--config", type=Path, required=True, help=config_help)
    parser.add_argument("--task", default="ant")
    parser.add_argument("--size", default="5M")
    parser.add_argument("--dynamics", default="deterministic")
    parser.add_argument("--world-model", type=Path, required=True, help="pretrained world_model.pt (`pretrain`)")
    parser.add_argument("--dataset", type=Path, required=True, help="the offline dataset (`collect`)")


def require_files(parser: argparse.ArgumentParser, *paths: Path) -> None:
    """A bench's input files exist, before any work: else the usage error names every missing one."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")


def report(rows: Iterable[dict[str, Any]], line: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
    """Every row as it is measured, printed with `line` (flushed, so a long bench shows its progress), then all of
    them. The other benches of this folder print theirs with it too."""
    measured = []
    for row in rows:
        print(line(row), flush=True)
        measured.append(row)
    return measured


class Column(NamedTuple):
    """A column of a bench's printed table: its title, the row's key, the value's format spec without a width (".4f",
    ",") and the width where the values need more than the title's."""

    title: str
    key: str
    spec: str = ""
    width: int = 0


def table(columns: Sequence[Column]) -> Callable[[dict[str, Any]], str]:
    """Prints the table's header line (right-aligned titles) and returns the row formatter `report` takes. The other
    benches of this folder print theirs with it too."""
    widths = [max(len(column.title), column.width) for column in columns]
    print(" ".join(f"{column.title:>{width}}" for column, width in zip(columns, widths, strict=True)), flush=True)

    def line(row: dict[str, Any]) -> str:
        return " ".join(f"{row[c.key]:>{width}{c.spec}}" for c, width in zip(columns, widths, strict=True))

    return line


def write_record(out: Path, device: torch.device, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """A bench's JSON record at `out`: the machine, the arguments (paths as text) and the rows, then a line saying so.
    The other benches of this folder write theirs with it too."""

    def text(value: Any) -> Any:
        if isinstance(value, list):
            return [text(item) for item in value]
        return str(value) if isinstance(value, Path) else value

    arguments = {key: text(value) for key, value in vars(args).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(device), "args": arguments, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--task", default="ant", help="env registry id (default: the Newton Ant)")
    parser.add_argument("--sizes", nargs="+", default=["5M", "48M"], choices=list(SIZE_PRESETS))
    parser.add_argument("--dynamics", nargs="+", default=["deterministic", "flow"], choices=list(DYNAMICS_PRESETS))
    parser.add_argument("--substeps", type=int, default=4, help="flow substeps K")
    parser.add_argument("--integrator", default="heun", choices=["euler", "heun", "rk4"])
    parser.add_argument("--num-envs", type=int, default=128, help="envs per seed")
    parser.add_argument("--seeds", type=int, default=1, help="seeds trained as one stack (default 1: a lone run)")
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--wm-batch", type=int, default=None, help="override pwm.wm_batch (default: config's 256)")
    parser.add_argument(
        "--actor-saturation-coef",
        type=float,
        default=0.0,
        help="pwm.actor_saturation_coef (the configs' 0.1 since 2026-12-02): the imagination then runs its penalised "
        "step (`run.compile` compiles it since 2026-12-04)",
    )
    parser.add_argument(
        "--actor-consistency-coef",
        type=float,
        default=0.0,
        help="pwm.actor_consistency_coef: the actor step then also replays wm_batch windows through the model",
    )
    parser.add_argument(
        "--critic-bootstrap",
        choices=("imagined", "real"),
        default="imagined",
        help="pwm.critic_bootstrap: real encodes the env's next observation and evaluates the critic there each step",
    )
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per cell")
    parser.add_argument("--warmup-epochs", type=int, default=2, help="untimed epochs before timing")
    parser.add_argument(
        "--unsplit-epochs",
        type=int,
        default=None,
        help="epochs of the unsplit PWM.epoch timing (default: --epochs; 0 skips it)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="capture the critic and world-model phases in CUDA graphs (CUDA only; default on)",
    )
    parser.add_argument(
        "--capture-imagination",
        action="store_true",
        help="probe: patch the Ant to step under capture (bench/probe_env_capture.py) so PWM.epoch also captures "
        "the imagination + actor step; only the unsplit timing means anything then",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run.compile: the world-model loss, imagination and critic loss compiled (torch.compile, once per cell)",
    )
    parser.add_argument("--tf32", action="store_true", help="run.tf32: TF32 matrix products on CUDA")
    parser.add_argument(
        "--concurrent-phases",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the captured critic and world-model phases side by side on two streams in the unsplit epoch (PWM's "
        "default since 2026-12-04); --no-concurrent-phases runs them one after the other, as before",
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    set_matmul_precision(args.tf32)  # as `train` does from run.tf32

    header = (
        f"{'size':>4} {'dynamics':>13} {'seeds':>5} {'envs':>5} {'env':>9} {'actor':>9} {'critic':>9} "
        f"{'world model':>11} {'sum':>9} {'unsplit':>9}   (ms per epoch)"
    )
    print(header, flush=True)

    def line(row: dict[str, Any]) -> str:
        name = row["dynamics"] if not row["substeps"] else f"{row['dynamics']} {row['integrator']} K={row['substeps']}"
        return (
            f"{row['size']:>4} {name:>13} {row['seeds']:>5} {row['num_envs']:>5} {row['env_ms']:>9.1f} "
            f"{row['actor_ms']:>9.1f} {row['critic_ms']:>9.1f} {row['world_model_ms']:>11.1f} "
            f"{row['total_ms']:>9.1f} {row['epoch_unsplit_ms']:>9.1f}"
        )

    cells = (bench_cell(size, dynamics, args, device) for size in args.sizes for dynamics in args.dynamics)
    rows = report(cells, line)
    write_record(args.out, device, args, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
