"""PPO reference settings side by side on one GPU machine: each variant is one `bench/reference_gpu.py` run (the
real `reference` stage, then its held-out evaluation), all variants at once, then one table.

    python bench/reference_sweep.py run FILE OUT_DIR   # `bash bench/gpu_grid.sh ppo FILE` starts it detached
    python bench/reference_sweep.py table OUT_DIR      # markdown, one row per variant (also printed by `run`)
    python bench/reference_sweep.py adopt OUT_DIR PWM_SWEEP NEW_SWEEP   # the best variant's settings -> a PWM sweep

A file names the experiment `config`, the `seed`, the budget (`env_steps`, with `max_minutes` as a cap), the held-out
`episodes` and the `variants`: each a name and the `reference.*` settings it overrides, among those
bench/reference_gpu.py takes as flags (VARIANT_FLAGS). The variants share the machine (CUDA MPS on the GPU
machine), so read them at equal env steps, not wall time. Each variant writes OUT_DIR/<name>.json
(reference_gpu.py's), <name>.log and its run folder, laid out as the pipeline's: OUT_DIR/<name>/results/<task>/
reference/seed<k>, so that `bash bench/gpu_grid.sh ppo_reference NAME` can hand it to a PWM sweep whose config asks
for the same reference settings (it is then used as it is, as a carried reference is).

`adopt` names the variant held out highest and writes PWM_SWEEP (a bench/pwm_sweep.py file) with that variant's
settings in place of the exploration settings its `config: {reference: ...}` names, so that the sweep asks for the
reference the variant trained and `ppo_reference` can hand it over on the same machine. It refuses (exit 3) when the
best variant is one without settings (the config's own reference): there is nothing to adopt.

This is a bench script: it measures, it is not a pipeline stage.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

VARIANT_FLAGS = {  # reference.* key -> bench/reference_gpu.py flag
    "entropy_coef": "--entropy-coef",
    "learning_rate": "--learning-rate",
    "min_noise_std": "--min-noise-std",
    "schedule": "--schedule",
    "num_envs": "--num-envs",
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TRAIN_MARKS = (50_000_000, 100_000_000, 150_000_000, 200_000_000)  # env steps at which the table reads training


def load(path: str) -> dict:
    """The sweep file, checked before anything runs: a clear error naming the bad key."""
    sweep = yaml.safe_load(Path(path).read_text())
    if not isinstance(sweep, dict) or not isinstance(sweep.get("variants"), dict) or not sweep["variants"]:
        raise SystemExit(f"{path}: needs a mapping `variants: {{name: {{setting: value}}}}`")
    for key in ("env_steps", "max_minutes", "episodes", "seed"):
        if key in sweep and not isinstance(sweep[key], (int, float)):
            raise SystemExit(f"{path}: `{key}` must be a number, got {sweep[key]!r}")
    if not NAME.match(str(sweep.get("task", "ant"))):
        raise SystemExit(f"{path}: `task` {sweep['task']!r} must be letters, digits, '.', '_' or '-'")
    for name, settings in sweep["variants"].items():
        if not NAME.match(str(name)):
            raise SystemExit(f"{path}: variant name {name!r} must be letters, digits, '.', '_' or '-'")
        unknown = set(settings or {}) - set(VARIANT_FLAGS)
        if unknown:
            known = list(VARIANT_FLAGS)
            raise SystemExit(f"{path}: variant {name}: unknown settings {sorted(unknown)}; known: {known}")
    return sweep


def run_folder(sweep: dict, name: str, out: Path) -> Path:
    return out / name / "results" / sweep.get("task", "ant") / "reference" / f"seed{sweep.get('seed', 0)}"


def command(sweep: dict, name: str, out: Path) -> list[str]:
    cmd = [sys.executable, "bench/reference_gpu.py", "--config", str(sweep.get("config", "config/config.yaml")),
           "--task", str(sweep.get("task", "ant")), "--seed", str(sweep.get("seed", 0)),
           "--episodes", str(sweep.get("episodes", 100)), "--run-dir", str(run_folder(sweep, name, out)),
           "--out", str(out / f"{name}.json")]  # fmt: skip
    for key in ("env_steps", "max_minutes"):
        if key in sweep:
            cmd += [f"--{key.replace('_', '-')}", str(sweep[key])]
    for key, value in (sweep["variants"][name] or {}).items():
        cmd += [VARIANT_FLAGS[key], str(value)]
    return cmd


def run(path: str, out_dir: str) -> int:
    sweep, out = load(path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = {}
    for name in sweep["variants"]:
        with open(out / f"{name}.log", "w") as log:
            jobs[name] = subprocess.Popen(command(sweep, name, out), stdout=log, stderr=subprocess.STDOUT)
        print(f"{name}: started", flush=True)
    failed = [name for name, job in jobs.items() if job.wait() != 0]
    for name, job in jobs.items():
        print(f"{name}: exit {job.returncode}", flush=True)
    table(out_dir)
    return 1 if failed else 0


def train_return_at(metrics: pd.DataFrame, steps: int) -> float:
    """The training return of the last logging window at or before `steps` env steps (nan before the run got
    there)."""
    if metrics["env_steps"].max() < steps:
        return float("nan")
    rows = metrics[(metrics["env_steps"] <= steps) & metrics["train_return_mean"].notna()]
    return float(rows["train_return_mean"].iloc[-1]) if len(rows) else float("nan")


def variant_settings(result: dict) -> dict:
    """The reference settings a variant's run overrode (reference_gpu.py's json), without the sweep's budget."""
    return {k: v for k, v in result["overrides"].items() if k in VARIANT_FLAGS}


