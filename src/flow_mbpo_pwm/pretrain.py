"""`flow-mbpo-pwm pretrain`: the world model pretrained offline on a collected dataset (the PWM paper's protocol).

The paper's single-task runs start from a world model pretrained for 100k gradient steps on data that covers the
task (for the Ant: from standing to running); the public code also fits the reward statistics on that data and
puts it into the replay buffer. This stage does the first two: `steps` world-model updates on batches of
`pwm.wm_batch` sub-trajectories of the dataset (the same loss, optimiser and gradient clip as online training, at
the constant learning rate `pwm.wm_lr`), with `rew_rms` fitted on every reward of the dataset. `train` then starts
from the result (`run.world_model_init`) and, with `pretrain.seed_buffer`, from the data (`run.offline_data`).

Folder (one per task x size x dynamics variant): `world_model.pt` (format `flow-mbpo-pwm/world-model/1`) and
`pretrain_metrics.csv` (mean losses every `log_every` steps) are the declared outputs, written at the end;
`work/state.pt` (the agent's world model, optimiser and generator, the step, the rows so far, RNG states) is saved
every `save_state_every` steps and on SIGTERM/SIGUSR1, so a preempted job continues (exit 75) instead of starting
over. On CUDA the updates run as the captured world-model phase (`pwm.wm_steps` updates per replay).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import ConfigError, TrainConfig, pretraining_settings
from flow_mbpo_pwm.devices import resolve_device
from flow_mbpo_pwm.run_folder import write_table
from flow_mbpo_pwm.train import EXIT_COMPLETED, EXIT_PREEMPTED, StopSignals
from flow_mbpo_pwm.train_state import (
    capture_rng,
    config_differences,
    restore_rng,
    seed_everything,
    set_matmul_precision,
)

STATE_FORMAT = "flow-mbpo-pwm/pretrain-state/1"
LOSSES = ("wm_loss", "wm_dynamics_loss", "wm_reward_loss", "wm_latent_mse", "wm_grad_norm")
METRICS_COLUMNS = ("task", "size", "dynamics", "step", "wall_seconds", *LOSSES)


def pretrain(
    config: TrainConfig, dataset: Path, steps: int, out: Path, log_every: int = 500, save_state_every: int = 5_000
) -> int:
    """Pretrain the world model of `config` (its `run.seed` seeds the run) on `dataset`; write `out` and
    `pretrain_metrics.csv` beside it. Returns the exit code (0 done, 75 preempted with state saved)."""
    if not Path(dataset).is_file():
        raise ConfigError("pretrain dataset", f"{dataset} does not exist (run `flow-mbpo-pwm collect` first)")
    if steps < 1:
        raise ConfigError("pretrain.steps", f"must be >= 1, got {steps}")
    return Pretraining(config, Path(dataset), steps, Path(out), log_every, save_state_every).run()


class Pretraining:
    def __init__(
        self, config: TrainConfig, dataset: Path, steps: int, out: Path, log_every: int, save_state_every: int
    ):
        self.config, self.dataset, self.steps, self.out = config, dataset, steps, out
        self.log_every, self.save_state_every = log_every, save_state_every
        self.state_path = out.parent / "work" / "state.pt"
        self.metrics_path = out.parent / "pretrain_metrics.csv"
        self.name = f"{config.task_name}/pretrain/{config.size}-{config.dynamics_name}"
        self.device = resolve_device(config.run.device)

    def _build(self) -> None:
        from flow_mbpo_pwm.algorithms.pwm import PWM
        from flow_mbpo_pwm.data.datasets import DatasetError, check_fits, read_dataset, stream_buffer

        seed_everything(self.config.run.seed)
        set_matmul_precision(self.config.run.tf32)
        data, attrs = read_dataset(self.dataset)
        obs_dim, act_dim = data["observations"].shape[-1], data["actions"].shape[-1]
        check_fits(self.dataset, data, attrs, obs_dim, act_dim, self.config.pwm.horizon)
        if attrs.get("task") not in (None, self.config.env.task):
            raise DatasetError(f"{self.dataset}: holds task {attrs.get('task')!r}, not {self.config.env.task!r}")
        self.data_buffer = stream_buffer(data, self.device, self.config.pwm.horizon)
        self.agent = PWM(obs_dim, act_dim, self.config, self.device)
        self.agent.rew_rms.update(data["rewards"].to(self.device))  # the reward statistics of the offline data
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        self.wall_seconds = 0.0

    def _save_state(self) -> None:
        io.torch_save(
            self.state_path,
            {
                "format": STATE_FORMAT,
                "config": pretraining_settings(self.config),
                "dataset": str(self.dataset),
                "steps": self.steps,
                "step": self.step,
                "wall_seconds": self.wall_seconds + time.monotonic() - self._start,
                "agent": self.agent.state_dict(),
                "rows": list(self.rows),
                "rng": capture_rng(self.device),
            },
        )

    def _load_state(self) -> None:
        state = io.torch_load(self.state_path, map_location=self.device)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise io.CheckpointError(
                f"{self.state_path}: not a pretraining state of format {STATE_FORMAT}; delete it to start afresh"
            )
        requested = {"config": pretraining_settings(self.config), "dataset": str(self.dataset), "steps": self.steps}
        defaults = {"config": pretraining_settings(TrainConfig())}
        diffs = config_differences({k: state.get(k) for k in requested}, requested, defaults)
        if diffs:
            raise ConfigError(
                diffs[0][0],
                f"differs from the pretraining saved in {self.state_path} ({diffs}); delete "
                f"{self.state_path.parent} to pretrain afresh",
            )
        self.agent.load_state_dict(state["agent"])
        self.step, self.wall_seconds, self.rows = int(state["step"]), float(state["wall_seconds"]), state["rows"]
        restore_rng(state["rng"], self.device)

    def run(self) -> int:
        from flow_mbpo_pwm import checkpoints
        from flow_mbpo_pwm.progress import Progress

        self._start = time.monotonic()
        cfg = self.config
        with StopSignals() as stop:
            self._build()
            resumed = self.state_path.is_file()
            if resumed:
                self._load_state()
            progress = Progress(self.steps, self.step, self.name)
            progress.message(
                f"{'resumed at step ' + str(self.step) if resumed else 'pretraining'} on {self.device}: "
                f"{self.steps} world-model steps on {self.dataset} ({len(self.data_buffer)} transitions)"
            )
            self.agent.set_learning_rates(0.0)  # the constant initial rate: pretraining has no schedule
            totals = torch.zeros(len(LOSSES), dtype=torch.float64, device=self.device)
            window, saved_at = 0, self.step
            try:
                while self.step < self.steps:
                    # Chunks of `pwm.wm_steps` updates replay the captured world-model phase on CUDA.
                    chunk = min(cfg.pwm.wm_steps or 1, self.steps - self.step, self.log_every - window)
                    stacked = self.agent.world_model_steps(self.data_buffer, chunk)
                    metrics = {name: value[0] for name, value in stacked.items()}  # the stack of one seed
                    totals += torch.stack([metrics[k].double() for k in LOSSES]) * chunk
                    self.step += chunk
                    window += chunk
                    progress.advance(self.step)
                    if window == self.log_every or self.step == self.steps:
                        self._log(totals / window, progress)
                        totals.zero_()
                        window = 0
                        if stop.received is not None and self.step < self.steps:
                            self._save_state()
                            progress.message(
                                f"preempted ({signal.Signals(stop.received).name}) at step {self.step}, state "
                                f"saved to {self.state_path}; rerun the same command to continue"
                            )
                            return EXIT_PREEMPTED
                        if self.step - saved_at >= self.save_state_every and self.step < self.steps:
                            self._save_state()
                            saved_at = self.step
                meta = {
                    "task": cfg.task_name,
                    "size": cfg.size,
                    "dynamics": cfg.dynamics_name,
                    "steps": self.steps,
                    "dataset": str(self.dataset),
                    "final_losses": {k: self.rows[-1][k] for k in LOSSES} if self.rows else {},
                    "config": cfg.to_dict(),
                }
                write_table(self.metrics_path, METRICS_COLUMNS, self.rows)
                checkpoints.save_world_model(self.out, self.agent, meta)
                progress.message(f"pretrained {self.steps} steps -> {self.out}")
                return EXIT_COMPLETED
            finally:
                progress.close()

    def _log(self, means: torch.Tensor, progress: Any) -> None:
        """One host read per log window (outside the captured phases)."""
        values = dict(zip(LOSSES, means.tolist(), strict=True))
        cfg = self.config
        self.rows.append(
            {
                "task": cfg.task_name,
                "size": cfg.size,
                "dynamics": cfg.dynamics_name,
                "step": self.step,
                "wall_seconds": round(self.wall_seconds + time.monotonic() - self._start, 3),
                **values,
            }
        )
        progress.report({k: values[k] for k in ("wm_loss", "wm_latent_mse", "wm_reward_loss")})
