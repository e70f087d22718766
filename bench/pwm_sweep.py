"""Deciding runs for "PWM runs on the Ant": several PWM settings side by side on one GPU machine, each one real
`flow-mbpo-pwm train` run from the pipeline's own protocol (reference -> collect -> pretrain -> train).

    python bench/pwm_sweep.py run SWEEP.yaml      # on the GPU machine (bench/gpu_grid.sh sweep SWEEP.yaml starts it)
    python bench/pwm_sweep.py held-out SWEEP.yaml POINT [--cut]  # select + evaluate its finished seeds (`run`
                                                  # does it; --cut: also the unfinished ones' best so far)
    python bench/pwm_sweep.py status SWEEP.yaml   # one line per point: epoch, last validations, diagnostics
    python bench/pwm_sweep.py table SWEEP.yaml    # JSON of every point's validation rows (for bench/RESULTS.md)
    python bench/pwm_sweep.py compare SWEEP.yaml [WORK_DIR] [POINT] [REFERENCE_METRICS_CSV]  # markdown: held-out
                                                  # [CI], ratio to POINT (default the first), training return per
                                                  # env step (and the PPO reference's), leaving
    python bench/pwm_sweep.py plot SWEEP.yaml OUT.png [WORK_DIR] [REFERENCE_VALIDATION_CSV]
                                                  # validation return vs env steps, one line per point
    python bench/pwm_sweep.py base SWEEP.yaml OUT.yaml  # the experiment config the sweep derives from (below)
    python bench/pwm_sweep.py record SWEEP.yaml RECORD_DIR [WORK_DIR]  # a finished sweep's files -> RECORD_DIR/runs
                                                  # (the layout `runs:` reads, below), its logs without Warp's
                                                  # per-module load lines

A sweep file names a base experiment config, one cell (task, size, and `seed: k` or `seeds: [k, ...]`), the schedule
(`epochs`, and `lr_decay_epochs` to run the first `epochs` of a longer learning-rate schedule), and points: each
point is a dynamics variant of the base config (or a new one, `variant: {kind: ...}`) plus `pwm:` and `run:`
overrides (any `train.pwm` / `train.run` key), `size:` (a size preset of its own, which its config then trains, e.g.
a 48M point beside 5M ones on a two-GPU machine), `pretrain_steps: N` (the world model's pretraining steps; else the
sweep's `pretrain_steps`, else the base config's), `scratch: true` for a run without the offline protocol, and
`clone: true` for one whose actor starts from the PPO reference's policy (after its pretraining, `flow-mbpo-pwm
clone` fits the actor to the reference's final policy.pt on the new world model's latents, with the base config's
`clone` settings, or with `clone: {imagined_steps: 16, ...}` those merged over them; `train --actor-init` starts
every seed from it; pair it with `pwm: {actor_delay_epochs: N}`). A
sweep-level `pwm:` applies to every point, under the points' own: it pins what a sweep's points share where the base
config may change (config/short.yaml went from 20 : 0.1 without an actor penalty to 1 : 1 with one on 2026-12-02;
every sweep file written before pins the former, so it reruns what it recorded).
A sweep-level `config:` is merged into the base config itself (nested keys replace the base's one by one) for the
whole sweep, the offline dataset included: `config: {reference: {max_minutes: 10}}` gives the sweep its own PPO
reference, so its own dataset. Snakemake then builds the dataset from that merged config (`work/base.yaml`), and
`bench/gpu_grid.sh sweep` checks a carried reference against it (`base`), so a reference of other settings is
never used in its place. `evaluate_reference: true` also has the pipeline evaluate that reference (its
`evaluate_reference` rule, 100 held-out episodes) while the points pretrain and train, into
results/<task>/reference/seed<collect.seed>/eval/episodes.csv.
Points inherit the base's `run` settings (config/short.yaml: compiled, TF32); the sweeps recorded before TF32 was
set there ran float32, and their exact per-point configs are in docs/results/<date>-<name>/runs.
Several seeds train as one stack (one `train` process per point, `--seed ... --run-dir ...`),
each into `work/<point>/seed<k>` (one seed: `work/<point>/run`).
Every point gets its own experiment config (the base with its overrides) under `work/<point>/config.yaml`, so
each run is reproducible with the plain CLI. The offline dataset is built by the pipeline itself
(`snakemake <dataset>`); each protocol point then pretrains a world model (pretraining
depends on the `pwm` loss settings) and trains from it with the dataset in its buffer. Points whose pretraining
settings are the same (the pipeline's pretrain fingerprint of their configs, and the steps) share one: the first
pretrains, the others get copies of its world_model.pt, pretrain_metrics.csv and pretrain.log; clones likewise.
Jobs share the GPUs through
workflow/scripts/gpu_slot.py (FLOW_MBPO_PWM_JOBS_PER_GPU); `deadline_minutes` after the start every training
still running gets SIGTERM, which saves its state (exit 75), so its validation rows up to then are kept. A point
whose training finishes then gets the pipeline's held-out evaluation, as its rules run it: `select` (best.pt,
selection.json) and `evaluate` (episodes.csv, `evaluation.episodes` of them) in each seed's run folder. A point the
deadline cut gets the same evaluation of its best validated checkpoint so far (held_out_cut.json says which, and at
which epoch it was cut): a number at the cut, marked so in `status`. A clone point whose actor is released
(`clone: true` with `pwm.actor_delay_epochs` below its epochs) is evaluated at its best validation after the release
(held_out_released.json says which), not by `select` over every validation, which would pick the held clone itself:
its held-out return says what PWM's updates kept of the gait.

`compare` and `plot` also read finished results records: a point with `runs: docs/results/<date>-<name>/runs/<point>`
reads its seeds' files as a record keeps them, `<that path>-seed<k>-{validation,metrics,episodes}.csv`,
`-held_out_cut.json` and `-held_out_released.json` (a record's compare.yaml, which then needs no `work`), so a
record's table and figure are one command each, from the repository root. A point whose seeds ran in several
sweeps names a list of such paths (each seed's files from the first that has them). Such a file may also name the
`against` point and the PPO reference's `reference_metrics` (compare) and `reference_validation` (plot) tables,
which the command line's arguments override.

This is a bench script: it measures, it is not a pipeline stage.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from flow_mbpo_pwm import exit_codes
from flow_mbpo_pwm.config import CollectConfig, deep_merge

ROOT = Path(__file__).resolve().parents[1]
SLOT = [sys.executable, str(ROOT / "workflow/scripts/gpu_slot.py")]
CLI = [sys.executable, "-m", "flow_mbpo_pwm.cli"]


def load(path: str) -> dict:
    sweep = yaml.safe_load(Path(path).read_text())
    for key in ("base", "task", "size", "epochs", "points"):
        if key not in sweep:
            raise SystemExit(f"{path}: missing key '{key}'")
    if "work" not in sweep and not all("runs" in spec for spec in sweep["points"].values()):
        raise SystemExit(f"{path}: missing key 'work' (only a file whose every point names its `runs:` needs none)")
    if not isinstance(sweep.get("config", {}), dict):
        raise SystemExit(f"{path}: 'config' must be a mapping merged into the base config, got {sweep['config']!r}")
    if ("seed" in sweep) == ("seeds" in sweep):
        raise SystemExit(f"{path}: give either 'seed: k' or 'seeds: [k, ...]'")
    sizes = [spec["size"] for spec in sweep["points"].values() if "size" in spec]
    if not all(isinstance(size, str) for size in sizes):
        raise SystemExit(f"{path}: a point's 'size' must be a size preset's name, got {sizes!r}")
    seeds = sweep.get("seeds", [sweep.get("seed")])
    integers = all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    if not seeds or not integers or len(set(seeds)) < len(seeds):
        raise SystemExit(f"{path}: seeds must be distinct integers, got {seeds!r}")
    return sweep


def seed_runs(sweep: dict, folder: Path) -> list[tuple[int, Path]]:
    """(seed, run folder) of every seed of a point: `run` for a one-seed sweep (`seed: k`), else `seed<k>`."""
    if "seed" in sweep:
        return [(sweep["seed"], folder / "run")]
    return [(seed, folder / f"seed{seed}") for seed in sweep["seeds"]]


RECORD_FILES = ("validation.csv", "metrics.csv", "episodes.csv", "held_out_cut.json", "held_out_released.json")


def seed_stem(runs: str | list[str], seed: int) -> Path:
    """Where a recorded point keeps one seed's files (`<stem>-seed<k>-<file>`). `runs:` is one record's path, or a
    list of them when the point's seeds were run in several sweeps (seeds 0-2 in one record, 3-4 in a later one):
    then the first that holds the seed's validation table."""
    stems = [ROOT / f"{path}-seed{seed}-" for path in ([runs] if isinstance(runs, str) else runs)]
    return next((stem for stem in stems if Path(f"{stem}validation.csv").exists()), stems[0])


