"""`flow-mbpo-pwm train`: the run loop of one training cell — resume, metrics, validation, checkpoints, guard.

The loop around `PWM.epoch` (algorithms/pwm.py). Per epoch it does nothing that waits on the device: metrics are
accumulated on the device and read once every `run.log_every` epochs; the non-finite flag is read every
`run.guard.check_every` epochs; validation (`run.validate_every`) and state saves (`run.save_state_every`) are the
only other host synchronisation points. A periodic state save only copies the state to host memory; a thread writes
it while the loop goes on (io.BackgroundSaves), and every other save, and the run's end, wait for that write.

Run folder (docs/contracts.md "Run folder"): everything resumable lives in `work/`; the outputs (`final.pt`,
`metrics.csv`, `validation.csv`, `wm_diagnostics.csv`, `train_summary.json`, the last one last) are written only
when the run ends: completed, or stopped by the collapse guard (then without `final.pt`, status "collapsed").
Each validation also measures where learning stalls (diagnostics.py) on its own recorded episodes: columns of
validation.csv and rows of wm_diagnostics.csv. Restarting the same command continues from `work/state.pt`; rows
written after that state was saved are dropped, so a resumed run's tables equal an uninterrupted run's. On CPU the
continuation is bitwise exact.

Exit codes (returned to `cli.py`):
- 0  completed (or already complete);
- 3  a seed was stopped by the collapse guard (NaN/Inf or a validation collapse; see `work/diagnostics.json`), or
     its run folder holds such a stopped run (delete `work/diagnostics.json` to retry it anyway); every seed's
     outputs are written all the same, a stopped seed's with status "collapsed" (the workflow takes 3 as done);
- 75 preempted (SIGTERM / SIGUSR1): state saved, rerun the same command to continue (75 = EX_TEMPFAIL, "try
     again", which is what a requeued SLURM job or a Snakemake retry does);
- 130 interrupted by Ctrl-C (SIGINT): state saved the same way, rerun to continue (128 + SIGINT, as a shell
     reports it). A second Ctrl-C stops at once, keeping the last saved state;
- 1  a damaged or unusable `work/state.pt` or `work/config.yaml` (raised as `CheckpointError` naming the file and
     which file to delete to start afresh, reported by `cli.py`);
- 2  invalid configuration, incl. a run folder whose saved config differs from the requested one (raised as
     `ConfigError`, reported by `cli.py`).

Several seeds (`train_seeds`, `train --seed 0 1 2 --run-dir A B C`) train as one stack in one process: one batched
env (block s: seed s's envs), one batched validation env (block s: seed s's validation envs, so every seed's
validation episodes run in one loop), one `PWM` of S seeds, one epoch counter; everything else is per seed
(`SeedRun`): its run folder, replay buffer, metrics, guard, records and `work/state.pt` — each folder exactly what a
lone run of that seed writes. The guard stops a collapsed seed alone (its diagnostics, and its records up to then
as outputs with status "collapsed", no final model); its siblings finish, and the exit code is then 3. A lone run
is the stack of one seed.

Test hook (the only one): environment variable `FLOW_MBPO_PWM_INJECT_NAN_EPOCH=k` fills one actor parameter of every
seed with NaN at the start of epoch k (1-based), `seed:k` only that seed's, so tests can prove the guard stops the
run (or that seed). It is read once at start.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

from flow_mbpo_pwm import diagnostics, exit_codes, io
from flow_mbpo_pwm.config import ConfigError, TrainConfig, dump_yaml, yaml_problem
from flow_mbpo_pwm.devices import resolve_device
from flow_mbpo_pwm.guard import CollapseDetector, CollapseError, NonFiniteMonitor, nonfinite_parameters
from flow_mbpo_pwm.progress import Progress
from flow_mbpo_pwm.run_folder import (
    COLLAPSED,
    COMPLETED,
    LATER_METRICS_COLUMNS,
    LATER_VALIDATION_COLUMNS,
    LATER_WM_DIAGNOSTICS_COLUMNS,
    METRICS_COLUMNS,
    VALIDATION_COLUMNS,
    VALIDATION_DIAGNOSTIC_COLUMNS,
    WM_DIAGNOSTICS_COLUMNS,
    RunFolder,
    write_table,
)
from flow_mbpo_pwm.train_state import (
    STATE_FORMAT,
    capture_rng,
    config_differences,
    restore_rng,
    seed_everything,
    set_matmul_precision,
)

EXIT_COMPLETED = exit_codes.OK
EXIT_COLLAPSED = exit_codes.COLLAPSED
EXIT_PREEMPTED = exit_codes.PREEMPTED
EXIT_INTERRUPTED = exit_codes.INTERRUPTED
INJECT_NAN_ENV = "FLOW_MBPO_PWM_INJECT_NAN_EPOCH"

# Per-epoch training metrics averaged over a log window (names as `PWM.epoch` returns them). Learning rates are
# not read from the device: they are a host function of progress (`PWM.learning_rates`).
LOSS_WINDOW_METRICS = (
    "actor_loss",
    "critic_loss",
    "wm_loss",
    "wm_dynamics_loss",
    "wm_reward_loss",
    "actor_grad_norm",
    "critic_grad_norm",
    "wm_grad_norm",
)
# Then the policy's exploration std (mean over action dims; a collapse of it is what stalled the PPO reference).
# It comes from parameters, which the guard checks themselves, and a later metric must not change the shape of a
# saved guard state.
WINDOW_MEAN_METRICS = (*LOSS_WINDOW_METRICS, "actor_std")
# Metrics that must stay finite; any NaN/Inf among them stops the run at the next guard check.
GUARDED_METRICS = (*LOSS_WINDOW_METRICS, "episode_return_sum")
# validation.csv: the validation itself, then the world-model diagnostics measured on its episodes.
VALIDATION_TABLE_COLUMNS = (*VALIDATION_COLUMNS, *VALIDATION_DIAGNOSTIC_COLUMNS)
# What `TrainingRun._state` writes and `_load_state` needs.
STATE_KEYS = (
    "format",
    "config",
    "epoch",
    "wall_seconds",
    "agent",
    "buffer",
    "env",
    "val_env",
    "obs",
    "window",
    "nonfinite",
    "collapse",
    "metrics_rows",
    "validation_rows",
    "wm_diagnostic_rows",
    "rng",
)


class StopSignals:
    """SIGTERM / SIGUSR1 (SLURM's notice before preemption) and SIGINT (Ctrl-C) only set a flag; the loop saves and
    exits at the next epoch boundary, so a state file is never written from inside a signal handler. A second
    Ctrl-C is a user who will not wait for the epoch to end: it stops at once (KeyboardInterrupt), and the last
    saved state, written atomically, stays as it was."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            # Outside the main thread signal handlers cannot be installed: no preemption handling there.
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class MetricWindow:
    """Device-side accumulation of one log window: means of losses and gradient norms, and the training episodes
    finished in the window."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(WINDOW_MEAN_METRICS), dtype=torch.float64, device=self.device)
        self.episodes = torch.zeros((), dtype=torch.float64, device=self.device)
        self.return_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.return_max = torch.full((), -math.inf, dtype=torch.float64, device=self.device)
        self.epochs = 0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        self.sums += torch.stack([metrics[k].detach().double().reshape(()) for k in WINDOW_MEAN_METRICS])
        self.episodes += metrics["episodes_finished"].detach().double()
        self.return_sum += metrics["episode_return_sum"].detach().double()
        self.return_max = torch.maximum(self.return_max, metrics["episode_return_max"].detach().double())
        self.epochs += 1

    def read(self) -> dict[str, float]:
        """One device -> host copy of the whole window."""
        packed = torch.cat(
            [self.sums / max(self.epochs, 1), torch.stack([self.episodes, self.return_sum, self.return_max])]
        ).tolist()
        n = len(WINDOW_MEAN_METRICS)
        values = dict(zip(WINDOW_MEAN_METRICS, packed[:n], strict=True))
        episodes, return_sum, return_max = packed[n:]
        values["train_episodes"] = int(round(episodes))
        values["train_return_mean"] = return_sum / episodes if episodes > 0 else math.nan
        values["train_return_max"] = return_max if episodes > 0 else math.nan
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": self.sums.clone(),
            "episodes": self.episodes.clone(),
            "return_sum": self.return_sum.clone(),
            "return_max": self.return_max.clone(),
            "epochs": self.epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("sums", "episodes", "return_sum", "return_max"):
            setattr(self, key, state[key].to(self.device))
        self.epochs = int(state["epochs"])
        # A state saved before the later metrics: their sums over the epochs already in the window are unknown
        # (NaN in that window's row; an empty window starts at 0).
        missing = len(WINDOW_MEAN_METRICS) - len(self.sums)
        if missing > 0:
            unknown = self.sums.new_full((missing,), math.nan if self.epochs else 0.0)
            self.sums = torch.cat([self.sums, unknown])


@dataclass
class Progression:
    """Host-side counters of the run (saved with the state)."""

    epoch: int = 0  # completed epochs
    wall_seconds: float = 0.0  # training wall time of previous attempts


def train(config: TrainConfig, run_dir: Path) -> int:
    """Train one cell into `run_dir`; resume from `run_dir/work/state.pt` when present. Returns an exit code."""
    return train_seeds([config], [run_dir])


def train_seeds(configs: list[TrainConfig], run_dirs: list[Path]) -> int:
    """Train several seeds of one cell in one process, as one stack (algorithms/pwm.py): `configs[i]` (the cell's
    config with `run.seed` = seed i) into `run_dirs[i]`, each folder exactly as a lone run of that seed writes it.
    Every seed resumes from its folder's `work/state.pt`. Returns an exit code: 0 when every seed completed, 3
    when any was stopped by the collapse guard (its siblings still complete), 75/130 when preempted."""
    if not configs or len(configs) != len(run_dirs):
        raise ValueError(f"train_seeds: {len(configs)} configs for {len(run_dirs)} run folders")
    cell = configs[0]
    seeds = [c.run.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError("run.seed", f"a stack trains distinct seeds, got {seeds}")
    if len({Path(d).resolve() for d in run_dirs}) != len(run_dirs):
        raise ConfigError("run_dir", f"a stack needs one run folder per seed, got {[str(d) for d in run_dirs]}")
    for config in configs[1:]:
        diffs = [d for d in config_differences(cell.to_dict(), config.to_dict()) if d[0] != "run.seed"]
        if diffs:
            raise ConfigError(diffs[0][0], f"the seeds of a stack must share one cell config, they differ in {diffs}")
    for key in ("world_model_init", "offline_data", "actor_init"):
        path = getattr(cell.run, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"run.{key}", f"{path} does not exist")
    if cell.run.actor_init and not cell.run.world_model_init:
        raise ConfigError("run.actor_init", "needs run.world_model_init: the cloned actor reads its latents")
    if cell.pwm.freeze_encoder and not cell.run.world_model_init:
        raise ConfigError(
            "pwm.freeze_encoder", "needs run.world_model_init: only a pretrained encoder is worth holding fixed"
        )
    if cell.pwm.standardizes_latent and cell.run.world_model_init and not cell.run.offline_data:
        raise ConfigError(
            "pwm.latent_norm",
            "standardize with a pretrained world model needs its offline data in the replay buffer "
            "(run.offline_data; pretrain.seed_buffer: true): the latent's statistics are fitted on them",
        )
    device = resolve_device(cell.run.device)
    folders = [RunFolder(Path(d)) for d in run_dirs]
    for folder, config in zip(folders, configs, strict=True):
        _check_run_folder(folder, config)
    return TrainingRun(configs, folders, device).run()


def _check_run_folder(folder: RunFolder, config: TrainConfig) -> None:
    """Refuse a folder that holds a different run or a collapsed one; write the resolved config."""
    if folder.work_config.exists():
        saved = _read_saved_config(folder)
        diffs = config_differences(saved, config.to_dict(), TrainConfig().to_dict())
        if diffs:
            listed = "; ".join(f"{k}: saved {a!r}, requested {b!r}" for k, a, b in diffs)
            raise ConfigError(
                diffs[0][0],
                f"the run folder {folder.root} holds a run with a different configuration ({listed}). "
                f"Use another run folder, or delete {folder.root} to start this one over.",
            )
    folder.work.mkdir(parents=True, exist_ok=True)
    text = dump_yaml(config)
    io.write_text(folder.work_config, text)
    io.write_text(folder.config, text)


def _read_saved_config(folder: RunFolder) -> dict[str, Any]:
    path = folder.work_config
    # Deleting it is safe: it is rewritten from the requested config, and work/state.pt carries its own copy,
    # which the resume still checks.
    remedy = f"delete {path} to continue (or the run folder {folder.root} to start this run afresh)"
    try:
        saved = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise io.CheckpointError(f"{path}: damaged, not valid YAML ({yaml_problem(err)}); {remedy}") from err
    if not isinstance(saved, dict):
        raise io.CheckpointError(f"{path}: damaged, not a mapping of config sections; {remedy}")
    return saved


def _nan_injections(text: str, seeds: list[int]) -> dict[int, int]:
    """The test hook's value -> {seed index: epoch}: `k` poisons every seed at epoch k, `seed:k` only that seed
    (comma-separated entries may be combined)."""
    injections: dict[int, int] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        seed, _, epoch = entry.rpartition(":")
        for index, s in enumerate(seeds):
            if not seed or int(seed) == s:
                injections[index] = int(epoch)
    return injections


class SeedRun:
    """One seed of a training run: its config, run folder, replay buffer, validation env, metrics window, guard and
    records — everything that a lone run of that seed writes. The networks are the stack's member `member`."""

    def __init__(self, stack: TrainingRun, index: int, config: TrainConfig, folder: RunFolder):
        self.stack, self.index, self.config, self.folder = stack, index, config, folder
        self.device = stack.device
        self.name = f"{config.task_name}/{config.size}-{config.dynamics_name}/seed{config.run.seed}"
        # In a stack, lines are tagged with the seed (the progress lines carry the stack's name).
        stacked = len(stack.configs) > 1
        self.tag = f"seed {config.run.seed}: " if stacked else ""
        self.tag_fields = {"seed": config.run.seed} if stacked else {}
        self.stopped = False  # by the collapse guard, in this attempt or an earlier one

    def build(self) -> None:
        from flow_mbpo_pwm.data.replay import ReplayBuffer

        cfg, stack = self.config, self.stack
        self.member = stack.agent.members[self.index]
        self.buffer = ReplayBuffer(
            capacity=cfg.pwm.buffer_size,
            num_envs=cfg.env.num_envs,
            obs_dim=stack.env.obs_dim,
            act_dim=stack.env.act_dim,
            device=self.device,
            horizon=cfg.pwm.horizon,
        )
        self.window = MetricWindow(self.device)
        self.nonfinite = NonFiniteMonitor(GUARDED_METRICS, self.device)
        self.collapse = CollapseDetector(cfg.run.guard)
        self.metrics_rows: list[dict[str, Any]] = []
        self.validation_rows: list[dict[str, Any]] = []
        self.wm_diagnostic_rows: list[dict[str, Any]] = []
        self.gradient_env: Any = None  # the gradient check's env, built at its first use

    def stop(self, err: CollapseError, progress: Progress) -> None:
        """The collapse guard stopped this seed: diagnostics to its folder, and its records up to here as its
        outputs with status "collapsed" (no final model), so the workflow goes on with its siblings; they train on."""
        io.write_json(self.folder.diagnostics, err.diagnostics)
        progress.message(self.tag + f"STOPPED by the collapse guard: {err}. Diagnostics: {self.folder.diagnostics}")
        self.stopped = True
        self.stack.agent.stop_seed(self.index)
        self._finish(stopped=err.diagnostics)

    def restore_stopped_outputs(self) -> None:
        """A seed stopped in an earlier attempt: re-make its outputs from their work/ copies where a failure of
        that attempt's job made Snakemake delete them."""
        folder = self.folder
        copies = [
            (folder.work_metrics, folder.metrics),
            (folder.work_validation, folder.validation),
            (folder.work_wm_diagnostics, folder.wm_diagnostics),
            (folder.work_summary, folder.summary),  # the summary last: its presence means the rest is there
        ]
        if folder.summary.exists() or not all(source.exists() for source, _ in copies):
            return
        for source, target in copies:
            io.write_text(target, source.read_text())

    def _state(self, shared: dict[str, Any]) -> dict[str, Any]:
        """This seed's `work/state.pt` but the RNG states (added last): a lone run's state, whose `env`, `obs` and
        `epoch` are the stack's (`shared`, the same in every seed's file), as is its `val_env` (the batched validation
        env's), and whose `stack` lists the seeds trained together."""
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "epoch": shared["epoch"],
            "wall_seconds": shared["wall_seconds"],
            "agent": self.stack.agent.seed_state_dict(self.index),
            "buffer": self.buffer.state_dict(),
            "env": shared["env"],
            "val_env": shared["val_env"],
            "obs": shared["obs"],
            "window": self.window.state_dict(),
            "nonfinite": self.nonfinite.state_dict(),
            "collapse": self.collapse.state_dict(),
            "metrics_rows": list(self.metrics_rows),
            "validation_rows": list(self.validation_rows),
            "wm_diagnostic_rows": list(self.wm_diagnostic_rows),
            "stack": shared["stack"],
        }

    def _read_state(self) -> dict[str, Any]:
        """Read and check `work/state.pt`. Whatever is wrong with the file (damaged, truncated, of another format,
        lacking a key, saved by another stack) ends in one `CheckpointError` that names it and says to delete it."""
        path = self.folder.state
        afresh = f"delete {path} (or the run folder {self.folder.root}) to start this run afresh"
        try:
            state = io.torch_load(path, map_location=self.device)
        except io.CheckpointError as err:
            raise io.CheckpointError(f"cannot resume: {err}; {afresh}") from err
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise io.CheckpointError(f"{path}: not a training state of format {STATE_FORMAT} ({found!r}); {afresh}")
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise io.CheckpointError(f"{path}: damaged training state, it lacks the keys {missing}; {afresh}")
        if not isinstance(state["config"], dict):
            raise io.CheckpointError(f"{path}: damaged training state, its config is not a mapping; {afresh}")
        diffs = config_differences(state["config"], self.config.to_dict(), TrainConfig().to_dict())
        if diffs:
            raise ConfigError(diffs[0][0], f"differs from the config saved in {self.folder.state}: {diffs}")
        saved_stack = list(state.get("stack", [self.config.run.seed]))
        if saved_stack != self.stack.seeds:
            raise io.CheckpointError(
                f"{path}: saved by a run training the seeds {saved_stack} together, this one trains "
                f"{self.stack.seeds}; rerun with those seeds, or {afresh}"
            )
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.stack.agent.load_seed_state_dict(self.index, state["agent"])
        self.buffer.load_state_dict(state["buffer"])
        self.window.load_state_dict(state["window"])
        self.nonfinite.load_state_dict(state["nonfinite"])
        self.collapse.load_state_dict(state["collapse"])
        # (states saved before a table gained its later columns resume with NaN there)
        later = dict.fromkeys(LATER_METRICS_COLUMNS, math.nan)
        self.metrics_rows = [{**later, **row} for row in state["metrics_rows"]]
        later = dict.fromkeys(LATER_VALIDATION_COLUMNS, math.nan)
        self.validation_rows = [{**later, **row} for row in state["validation_rows"]]
        later = dict.fromkeys(LATER_WM_DIAGNOSTICS_COLUMNS, math.nan)
        self.wm_diagnostic_rows = [{**later, **row} for row in state.get("wm_diagnostic_rows", [])]

    def _drop_records_after_state(self) -> None:
        """Rewrite the work tables from the rows the state holds and delete checkpoints of later epochs: what an
        interrupted attempt wrote after its last state save is redone, never duplicated."""
        self._write_work_tables()
        for path in self.folder.checkpoints.glob("epoch_*.pt"):
            epoch = re.fullmatch(r"epoch_(\d+)\.pt", path.name)
            if epoch and int(epoch.group(1)) > self.progression.epoch:
                path.unlink()

    def _warmup_due(self, epoch: int) -> bool:
        """Whether the buffer holds a finished episode (and a full window to train on). Asked of the device only
        at log boundaries, which read the device anyway, and at the epoch where every env has certainly finished
        its first episode (truncation after `max_episode_steps`): never a per-epoch sync. Deterministic, so a
        resumed run warms up at the same epoch."""
        horizon = self.config.pwm.horizon
        first_truncation = (epoch - 1) * horizon < self.stack.env.max_episode_steps <= epoch * horizon
        return (epoch % self.config.run.log_every == 0 or first_truncation) and self.buffer.ready()

    # ---------------------------------------------------------------------------------------------------------
    # Metrics, validation, guard
    # ---------------------------------------------------------------------------------------------------------

    def _cell_keys(self) -> dict[str, Any]:
        c = self.config
        return {"task": c.task_name, "size": c.size, "dynamics": c.dynamics_name, "seed": c.run.seed}

    @property
    def progression(self) -> Progression:
        return self.stack.progression

    @property
    def env_steps(self) -> int:
        """This seed's env steps (its block of the batched env)."""
        return self.progression.epoch * self.config.pwm.horizon * self.config.env.num_envs

    def _wall_seconds(self) -> float:
        return self.stack.wall_seconds()

    def _log(self, progress: Progress, write: bool = True) -> None:
        """One metrics row from the window; `write`: also rewrite work/metrics.csv with every row so far (a row
        not written now is written with the next one, and by `_finish`)."""
        values = self.window.read()
        self.window.reset()
        row = {
            **self._cell_keys(),
            "epoch": self.progression.epoch,
            "env_steps": self.env_steps,
            "wall_seconds": round(self._wall_seconds(), 3),
            **values,
        }
        # The learning rates of this row's last epoch, computed on the host.
        lrs = self.stack.agent.learning_rates(self.config.pwm.schedule_progress(self.progression.epoch - 1))
        row.update(actor_lr=lrs["actor"], critic_lr=lrs["critic"], wm_lr=lrs["wm"])
        self.metrics_rows.append(row)
        if write:
            write_table(self.folder.work_metrics, METRICS_COLUMNS, self.metrics_rows)
        names = ("train_return_mean", "train_episodes", "actor_loss", "critic_loss", "wm_loss", "actor_std")
        progress.report({**self.tag_fields, **{k: row[k] for k in names}})

    def _gradient_check_env(self, epoch: int) -> diagnostics.JointStateReturns | None:
        """The gradient check's returns at this validation, or None when it is not due (every
        `run.grad_check_every`-th validation and the last) or the env cannot be placed in a saved state. Its env is
        a dedicated one of 2 H A rows with H-step episodes, built once."""
        cfg = self.config
        every = cfg.run.grad_check_every
        due = every > 0 and ((len(self.validation_rows) + 1) % every == 0 or epoch == cfg.pwm.epochs)
        if not due or not diagnostics.JointStateReturns.supported(self.stack.val_env):
            return None
        if self.gradient_env is None:
            from flow_mbpo_pwm import envs

            rows = 2 * cfg.pwm.horizon * self.member.act_dim
            seed = cfg.run.validation_seed_base + cfg.run.seed  # unused: every row is placed in a saved state
            # Ordered float atomics on the GPU: rows with the same inputs then give the same outputs, so a finite
            # difference measures the perturbation, not the atomics' summation order.
            exact = {"deterministic": True} if cfg.env.task == "ant" else {}
            self.gradient_env = envs.make_from_config(
                cfg.env, self.device, seed=seed, num_envs=rows, episode_length=cfg.pwm.horizon, **exact
            )
        return diagnostics.JointStateReturns(self.gradient_env, cfg.pwm.gamma, self._reward_units())

    def _reward_units(self) -> diagnostics.RewardUnits:
        pwm = self.config.pwm
        return diagnostics.reward_units(pwm.reward_norm, self.member.rew_rms, pwm.reward_clip)

    def _validate(
        self,
        progress: Progress,
        returns: torch.Tensor,
        recorder: diagnostics.EpisodeRecorder,
        gradient_returns: diagnostics.JointStateReturns | None,
    ) -> None:
        """This seed's part of a validation (`TrainingRun._validate` ran the episodes): its episodes' `returns` (on
        the host) and `recorder`, the world-model diagnostics on them, the checkpoint, the row and the log line."""
        from flow_mbpo_pwm import checkpoints

        cfg, epoch = self.config, self.progression.epoch
        episodes_done = time.perf_counter()
        mean = float(returns.mean())
        std = float(returns.std(unbiased=False))
        # Seeded by the epoch, so a resumed run measures the same (only a noise-source flow draws from it).
        generator = torch.Generator(device=self.device).manual_seed(epoch)
        found = diagnostics.validation_diagnostics(
            self.member.world_model, recorder, cfg.pwm.horizon, cfg.pwm.gamma, self._reward_units(),
            gradient_returns, cfg.run.grad_check_eps, generator, self.member.critic.value, self.member.actor,
        )  # fmt: skip
        diagnostics_done = time.perf_counter()  # the rows are host numbers: the diagnostics have run
        reason = self.collapse.update(epoch, mean)
        path = self.folder.checkpoint(epoch)
        meta = {
            **self._cell_keys(),
            "epoch": epoch,
            "env_steps": self.env_steps,
            "obs_dim": self.member.obs_dim,
            "act_dim": self.member.act_dim,
            "val_return": mean,
            "config": self.config.to_dict(),
        }
        checkpoints.save_policy(path, self.member, meta)
        seconds = (diagnostics_done - episodes_done, time.perf_counter() - diagnostics_done)
        row = {
            **self._cell_keys(),
            "epoch": epoch,
            "env_steps": self.env_steps,
            "val_return_mean": mean,
            "val_return_std": std,
            "val_episodes": int(returns.numel()),
            "checkpoint": str(path.relative_to(self.folder.root)),
            "flagged": bool(reason),
            "flag_reason": reason,
            **diagnostics.summary_columns(*found),
            **diagnostics.action_columns(recorder.record),
            "policy_shift": self._policy_shift(recorder.record),
        }
        self.validation_rows.append(row)
        keys = {**self._cell_keys(), "epoch": epoch, "env_steps": self.env_steps}
        self.wm_diagnostic_rows.extend({**keys, **r, "grad_cosine": found.grad_cosine} for r in found.rows)
        self._write_work_tables()
        progress.message(
            self.tag
            + f"validation at epoch {epoch}: return {mean:.4g} +- {std:.3g}"
            + (f" FLAGGED ({reason})" if reason else "")
            + f"; step-H latent error {row['wm_latent_mse_hH']:.3g} (copy baseline {row['copy_latent_mse_hH']:.3g})"
            + (f", gradient cosine {found.grad_cosine:.3f}" if not math.isnan(found.grad_cosine) else "")
            + f", critic's explained variance {found.critic.explained_variance:.3g}"
            + "; diagnostics {:.2f} s, checkpoint {:.2f} s".format(*seconds)
        )
        if self.collapse.should_stop:
            raise CollapseError(
                f"validation return collapsed in {self.collapse.streak} validations in a row (last: {reason})",
                self._diagnostics("validation collapse", {"validation_returns": self.collapse.history}),
            )

    def _policy_shift(self, record: diagnostics.EpisodeRecord) -> float:
        """validation.csv's `policy_shift` against the last validation's checkpoint (`diagnostics.policy_shift`);
        NaN at the first validation, or where that checkpoint is gone or unusable (a diagnostic never stops a run)."""
        from flow_mbpo_pwm import checkpoints

        if not self.validation_rows:
            return math.nan
        try:  # a missing file is refused as an unusable one is
            policy, _ = checkpoints.load_policy(self.folder.root / self.validation_rows[-1]["checkpoint"], self.device)
        except checkpoints.CheckpointError:
            return math.nan
        return diagnostics.policy_shift(record, policy)

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"world_model": self.member.world_model, "actor": self.member.actor, "critic": self.member.critic}

    def _check_finite(self, during: str = "") -> None:
        metrics = self.nonfinite.read()
        params = nonfinite_parameters(self._modules())
        if metrics or params:
            where = during or f"epoch {self.progression.epoch}"
            raise CollapseError(
                f"non-finite values by {where}: metrics {metrics or 'none'}, "
                f"parameters {params[:5] or 'none'}{' ...' if len(params) > 5 else ''}",
                self._diagnostics(
                    "non-finite", {"detected": where, "nonfinite_metrics": metrics, "nonfinite_parameters": params}
                ),
            )

    def _diagnostics(self, kind: str, details: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._cell_keys(),
            "status": "stopped",
            "reason": kind,
            "epoch": self.progression.epoch,
            "env_steps": self.env_steps,
            **details,
            "last_metrics": self.metrics_rows[-1] if self.metrics_rows else None,
            "last_validation": self.validation_rows[-1] if self.validation_rows else None,
            "guard": self.config.to_dict()["run"]["guard"],
        }

    # ---------------------------------------------------------------------------------------------------------
    # Pretraining and completion
    # ---------------------------------------------------------------------------------------------------------

    def _start_from_offline(self, progress: Progress, datasets: dict[str, dict[str, torch.Tensor]]) -> bool:
        """The paper's protocol (fresh runs only): start from the pretrained world model (`run.world_model_init`,
        weights and reward statistics; the agent counts as warmed up), with `run.actor_init` from a cloned actor, and
        put the offline data into the replay buffer (`run.offline_data`). True if it did any. `datasets`: the files
        the stack has read so far, by path, so that its seeds read a shared dataset once (`fill_buffer` leaves the
        data as they are)."""
        from flow_mbpo_pwm import checkpoints
        from flow_mbpo_pwm.data.datasets import fill_buffer, read_matching_dataset

        run = self.config.run
        if run.world_model_init:
            meta = checkpoints.load_world_model(run.world_model_init, self.member)
            self.member.warmed_up = True
            progress.message(
                self.tag + f"world model from {run.world_model_init} (pretrained {meta.get('steps')} steps)"
            )
        if run.offline_data:
            env, start, path = self.stack.env, time.monotonic(), str(run.offline_data)
            shared = path in datasets
            if not shared:
                datasets[path] = read_matching_dataset(path, env.obs_dim, env.act_dim, self.config.pwm.horizon)
            read = time.monotonic() - start
            added = fill_buffer(self.buffer, datasets[path])
            how = "read already" if shared else f"read in {read:.1f} s"
            progress.message(
                self.tag + f"replay buffer starts with {added} offline transitions from {run.offline_data} "
                f"({how}, stored in {time.monotonic() - start - read:.1f} s)"
            )
        if run.world_model_init and (fitted := self.member.fit_latent_stats(self.buffer.observations())):
            std = self.member.actor.input_norm.std
            progress.message(
                self.tag + f"latent statistics (pwm.latent_norm: standardize) fitted on {fitted} of the buffer's "
                "observations through the pretrained encoder; per-entry std min / median / max "
                + " / ".join(f"{float(x):.3g}" for x in (std.min(), std.median(), std.max()))
                + (" (the cloned actor's own follow)" if run.actor_init else "")
            )
        if run.actor_init:
            meta = checkpoints.load_actor(run.actor_init, self.member, run.world_model_init)
            progress.message(
                self.tag + f"actor from {run.actor_init} (cloned {meta.get('steps')} steps from "
                f"{meta.get('reference_policy')}; not updated for {self.config.pwm.actor_delay_epochs} epochs)"
            )
        return bool(run.world_model_init or run.offline_data)

    def _parameter_counts(self) -> dict[str, int]:
        return self.stack.agent.parameter_counts()  # {world_model, actor, critic, total}

    def _write_work_tables(self) -> None:
        write_table(self.folder.work_metrics, METRICS_COLUMNS, self.metrics_rows)
        write_table(self.folder.work_validation, VALIDATION_TABLE_COLUMNS, self.validation_rows)
        write_table(self.folder.work_wm_diagnostics, WM_DIAGNOSTICS_COLUMNS, self.wm_diagnostic_rows)

    def _finish(self, stopped: dict[str, Any] | None = None) -> None:
        """The run's outputs: completed, or (`stopped`: the collapse guard's diagnostics) collapsed, whose records
        end where it stopped and which has no final model."""
        from flow_mbpo_pwm import checkpoints

        folder = self.folder
        self._write_work_tables()
        if stopped is None:
            checkpoints.save_agent(
                folder.final,
                self.member,
                {**self._cell_keys(), "epoch": self.progression.epoch, "config": self.config.to_dict()},
            )
        write_table(folder.metrics, METRICS_COLUMNS, self.metrics_rows)
        write_table(folder.validation, VALIDATION_TABLE_COLUMNS, self.validation_rows)
        write_table(folder.wm_diagnostics, WM_DIAGNOSTICS_COLUMNS, self.wm_diagnostic_rows)
        returns = [r["train_return_mean"] for r in self.metrics_rows if math.isfinite(r["train_return_mean"])]
        summary = {
            **self._cell_keys(),
            "status": COMPLETED if stopped is None else COLLAPSED,
            "epochs": self.progression.epoch,
            "env_steps": self.env_steps,
            "train_seconds": round(self._wall_seconds(), 3),
            "params": self._parameter_counts(),
            "best_train_return": max(returns) if returns else None,
            "final_train_return": returns[-1] if returns else None,
            "checkpoints": [
                {
                    "epoch": r["epoch"],
                    "env_steps": r["env_steps"],
                    "path": r["checkpoint"],
                    "val_return": _json_number(r["val_return_mean"]),
                    "flagged": r["flagged"],
                    "flag_reason": r["flag_reason"],
                }
                for r in self.validation_rows
            ],
        }
        if stopped is not None:
            summary["stopped"] = {"epoch": stopped["epoch"], "reason": stopped["reason"]}
            io.write_json(folder.work_summary, summary)
        io.write_json(folder.summary, summary)


