"""`flow-mbpo-pwm reference`: the model-free reference, PPO from rsl-rl-lib, on the same batched env as PWM.

rsl-rl's `PPO` (built by its own `PPO.construct_algorithm` from `reference_policy.rsl_model_config`) is driven by
the loop below, which is rsl-rl's `OnPolicyRunner.learn` minus its logger and per-step NaN checks (host syncs)
plus what the pipeline needs: an env-step budget and a wall-clock cap, policy snapshots, held-out validation,
resumable state and atomic outputs. The env goes through the thin adapter `envs/rsl_adapter.py`.

Run folder `results/{task}/reference/seed{seed}/` (docs/contracts.md "Reference run folder"):
- declared, written only at the end (atomically, `train_summary.json` last): `policy.pt` (final policy),
  `snapshots/step_<env_steps:012d>.pt` (evenly spaced over training, untrained and final included),
  `metrics.csv`, `validation.csv`, `train_summary.json`;
- `work/`: `settings.yaml`, `state.pt` (every `reference.save_state_every` iterations and on SIGTERM/SIGUSR1),
  `snapshots/`, `metrics.csv`, `validation.csv` (grown as training goes).

Snapshots are spaced by progress = max(env steps / budget, wall seconds / cap), so they spread evenly over the
part of the budget that actually ran, whichever limit ends it. Exit codes as `train`: 0 completed, 2 bad or
changed configuration, 75 preempted (state saved; rerun the same command to continue).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import (
    REFERENCE_DYNAMICS,
    REFERENCE_SIZE,
    ConfigError,
    EnvConfig,
    ExperimentConfig,
    ReferenceConfig,
    TrainConfig,
    from_dict,
    to_plain,
)
from flow_mbpo_pwm.devices import resolve_device
from flow_mbpo_pwm.progress import Progress
from flow_mbpo_pwm.run_folder import COMPLETED, ResumableFolder, write_table
from flow_mbpo_pwm.train import EXIT_COMPLETED, EXIT_PREEMPTED, StopSignals
from flow_mbpo_pwm.train_state import capture_rng, config_differences, restore_rng, seed_everything

STATE_FORMAT = "flow-mbpo-pwm/reference-state/1"
METRICS_COLUMNS: tuple[str, ...] = (
    "task", "size", "dynamics", "seed", "iteration", "env_steps", "wall_seconds", "train_return_mean",
    "train_return_max", "train_episodes", "value_loss", "surrogate_loss", "entropy", "learning_rate", "action_std",
)  # fmt: skip
VALIDATION_COLUMNS: tuple[str, ...] = (
    "task", "size", "dynamics", "seed", "iteration", "env_steps", "wall_seconds", "val_return_mean",
    "val_return_std", "val_episodes", "checkpoint",
)  # fmt: skip
LOSS_KEYS = {"value": "value_loss", "surrogate": "surrogate_loss", "entropy": "entropy"}
# Settings whose change does not make a saved run a different run (a resumed attempt may get another GPU/cap).
RESUMABLE_CHANGES = ("reference.device", "reference.max_minutes")


@dataclasses.dataclass(frozen=True)
class ReferenceFolder(ResumableFolder):
    """The paths of one reference run folder (module docstring)."""

    @property
    def settings(self) -> Path:
        return self.work / "settings.yaml"

    @property
    def work_snapshots(self) -> Path:
        return self.work / "snapshots"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def policy(self) -> Path:
        return self.root / "policy.pt"

    @staticmethod
    def snapshot_name(env_steps: int) -> str:
        return f"step_{env_steps:012d}.pt"


def reference_settings(
    experiment: ExperimentConfig,
    task: str,
    seed: int,
    device: str | None = None,
    env_steps: int | None = None,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Everything one reference run depends on, validated: `{task, seed, env, reference, validation_seed_base}`
    (plain data; `reference` and `env` as dicts). Command-line overrides replace the config's values."""
    _check_cell(experiment, task, seed)
    overrides = {"device": device, "env_steps": env_steps, "max_minutes": max_minutes}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    reference = dataclasses.replace(experiment.reference, **overrides)
    reference.validate()
    # Every PWM cell of a seed shares its run settings but the seed: the validation seeds are those of PWM's runs.
    run = experiment.cell(task, experiment.sizes[0], next(iter(experiment.dynamics)), seed).run
    return {
        "task": task,
        "seed": seed,
        "env": dataclasses.asdict(experiment.tasks[task]),
        "reference": to_plain(dataclasses.asdict(reference)),
        "validation_seed_base": run.validation_seed_base,
    }