@contextmanager
def work_folder(sweep: dict, work: str = "") -> Iterator[Path]:
    """The folder `compare` and `plot` read the points' seeds from: `work` (else the sweep's). Where points name
    `runs:` (a results record's files), a temporary folder that lays them out as a sweep's work folder, beside the
    other points' folders of `work`."""
    folder = Path(work or sweep.get("work", ""))
    recorded = {name: spec["runs"] for name, spec in sweep["points"].items() if "runs" in spec}
    if not recorded:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="pwm_sweep_") as laid:
        for name in sweep["points"]:
            if name not in recorded:
                (Path(laid) / name).symlink_to((folder / name).resolve())
                continue
            for seed, run in seed_runs(sweep, Path(laid) / name):
                run.mkdir(parents=True)
                stem = seed_stem(recorded[name], seed)
                for required in ("validation.csv", "metrics.csv"):
                    if not Path(f"{stem}{required}").exists():
                        raise SystemExit(f"point {name!r}: no {stem}{required} (runs: {recorded[name]})")
                for file in RECORD_FILES:
                    if Path(f"{stem}{file}").exists():
                        (run / file).symlink_to(f"{stem}{file}")
        yield Path(laid)


def base_config(sweep: dict) -> dict:
    """The experiment config the sweep derives from: its `base` file with the sweep's `config:` merged in."""
    return deep_merge(yaml.safe_load((ROOT / sweep["base"]).read_text()), sweep.get("config") or {})


def base_file(sweep: dict, folder: Path) -> str:
    """The config file the offline dataset is built from: the `base` file, or with a sweep-level `config:` the
    merged config, written to `folder`/base.yaml."""
    if not sweep.get("config"):
        return sweep["base"]
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(base_config(sweep), sort_keys=False))
    return str(path)