class TrainingRun:
    """The run loop of one stack of seeds (one seed: a lone run): the batched env, the agent and the epoch counter
    are shared; each seed's records, guard and folder are its `SeedRun`."""

    def __init__(self, configs: list[TrainConfig], folders: list[RunFolder], device: torch.device):
        self.configs = configs
        self.config = configs[0]  # the cell's settings (all seeds share them but run.seed)
        self.seeds = [c.run.seed for c in configs]
        self.device = device
        cell = self.config
        seeds = ",".join(map(str, self.seeds))
        self.name = f"{cell.task_name}/{cell.size}-{cell.dynamics_name}/seed{seeds}"
        self.runs = [SeedRun(self, i, c, f) for i, (c, f) in enumerate(zip(configs, folders, strict=True))]
        self.inject_nan = _nan_injections(os.environ.get(INJECT_NAN_ENV, ""), self.seeds)
        self._saves = io.BackgroundSaves()  # the periodic state saves, written while the loop goes on

    # ---------------------------------------------------------------------------------------------------------
    # Construction and state
    # ---------------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        from flow_mbpo_pwm import envs
        from flow_mbpo_pwm.algorithms.pwm import PWM

        cfg = self.config
        seed_everything(self.seeds[0])
        set_matmul_precision(cfg.run.tf32)
        self.env = envs.make_for_seeds(cfg.env, self.device, self.seeds)  # block s: seed s's envs
        validation_seeds = [c.run.validation_seed_base + c.run.seed for c in self.configs]
        # block s: seed s's validation envs, as its lone run's
        self.val_env = envs.make_for_seeds(cfg.env, self.device, validation_seeds, cfg.run.validation_episodes)
        self.agent = PWM(self.env.obs_dim, self.env.act_dim, cfg, self.device, seeds=self.seeds)
        self.agent.encoder_frozen = cfg.pwm.freeze_encoder
        for run in self.runs:
            run.build()
            if run.stopped:
                self.agent.stop_seed(run.index)
        self.buffers = [run.buffer for run in self.runs]
        self.progression = Progression()
        self.obs = self.env.reset()

    def live(self) -> list[SeedRun]:
        return [run for run in self.runs if not run.stopped]

    def wall_seconds(self) -> float:
        return self.progression.wall_seconds + (time.monotonic() - self._attempt_start)

    def _save_state(self, progress: Progress, background: bool = False) -> None:
        """Every live seed's `work/state.pt`; a seed whose models went non-finite is stopped instead (never save a
        poisoned state: a resume would only collapse again). `background`: the periodic save, copied to host memory
        here and written while the loop goes on (the replay buffers are most of it: ~4 s of a 3-seed stack's
        5M run on an H200, bench/RESULTS.md); every other save waits for it and writes before returning."""
        begun = time.monotonic()
        for run in self.live():
            self._guarded(run, run._check_finite, progress)
        shared = {
            "epoch": self.progression.epoch,
            "wall_seconds": self.wall_seconds(),
            "env": self.env.state_dict(),
            "val_env": self.val_env.state_dict(),
            "obs": self.obs,
            "stack": list(self.seeds),
        }
        states = [(run, run._state(shared)) for run in self.live()]
        # Last, so that nothing above (e.g. a state_dict that clones through an RNG) perturbs what is saved.
        rng = capture_rng(self.device)
        # All seeds' files are written first, then renamed together: a kill while writing leaves every old state
        # (not a stack of mixed epochs, which would not resume).
        items = [(run.folder.state, {**state, "rng": rng}) for run, state in states]
        if background:
            self._saves.submit(items)
            previous = self._saves.written_seconds  # the last periodic save's write (None before the first ends)
            progress.message(
                f"state save: loop held {time.monotonic() - begun:.2f} s; written in the background"
                + (f" (the previous one in {previous:.1f} s)" if previous is not None else "")
            )
        else:
            self._saves.wait()
            io.torch_save_all(items)

    def _load_state(self) -> None:
        """Restore every live seed from its `work/state.pt` (the shared env, observations, epoch and RNG from the
        first one). The live seeds' files must come from one save: equal epochs."""
        states = []
        for run in self.live():
            state = run._read_state()
            try:
                run._restore(state)
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
                raise io.CheckpointError(
                    f"{run.folder.state}: damaged training state, it does not fit this run "
                    f"({type(err).__name__}: {err}); delete it (or the run folder {run.folder.root}) to start this "
                    "run afresh"
                ) from err
            states.append((run, state))
        epochs = {int(state["epoch"]) for _, state in states}
        if len(epochs) != 1:
            listed = ", ".join(f"{run.folder.state}: epoch {int(state['epoch'])}" for run, state in states)
            raise io.CheckpointError(f"the seeds' training states are of different epochs ({listed}); delete them")
        path, first = states[0][0].folder.state, states[0][1]
        older_stack = (
            "; a stack of several seeds saved before their validations ran in one env (2026-12-04) cannot resume"
        )
        for env, key, what, note in (
            (self.env, "env", "damaged training state, its env", ""),
            (self.val_env, "val_env", "its validation env", older_stack),
        ):
            try:
                env.load_state_dict(first[key])
            except (KeyError, TypeError, ValueError, RuntimeError) as err:
                raise io.CheckpointError(
                    f"{path}: {what} does not fit this run ({err}){note}; delete it to start afresh"
                ) from err
        self.obs = first["obs"].to(self.device)
        self.progression = Progression(epoch=int(first["epoch"]), wall_seconds=float(first["wall_seconds"]))
        restore_rng(first["rng"], self.device)
        for run in self.live():
            run._drop_records_after_state()

    def _guarded(self, run: SeedRun, check: Callable[[], None], progress: Progress) -> None:
        """Run `check()` (a guard check, a validation) of one seed; a collapse stops that seed only."""
        if run.stopped:
            return
        try:
            check()
        except CollapseError as err:
            run.stop(err, progress)

    # ---------------------------------------------------------------------------------------------------------
    # The loop
    # ---------------------------------------------------------------------------------------------------------

    def run(self) -> int:
        for run in self.runs:
            if run.folder.diagnostics.exists():
                print(
                    f"[{run.name}] this run was stopped by the collapse guard (see {run.folder.diagnostics}); "
                    "delete that file to retry it, or the run folder to start over",
                    flush=True,
                )
                run.stopped = True
                run.restore_stopped_outputs()
        if not self.live():
            return EXIT_COLLAPSED
        self._attempt_start = time.monotonic()
        cfg = self.config
        # Handlers first: a SIGTERM that arrives while the run is being built is honoured after the next epoch.
        with StopSignals() as stop:
            self._build()
            built = time.monotonic() - self._attempt_start
            resumed = any(run.folder.state.exists() for run in self.live())
            if resumed:
                self._load_state()
            else:
                for run in self.live():
                    run._drop_records_after_state()  # an attempt killed before its first state save left these
            # Which seeds each folder trains with (once its state, if any, was accepted): the workflow never
            # regroups a started seed (common.smk).
            for run in self.runs:
                io.write_text(run.folder.stack, yaml.safe_dump({"seeds": self.seeds}))
            progress = Progress(cfg.pwm.epochs, self.progression.epoch, self.name)
            try:
                # The start's parts are timed in the log (a whole run's start is ~80 s on an H200, bench/RESULTS.md).
                if resumed:
                    progress.message(
                        f"resumed from {self._state_files()} at epoch {self.progression.epoch} "
                        f"(built and loaded in {time.monotonic() - self._attempt_start:.1f} s)"
                    )
                else:
                    progress.message(
                        f"training on {self.device}: {cfg.pwm.epochs} epochs x {cfg.pwm.horizon} steps x "
                        f"{cfg.env.num_envs} envs x {len(self.seeds)} seed(s) {self.seeds}; parameters per seed "
                        f"{self.agent.parameter_counts()} (built in {built:.1f} s)"
                    )
                    datasets: dict[str, dict[str, torch.Tensor]] = {}
                    if any([run._start_from_offline(progress, datasets) for run in self.live()]):
                        saving = time.monotonic()
                        self._save_state(progress)  # a preempted job does not redo the loading
                        progress.message(f"state saved in {time.monotonic() - saving:.1f} s")
                trained = timed = False
                while self.progression.epoch < cfg.pwm.epochs and self.live():
                    begun, updates = time.monotonic(), any(self.agent.training_seeds())
                    self._one_epoch(progress)
                    if updates and not timed:  # (collect-only epochs before a warm-up compile nothing)
                        timed = True
                        progress.message(
                            f"first training epoch of this attempt (epoch {self.progression.epoch}) in "
                            f"{time.monotonic() - begun:.1f} s, its phases compiled and captured where the run asks; "
                            f"{time.monotonic() - self._attempt_start:.1f} s since the start"
                        )
                    trained = True
                    if stop.received is not None and self.progression.epoch < cfg.pwm.epochs and self.live():
                        self._save_state(progress)
                        interrupted = stop.received == signal.SIGINT
                        progress.message(
                            f"{'interrupted' if interrupted else 'preempted'} ({signal.Signals(stop.received).name}) "
                            f"at epoch {self.progression.epoch}, state saved to {self._state_files()}; "
                            "rerun the same command to continue"
                        )
                        return EXIT_INTERRUPTED if interrupted else EXIT_PREEMPTED
                if trained or not resumed:
                    self._save_state(progress)  # the finished run's state: `export-dataset` reads its replay buffer
                # A signal during these last writes is ignored: finishing takes seconds, and all of it is atomic.
                for run in self.live():
                    run._finish()
                    progress.message(run.tag + f"completed {cfg.pwm.epochs} epochs; outputs in {run.folder.root}")
                return EXIT_COLLAPSED if any(run.stopped for run in self.runs) else EXIT_COMPLETED
            finally:
                try:
                    self._saves.wait()  # a periodic save still being written (its error, if any, raised here)
                finally:
                    progress.close()

    def _state_files(self) -> str:
        return ", ".join(str(run.folder.state) for run in self.live())

    def _one_epoch(self, progress: Progress) -> None:
        cfg = self.config
        p = self.progression
        for index, epoch in self.inject_nan.items():
            if p.epoch + 1 == epoch:
                with torch.no_grad():
                    next(self.agent.members[index].actor.parameters()).fill_(math.nan)
        self.agent.set_logstd_floor(cfg.pwm.logstd_floor(p.epoch))
        self.obs, stacked = self.agent.epoch(self.env, self.obs, self.buffers, cfg.pwm.schedule_progress(p.epoch))
        for run in self.live():
            metrics = {name: value[run.index] for name, value in stacked.items()}
            run.window.add(metrics)
            run.nonfinite.observe(metrics)
        p.epoch += 1
        epoch = p.epoch
        progress.advance(epoch)
        last = epoch == cfg.pwm.epochs
        due = [not run.stopped and not run.member.warmed_up and run._warmup_due(epoch) for run in self.runs]
        if any(due):
            # The first world-model update after a seed's buffer holds a finished episode is a long one; until then
            # that seed only collects data (PWM.epoch). `warmed_up` is saved with each seed's agent state.
            warming = [seed for seed, d in zip(self.seeds, due, strict=True) if d]
            progress.message(
                f"world-model warm-up of seed(s) {warming}: {cfg.pwm.wm_warmup_steps} steps after epoch {epoch}"
            )
            self.agent.train_world_model(self.buffers, cfg.pwm.wm_warmup_steps, due)
        for run in self.live():
            if epoch % cfg.run.guard.check_every == 0:
                self._guarded(run, run._check_finite, progress)
            if not run.stopped and (epoch % cfg.run.log_every == 0 or last):
                # While a state save is being written the table waits: each table write is fsynced, and on ext4 that
                # fsync waits for the state file's data too (up to 0.85 s per write, bench/RESULTS.md).
                run._log(progress, write=not self._saves.writing)
        if epoch % cfg.run.validate_every == 0 or last:
            self._validate(progress)
        if epoch % cfg.run.save_state_every == 0 and not last and self.live():
            self._save_state(progress, background=True)

    def _validate(self, progress: Progress) -> None:
        """Every live seed's validation. Their episodes run in one loop of the batched validation env, block s acting
        with seed s's deterministic policy (a stopped seed's block with zero actions), so each seed's episodes are
        exactly its lone run's; then each seed's diagnostics, checkpoint and row (`SeedRun._validate`)."""
        for run in self.live():
            self._guarded(run, run._check_finite, progress)  # a seed gone non-finite stops here, before it acts
        runs = self.live()
        if not runs:
            return
        cfg, env, epoch = self.config, self.val_env, self.progression.epoch
        gradient_returns = {run.index: run._gradient_check_env(epoch) for run in runs}
        starts = ()
        if any(check is not None for check in gradient_returns.values()):
            starts = tuple(diagnostics.start_steps(env.max_episode_steps, cfg.pwm.horizon, cfg.run.grad_check_starts))
        size = cfg.run.validation_episodes
        recorder = diagnostics.EpisodeRecorder(
            env.max_episode_steps, env.num_envs, env.obs_dim, env.act_dim, self.device, blocks=len(self.runs)
        )
        acting = torch.tensor([not run.stopped for run in self.runs], device=self.device)
        acting = acting.repeat_interleave(size).unsqueeze(1)

        def policy(obs: torch.Tensor) -> torch.Tensor:
            return torch.where(acting, self.agent.act(obs, deterministic=True), 0.0)

        started = time.perf_counter()
        returns = diagnostics.first_episode_returns(env, policy, recorder, starts).cpu()  # waits for the episodes
        progress.message(
            f"validation at epoch {epoch}: the episodes of seed(s) {[self.seeds[run.index] for run in runs]} "
            f"({size} each, in one env) took {time.perf_counter() - started:.2f} s"
        )
        blocks = recorder.split()
        for run in runs:
            rows = slice(run.index * size, (run.index + 1) * size)
            validate = partial(run._validate, progress, returns[rows], blocks[run.index], gradient_returns[run.index])
            self._guarded(run, validate, progress)


def _json_number(value: float) -> float | None:
    """JSON has no NaN/Inf: a non-finite number is written as null (readers treat null as NaN)."""
    return value if math.isfinite(value) else None