def settings_defaults() -> dict[str, Any]:
    """The typed parts of `reference_settings` at their defaults: what `config_differences` takes as `defaults`, so
    settings saved before a key was added still match when that key is requested at its default."""
    return {
        "env": to_plain(dataclasses.asdict(EnvConfig())),
        "reference": to_plain(dataclasses.asdict(ReferenceConfig())),
    }


def _settings_differences(saved: dict[str, Any], settings: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """What differs between saved and requested settings, but the keys a run may resume across
    (RESUMABLE_CHANGES); a key saved before it existed counts only where it is requested off its default."""
    diffs = config_differences(saved, settings, settings_defaults())
    return [d for d in diffs if d[0] not in RESUMABLE_CHANGES]


def evaluation_cell(experiment: ExperimentConfig, task: str, seed: int, device: str | None = None) -> TrainConfig:
    """What `evaluate` needs to run a reference policy's held-out episodes: the cell keys (size "reference",
    dynamics "ppo"), the task's env, the seed and the device. `evaluate` reads only these fields of a TrainConfig;
    its PWM sections are those of the seed's first grid cell and are unused."""
    _check_cell(experiment, task, seed)
    if not experiment.reference.enabled:
        raise ConfigError("reference.enabled", "is false: this config has no PPO reference runs to evaluate")
    cell = experiment.cell(task, experiment.sizes[0], next(iter(experiment.dynamics)), seed)
    run = dataclasses.replace(cell.run, device=device or experiment.reference.device)
    return dataclasses.replace(cell, size=REFERENCE_SIZE, dynamics_name=REFERENCE_DYNAMICS, run=run).validate()


def _check_cell(experiment: ExperimentConfig, task: str, seed: int) -> None:
    if task not in experiment.tasks:
        raise ConfigError("task", f"'{task}' is not in this config's tasks {list(experiment.tasks)}")
    if seed not in experiment.seeds:
        raise ConfigError("seed", f"{seed} is not in this config's seeds {list(experiment.seeds)}")


def reference(experiment: ExperimentConfig, task: str, seed: int, run_dir: Path, **overrides: Any) -> int:
    """Stage entry point: train (or continue) the PPO reference of (task, seed) into `run_dir`; an exit code."""
    settings = reference_settings(experiment, task, seed, **overrides)
    folder = ReferenceFolder(Path(run_dir))
    _check_folder(folder, settings)
    return ReferenceRun(settings, folder).run()


def _check_folder(folder: ReferenceFolder, settings: dict[str, Any]) -> None:
    """Refuse a folder that holds a run of other settings; record these settings."""
    import yaml

    if folder.settings.exists():
        saved = yaml.safe_load(folder.settings.read_text())
        diffs = _settings_differences(saved, settings)
        if diffs:
            listed = "; ".join(f"{k}: saved {a!r}, requested {b!r}" for k, a, b in diffs)
            raise ConfigError(
                diffs[0][0],
                f"the reference folder {folder.root} holds a run with other settings ({listed}). "
                f"Delete {folder.root} to train this one afresh.",
            )
    io.write_text(folder.settings, yaml.safe_dump(settings, sort_keys=False))


class EpisodeStats:
    """Training-episode returns on the device: per-env running returns, and the episodes finished since the last
    read (count, sum, max). Read once per metrics row."""

    def __init__(self, num_envs: int, device: torch.device):
        self.running = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.window = torch.zeros(3, dtype=torch.float64, device=device)  # count, sum, max
        self.window[2] = -math.inf

    def add(self, reward: torch.Tensor, done: torch.Tensor) -> None:
        self.running += reward.double()
        finished = torch.where(done, self.running, -math.inf)
        self.window[0] += done.sum()
        self.window[1] += torch.where(done, self.running, 0.0).sum()
        self.window[2] = torch.maximum(self.window[2], finished.max())
        self.running.masked_fill_(done, 0.0)

    def read(self) -> tuple[int, float, float]:
        count, total, best = self.window.tolist()
        self.window.copy_(torch.tensor([0.0, 0.0, -math.inf], dtype=torch.float64))
        if count == 0:
            return 0, math.nan, math.nan
        return int(count), total / count, best

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"running": self.running.clone(), "window": self.window.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.running.copy_(state["running"])
        self.window.copy_(state["window"])


class ReferenceRun:
    def __init__(self, settings: dict[str, Any], folder: ReferenceFolder):
        self.settings = settings
        self.folder = folder
        self.config: ReferenceConfig = from_dict(ReferenceConfig, settings["reference"], "reference")
        self.device = resolve_device(self.config.device, "reference.device")
        self.task, self.seed = settings["task"], settings["seed"]
        self.name = f"{self.task}/{REFERENCE_SIZE}/seed{self.seed}"
        cfg = self.config
        self.iteration_steps = cfg.num_envs * cfg.horizon
        self.total_iterations = math.ceil(cfg.env_steps / self.iteration_steps)
        self.max_seconds = cfg.max_minutes * 60.0

    # ---------------------------------------------------------------------------------------------------------
    # Construction and state
    # ---------------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        from rsl_rl.algorithms import PPO

        from flow_mbpo_pwm import envs
        from flow_mbpo_pwm.envs.rsl_adapter import RslVecEnv
        from flow_mbpo_pwm.reference_policy import rsl_model_config

        cfg = self.config
        seed_everything(self.seed)
        env_config = from_dict(EnvConfig, self.settings["env"], "env")
        self.env = envs.make_from_config(env_config, self.device, seed=self.seed, num_envs=cfg.num_envs)
        self.venv = RslVecEnv(self.env)
        self.val_env = envs.make_from_config(
            env_config,
            self.device,
            seed=self.settings["validation_seed_base"] + self.seed,
            num_envs=cfg.validation_episodes,
        )
        self.alg = PPO.construct_algorithm(
            self.venv.get_observations(), self.venv, rsl_model_config(cfg), str(self.device)
        )
        self.stats = EpisodeStats(cfg.num_envs, self.device)
        self.iteration = 0
        self.wall_before = 0.0  # training seconds of earlier attempts
        self.snapshots_saved = 0
        self.stopped_by = ""
        self.metrics_rows: list[dict[str, Any]] = []
        self.validation_rows: list[dict[str, Any]] = []
        self.window_losses: list[dict[str, float]] = []

    def _state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "settings": self.settings,
            "iteration": self.iteration,
            "wall_seconds": self._wall_seconds(),
            "snapshots_saved": self.snapshots_saved,
            "stopped_by": self.stopped_by,
            "alg": self.alg.save(),
            "env": self.env.state_dict(),
            "val_env": self.val_env.state_dict(),
            "obs": self.venv.get_observations()["policy"].clone(),
            "episode_length_buf": self.venv.episode_length_buf.clone(),
            "stats": self.stats.state_dict(),
            "window_losses": list(self.window_losses),
            "metrics_rows": list(self.metrics_rows),
            "validation_rows": list(self.validation_rows),
            "rng": capture_rng(self.device),  # last: nothing above may draw from it
        }

    def _save_state(self) -> None:
        io.torch_save(self.folder.state, self._state())

    def _load_state(self) -> None:
        state = io.torch_load(self.folder.state, map_location=self.device)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise io.CheckpointError(f"{self.folder.state}: not a reference state of format {STATE_FORMAT}")
        diffs = _settings_differences(state["settings"], self.settings)
        if diffs:
            raise ConfigError(diffs[0][0], f"differs from the settings saved in {self.folder.state}: {diffs}")
        self.alg.load(state["alg"], None, strict=True)
        self.env.load_state_dict(state["env"])
        self.val_env.load_state_dict(state["val_env"])
        self.venv.set_observations(state["obs"].to(self.device))
        self.venv.episode_length_buf = state["episode_length_buf"].to(self.device)
        self.stats.load_state_dict(state["stats"])
        self.window_losses = list(state["window_losses"])
        self.metrics_rows = list(state["metrics_rows"])
        self.validation_rows = list(state["validation_rows"])
        self.iteration = int(state["iteration"])
        self.wall_before = float(state["wall_seconds"])
        self.snapshots_saved = int(state["snapshots_saved"])
        self.stopped_by = str(state["stopped_by"])
        restore_rng(state["rng"], self.device)

    def _drop_records_after_state(self) -> None:
        """What an interrupted attempt wrote after its last state save is redone, never duplicated."""
        write_table(self.folder.work_metrics, METRICS_COLUMNS, self.metrics_rows)
        write_table(self.folder.work_validation, VALIDATION_COLUMNS, self.validation_rows)
        for path in self.folder.work_snapshots.glob("step_*.pt"):
            if int(path.stem.split("_")[1]) > self.env_steps:
                path.unlink()

    # ---------------------------------------------------------------------------------------------------------
    # The loop
    # ---------------------------------------------------------------------------------------------------------

    @property
    def env_steps(self) -> int:
        return self.iteration * self.iteration_steps

    def _wall_seconds(self) -> float:
        return self.wall_before + (time.monotonic() - self._attempt_start)

    def _progress(self) -> float:
        """Fraction of the budget used: env steps, or wall-clock time where capped, whichever is further."""
        by_steps = self.iteration / self.total_iterations
        by_time = self._wall_seconds() / self.max_seconds if self.max_seconds > 0 else 0.0
        return min(1.0, max(by_steps, by_time))

    def run(self) -> int:
        self._attempt_start = time.monotonic()
        cfg = self.config
        with StopSignals() as stop:
            self._build()
            resumed = self.folder.state.exists()
            if resumed:
                self._load_state()
            self._drop_records_after_state()
            progress = Progress(self.total_iterations, self.iteration, self.name)
            try:
                if resumed:
                    progress.message(f"resumed from {self.folder.state} at iteration {self.iteration}")
                else:
                    progress.message(
                        f"PPO (rsl-rl) on {self.device}: up to {self.total_iterations} iterations x {cfg.horizon} "
                        f"steps x {cfg.num_envs} envs = {self.total_iterations * self.iteration_steps} env steps"
                        + (f", at most {cfg.max_minutes} min" if cfg.max_minutes > 0 else "")
                        + f"; parameters {self._parameter_counts()}"
                    )
                    self._snapshot(progress)  # the untrained policy
                while self.snapshots_saved < cfg.snapshots:
                    self._one_iteration()
                    progress.advance(self.iteration)
                    last = self._progress() >= 1.0
                    if self.iteration % cfg.log_every == 0 or last:
                        self._log(progress)
                    if last or self._progress() >= self.snapshots_saved / (cfg.snapshots - 1):
                        self._snapshot(progress, final=last)
                    if last:
                        self.stopped_by = "env_steps" if self.iteration >= self.total_iterations else "max_minutes"
                        break
                    if stop.received is not None:
                        self._save_state()
                        progress.message(
                            f"preempted ({signal.Signals(stop.received).name}) at iteration {self.iteration}, "
                            f"state saved to {self.folder.state}; rerun the same command to continue"
                        )
                        return EXIT_PREEMPTED
                    if self.iteration % cfg.save_state_every == 0:
                        self._save_state()
                self._save_state()
                self._finish()
                progress.message(
                    f"completed {self.iteration} iterations ({self.env_steps} env steps, "
                    f"{self._wall_seconds():.1f} s, stopped by {self.stopped_by}); outputs in {self.folder.root}"
                )
                return EXIT_COMPLETED
            finally:
                progress.close()

    def _one_iteration(self) -> None:
        """One PPO iteration, as rsl-rl's OnPolicyRunner.learn does it: `horizon` steps of every env, returns,
        update. No host reads here except the ones inside rsl-rl's `update` (its loss bookkeeping)."""
        alg, venv = self.alg, self.venv
        alg.train_mode()
        obs = venv.get_observations()
        with torch.inference_mode():
            for _ in range(self.config.horizon):
                actions = alg.act(obs)
                obs, rewards, dones, extras = venv.step(actions)
                alg.process_env_step(obs, rewards, dones, extras)
                self.stats.add(rewards, dones)
            alg.compute_returns(obs)
        losses = alg.update()
        self.window_losses.append({LOSS_KEYS[k]: float(v) for k, v in losses.items() if k in LOSS_KEYS})
        self.iteration += 1

    def _cell_keys(self) -> dict[str, Any]:
        return {"task": self.task, "size": REFERENCE_SIZE, "dynamics": REFERENCE_DYNAMICS, "seed": self.seed}

    def _log(self, progress: Progress) -> None:
        from flow_mbpo_pwm.reference_policy import exploration_std

        episodes, mean, best = self.stats.read()
        losses = {k: sum(w[k] for w in self.window_losses) / len(self.window_losses) for k in LOSS_KEYS.values()}
        self.window_losses = []
        row = {
            **self._cell_keys(),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_seconds": round(self._wall_seconds(), 3),
            "train_return_mean": mean,
            "train_return_max": best,
            "train_episodes": episodes,
            **losses,
            "learning_rate": float(self.alg.learning_rate),
            "action_std": float(exploration_std(self.alg.get_policy()).mean()),
        }
        self.metrics_rows.append(row)
        write_table(self.folder.work_metrics, METRICS_COLUMNS, self.metrics_rows)
        rate = self.env_steps / max(self._wall_seconds(), 1e-9)
        progress.report(
            {k: row[k] for k in ("env_steps", "train_return_mean", "train_episodes", "learning_rate", "action_std")}
            | {"env_steps_per_s": round(rate)}
        )

    @torch.no_grad()
    def _snapshot(self, progress: Progress, final: bool = False) -> None:
        """Save the current policy as a snapshot and validate it on the held-out validation seeds."""
        from flow_mbpo_pwm.diagnostics import first_episode_returns
        from flow_mbpo_pwm.reference_policy import ReferencePolicy, save_reference_policy

        policy = self.alg.get_policy()
        policy.eval()
        returns = first_episode_returns(self.val_env, ReferencePolicy(policy)).cpu()
        policy.train()
        mean, std = float(returns.mean()), float(returns.std(unbiased=False))
        path = self.folder.work_snapshots / ReferenceFolder.snapshot_name(self.env_steps)
        save_reference_policy(path, policy, self._policy_meta(val_return=mean))
        self.validation_rows.append(
            {
                **self._cell_keys(),
                "iteration": self.iteration,
                "env_steps": self.env_steps,
                "wall_seconds": round(self._wall_seconds(), 3),
                "val_return_mean": mean,
                "val_return_std": std,
                "val_episodes": int(returns.numel()),
                "checkpoint": f"snapshots/{path.name}",
            }
        )
        self.snapshots_saved += 1
        write_table(self.folder.work_validation, VALIDATION_COLUMNS, self.validation_rows)
        progress.message(
            f"snapshot {self.snapshots_saved}/{self.config.snapshots} at {self.env_steps} env steps: "
            f"validation return {mean:.4g} +- {std:.3g}" + (" (final)" if final else "")
        )

    def _policy_meta(self, val_return: float) -> dict[str, Any]:
        from flow_mbpo_pwm.reference_policy import exploration_std

        return {
            **self._cell_keys(),
            "iteration": self.iteration,
            "epoch": self.iteration,  # what evaluate's trajectories record as the checkpoint's epoch
            "env_steps": self.env_steps,
            "obs_dim": int(self.env.obs_dim),
            "act_dim": int(self.env.act_dim),
            "std": exploration_std(self.alg.get_policy()).cpu().tolist(),
            "val_return": val_return,
            "env_task": self.settings["env"]["task"],
            "reference": self.settings["reference"],
        }

    def _parameter_counts(self) -> dict[str, int]:
        actor = sum(p.numel() for p in self.alg.get_policy().parameters())
        critic = sum(p.numel() for p in self.alg.critic.parameters())
        return {"world_model": 0, "actor": actor, "critic": critic, "total": actor + critic}

    def _finish(self) -> None:
        """Declared outputs, each atomically, the summary last."""
        folder = self.folder
        names = [Path(r["checkpoint"]).name for r in self.validation_rows]
        for name in names:
            with io.atomic_path(folder.snapshots / name) as tmp:
                shutil.copyfile(folder.work_snapshots / name, tmp)
        for stale in folder.snapshots.glob("step_*.pt"):
            if stale.name not in names:
                stale.unlink()
        with io.atomic_path(folder.policy) as tmp:
            shutil.copyfile(folder.work_snapshots / names[-1], tmp)
        write_table(folder.metrics, METRICS_COLUMNS, self.metrics_rows)
        write_table(folder.validation, VALIDATION_COLUMNS, self.validation_rows)
        returns = [r["train_return_mean"] for r in self.metrics_rows if math.isfinite(r["train_return_mean"])]
        io.write_json(
            folder.summary,
            {
                **self._cell_keys(),
                "status": COMPLETED,
                "stopped_by": self.stopped_by,
                "epochs": self.iteration,
                "env_steps": self.env_steps,
                "train_seconds": round(self._wall_seconds(), 3),
                "params": self._parameter_counts(),
                "best_train_return": max(returns) if returns else None,
                "final_train_return": returns[-1] if returns else None,
                "final_val_return": self.validation_rows[-1]["val_return_mean"],
                "policy": folder.policy.name,
                "checkpoints": [
                    {
                        "iteration": r["iteration"],
                        "env_steps": r["env_steps"],
                        "path": r["checkpoint"],
                        "val_return": r["val_return_mean"] if math.isfinite(r["val_return_mean"]) else None,
                    }
                    for r in self.validation_rows
                ],
            },
        )