def row(out: Path, name: str) -> dict:
    result = json.loads((out / f"{name}.json").read_text())
    (folder,) = (out / name / "results").glob("*/reference/seed*")  # run_folder's, without the sweep file
    metrics = pd.read_csv(folder / "metrics.csv")
    validation = pd.DataFrame(result["validation"])
    best = validation.loc[validation["val_return_mean"].idxmax()]
    return {
        "variant": name,
        "settings": ", ".join(f"{k} {v}" for k, v in variant_settings(result).items()) or "config's",
        "env steps": f"{result['env_steps'] / 1e6:.1f}M",
        "env steps/s": f"{result['env_steps_per_second'] / 1e6:.2f}M",
        "training return at " + " / ".join(f"{m // 1_000_000}M" for m in TRAIN_MARKS): " / ".join(
            f"{train_return_at(metrics, m):,.0f}" for m in TRAIN_MARKS
        ).replace("nan", "—"),
        "validation best (at) / final": f"{best['val_return_mean']:,.0f} ({best['env_steps'] / 1e6:.0f}M) / "
        f"{validation['val_return_mean'].iloc[-1]:,.0f}",
        "action std at the end": f"{metrics['action_std'].iloc[-1]:.3f}",
        "held out": f"{result['heldout_return_mean']:,.0f} +- {result['heldout_return_std']:,.0f}"
        if "heldout_return_mean" in result
        else "—",
    }


def table(out_dir: str) -> None:
    out = Path(out_dir)
    names = sorted(p.stem for p in out.glob("*.json"))
    if not names:
        raise SystemExit(f"{out}: no variant results (<name>.json) yet")
    rows = [row(out, name) for name in names]
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")


def best(out_dir: str) -> tuple[str, dict]:
    """The variant held out highest, and the settings it overrides (reference_gpu.py's json)."""
    results = {p.stem: json.loads(p.read_text()) for p in Path(out_dir).glob("*.json")}
    held_out = {name: r["heldout_return_mean"] for name, r in results.items() if "heldout_return_mean" in r}
    if not held_out:
        raise SystemExit(f"{out_dir}: no variant was held out")
    name = max(held_out, key=held_out.get)
    return name, variant_settings(results[name])


def adopted(pwm_sweep: dict, settings: dict) -> dict:
    """A PWM sweep asking for the reference of these variant settings: its own reference budget, the variant's
    exploration settings instead of its own."""
    config = dict(pwm_sweep.get("config") or {})
    reference = {k: v for k, v in (config.get("reference") or {}).items() if k not in VARIANT_FLAGS}
    config["reference"] = {**reference, **settings}
    return {**pwm_sweep, "config": config}


def adopt(out_dir: str, pwm_sweep: str, new_sweep: str) -> int:
    name, settings = best(out_dir)
    if not settings:
        print(f"{name}: the best variant has no settings of its own; nothing to adopt", flush=True)
        return 3
    sweep = adopted(yaml.safe_load(Path(pwm_sweep).read_text()), settings)
    Path(new_sweep).write_text(yaml.safe_dump(sweep, sort_keys=False))
    print(name, flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "run":
        return run(argv[1], argv[2])
    if len(argv) == 2 and argv[0] == "table":
        table(argv[1])
        return 0
    if len(argv) == 4 and argv[0] == "adopt":
        return adopt(argv[1], argv[2], argv[3])
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