def base(path: str, out: str) -> None:
    """Write the experiment config a sweep derives from to `out` (bench/gpu_grid.sh checks carried references
    against it)."""
    Path(out).write_text(yaml.safe_dump(base_config(load(path)), sort_keys=False))


def plot_sizes(sweep: dict) -> str:
    """The sizes the points train, in order of first appearance, e.g. "5M" or "48M / 5M"."""
    return " / ".join(dict.fromkeys(point_size(sweep, spec) for spec in sweep["points"].values()))


def point_size(sweep: dict, spec: dict) -> str:
    """A point's size preset: its own `size:`, else the sweep's."""
    return spec.get("size", sweep["size"])


def cell(sweep: dict, spec: dict) -> list[str]:
    """The CLI's cell arguments of a point: task and size."""
    return ["--task", sweep["task"], "--size", point_size(sweep, spec)]


def point_config(sweep: dict, spec: dict) -> dict:
    config = base_config(sweep)
    if "size" in spec:  # a point of another size than the sweep's: its config trains that size
        config["sizes"] = [spec["size"]]
    if "variant" in spec:  # a dynamics variant the base config lacks: `variant: {kind: flow, ...}`
        config.setdefault("dynamics", {})[spec["dynamics"]] = spec["variant"]
    pwm = config.setdefault("train", {}).setdefault("pwm", {})
    pwm["epochs"] = sweep["epochs"]
    # The learning rates decay over the sweep's own epochs unless the sweep (or a point's `pwm:`) names a longer
    # schedule: never the base config's `lr_decay_epochs`, which belongs to the base's epochs (every recorded sweep
    # decayed over its own).
    pwm["lr_decay_epochs"] = sweep.get("lr_decay_epochs", 0)
    pwm.update(sweep.get("pwm", {}))
    pwm.update(spec.get("pwm", {}))
    if "run" in spec:
        config["train"].setdefault("run", {}).update(spec["run"])
    if isinstance(spec.get("clone"), dict):  # the point's own clone settings over the base's
        config["clone"] = {**config.get("clone", {}), **spec["clone"]}
    seeds = [seed for seed, _ in seed_runs(sweep, Path())]
    # The offline dataset is the base config's, collected from its reference seed `collect.seed`, which a config's
    # seeds must include: a sweep that trains other seeds (e.g. 3 and 4) keeps it listed, untrained.
    reference_seed = collect_seed(config)
    config["seeds"] = seeds if reference_seed in seeds else [reference_seed, *seeds]
    return config


def is_flow(sweep: dict, spec: dict) -> bool:
    """Whether a point trains a flow world model (its dynamics variant resolved as the pipeline resolves it)."""
    from flow_mbpo_pwm.config import load_experiment

    return load_experiment(point_config(sweep, spec)).dynamics[spec["dynamics"]].kind == "flow"


def dataset_path(sweep: dict) -> Path:
    return ROOT / "results" / sweep["task"] / "offline" / "dataset.h5"


def collect_seed(config: dict) -> int:
    """The reference seed whose snapshots a config's offline dataset is collected from (`collect.seed`)."""
    return config.get("collect", {}).get("seed", CollectConfig().seed)


def reference_folder(sweep: dict) -> Path:
    """The run folder of the reference the dataset comes from (seed `collect.seed`)."""
    return ROOT / "results" / sweep["task"] / "reference" / f"seed{collect_seed(base_config(sweep))}"


def reference_episodes(sweep: dict) -> Path:
    """The held-out episodes of the reference the dataset comes from (the pipeline's `evaluate_reference` output)."""
    return reference_folder(sweep) / "eval" / "episodes.csv"


def snakemake_command(target: Path, configfile: str, cores: int) -> list[str]:
    """The pipeline making `target` on this machine (profiles/local, one GPU slot) from `configfile`."""
    return ["snakemake", str(target.relative_to(ROOT)), "--profile", "profiles/local", "--configfile", configfile,
            "--resources", "gpu=1", "--cores", str(cores)]  # fmt: skip


