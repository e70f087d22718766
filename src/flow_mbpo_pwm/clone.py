"""`flow-mbpo-pwm clone`: PWM's actor fitted to the PPO reference's policy on a pretrained world model's latents.

Not the paper's protocol but a diagnostic start (`clone` section, off by default): the deterministic Ant cell levels
off at ~3k held out whatever it is changed in (docs/results/README.md), while the reference runs at 5.3k. Started
from the reference's gait, does PWM's gradient keep it, improve it, or pull it back to ~3k? The first says the
plateau is one of finding a gait, the last that PWM's gradient itself points there.

The fit: PWM's actor (its architecture, reading `z = E(o)` of the pretrained encoder, which stays fixed) regresses
the reference's deterministic action (its Gaussian's mean, clipped to the action bounds as the env clips it) on the
observations of the offline dataset, which run from standing to running. The labels come from the reference's final
policy on every observation, so the actor learns that policy's answer wherever the data goes, not only on the states
it visits itself. Loss: the mean squared error of `tanh(mu(z))` against the label, Adam at `clone.lr`, batches of
`clone.batch` observations drawn uniformly, `clone.steps` steps. The actor's log-std stays at its initial value.
With `clone.imagined_steps` k > 0 the loss adds the same error on the world model's imagined latents: windows of k
transitions of the dataset, the model rolled from E(o_0) along their recorded actions, and the actor on z_h asked
for the reference's action at the real o_h (h = 1..k) — the latents PWM's actor acts on in its imagination —,
weighted `clone.imagined_weight`.

Folder (one per task x size x dynamics variant, beside the pretrained world model's): `actor.pt` (format
`flow-mbpo-pwm/actor/1`, checkpoints.py) and `clone_metrics.csv` (the mean loss every `log_every` steps, and the
mean absolute action error on a held-back tenth of the observations). A short stage (seconds on a GPU for the 5M
actor): no resumable state; a stopped clone starts over, and both outputs are written atomically at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flow_mbpo_pwm.config import ConfigError, TrainConfig
from flow_mbpo_pwm.devices import resolve_device
from flow_mbpo_pwm.models.actor import Actor
from flow_mbpo_pwm.models.world_model import rollout_latents
from flow_mbpo_pwm.run_folder import write_table
from flow_mbpo_pwm.train import EXIT_COMPLETED
from flow_mbpo_pwm.train_state import seed_everything, set_matmul_precision

if TYPE_CHECKING:
    from flow_mbpo_pwm.data.replay import ReplayBuffer

LABEL_CHUNK = 65_536  # observations labelled (and encoded) per call: bounded memory for a 1M-observation dataset
METRICS_COLUMNS = ("task", "size", "dynamics", "step", "wall_seconds", "clone_loss", "held_back_action_error")


def clone(
    config: TrainConfig,
    world_model: Path,
    dataset: Path,
    reference_policy: Path,
    out: Path,
    steps: int,
    batch: int,
    lr: float,
    log_every: int,
    imagined_steps: int = 0,
    imagined_weight: float = 1.0,
) -> int:
    """Clone `reference_policy` into the actor of `config` (its `run.seed` seeds the run) on the latents of
    `world_model` (and `imagined_steps` of its imagined latents, weighted `imagined_weight`), on the observations
    of `dataset`; write `out` and `clone_metrics.csv` beside it."""
    for name, path in (("world model", world_model), ("dataset", dataset), ("reference policy", reference_policy)):
        if not Path(path).is_file():
            raise ConfigError(f"clone {name}", f"{path} does not exist")
    for name, value in (("clone.steps", steps), ("clone.batch", batch), ("clone.log_every", log_every)):
        if value < 1:
            raise ConfigError(name, f"must be >= 1, got {value}")
    if not lr > 0:
        raise ConfigError("clone.lr", f"must be > 0, got {lr}")
    if imagined_steps < 0:
        raise ConfigError("clone.imagined_steps", f"must be >= 0, got {imagined_steps}")
    if imagined_weight < 0:
        raise ConfigError("clone.imagined_weight", f"must be >= 0, got {imagined_weight}")
    cloning = Cloning(
        config, Path(world_model), Path(dataset), Path(reference_policy), Path(out), imagined_steps, imagined_weight
    )
    return cloning.run(steps, batch, lr, log_every)


def split_rows(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows a clone is fitted on and those held back (every tenth): the action error on states the fit has not
    seen."""
    held_back = torch.zeros(n, dtype=torch.bool, device=device)
    held_back[::10] = True
    return (~held_back).nonzero().squeeze(1), held_back.nonzero().squeeze(1)