def run(path: str) -> None:
    sweep = load(path)
    work = Path(sweep["work"])
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    deadline = start + 60 * float(sweep.get("deadline_minutes", 1e9))
    jobs: dict[str, subprocess.Popen] = {}
    stage: dict[str, str] = {}  # what each running job does: pretrain, train (the default), held-out, ...
    waiting: list[str] = []

    def launch(name: str, stage: str, args: list[str]) -> subprocess.Popen:
        log = open(work / name / f"{stage}.log", "w")  # noqa: SIM115 -- the child owns it
        print(f"[{time.time() - start:7.1f}s] {name}: {stage}", flush=True)
        # Tagged by stage and model kind: gpu_slot.py puts jobs of one tag on different GPUs while it can.
        tag = f"{stage}:{'flow' if is_flow(sweep, sweep['points'][name]) else 'deterministic'}"
        slot = [*SLOT, "--tag", tag, "--"]
        return subprocess.Popen(slot + CLI + [stage, *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def train_args(name: str, spec: dict) -> list[str]:
        folder = work / name
        runs = seed_runs(sweep, folder)
        args = ["--config", str(folder / "config.yaml"), "--dynamics", spec["dynamics"], *cell(sweep, spec),
                "--seed", *(str(seed) for seed, _ in runs), "--run-dir", *(str(run) for _, run in runs)]  # fmt: skip
        if not spec.get("scratch"):
            args += ["--world-model-init", str(folder / "world_model.pt"), "--offline-data", str(dataset_path(sweep))]
        if spec.get("clone"):
            args += ["--actor-init", str(folder / "actor.pt")]
        return args

    def clone_args(name: str, spec: dict) -> list[str]:
        folder = work / name
        return ["--config", str(folder / "config.yaml"), *cell(sweep, spec), "--dynamics", spec["dynamics"],
                "--dataset", str(dataset_path(sweep)), "--world-model", str(folder / "world_model.pt"),
                "--reference-policy", str(reference_folder(sweep) / "policy.pt"),
                "--out", str(folder / "actor.pt")]  # fmt: skip

    for name, spec in sweep["points"].items():
        (work / name).mkdir(exist_ok=True)
        (work / name / "config.yaml").write_text(yaml.safe_dump(point_config(sweep, spec), sort_keys=False))
        if spec.get("scratch"):
            jobs[name] = launch(name, "train", train_args(name, spec))
        else:
            waiting.append(name)
    configfile = base_file(sweep, work)
    if waiting and not dataset_path(sweep).exists():
        print(f"[{time.time() - start:7.1f}s] dataset: snakemake", flush=True)
        with open(work / "dataset.log", "w") as log:
            command = snakemake_command(dataset_path(sweep), configfile, cores=4)
            subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    if sweep.get("evaluate_reference"):  # beside the points' jobs; the deadline never stops it
        print(f"[{time.time() - start:7.1f}s] PPO reference: evaluation", flush=True)
        command = snakemake_command(reference_episodes(sweep), configfile, cores=2)
        log = open(work / "reference_eval.log", "w")  # noqa: SIM115 -- the child owns it
        jobs["PPO reference"] = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        stage["PPO reference"] = "evaluation"
    # Flow points first, their pretraining being the longest (the launch tags keep flows on different GPUs; before
    # them, two flows listed after the deterministic points shared one GPU while the other idled:
    # docs/results/2026-11-30-flow-detached).
    waiting.sort(key=lambda name: not is_flow(sweep, sweep["points"][name]))

    def pretrain_args(name: str, spec: dict) -> list[str]:
        args = ["--config", str(work / name / "config.yaml"), *cell(sweep, spec), "--dynamics", spec["dynamics"],
                "--dataset", str(dataset_path(sweep)), "--out", str(work / name / "world_model.pt")]  # fmt: skip
        steps = spec.get("pretrain_steps", sweep.get("pretrain_steps"))  # a point's own, else the sweep's
        return args + ["--steps", str(steps)] if steps is not None else args

    # Points whose pretraining (or clone) settings are the same share one: the first makes it, the others wait
    # and get copies of its files (`shared_products`). Same inputs, so one world model and one clone instead of
    # identically seeded copies competing for the GPU (and differing only by the GPU's summation order).
    makers: dict[tuple[str, str], str] = {}  # (stage, settings digest) -> the point whose job makes it
    waiters: dict[tuple[str, str], list[str]] = {}  # (stage, maker) -> the points waiting for its files

    def make(name: str, step: str) -> None:
        """Launch point `name`'s pretrain or clone, or wait for the point that makes the same."""
        spec = sweep["points"][name]
        maker = makers.setdefault((step, shared_key(sweep, spec, work / name, step)), name)
        stage[name] = step
        if maker == name:
            jobs[name] = launch(name, step, (pretrain_args if step == "pretrain" else clone_args)(name, spec))
        else:
            waiters.setdefault((step, maker), []).append(name)
            print(f"[{time.time() - start:7.1f}s] {name}: {step} shared with {maker}", flush=True)

    def advance(name: str, done: str) -> None:
        """Point `name` has its `done` stage's files: its next stage."""
        if done == "pretrain" and sweep["points"][name].get("clone"):
            make(name, "clone")
        else:
            stage[name] = "train"
            jobs[name] = launch(name, "train", train_args(name, sweep["points"][name]))

    for name in waiting:
        make(name, "pretrain")
    stopped: set[str] = set()  # signalled once: a second SIGTERM would kill a run still exiting after its save
    while jobs:
        time.sleep(5)
        for name, job in list(jobs.items()):
            code = job.poll()
            if code is None:
                if time.time() > deadline and stage.get(name, "train") == "train" and name not in stopped:
                    job.send_signal(signal.SIGTERM)
                    stopped.add(name)
                continue
            del jobs[name]
            print(f"[{time.time() - start:7.1f}s] {name}: {stage.get(name, 'train')} exit {code}", flush=True)
            if stage.get(name) in ("pretrain", "clone"):
                done, followers = stage[name], waiters.pop((stage[name], name), [])
                if code == 0:
                    advance(name, done)  # first: the maker of this stage makes the next one too, where shared
                for follower in followers:
                    if code == 0:
                        shared_products(done, work / name, work / follower)
                        advance(follower, done)
                    else:
                        print(f"[{time.time() - start:7.1f}s] {follower}: {done} exit {code} (shared)", flush=True)
            elif stage.get(name, "train") == "train" and code in (exit_codes.OK, exit_codes.COLLAPSED):
                stage[name] = "held-out"  # short, and what the point is read by: never stopped by the deadline
                print(f"[{time.time() - start:7.1f}s] {name}: held-out evaluation", flush=True)
                log = open(work / name / "held_out.log", "w")  # noqa: SIM115 -- the child owns it
                command = [sys.executable, str(Path(__file__).resolve()), "held-out", path, name]
                jobs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            elif stage.get(name, "train") == "train" and code == exit_codes.PREEMPTED and name in stopped:
                stage[name] = "held-out"  # the deadline cut it: its best validated checkpoint so far, marked so
                print(f"[{time.time() - start:7.1f}s] {name}: held-out evaluation at the cut", flush=True)
                log = open(work / name / "held_out.log", "w")  # noqa: SIM115 -- the child owns it
                command = [sys.executable, str(Path(__file__).resolve()), "held-out", path, name, "--cut"]
                jobs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    print(f"[{time.time() - start:7.1f}s] sweep done", flush=True)


# What a pretrain and a clone leave in a point's folder, copied to the points that share them.
SHARED_FILES = {"pretrain": ("world_model.pt", "pretrain_metrics.csv", "pretrain.log"),
                "clone": ("actor.pt", "clone_metrics.csv", "clone.log")}  # fmt: skip


def shared_key(sweep: dict, spec: dict, folder: Path, step: str) -> str:
    """What a point's pretraining (`step` "pretrain") or clone ("clone": that and the clone's own settings) depends
    on, as a digest: the pipeline's fingerprints of its config (folder/config.yaml, written first), its dynamics
    variant, and the sweep's pretraining steps. Points with the same key make the same files."""
    from flow_mbpo_pwm import fingerprints
    from flow_mbpo_pwm.config import load_experiment, to_plain

    experiment = load_experiment(folder / "config.yaml")
    seed = seed_runs(sweep, folder)[0][0]
    train = experiment.cell(sweep["task"], point_size(sweep, spec), spec["dynamics"], seed)
    steps = spec.get("pretrain_steps", sweep.get("pretrain_steps"))
    key = {"pretrain": fingerprints.pretrain_settings(experiment, train), "steps": steps,
           "dataset": str(dataset_path(sweep))}  # fmt: skip
    if step == "clone":
        key["clone"] = fingerprints.clone_settings(experiment, train)
    return fingerprints.digest(to_plain(key))


def shared_products(step: str, maker: Path, follower: Path) -> None:
    """Copy the files of `maker`'s finished `step` into `follower`'s folder (written under a temporary name, then
    renamed: a copy is whole or absent)."""
    for name in SHARED_FILES[step]:
        if (maker / name).is_file():
            partial = follower / f".{name}.partial"
            partial.write_bytes((maker / name).read_bytes())
            partial.replace(follower / name)


def held_out(path: str, name: str, cut: str = "") -> None:
    """`select` then `evaluate` (through gpu_slot.py) for every seed of point `name` that finished training (its
    train_summary.json written, completed or collapsed), with the point's own config, into its run folder.

    `--cut` (the sweep's deadline stopped the training): a seed that did not finish gets its best validated
    checkpoint so far evaluated instead, by select's rule applied to its work/validation.csv (highest finite
    validation return of an unflagged checkpoint, ties to the later epoch), recorded in `held_out_cut.json`. Such a
    number is the run's at the cut, not at the point's `epochs`; read it so."""
    if cut not in ("", "--cut"):
        raise SystemExit(f"held-out: unknown option {cut!r} (known: --cut)")
    sweep = load(path)
    spec = sweep["points"][name]
    folder = Path(sweep["work"]) / name
    released = release_epoch(sweep, spec)
    after = f" after the clone's release at epoch {released}" if released else ""
    for seed, run in seed_runs(sweep, folder):
        finished = (run / "train_summary.json").exists()
        if finished:
            (run / "held_out_cut.json").unlink(missing_ok=True)  # cut before, finished since
        (run / "held_out_released.json").unlink(missing_ok=True)  # written again below where it still holds
        if finished and not released:
            checkpoint = run / "best.pt"
            select = [*CLI, "select", "--run-dir", str(run), "--out", str(checkpoint),
                      "--report", str(run / "selection.json")]  # fmt: skip
            subprocess.run(select, cwd=ROOT, check=True)
        elif (finished or cut) and (chosen := best_validated(run, released)) is not None:
            checkpoint = run / chosen["checkpoint"]
            best = f"its highest finite validation return of an unflagged checkpoint{after} (ties -> later epoch)"
            if finished:
                record = {"released_at_epoch": released, "chosen": chosen, "criterion": best}
                (run / "held_out_released.json").write_text(json.dumps(record, indent=2) + "\n")
            else:
                record = {"cut_at_epoch": last_epoch(run), "released_at_epoch": released, "chosen": chosen,
                          "criterion": f"the training was stopped by the sweep's deadline; {best} so far"}  # fmt: skip
                (run / "held_out_cut.json").write_text(json.dumps(record, indent=2) + "\n")
        else:
            print(f"{name} seed {seed}: not finished, not evaluated", flush=True)
            continue
        evaluate = [*SLOT, "--tag", "evaluate", "--", *CLI, "evaluate", "--config", str(folder / "config.yaml"),
                    *cell(sweep, spec), "--dynamics", spec["dynamics"],
                    "--seed", str(seed), "--checkpoint", str(checkpoint),
                    "--out-csv", str(run / "episodes.csv"), "--out-h5", str(run / "trajectories.h5")]  # fmt: skip
        subprocess.run(evaluate, cwd=ROOT, check=True)
        at = "" if checkpoint.name == "best.pt" else f" ({', '.join(held_out_marks(run))}, epoch {chosen['epoch']})"
        print(f"{name} seed {seed}: held-out return {held_out_mean(run):.1f}{at}", flush=True)


def last_epoch(run: Path) -> int:
    """The last epoch an unfinished run logged (work/metrics.csv; its validations may be older)."""
    with open(run / "work" / "metrics.csv") as f:
        return max(int(row["epoch"]) for row in csv.DictReader(f))


def release_epoch(sweep: dict, spec: dict) -> int:
    """The epoch a clone point's actor is released at (its `pwm.actor_delay_epochs`, the point's over the sweep's),
    0 for a point that is not a clone or whose actor is never released."""
    pwm = {**sweep.get("pwm", {}), **spec.get("pwm", {})}
    delay, epochs = int(pwm.get("actor_delay_epochs", 0)), int(pwm.get("epochs", sweep["epochs"]))
    return delay if spec.get("clone") and 0 < delay < epochs else 0


def held_out_marks(run: Path) -> list[str]:
    """How a seed's held-out checkpoint was chosen, where not by `select` over a finished run: "cut" (the deadline
    stopped it), "released" (a clone's best validation after its release); none otherwise."""
    cut = run / "held_out_cut.json"
    released = (run / "held_out_released.json").exists() or (
        cut.exists() and json.loads(cut.read_text()).get("released_at_epoch", 0) > 0
    )
    return [mark for mark, on in (("cut", cut.exists()), ("released", released)) if on]


def held_out_marker(run: Path) -> str:
    """`held_out_marks` as the tables print them: " (cut)", " (released)", " (cut, released)" or ""."""
    marks = held_out_marks(run)
    return f" ({', '.join(marks)})" if marks else ""


def best_validated(run: Path, after: int = 0) -> dict | None:
    """The best checkpoint a run has validated (its validation.csv, work/'s while it runs) at an epoch past `after`,
    by select's rules 2 and 3 (a checkpoint file that is missing counts as rejected); None if none."""
    from flow_mbpo_pwm import select

    candidates = []
    for row in (row for row in validation_rows(run) if int(row["epoch"]) > after):
        cand = select.Candidate(epoch=int(row["epoch"]), env_steps=int(row["env_steps"]), path=row["checkpoint"],
                                val_return=float(row["val_return_mean"]), flagged=row["flagged"] == "True",
                                flag_reason=row.get("flag_reason") or "")  # fmt: skip
        cand.rejection = select.record_problem(cand) or ("" if (run / cand.path).exists() else "no file")
        candidates.append(cand)
    chosen = select.best(candidates)
    return None if chosen is None else {"epoch": chosen.epoch, "val_return": chosen.val_return,
                                        "checkpoint": chosen.path}  # fmt: skip


def held_out_mean(run: Path) -> float:
    """Mean return of a run's held-out episodes (episodes.csv), NaN when it has none."""
    table = run / "episodes.csv"
    if not table.exists():
        return float("nan")
    with open(table) as f:
        returns = [float(row["return"]) for row in csv.DictReader(f)]
    return sum(returns) / len(returns) if returns else float("nan")


def run_table(run: Path, name: str) -> Path | None:
    """One of a run's tables: the finished run's copy, else the one in work/ (an unfinished run's); None if neither."""
    return next((table for table in (run / name, run / "work" / name) if table.exists()), None)


def validation_rows(run: Path) -> list[dict]:
    table = run_table(run, "validation.csv")
    if table is None:
        return []
    with open(table) as f:
        return list(csv.DictReader(f))


def status(path: str) -> None:
    sweep = load(path)
    work = Path(sweep["work"])
    for name in sweep["points"]:
        for seed, run in seed_runs(sweep, work / name):
            rows = validation_rows(run)
            curve = " ".join(f"{float(r['val_return_mean']):.0f}" for r in rows[-6:])
            last = rows[-1] if rows else {}
            print(
                f"{name:22s} seed {seed:<3d} epoch {last.get('epoch', '-'):>5s}  val(last 6) {curve:40s}"
                f" train {last_training_return(run)}  critic EV {number(last, 'critic_explained_variance')}"
                f"  latent/copy h1 {ratio(last, 'h1')}  value/copy hH {number(last, 'value_ratio_hH')}"
                f"  cos {number(last, 'grad_cosine')}"
                f"  saturation {number(last, 'action_saturation')}  |a| {number(last, 'action_magnitude')}"
                f"  shift {number(last, 'policy_shift')}"
                f"  rewards imagined/paid {number(last, 'imagined_reward_term')}/{number(last, 'real_reward_term')}"
                f"  held-out {held_out_mean(run):.0f}" + held_out_marker(run)
            )


def last_training_return(run: Path) -> str:
    """The run's last logged training-episode return (metrics.csv; `-` before any episode ended): the policy the
    training env runs, beside the deterministic one validation plays."""
    table = run_table(run, "metrics.csv")
    if table is None:
        return "-"
    with open(table) as f:
        ended = [r for r in csv.DictReader(f) if r.get("train_return_mean") not in (None, "", "nan")]
    return f"{float(ended[-1]['train_return_mean']):.0f}" if ended else "-"


def number(row: dict, key: str) -> str:
    """A validation row's value to 3 significant digits (`-` where it is missing or empty)."""
    try:
        return f"{float(row[key]):.3g}"
    except (KeyError, ValueError):
        return "-"


def ratio(row: dict, step: str) -> str:
    try:
        return f"{float(row[f'wm_latent_mse_{step}']) / float(row[f'copy_latent_mse_{step}']):.2f}"
    except (KeyError, ValueError, ZeroDivisionError):
        return "-"


def table(path: str) -> None:
    sweep = load(path)
    work = Path(sweep["work"])
    rows = {
        name: {str(seed): validation_rows(run) for seed, run in seed_runs(sweep, work / name)}
        for name in sweep["points"]
    }
    json.dump(rows, sys.stdout, indent=1)


LEFT_STANDING = 2_000  # validation return past which an Ant agent has left standing (idle ~1.3k, running 2.5k+)
CURVE_STEPS = (2_000_000, 5_000_000, 8_000_000, 10_000_000)  # always shown
LATER_STEPS = (20_000_000, 30_000_000)  # shown when a run reaches them (issue 8's 30.7M target)


def compare(path: str, work: str = "", against: str = "", reference: str = "") -> None:
    """A markdown table of the points' results, as docs/results/<date>-<name>/README.md reports a sweep: each point's
    held-out mean [95% CI] (the pipeline's hierarchical bootstrap over seeds, then episodes; `statistics.py`), its
    seeds' means, its ratio [95% CI] to the point `against` (default: the first), its mean training return at fixed
    env steps (the rule of learning_curves.csv, `curves.return_at`), and the env steps at which each seed's
    validation first passed LEFT_STANDING. The training-return marks are CURVE_STEPS, and each of LATER_STEPS that a
    run's metrics reach. `reference`: a PPO reference's metrics.csv, added as a last row with its training return at
    the same marks (by the same rule, over its own episode period)."""
    sweep = load(path)
    names = list(sweep["points"])
    baseline = against or sweep.get("against") or names[0]
    reference = reference or sweep.get("reference_metrics", "")
    if baseline not in names:
        raise SystemExit(f"compare: no point {baseline!r} in {path} (points: {', '.join(names)})")
    with work_folder(sweep, work) as folder:
        _compare(sweep, folder, baseline, reference)


def _compare(sweep: dict, folder: Path, baseline: str, reference: str) -> None:
    import numpy as np
    import pandas as pd

    from flow_mbpo_pwm import curves, statistics
    from flow_mbpo_pwm.aggregate import bootstrap_rng
    from flow_mbpo_pwm.config import REFERENCE_DYNAMICS, load_experiment

    names = list(sweep["points"])
    held: dict[str, tuple[float, np.ndarray, list[str]]] = {}
    rows = []
    metrics = {  # each seed's metrics.csv, read once (None where a run has none)
        name: [
            pd.read_csv(t) if (t := run_table(run, "metrics.csv")) else None
            for _, run in seed_runs(sweep, folder / name)
        ]
        for name in names
    }
    reach = max((m["env_steps"].max() for ms in metrics.values() for m in ms if m is not None), default=0)
    marks = [*CURVE_STEPS, *(x for x in LATER_STEPS if x <= reach)]
    for name in names:
        spec, runs = sweep["points"][name], seed_runs(sweep, folder / name)
        episodes = [pd.read_csv(run / "episodes.csv")["return"].to_numpy() if (run / "episodes.csv").exists() else None
                    for _, run in runs]  # fmt: skip
        groups = [g for g in episodes if g is not None]
        if groups:
            # Each point its own stream (as aggregate's cells): ratio_estimate assumes independent distributions.
            rng = bootstrap_rng(sweep["task"], point_size(sweep, spec), name, "return_mean")
            samples = statistics.hierarchical_bootstrap(groups, "mean", 10_000, rng)
            seeds = ["—" if g is None else f"{g.mean():,.0f}" + held_out_marker(run)
                     for g, (_, run) in zip(episodes, runs, strict=True)]  # fmt: skip
            held[name] = (float(np.concatenate(groups).mean()), samples, seeds)
        experiment = load_experiment(point_config(sweep, spec))
        period = curves.episode_period(experiment, sweep["task"], spec["dynamics"])
        returns, left = [], []
        for (_, run), curve in zip(runs, metrics[name], strict=True):
            returns.append([curves.return_at(curve, x, period) if curve is not None else np.nan for x in marks])
            passed = [int(r["env_steps"]) for r in validation_rows(run) if float(r["val_return_mean"]) > LEFT_STANDING]
            left.append(f"{passed[0] / 1e6:.1f}M" if passed else "never")
        with warnings.catch_warnings():  # a step no seed reached: NaN, printed as "—"
            warnings.simplefilter("ignore", RuntimeWarning)
            rows.append((name, np.nanmean(np.array(returns, dtype=float), axis=0) if returns else [], left))
    print(f"| point | held-out [95% CI] | seeds {' / '.join(str(s) for s, _ in seed_runs(sweep, folder))} "
          f"| / {baseline} [95% CI] | training return at {' / '.join(f'{x / 1e6:g}M' for x in marks)} "
          f"| seeds past {LEFT_STANDING:,} validation at |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, returns, left in rows:
        if name in held:
            mean, samples, seeds = held[name]
            low, high = statistics.percentile_interval(samples)
            result = f"{mean:,.0f} [{low:,.0f}, {high:,.0f}]"
            per_seed = " / ".join(seeds)
            ratio = "1" if name == baseline else "—"
            if baseline in held and name != baseline:
                base_mean, base_samples, _ = held[baseline]
                r, r_low, r_high, _ = statistics.ratio_estimate(mean, base_mean, samples, base_samples)
                ratio = f"{r:.2f} [{r_low:.2f}, {r_high:.2f}]"
        else:
            result, per_seed, ratio = "no held-out evaluation", "—", "—"
        curve = " / ".join("—" if np.isnan(v) else f"{v:,.0f}" for v in returns)
        print(f"| {name} | {result} | {per_seed} | {ratio} | {curve} | {' / '.join(left)} |")
    if reference:
        ppo = pd.read_csv(reference)
        # The reference's envs are the base config's (no point changes them): read from the baseline point's config.
        base = load_experiment(point_config(sweep, sweep["points"][baseline]))
        period = curves.episode_period(base, sweep["task"], REFERENCE_DYNAMICS)
        curve = " / ".join(f"{v:,.0f}" if not np.isnan(v := curves.return_at(ppo, x, period)) else "—" for x in marks)
        print(f"| PPO reference ({reference}) | — | — | — | {curve} | — |")


# What `record` keeps of a point (`<point>-<name>`) and of each of its seeds (`<point>-seed<k>-<name>`): the tables,
# summaries and logs a results README is written from. A seed the deadline cut has its tables in work/ only.
POINT_FILES = {"config.yaml": "config.yaml", "pretrain_metrics.csv": "pretrain.csv", "pretrain.log": "pretrain.log",
               "clone.log": "clone.log", "train.log": "train.log", "held_out.log": "held_out.log"}  # fmt: skip
SEED_FILES = (
    *RECORD_FILES,
    "wm_diagnostics.csv",
    "train_summary.json",
    "selection.json",
)  # what `runs:` reads, and more


def record(path: str, out: str, work: str = "") -> None:
    """A finished sweep's files under `out`/runs, named as a record's compare.yaml reads them (`runs:`), the
    dataset's log as runs/collect.log and the sweep file as `out`/sweep.yaml. Log lines of Warp's module loads
    (one per kernel module and process) are left out."""
    sweep = load(path)
    folder, runs = Path(work or sweep["work"]), Path(out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)

    def keep(source: Path, target: Path) -> None:
        if source.suffix == ".log":
            lines = source.read_text(errors="replace").splitlines(keepends=True)
            target.write_text("".join(line for line in lines if not line.startswith("Module ")))
        else:
            target.write_bytes(source.read_bytes())

    for name in sweep["points"]:
        for source, kept in POINT_FILES.items():
            if (folder / name / source).is_file():
                keep(folder / name / source, runs / f"{name}-{kept}")
        for seed, run in seed_runs(sweep, folder / name):
            for file in SEED_FILES:
                source = next((f for f in (run / file, run / "work" / file) if f.is_file()), None)
                if source is not None:
                    keep(source, runs / f"{name}-seed{seed}-{file}")
    if (folder / "dataset.log").is_file():
        keep(folder / "dataset.log", runs / "collect.log")
    (Path(out) / "sweep.yaml").write_text(Path(path).read_text())
    print(f"recorded {len(list(runs.iterdir()))} files -> {runs}")


def plot(path: str, out: str, work: str | None = None, reference: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = load(path)
    reference = reference or sweep.get("reference_validation")
    with work_folder(sweep, work or "") as folder:
        _plot(sweep, folder, out, reference, plt)


def _plot(sweep: dict, folder: Path, out: str, reference: str | None, plt: Any) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for index, name in enumerate(sweep["points"]):
        color = f"C{index % 10}"
        curves = [validation_rows(run) for _, run in seed_runs(sweep, folder / name)]
        for rows in curves:  # every seed thin, their mean (over the seeds that reached each validation) bold
            ax.plot([int(r["env_steps"]) / 1e6 for r in rows], [float(r["val_return_mean"]) for r in rows],
                    color=color, lw=0.8, alpha=0.4 if len(curves) > 1 else 1.0)  # fmt: skip
        by_step: dict[int, list[float]] = {}
        for rows in curves:
            for r in rows:
                by_step.setdefault(int(r["env_steps"]), []).append(float(r["val_return_mean"]))
        steps = sorted(by_step)
        ax.plot([s / 1e6 for s in steps], [sum(by_step[s]) / len(by_step[s]) for s in steps], color=color, lw=2,
                label=f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")  # fmt: skip
    if reference:
        # PPO validates every few tens of millions of steps, past the points' range: its line runs to its first
        # validation beyond the range (the axis kept to the points'), so its slope over the range shows.
        xlim = ax.get_xlim()
        with open(reference) as f:
            rows = list(csv.DictReader(f))
        inside = sum(int(r["env_steps"]) <= 1e6 * xlim[1] for r in rows)
        rows = rows[: inside + 1]
        steps = [int(r["env_steps"]) / 1e6 for r in rows]
        ax.plot(steps, [float(r["val_return_mean"]) for r in rows], "k--o", ms=4, label="PPO reference")
        ax.set_xlim(xlim)
    ax.set_xlabel("env steps (M)")
    ax.set_ylabel("validation return (mean of run.validation_episodes)")
    seeds = [seed for seed, _ in seed_runs(sweep, folder)]
    listed = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    ax.set_title(f"{sweep['task']} {plot_sizes(sweep)}, {listed}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    commands = {"run": run, "held-out": held_out, "status": status, "table": table, "compare": compare, "plot": plot,
                "base": base, "record": record}  # fmt: skip
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        raise SystemExit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