def reference_labels(policy: Callable[[torch.Tensor], torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
    """The reference's deterministic action on every observation, clipped to the bounds as the env clips it."""
    return torch.cat([policy(o).clamp(-1.0, 1.0) for o in obs.split(LABEL_CHUNK)])


def fit_step(
    actor: Actor, features: Callable[[torch.Tensor], torch.Tensor], obs: torch.Tensor, labels: torch.Tensor,
    rows: torch.Tensor, batch: int, generator: torch.Generator, optimizer: torch.optim.Optimizer,
    imagined: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
    imagined_weight: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """One Adam step of `actor` on `batch` of `rows` drawn uniformly: MSE of `tanh(mu(features(o)))` against the
    labels, the features fixed, plus, with `imagined`, `imagined_weight` x the MSE on the inputs and labels it draws
    (`imagined_latents`). Returns the batch's loss (on the device)."""
    pick = rows[torch.randint(len(rows), (batch,), generator=generator, device=rows.device)]
    with torch.no_grad():
        z = features(obs[pick])
    loss = (actor.act(z) - labels[pick]).square().mean()
    if imagined is not None:
        z_imagined, targets = imagined(generator)
        loss = loss + imagined_weight * (actor.act(z_imagined) - targets).square().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def imagined_latents(
    world_model: Any, reference: Callable[[torch.Tensor], torch.Tensor], windows: ReplayBuffer, batch: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`batch` windows of k transitions drawn from `windows` (the dataset's streams), the world model rolled from
    `E(o_0)` along their recorded actions: the imagined latents z_1..z_k `[batch * k, latent]` and the reference's
    actions at the real o_1..o_k, clipped to the bounds `[batch * k, act_dim]`."""
    sample = windows.sample(batch, generator)
    latents = rollout_latents(world_model, world_model.encode(sample.obs[:, 0]), sample.action, generator)
    return latents.flatten(0, 1), reference_labels(reference, sample.obs[:, 1:].flatten(0, 1))


@torch.no_grad()
def action_error(
    policy: Callable[[torch.Tensor], torch.Tensor], obs: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """Mean absolute action error of `policy` against the labels on `rows`."""
    errors = [(policy(obs[chunk]) - labels[chunk]).abs().sum() for chunk in rows.split(LABEL_CHUNK)]
    return torch.stack(errors).sum() / (len(rows) * labels.shape[-1])


class Cloning:
    def __init__(
        self, config: TrainConfig, world_model: Path, dataset: Path, reference_policy: Path, out: Path,
        imagined_steps: int = 0, imagined_weight: float = 1.0,
    ):  # fmt: skip
        self.config, self.world_model, self.dataset = config, world_model, dataset
        self.reference_policy, self.out = reference_policy, out
        self.imagined_steps, self.imagined_weight = imagined_steps, imagined_weight
        self.metrics_path = out.parent / "clone_metrics.csv"
        self.device = resolve_device(config.run.device)

    def _build(self) -> None:
        """The agent (its pretrained world model loaded), and every dataset observation with its label."""
        from flow_mbpo_pwm import checkpoints
        from flow_mbpo_pwm.algorithms.pwm import SeedAgent
        from flow_mbpo_pwm.data.datasets import DatasetError, check_fits, read_dataset, stream_buffer
        from flow_mbpo_pwm.reference_policy import load_reference_policy

        seed_everything(self.config.run.seed)
        set_matmul_precision(self.config.run.tf32)
        data, attrs = read_dataset(self.dataset)
        if attrs.get("task") not in (None, self.config.env.task):
            raise DatasetError(f"{self.dataset}: holds task {attrs.get('task')!r}, not {self.config.env.task!r}")
        obs = data["observations"].reshape(-1, data["observations"].shape[-1])
        act_dim = data["actions"].shape[-1]
        self.agent = SeedAgent(obs.shape[-1], act_dim, self.config, self.config.run.seed, self.device)
        checkpoints.load_world_model(self.world_model, self.agent)
        self.agent.fit_latent_stats(obs)  # `pwm.latent_norm: standardize`: saved with the actor
        self.world_model_digest = checkpoints.world_model_digest(self.world_model)
        policy, meta = load_reference_policy(self.reference_policy, self.device)
        if (int(meta["obs_dim"]), int(meta["act_dim"])) != (obs.shape[-1], act_dim):
            raise checkpoints.CheckpointError(
                f"{self.reference_policy}: a policy for obs_dim={meta['obs_dim']}, act_dim={meta['act_dim']}, but "
                f"{self.dataset} holds {obs.shape[-1]}, {act_dim}"
            )
        self.reference_meta, self.reference = meta, policy
        self.windows = None  # the dataset's streams, for the imagined latents (`clone.imagined_steps`)
        if self.imagined_steps > 0:
            check_fits(self.dataset, data, attrs, obs.shape[-1], act_dim, self.imagined_steps)
            self.windows = stream_buffer(data, self.device, self.imagined_steps)
        self.obs = obs.to(self.device)
        self.labels = reference_labels(policy, self.obs)
        self.fit_rows, self.held_back_rows = split_rows(len(self.obs), self.device)

    def _policy(self, obs: torch.Tensor) -> torch.Tensor:
        return self.agent.actor.act(self.agent.world_model.encode(obs))

    def _imagined(self, batch: int) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None:
        if self.windows is None:
            return None
        windows, world_model, reference = self.windows, self.agent.world_model, self.reference
        return lambda generator: imagined_latents(world_model, reference, windows, batch, generator)

    def run(self, steps: int, batch: int, lr: float, log_every: int) -> int:
        from flow_mbpo_pwm import checkpoints
        from flow_mbpo_pwm.progress import Progress

        start = time.monotonic()
        self._build()
        cfg = self.config
        name = f"{cfg.task_name}/clone/{cfg.size}-{cfg.dynamics_name}"
        actor = self.agent.actor
        optimizer = torch.optim.Adam(actor.mu_net.parameters(), lr=lr)
        generator = torch.Generator(device=self.device).manual_seed(cfg.run.seed)
        rows: list[dict[str, Any]] = []
        window = torch.zeros((), dtype=torch.float64, device=self.device)
        imagined = self._imagined(batch)
        progress = Progress(steps, 0, name)
        progress.message(
            f"cloning {self.reference_policy} on {self.device}: {steps} steps of {batch} of the "
            f"{len(self.fit_rows)} observations of {self.dataset} (held back: {len(self.held_back_rows)})"
            + (f", and {batch} windows of {self.imagined_steps} imagined latents" if imagined else "")
        )
        try:
            for step in range(1, steps + 1):
                encode = self.agent.world_model.encode  # the pretrained encoder, fixed
                window += fit_step(
                    actor, encode, self.obs, self.labels, self.fit_rows, batch, generator, optimizer, imagined,
                    self.imagined_weight,
                )  # fmt: skip
                progress.advance(step)
                if step % log_every == 0 or step == steps:
                    done = log_every if step % log_every == 0 else step % log_every
                    row = {
                        "task": cfg.task_name,
                        "size": cfg.size,
                        "dynamics": cfg.dynamics_name,
                        "step": step,
                        "wall_seconds": round(time.monotonic() - start, 3),
                        "clone_loss": float(window) / done,  # one host read per log window
                        "held_back_action_error": float(
                            action_error(self._policy, self.obs, self.labels, self.held_back_rows)
                        ),
                    }
                    rows.append(row)
                    window.zero_()
                    progress.report({k: row[k] for k in ("clone_loss", "held_back_action_error")})
            meta = {
                "task": cfg.task_name,
                "size": cfg.size,
                "dynamics": cfg.dynamics_name,
                "steps": steps,
                "imagined_steps": self.imagined_steps,
                "imagined_weight": self.imagined_weight,
                "dataset": str(self.dataset),
                "reference_policy": str(self.reference_policy),
                "reference_env_steps": int(self.reference_meta["env_steps"]),
                "world_model_digest": self.world_model_digest,
                "final": {k: rows[-1][k] for k in ("clone_loss", "held_back_action_error")},
                "config": cfg.to_dict(),
            }
            write_table(self.metrics_path, METRICS_COLUMNS, rows)
            checkpoints.save_actor(self.out, actor, meta)
            progress.message(f"cloned in {steps} steps -> {self.out}")
            return EXIT_COMPLETED
        finally:
            progress.close()
