"""Typed configuration: the single source of truth for every hyperparameter.

Two levels:
- `TrainConfig` is one training run (one cell of the grid): env, world model, dynamics, PWM, run settings.
- `ExperimentConfig` is the YAML file the pipeline reads (`config/config.yaml`): the grid of tasks x sizes x
  dynamics variants x seeds, evaluation settings, and `train:` overrides applied to every cell.

Loading is strict: an unknown key, a wrong type, an out-of-range value or an inconsistent combination raises
`ConfigError` naming the key and the reason, before any work starts. The JSON schema used by the Snakefile is
generated from these dataclasses (`experiment_schema()`), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value that is unknown, of the wrong type, out of range or inconsistent."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"config key '{key}': {reason}")
        self.key = key
        self.reason = reason


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise ConfigError(key, reason)


# Names used in paths (tasks, sizes, dynamics variants): letters, digits, '.', '_' and '-' only, so a config value
# can never reach a shell or a path unquoted.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def _check_hidden_layers(units: tuple[int, ...], key: str) -> None:
    _check(
        len(units) >= 1 and all(u >= 1 for u in units),
        key,
        f"needs at least one hidden layer of size >= 1, got {list(units)}",
    )


def _check_name(name: str, key: str) -> None:
    _check(bool(re.match(NAME_PATTERN, name)), key, f"'{name}' must match {NAME_PATTERN}")


# --------------------------------------------------------------------------------------------------------------
# One training run
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvConfig:
    task: str = "ant"  # registry id: "ant", or "gym:<Gymnasium id>" e.g. "gym:InvertedPendulum-v5"
    num_envs: int = 128
    episode_length: int = 1000  # steps before truncation
    solver: Literal["semi_implicit", "featherstone"] = "semi_implicit"  # Newton solver (Ant only)
    # Ant only. "newton": the calibration that makes Newton's Ant stand like dflex's ("F", envs/CALIBRATION.md;
    # an idle ant stands for free). "dflex": dflex's own contact and joint constants, under which an idle ant sinks
    # below the termination height within ~20-90 steps, as dflex's did: standing must be earned.
    calibration: Literal["newton", "dflex"] = "newton"

    def validate(self, key: str = "env") -> None:
        _check(bool(self.task), f"{key}.task", "must not be empty")
        # The env registry's names (envs.make), checked here so that `snakemake -n` refuses a typo before any job
        # instead of `train` failing an hour into a cluster queue. Whether a Gymnasium id exists is only known
        # where gymnasium is installed (the job), not on a login node.
        _check(
            self.task == "ant" or (self.task.startswith("gym:") and len(self.task) > len("gym:")),
            f"{key}.task",
            f"unknown task '{self.task}': must be 'ant' or 'gym:<Gymnasium id>' (e.g. 'gym:InvertedPendulum-v5'); "
            "a task name other than these needs `task:` set in its settings",
        )
        _check(self.num_envs >= 1, f"{key}.num_envs", f"must be >= 1, got {self.num_envs}")
        _check(self.episode_length >= 1, f"{key}.episode_length", f"must be >= 1, got {self.episode_length}")


@dataclass(frozen=True)
class WorldModelConfig:
    units: tuple[int, ...] = (512, 512)  # hidden units of dynamics and reward networks
    encoder_units: tuple[int, ...] = (256,)
    latent_dim: int = 512
    simnorm_dim: int = 8  # SimNorm group size
    task_dim: int = 0  # multitask only; single-task runs must have 0
    reward_head: Literal["scalar", "binned"] = "scalar"
    num_bins: int = 101  # binned head: symlog two-hot cross-entropy
    bin_min: float = -10.0  # binned head support, in symlog space
    bin_max: float = 10.0

    def validate(self, key: str = "world_model") -> None:
        for name in ("units", "encoder_units"):
            value = getattr(self, name)
            _check(len(value) >= 1, f"{key}.{name}", "needs at least one hidden layer")
            _check(all(u >= 1 for u in value), f"{key}.{name}", f"all sizes must be >= 1, got {list(value)}")
        _check(self.simnorm_dim >= 2, f"{key}.simnorm_dim", f"must be >= 2, got {self.simnorm_dim}")
        _check(
            self.latent_dim >= self.simnorm_dim and self.latent_dim % self.simnorm_dim == 0,
            f"{key}.latent_dim",
            f"must be a positive multiple of simnorm_dim={self.simnorm_dim}, got {self.latent_dim}",
        )
        _check(self.task_dim >= 0, f"{key}.task_dim", f"must be >= 0, got {self.task_dim}")
        _check(self.num_bins >= 2, f"{key}.num_bins", f"must be >= 2, got {self.num_bins}")
        _check(self.bin_min < self.bin_max, f"{key}.bin_min", "must be below bin_max")


@dataclass(frozen=True)
class DynamicsConfig:
    kind: Literal["deterministic", "flow"] = "deterministic"
    # flow only: integrate the velocity field v(x, a, tau) from tau=0 to 1 in `substeps` steps
    integrator: Literal["euler", "heun", "rk4"] = "heun"
    substeps: int = 4
    time_embedding: Literal["sinusoidal", "raw"] = "sinusoidal"
    time_embedding_dim: int = 32
    source: Literal["delta", "noise"] = "delta"  # delta: x_0 = z_t; noise: x_0 ~ N(0, I) (stochastic dynamics)
    project: Literal["simnorm", "none"] = "simnorm"  # applied to the integrated latent
    # flow, delta source only: the flow-matching loss takes its source x_0 = chart(E(o_t)) as data (stop-gradient),
    # a fixed coupling as flow matching assumes; the encoder then learns through the reward term along the model's
    # own rollout, not by shrinking x_1 - x_0 (which collapsed flow's encoder at 20 : 0.1, bench/RESULTS.md)
    detach_source: bool = False
    # flow only: adds `endpoint_coef x MSE(z', sg(E(o')))` on the integrated next latent z' (the deterministic
    # model's latent loss) to the flow-matching loss, so the map the actor differentiates through is fitted where it
    # is used, and the encoder learns through it as the deterministic model's does. 0: flow matching alone
    endpoint_coef: float = 0.0
    # flow, log-simplex chart only: how the flow-matching loss measures the velocity error e in flow space.
    # "chart": its plain MSE. "simplex": entry i counted as p_i e_i, p = SimNorm(x_tau) (stop-gradient), its size on
    # the simplex to first order (dz = p * d log z, up to each group's mean shift). Chart errors in near-zero entries
    # are large but move the latent little; weighted, the loss has the deterministic model's scale (its latent MSE)
    # and emphasis. Same minimiser: the weight depends on x_tau alone
    loss_metric: Literal["chart", "simplex"] = "chart"
    # deterministic only: z' = SimNorm(log z + f(z, a)) with f's last layer zero at init, so the untrained model
    # is the copy-the-last-latent baseline (models/dynamics.py); false: z' = F(z, a) as in PWM / TD-MPC2
    residual: bool = False

    def validate(self, key: str = "dynamics") -> None:
        _check(1 <= self.substeps <= 256, f"{key}.substeps", f"must be in [1, 256], got {self.substeps}")
        _check(
            self.time_embedding_dim >= 2 and self.time_embedding_dim % 2 == 0,
            f"{key}.time_embedding_dim",
            f"must be an even number >= 2, got {self.time_embedding_dim}",
        )
        _check(
            not (self.residual and self.kind == "flow"),
            f"{key}.residual",
            "applies to deterministic dynamics only (the delta flow already starts from the current latent)",
        )
        _check(
            not self.detach_source or (self.kind == "flow" and self.source == "delta"),
            f"{key}.detach_source",
            "applies to flow dynamics with source 'delta' only (the source a noise flow starts from is noise)",
        )
        _check(
            math.isfinite(self.endpoint_coef) and self.endpoint_coef >= 0,
            f"{key}.endpoint_coef",
            f"must be a finite number >= 0, got {self.endpoint_coef}",
        )
        _check(
            self.endpoint_coef == 0 or self.kind == "flow",
            f"{key}.endpoint_coef",
            "applies to flow dynamics only (the deterministic model's loss is this latent MSE already)",
        )
        _check(
            self.loss_metric == "chart" or (self.kind == "flow" and self.project == "simnorm"),
            f"{key}.loss_metric",
            "'simplex' applies to flow dynamics in the log-simplex chart (project: simnorm) only",
        )


@dataclass(frozen=True)
class PWMConfig:
    epochs: int = 15_000
    # The epochs over which the learning rates decay (0: `epochs`). A run cut short of a longer schedule names that
    # schedule here, and then trains exactly as that schedule's first `epochs` epochs (config/short.yaml).
    lr_decay_epochs: int = 0
    horizon: int = 16  # H: imagined rollout length, also the world-model training sub-trajectory length
    gamma: float = 0.99
    lam: float = 0.95  # TD(lambda)
    # actor: latent -> 400 -> 200 -> 100 -> act_dim; critic ensemble: latent -> 400 -> 200 -> 1
    actor_units: tuple[int, ...] = (400, 200, 100)
    critic_units: tuple[int, ...] = (400, 200)
    # What the actor and the critics do to the latent z before their first layer. "none" (PWM's): z as the encoder
    # gives it, SimNorm groups on the simplex (entries in (0, 1), each group summing to 1). On the 5M Ant each entry
    # varies by ~0.05 across states (median; 0.008-0.31) around an offset of ~0.07 from 1/8, so the first layer
    # sees mostly a constant. "standardize": (z - mean) / std per entry, by statistics of the seed's own encoder on
    # its replay buffer's observations (the offline data, under the paper's protocol) fitted once, when the world
    # model is first ready (pretrained, or warmed up), and then held fixed (saved with the actor and the critics).
    # On the CPU, PWM's actor fitted to the 5.3k PPO gait held it from the standardised latent and fell from the raw
    # one (bench/RESULTS.md, "Which input lets PWM's actor hold the gait?"); PWM with it did not leave the ~3k
    # plateau (docs/results/2026-12-06-det-latent-std: 0.89 [0.71, 1.14] of the raw latent's run), so "none" stays.
    latent_norm: Literal["none", "standardize"] = "none"
    num_critics: int = 3
    init_logstd: float = -1.0
    min_logstd: float = -1.427
    # The floor of the actor's learnable log-std (its exploration noise): `min_logstd` from the start (0, PWM's), or
    # `init_logstd` at the start, falling linearly to `min_logstd` over the first `min_logstd_decay_epochs` epochs.
    # Nothing in the actor's loss rewards noise, so its std sits at the floor (0.24 from ~2.2M env steps on the 5M
    # Ant, docs/results/2026-12-03-actor-std-check); a fixed floor of 0.4 or 0.6 made the agent leave standing
    # earlier but level off lower (docs/results/2026-12-03-det-actor-std). A falling floor asks for both.
    min_logstd_decay_epochs: int = 0
    actor_lr: float = 5e-4
    critic_lr: float = 5e-4
    lr_min: float = 1e-5  # actor and critic lr decay linearly to this
    betas: tuple[float, float] = (0.7, 0.95)
    actor_grad_clip: float = 1.0
    critic_grad_clip: float = 100.0
    critic_iterations: int = 8
    critic_minibatches: int = 4
    wm_lr: float = 3e-4
    wm_lr_min: float = 1e-5
    wm_grad_clip: float = 20.0
    wm_batch: int = 256  # sub-trajectories of horizon+1 steps
    wm_steps: int = 8  # world-model steps per epoch
    wm_warmup_steps: int = 1000  # the first world-model update (buffer holds a finished episode)
    # Weights of the world-model loss terms: `L = dynamics_coef * dynamics + reward_coef * reward`. PWM's public
    # code weighs both 1; TD-MPC2 weighs its consistency term 20 and its reward term 0.1. With SimNorm latents the
    # per-element latent MSE is ~1e-4 against a raw-reward MSE of ~1e-3..1e-2 (measured, 5M Ant), so at 1 : 1 the
    # dynamics are fitted mostly through the reward term.
    wm_dynamics_coef: float = 1.0
    wm_reward_coef: float = 1.0
    # Reward normalisation before the world model regresses rewards. "none" (default, as the public PWM configs:
    # rew_rms False at 5M and 48M) regresses raw rewards. "meanstd" subtracts the running mean and divides by the
    # running std (the spec's rew_rms): the Ant's alive-like terms (up, heading, height) become ~0 or negative, so
    # dying early costs nothing; a centred 5M Ant run learned to fall. "std" divides by the running std only; it is
    # never clipped: with a standing policy r/std ~ 9 (measured), so a clip at 5 made >99% of targets the constant 5.
    reward_norm: Literal["none", "std", "meanstd"] = "none"
    reward_clip: float = 5.0  # "meanstd" only: clip the normalised rewards to +-reward_clip
    # Weight of a tanh-saturation penalty on the actor (0: PWM's actor loss, the default): the actor loss adds
    # `coef * mean(-log tanh'(u))` over the imagined steps' pre-tanh actions u, the tanh term of a tanh-Gaussian
    # policy's entropy (SAC). It pushes saturated actions (where first-order gradients through tanh vanish) back
    # towards tanh's linear range; validation.csv's `action_saturation` measures how saturated the policy is.
    actor_saturation_coef: float = 0.0
    # Action magnitude below which the saturation penalty is zero (0: every entry counts, as above). With e.g. 0.95
    # an entry adds `-log tanh'(u) + log(1 - 0.95^2)` only where |a| > 0.95: saturated actions are pulled back as
    # before, the rest are free (at 0.1 with no threshold, two of three seeds plateaued at ~2.6k,
    # docs/results/2026-12-01-saturation).
    actor_saturation_threshold: float = 0.0
    # Weight of an action-rate penalty on the actor (0: none, PWM's loss): the actor loss adds `coef x` the mean over
    # the imagined steps and action entries of `(tanh(mu(z_t)) - tanh(mu(z_{t-1})))^2`, the deterministic policy's
    # squared change from one step to the next (a step after a reset is not compared with the one before).
    # validation.csv's `action_jitter` (the mean absolute change) separates the Ant seeds that left standing: below
    # 0.25 they reached 3,261 validation on average (up to 4,587), above 0.30 2,735 (at most 3,359)
    # (`python bench/records_jitter.py --until 2026-12-03`).
    actor_smoothness_coef: float = 0.0
    # Epochs at the start during which the actor is not updated (its learning rate is 0; 0: none, PWM's). For an
    # actor that starts from a policy of its own (`run.actor_init`, `flow-mbpo-pwm clone`): the critic, which starts
    # untrained, learns that policy's values before the actor follows its gradient. `epochs`: the actor never moves.
    actor_delay_epochs: int = 0
    # Online training leaves the pretrained encoder as it is (`run.world_model_init` required): the world-model loss's
    # gradient stops at z_0 = E(o_0), so dynamics and reward heads train on a latent that stays where the actor and
    # the critics learned to read it. With the encoder training on (false, PWM's), 250 world-model updates on the
    # offline data alone moved a cloned actor's input enough to turn its 5.1k gait into 1.1k with falls
    # (bench/clone_drift.py; docs/results/2026-12-07-det-clone).
    freeze_encoder: bool = False
    # Weight of the critic's term in the actor's objective: each imagined segment adds `coef x gamma^L V(z_L)` to its
    # discounted model rewards (1: PWM's; 0: the rewards of the H imagined steps alone). The critic's term gives the
    # actor a gradient as large as the rewards' and mostly opposite to it (validation.csv's actor_grad_terms_cosine,
    # median -0.56 to -0.75 after epoch 1,000, docs/results/2026-12-07-det-clone); 0 asks whether it holds PWM back.
    # The critic's own targets are unchanged.
    actor_value_coef: float = 1.0
    # What the real env's actions are computed from while the world model imagines. "imagined" (PWM's): the env takes
    # the imagined step's action `tanh(mu(z_i) + sigma eps)`, z_i the world model's latent i steps after E(o_0), so
    # within each H-step rollout the env is driven open loop through the model. "observed": the same noise eps around
    # the actor's mean on the env's own latent, `tanh(mu(E(o_i)) + sigma eps)`, the closed-loop policy that validation
    # plays (the imagination, and so the actor's objective, are unchanged). In docs/results/2026-12-07-det-frozen the
    # 5.3k gait cloned onto the actor validated at 5.2k, while its training episodes (the same actor driven through
    # the model) returned 1.25-1.46k; PWM's noise form alone leaves the PPO gait at 5.2k (bench/noise_robustness.py).
    # With "observed" the held clone's training episodes returned 5.1k, yet PWM's update still took the released gait
    # apart and a fresh actor was not lifted (0.92 [0.83, 1.04] of "imagined", docs/results/2026-12-07-det-observed).
    env_actions: Literal["imagined", "observed"] = "imagined"
    # Weight of a consistency term on the actor (0: none, PWM's loss): the actor loss adds `coef x` the mean, over
    # `wm_batch` replayed windows of H transitions and their steps h = 1..H, of
    # `(tanh(mu(z_h)) - sg tanh(mu(E(o_h))))^2` per action entry, z_h the world model's latent rolled from E(o_0)
    # along the recorded actions (the model and the encoder do not learn from it). PWM's actor is differentiated at
    # imagined latents; cloned on real ones, its action moved 0.34 per entry after one model step and ~0.9 after
    # eight (bench/imagined_gait.py, bench/RESULTS.md), so its update changed what it does where it never acts. This
    # asks it to act on the model's latents as on the real states they stand for (bench/imagined_clone.py fits a
    # clone so).
    actor_consistency_coef: float = 0.0
    # Where the critic's TD(lambda) targets bootstrap at the end of an imagined segment (the rollout's last step, or
    # an episode's end inside it). "imagined" (PWM's): V(z_H), the critic at the world model's H-th latent, a point
    # the critic is never fitted on, so nothing ties its value to the real state it stands for. "real": V(E(o_H)),
    # the critic at the encoded observation the real env reached over the same H steps (PWM steps the env beside the
    # imagination; pair it with `env_actions: observed` to make that the policy's own closed loop). The actor's
    # objective keeps V(z_H) (its gradient runs through the model). Measured with PWM's: at the release of a held
    # 4-5k gait the critic valued the model's H-th latent at about half the real one's (validation.csv's
    # imagined_value_term 60 / 40 against real_value_term 113 / 90, GPU / CPU) and the gait's states at a quarter of
    # their returns-to-go (critic_bias -300 to -400).
    critic_bootstrap: Literal["imagined", "real"] = "imagined"
    buffer_size: int = 1_000_000
    normalize_obs: bool = False

    @property
    def standardizes_latent(self) -> bool:
        """The actor and the critics read the latent standardised per entry (`latent_norm`)."""
        return self.latent_norm == "standardize"

    def logstd_floor(self, epochs_done: int) -> float:
        """The actor's log-std floor for the epoch after `epochs_done` epochs (`min_logstd_decay_epochs`)."""
        if not self.min_logstd_decay_epochs:
            return self.min_logstd
        done = min(1.0, epochs_done / self.min_logstd_decay_epochs)
        return self.init_logstd + (self.min_logstd - self.init_logstd) * done

    def schedule_progress(self, epochs_done: int) -> float:
        """Where the epoch after `epochs_done` epochs stands in the learning-rate decay, in [0, 1]."""
        return epochs_done / (self.lr_decay_epochs or self.epochs)

    @property
    def actor_delay_progress(self) -> float:
        """The schedule progress (`schedule_progress`) before which the actor is not updated (`actor_delay_epochs`)."""
        return self.schedule_progress(self.actor_delay_epochs)

    def validate(self, key: str = "pwm") -> None:
        positive_ints = (
            "epochs",
            "horizon",
            "num_critics",
            "critic_iterations",
            "critic_minibatches",
            "wm_batch",
            "buffer_size",
        )
        for name in positive_ints:
            _check(getattr(self, name) >= 1, f"{key}.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("wm_steps", "wm_warmup_steps", "min_logstd_decay_epochs"):
            _check(getattr(self, name) >= 0, f"{key}.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(0.0 < self.gamma <= 1.0, f"{key}.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(0.0 <= self.lam <= 1.0, f"{key}.lam", f"must be in [0, 1], got {self.lam}")
        for name in (
            "actor_lr",
            "critic_lr",
            "wm_lr",
            "actor_grad_clip",
            "critic_grad_clip",
            "wm_grad_clip",
            "reward_clip",
            "wm_dynamics_coef",
            "wm_reward_coef",
        ):
            _check(getattr(self, name) > 0, f"{key}.{name}", f"must be > 0, got {getattr(self, name)}")
        _check(
            0 <= self.lr_min <= min(self.actor_lr, self.critic_lr),
            f"{key}.lr_min",
            "must be in [0, min(actor_lr, critic_lr)]",
        )
        _check(0 <= self.wm_lr_min <= self.wm_lr, f"{key}.wm_lr_min", "must be in [0, wm_lr]")
        _check(
            self.lr_decay_epochs == 0 or self.lr_decay_epochs >= self.epochs,
            f"{key}.lr_decay_epochs",
            f"must be 0 (decay over `epochs`) or at least epochs ({self.epochs}), got {self.lr_decay_epochs}",
        )
        _check(all(0.0 <= b < 1.0 for b in self.betas), f"{key}.betas", f"must be in [0, 1), got {self.betas}")
        for name in ("actor_units", "critic_units"):
            _check_hidden_layers(getattr(self, name), f"{key}.{name}")
        _check(self.min_logstd <= self.init_logstd, f"{key}.init_logstd", "must be >= min_logstd")
        coef = self.actor_saturation_coef  # (finite: every float setting is checked so on reading)
        _check(coef >= 0, f"{key}.actor_saturation_coef", f"must be >= 0, got {coef}")
        _check(self.actor_value_coef >= 0, f"{key}.actor_value_coef", f"must be >= 0, got {self.actor_value_coef}")
        smooth = self.actor_smoothness_coef
        _check(smooth >= 0, f"{key}.actor_smoothness_coef", f"must be >= 0, got {smooth}")
        consistency = self.actor_consistency_coef
        _check(consistency >= 0, f"{key}.actor_consistency_coef", f"must be >= 0, got {consistency}")
        threshold = self.actor_saturation_threshold
        _check(0 <= threshold < 1, f"{key}.actor_saturation_threshold", f"must be in [0, 1), got {threshold}")
        _check(
            threshold == 0 or coef > 0,
            f"{key}.actor_saturation_threshold",
            f"is {threshold} but actor_saturation_coef is 0, so there is no penalty for it to shape",
        )
        delay = self.actor_delay_epochs
        _check(0 <= delay <= self.epochs, f"{key}.actor_delay_epochs", f"must be in [0, {self.epochs}], got {delay}")


@dataclass(frozen=True)
class GuardConfig:
    """Stops a run that has gone bad instead of letting it produce results."""

    check_every: int = 10  # epochs between reads of the on-device non-finite flag
    # Collapse: after `collapse_after_epochs`, a validation return below `collapse_fraction` x the best validation
    # return so far (when that best is positive) for `collapse_patience` validations in a row stops the run.
    collapse_after_epochs: int = 1000
    collapse_fraction: float = 0.1
    collapse_patience: int = 3

    def validate(self, key: str = "run.guard") -> None:
        _check(self.check_every >= 1, f"{key}.check_every", f"must be >= 1, got {self.check_every}")
        _check(self.collapse_after_epochs >= 0, f"{key}.collapse_after_epochs", "must be >= 0")
        _check(0.0 <= self.collapse_fraction < 1.0, f"{key}.collapse_fraction", "must be in [0, 1)")
        _check(self.collapse_patience >= 1, f"{key}.collapse_patience", "must be >= 1")


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 25  # epochs between metric rows (the only host reads of training metrics)
    validate_every: int = 250  # epochs between deterministic validation runs; each writes a policy checkpoint
    validation_episodes: int = 16  # run in parallel, one per env
    validation_seed_base: int = 500_000  # validation env seed = validation_seed_base + seed
    save_state_every: int = 250  # epochs between full resumable-state saves (also on SIGTERM / SIGUSR1)
    # On CUDA: capture the critic, world-model and (where the env can step under capture) imagination + actor
    # phases of every epoch in CUDA graphs (algorithms/graphs.py); ignored on CPU.
    cuda_graphs: bool = True
    # Fuse the small elementwise chains (LayerNorm, Mish, SimNorm, the flow integrator's updates) with
    # torch.compile (inductor, forward and backward), once per process before the phases are captured: the
    # world-model loss's rollout step (a graph reused for every step of the horizon) and terms, the imagination's
    # step and value, the critic's minibatch loss. Pays a compile (tens of seconds) at the start of every train /
    # pretrain process.
    compile: bool = False
    # On CUDA, float32 matrix products on the tensor cores in TF32 (10-bit mantissa, float32 range;
    # `torch.backends.cuda.matmul.allow_tf32`) instead of full float32, torch's default. The flow world model's
    # epoch is mostly matrix products (~4 TFLOP per 3-seed epoch at 5M), which full float32 runs several times
    # slower on an H200. Process-wide, set where a train or pretrain run starts; no effect on the CPU.
    tf32: bool = False
    # The paper's protocol (set by the pipeline from the `pretrain` section; "" = from scratch): start from a world
    # model pretrained offline (`flow-mbpo-pwm pretrain`), and put an offline dataset into the replay buffer first.
    world_model_init: str = ""
    offline_data: str = ""
    # Every seed's actor starts from this cloned actor (`flow-mbpo-pwm clone`, set by the pipeline from the `clone`
    # section; "" = PWM's fresh actor). It must have been cloned on `world_model_init`.
    actor_init: str = ""
    # Gradient check (diagnostics.py): every `grad_check_every`-th validation (0 = never) compares the world
    # model's gradient of the H-step return with respect to the actions with the real env's (central differences
    # of step `grad_check_eps`) from `grad_check_starts` saved validation states. Needs an env that can be placed
    # in a saved state (the Ant); others report NaN. eps: on the CPU Ant (H = 16, a state in contact after 60 random
    # steps) central differences at 0.003 and 0.001 agree to cosine 0.99, at 0.01 vs 0.003 only 0.80 (contact kinks):
    # 0.003 measures the local gradient, which is what the actor follows through the model.
    grad_check_every: int = 4
    grad_check_starts: int = 4
    grad_check_eps: float = 0.003
    guard: GuardConfig = field(default_factory=GuardConfig)

    def validate(self, key: str = "run") -> None:
        _check(0 <= self.seed < 100_000, f"{key}.seed", f"must be in [0, 100000), got {self.seed}")
        _check(
            bool(re.match(r"^(auto|cpu|cuda(:[0-9]+)?)$", self.device)),
            f"{key}.device",
            f"must be auto, cpu, cuda or cuda:N, got '{self.device}'",
        )
        for name in ("log_every", "validate_every", "validation_episodes", "save_state_every"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(
            self.validation_seed_base >= 100_000,
            f"{key}.validation_seed_base",
            "must be >= 100000 so validation seeds never coincide with training seeds",
        )
        _check(self.grad_check_every >= 0, f"{key}.grad_check_every", f"must be >= 0, got {self.grad_check_every}")
        _check(self.grad_check_starts >= 1, f"{key}.grad_check_starts", f"must be >= 1, got {self.grad_check_starts}")
        _check(
            0 < self.grad_check_eps < 0.5, f"{key}.grad_check_eps", f"must be in (0, 0.5), got {self.grad_check_eps}"
        )
        self.guard.validate(f"{key}.guard")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. Cell keys name it in the results tree."""

    task_name: str = "ant"
    size: str = "5M"
    dynamics_name: str = "deterministic"
    env: EnvConfig = field(default_factory=EnvConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    pwm: PWMConfig = field(default_factory=PWMConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> TrainConfig:
        for key in ("task_name", "size", "dynamics_name"):
            _check_name(getattr(self, key), key)
        self.env.validate()
        self.world_model.validate()
        self.dynamics.validate()
        self.pwm.validate()
        self.run.validate()
        # Cross-field rules.
        _check(
            self.world_model.task_dim == 0,
            "world_model.task_dim",
            f"is {self.world_model.task_dim} but this is a single-task run; it must be 0 "
            "(a task embedding only makes sense for multitask training)",
        )
        min_buffer = self.env.num_envs * (self.pwm.horizon + 1)
        _check(
            self.pwm.buffer_size >= min_buffer,
            "pwm.buffer_size",
            f"must hold at least num_envs x (horizon + 1) = {min_buffer} transitions",
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        return to_plain(dataclasses.asdict(self))


# Size presets (TD-MPC2 naming). "tiny" is for tests and the CPU smoke pipeline only.
SIZE_PRESETS: dict[str, WorldModelConfig] = {
    "tiny": WorldModelConfig(units=(64, 64), encoder_units=(64,), latent_dim=32),
    "5M": WorldModelConfig(units=(512, 512), encoder_units=(256,), latent_dim=512),
    "48M": WorldModelConfig(units=(1792, 1792), encoder_units=(1792, 1792, 1792), latent_dim=768),
}

# Dynamics presets; the experiment config names its variants and may override any field.
DYNAMICS_PRESETS: dict[str, DynamicsConfig] = {
    "deterministic": DynamicsConfig(kind="deterministic"),
    "flow": DynamicsConfig(kind="flow", integrator="heun", substeps=4),
}


# --------------------------------------------------------------------------------------------------------------
# The experiment (pipeline) config
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationConfig:
    episodes: int = 100
    num_envs: int = 100  # episodes run in parallel batches of this many envs
    seed_base: int = 1_000_000  # evaluation env seed = seed_base + training seed
    # Env steps at which results/figures/learning_curves.csv reads every cell's training return against the PPO
    # reference's (curves.py): the points of the PWM paper's Ant curve (3M .. 30M), and 1M, 2M for short runs.
    curve_env_steps: tuple[int, ...] = (1_000_000, 2_000_000, 3_000_000, 5_000_000, 10_000_000, 20_000_000, 30_000_000)

    def validate(self, key: str = "evaluation") -> None:
        _check(self.episodes >= 1, f"{key}.episodes", f"must be >= 1, got {self.episodes}")
        _check(self.num_envs >= 1, f"{key}.num_envs", f"must be >= 1, got {self.num_envs}")
        steps = self.curve_env_steps
        _check(
            len(steps) >= 1 and steps[0] >= 1 and all(a < b for a, b in itertools.pairwise(steps)),
            f"{key}.curve_env_steps",
            f"must be positive and increasing, got {list(steps)}",
        )


# The model-free reference (`flow-mbpo-pwm reference`, rsl-rl's PPO) appears in every table under these cell keys.
# Size presets are tiny/5M/48M, and config validation refuses a dynamics variant named "ppo", so they never clash.
REFERENCE_SIZE = "reference"
REFERENCE_DYNAMICS = "ppo"


@dataclass(frozen=True)
class ReferenceConfig:
    """PPO from rsl-rl-lib on the same batched env: the model-free reference every PWM cell is compared with,
    and the source of the offline dataset (`collect`). Defaults: what reaches ~5k held-out Ant return on one
    H200 in minutes (4096 envs, horizon 32, observation normalisation, adaptive-KL learning rate)."""

    enabled: bool = True
    num_envs: int = 4096
    env_steps: int = 400_000_000  # budget in env steps (all envs together); the run stops at this or max_minutes
    max_minutes: float = 0.0  # wall-clock cap of training (0 = none)
    horizon: int = 32  # rsl-rl num_steps_per_env: env steps per env between PPO updates
    actor_units: tuple[int, ...] = (256, 128, 64)
    critic_units: tuple[int, ...] = (256, 128, 64)
    activation: Literal["elu", "relu", "tanh"] = "elu"
    empirical_normalization: bool = True  # running mean/std of observations (saved with the policy)
    init_noise_std: float = 1.0
    # Floor of the exploration std (rsl-rl's `std_range` lower bound), against its collapse when entropy_coef is 0;
    # 0 = rsl-rl's own 1e-6 floor. rsl-rl clamps the std parameter, so a std that reaches the floor stays there.
    min_noise_std: float = 0.0
    learning_rate: float = 1e-3
    schedule: Literal["adaptive", "fixed"] = "adaptive"  # adaptive: lr follows desired_kl
    desired_kl: float = 0.01
    gamma: float = 0.99
    lam: float = 0.95
    learning_epochs: int = 5
    mini_batches: int = 4
    clip_param: float = 0.2
    value_loss_coef: float = 1.0
    entropy_coef: float = 0.0
    max_grad_norm: float = 1.0
    snapshots: int = 8  # policies saved evenly over training, the untrained one and the final one included
    validation_episodes: int = 16  # held-out deterministic episodes per snapshot (validation seeds, as PWM's)
    log_every: int = 10  # PPO iterations per metrics row
    save_state_every: int = 50  # PPO iterations between resumable-state saves (also on SIGTERM / SIGUSR1)
    device: str = "auto"

    def validate(self, key: str = "reference") -> None:
        for name in ("num_envs", "env_steps", "horizon", "learning_epochs", "mini_batches", "validation_episodes",
                     "log_every", "save_state_every"):  # fmt: skip
            _check(getattr(self, name) >= 1, f"{key}.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.snapshots >= 2, f"{key}.snapshots", f"must be >= 2 (untrained and final), got {self.snapshots}")
        _check(self.max_minutes >= 0, f"{key}.max_minutes", f"must be >= 0 (0 = no cap), got {self.max_minutes}")
        _check(
            self.env_steps >= self.num_envs * self.horizon,
            f"{key}.env_steps",
            f"must cover at least one PPO iteration (num_envs x horizon = {self.num_envs * self.horizon})",
        )
        _check(
            self.env_steps >= (self.snapshots - 1) * self.num_envs * self.horizon,
            f"{key}.snapshots",
            f"{self.snapshots} snapshots need env_steps >= (snapshots - 1) x num_envs x horizon "
            f"= {(self.snapshots - 1) * self.num_envs * self.horizon} (one PPO iteration between snapshots)",
        )
        _check(
            self.num_envs * self.horizon % self.mini_batches == 0,
            f"{key}.mini_batches",
            f"must divide num_envs x horizon = {self.num_envs * self.horizon}",
        )
        for name in ("init_noise_std", "learning_rate", "desired_kl", "clip_param", "max_grad_norm"):
            _check(getattr(self, name) > 0, f"{key}.{name}", f"must be > 0, got {getattr(self, name)}")
        for name in ("value_loss_coef", "entropy_coef"):
            _check(getattr(self, name) >= 0, f"{key}.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(
            0 <= self.min_noise_std < self.init_noise_std,
            f"{key}.min_noise_std",
            f"must be >= 0 and < init_noise_std ({self.init_noise_std}), got {self.min_noise_std}",
        )
        _check(0.0 < self.gamma <= 1.0, f"{key}.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(0.0 <= self.lam <= 1.0, f"{key}.lam", f"must be in [0, 1], got {self.lam}")
        for name in ("actor_units", "critic_units"):
            _check_hidden_layers(getattr(self, name), f"{key}.{name}")
        _check(
            bool(re.match(r"^(auto|cpu|cuda(:[0-9]+)?)$", self.device)),
            f"{key}.device",
            f"must be auto, cpu, cuda or cuda:N, got '{self.device}'",
        )


@dataclass(frozen=True)
class CollectConfig:
    """`collect`: an offline dataset from the reference's snapshots (standing to running), each run with its own
    exploration noise, for world-model pretraining."""

    seed: int = 0  # which reference seed's snapshots to use (one of `seeds`)
    num_envs: int = 128  # envs per snapshot; each becomes one stream of the dataset
    steps_per_snapshot: int = 1000  # env steps per env and snapshot
    noise_scale: float = 1.0  # multiplier of each snapshot's own exploration std
    env_seed_base: int = 2_000_000  # env seed of snapshot k = env_seed_base + k (disjoint from other seeds)

    def validate(self, key: str = "collect") -> None:
        for name in ("num_envs", "steps_per_snapshot"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.noise_scale >= 0, f"{key}.noise_scale", f"must be >= 0, got {self.noise_scale}")


@dataclass(frozen=True)
class PretrainConfig:
    """The PWM paper's single-task protocol: the world model (and the reward statistics) pretrained offline on the
    reference's experience (`collect`), then `train` starts from it with that data in its replay buffer. One
    pretrained world model per (task, size, dynamics variant), shared by every seed of the cell, as the paper
    shared one pretrained model. `enabled: false` trains from scratch."""

    enabled: bool = True
    steps: int = 100_000  # gradient steps (the paper: 100k for the Ant), batches of `pwm.wm_batch` sequences
    seed: int = 0  # RNG seed of the pretraining run (network init, batch sampling)
    seed_buffer: bool = True  # start training with the offline data in the replay buffer (as the public code)
    log_every: int = 500  # gradient steps between rows of pretrain_metrics.csv
    save_state_every: int = 5_000  # gradient steps between resumable-state saves (also on SIGTERM)

    def validate(self, key: str = "pretrain") -> None:
        _check(self.steps >= 1, f"{key}.steps", f"must be >= 1, got {self.steps}")
        _check(0 <= self.seed < 100_000, f"{key}.seed", f"must be in [0, 100000), got {self.seed}")
        for name in ("log_every", "save_state_every"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", f"must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class CloneConfig:
    """`clone` (off by default; not the paper's protocol): every seed's actor starts from the PPO reference's final
    policy, cloned onto the pretrained world model's latents (`clone.py`), and the critic learns that policy's values
    for `pwm.actor_delay_epochs` before the actor moves. A diagnostic start: does PWM's gradient keep, improve or
    spoil a running gait it is handed? One cloned actor per (task, size, dynamics variant), as the world model."""

    enabled: bool = False
    steps: int = 5_000  # Adam steps on batches of `batch` dataset observations
    batch: int = 4_096
    lr: float = 1e-3
    seed: int = 0  # RNG seed of the cloning run (the actor's initial weights, batch sampling)
    log_every: int = 500  # steps between rows of clone_metrics.csv
    # Model steps of imagined latents the clone also learns to act on (0: none, the real latents E(o) only). Each
    # step then also draws `batch` windows of k transitions from the dataset, rolls the world model from E(o_0)
    # along their recorded actions, and adds the mean squared error of the actor's action on every imagined latent
    # z_1..z_k against the reference's action at the real o_1..o_k. PWM's actor acts on such latents in its
    # imagination; cloned on real latents only, one model step already moved its action 0.34 per entry
    # (bench/imagined_gait.py, bench/RESULTS.md).
    imagined_steps: int = 0
    imagined_weight: float = 1.0  # the imagined latents' error's weight in the loss (the real ones' is 1)

    def validate(self, key: str = "clone") -> None:
        for name in ("steps", "batch", "log_every"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.imagined_steps >= 0, f"{key}.imagined_steps", f"must be >= 0, got {self.imagined_steps}")
        _check(self.imagined_weight >= 0, f"{key}.imagined_weight", f"must be >= 0, got {self.imagined_weight}")
        _check(self.lr > 0, f"{key}.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.seed < 100_000, f"{key}.seed", f"must be in [0, 100000), got {self.seed}")


# The PWM settings a world model's pretraining uses (its loss, batches and optimiser). The others (actor, critic,
# epochs, ...) leave a pretrained world model unchanged, so changing them must not redo the pretraining.
PRETRAIN_PWM_FIELDS = (
    "horizon", "gamma", "wm_lr", "wm_grad_clip", "wm_batch", "wm_steps", "reward_norm", "reward_clip",
    "wm_dynamics_coef", "wm_reward_coef",
)  # fmt: skip


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {"a.b.c": value}; lists stay values."""
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def pretraining_settings(config: TrainConfig) -> dict[str, Any]:
    """What a pretrained world model depends on, of a cell's training config (its `run.seed` seeds the
    pretraining): the task, the world model and dynamics settings and `PRETRAIN_PWM_FIELDS`."""
    plain = config.to_dict()
    return {
        "task": config.env.task,
        "world_model": plain["world_model"],
        "dynamics": plain["dynamics"],
        "pwm": {name: plain["pwm"][name] for name in PRETRAIN_PWM_FIELDS},
        "seed": config.run.seed,
    }


@dataclass(frozen=True)
class TrainOverrides:
    """The `train:` section: partial overrides applied to every cell (on top of size and dynamics presets)."""

    world_model: dict[str, Any] = field(default_factory=dict)
    pwm: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentConfig:
    tasks: dict[str, EnvConfig] = field(default_factory=lambda: {"ant": EnvConfig()})
    sizes: tuple[str, ...] = ("5M", "48M")
    dynamics: dict[str, DynamicsConfig] = field(default_factory=lambda: dict(DYNAMICS_PRESETS))
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # Seeds of a cell trained together in one `train` process (a stack, algorithms/pwm.py); 0: all of them.
    train_seeds_per_job: int = 0
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    clone: CloneConfig = field(default_factory=CloneConfig)
    train: TrainOverrides = field(default_factory=TrainOverrides)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)

    def cells(self) -> list[tuple[str, str, str, int]]:
        """Every (task, size, dynamics, seed) of the grid, in a stable order."""
        return [(t, s, d, seed) for t in self.tasks for s in self.sizes for d in self.dynamics for seed in self.seeds]

    def train_jobs(
        self, recorded: Callable[[str, str, str, int], tuple[int, ...] | None] = lambda *cell: None
    ) -> list[tuple[str, str, str, tuple[int, ...]]]:
        """The `train` jobs of the grid: (task, size, dynamics, seeds trained together), in a stable order.

        A seed that has started training keeps the stack it started in (`recorded(task, size, dynamics, seed)`:
        the seeds its run folder was trained with, or None), so a finished or preempted stack is never regrouped.
        The other seeds of a cell are grouped in config order, `train_seeds_per_job` at a time (0: all together).
        Adding seeds to the config therefore adds jobs of the new seeds only."""
        jobs = []
        for task in self.tasks:
            for size in self.sizes:
                for dynamics in self.dynamics:
                    stacks: list[tuple[int, ...]] = []
                    for seed in self.seeds:
                        stack = recorded(task, size, dynamics, seed)
                        # (a recorded stack that overlaps one already taken is ignored: one job per seed)
                        if stack and seed in stack and not any(set(stack) & set(s) for s in stacks):
                            stacks.append(tuple(stack))
                    grouped = {seed for stack in stacks for seed in stack}
                    new = [seed for seed in self.seeds if seed not in grouped]
                    per_job = self.train_seeds_per_job or max(len(new), 1)
                    stacks += [tuple(new[i : i + per_job]) for i in range(0, len(new), per_job)]
                    jobs += [(task, size, dynamics, stack) for stack in stacks]
        return jobs

    def validate(self) -> ExperimentConfig:
        _check(len(self.tasks) >= 1, "tasks", "needs at least one task")
        _check(
            self.train_seeds_per_job >= 0,
            "train_seeds_per_job",
            f"must be >= 0 (seeds of a cell per train process; 0: all of them), got {self.train_seeds_per_job}",
        )
        _check(len(self.sizes) >= 1, "sizes", "needs at least one size")
        _check(len(self.dynamics) >= 1, "dynamics", "needs at least one dynamics variant")
        _check(len(self.seeds) >= 1, "seeds", "needs at least one seed")
        _check(len(set(self.seeds)) == len(self.seeds), "seeds", f"has duplicates: {list(self.seeds)}")
        _check(len(set(self.sizes)) == len(self.sizes), "sizes", f"has duplicates: {list(self.sizes)}")
        for name, env in self.tasks.items():
            _check_name(name, "tasks")
            env.validate(f"tasks.{name}")
        for size in self.sizes:
            _check(size in SIZE_PRESETS, "sizes", f"unknown size preset '{size}' (known: {list(SIZE_PRESETS)})")
        for name, dyn in self.dynamics.items():
            _check_name(name, "dynamics")
            dyn.validate(f"dynamics.{name}")
        self.evaluation.validate()
        _check("seed" not in self.train.run, "train.run.seed", "is set by the grid's `seeds`, not by train.run")
        for name in ("world_model_init", "offline_data", "actor_init"):
            _check(
                name not in self.train.run,
                f"train.run.{name}",
                "is set by the pipeline from the `pretrain` and `clone` sections",
            )
        self.pretrain.validate()
        self.clone.validate()
        _check(
            not self.clone.enabled or self.pretrain.enabled,
            "clone.enabled",
            "needs the pretrained world model (pretrain.enabled: true): the actor is cloned onto its latents",
        )
        _check(
            not self.pretrain.enabled or self.reference.enabled,
            "pretrain.enabled",
            "needs the reference (reference.enabled: true): the offline dataset is collected from its snapshots; "
            "set pretrain.enabled: false to train from scratch",
        )
        # Every cell must resolve to a valid run config: this applies all cross-field rules before any job runs.
        train_configs = [self.cell(*cell) for cell in self.cells()]
        _check(
            not (self.pretrain.enabled and not self.pretrain.seed_buffer)
            or not any(c.pwm.standardizes_latent for c in train_configs),
            "train.pwm.latent_norm",
            "standardize fits the latent's statistics on the offline data in the replay buffer: it needs "
            "pretrain.seed_buffer: true (or pretrain.enabled: false, fitting them at the warm-up)",
        )
        validation_base = train_configs[0].run.validation_seed_base
        _check(
            self.evaluation.seed_base >= validation_base + 100_000,
            "evaluation.seed_base",
            f"must be >= run.validation_seed_base + 100000 = {validation_base + 100_000} so evaluation seeds "
            "are disjoint from validation seeds",
        )
        self._validate_reference()
        return self

    def _validate_reference(self) -> None:
        """The PPO reference and the collect stage (their cell keys must not clash with the PWM grid)."""
        _check(
            REFERENCE_DYNAMICS not in self.dynamics,
            f"dynamics.{REFERENCE_DYNAMICS}",
            f"the name '{REFERENCE_DYNAMICS}' is reserved for the PPO reference's rows; rename the variant",
        )
        self.reference.validate()
        self.collect.validate()
        _check(
            self.collect.seed in self.seeds,
            "collect.seed",
            f"{self.collect.seed} is not one of the reference seeds (= `seeds`: {list(self.seeds)})",
        )
        _check(
            self.collect.env_seed_base >= self.evaluation.seed_base + 100_000,
            "collect.env_seed_base",
            f"must be >= evaluation.seed_base + 100000 = {self.evaluation.seed_base + 100_000} so collection "
            "seeds are disjoint from training, validation and evaluation seeds",
        )

    def reference_cells(self) -> list[tuple[str, str, str, int]]:
        """The PPO reference runs as (task, "reference", "ppo", seed), one per task and seed; none when disabled."""
        if not self.reference.enabled:
            return []
        return [(t, REFERENCE_SIZE, REFERENCE_DYNAMICS, seed) for t in self.tasks for seed in self.seeds]

    def cell(self, task: str, size: str, dynamics: str, seed: int) -> TrainConfig:
        """The fully resolved, validated config of one training run."""
        _check(task in self.tasks, "task", f"'{task}' is not in this config's tasks {list(self.tasks)}")
        _check(size in self.sizes, "size", f"'{size}' is not in this config's sizes {list(self.sizes)}")
        _check(
            dynamics in self.dynamics,
            "dynamics",
            f"'{dynamics}' is not in this config's dynamics {list(self.dynamics)}",
        )
        _check(seed in self.seeds, "seed", f"{seed} is not in this config's seeds {list(self.seeds)}")
        world_model = _merge(SIZE_PRESETS[size], self.train.world_model, "train.world_model")
        pwm = _merge(PWMConfig(), self.train.pwm, "train.pwm")
        run = _merge(RunConfig(), {**self.train.run, "seed": seed}, "train.run")
        config = TrainConfig(
            task_name=task,
            size=size,
            dynamics_name=dynamics,
            env=self.tasks[task],
            world_model=world_model,
            dynamics=self.dynamics[dynamics],
            pwm=pwm,
            run=run,
        )
        try:
            return config.validate()
        except ConfigError as err:  # name the key where the experiment YAML sets it
            section = err.key.split(".")[0]
            if section in ("world_model", "pwm", "run"):
                raise ConfigError(f"train.{err.key}", err.reason) from None
            if section == "env":
                raise ConfigError(f"tasks.{task}{err.key[len('env') :]}", err.reason) from None
            raise


def _merge(base: Any, overrides: dict[str, Any], key: str) -> Any:
    """`base` (a dataclass) with the fields named in `overrides` replaced, type-checked."""
    merged = to_plain(dataclasses.asdict(base))
    merged.update(overrides)
    return from_dict(type(base), merged, key)


# --------------------------------------------------------------------------------------------------------------
# Strict loading from plain data (YAML) and schema generation
# --------------------------------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Plain config data `base` with `overrides` merged in: nested mappings key by key, anything else replaced
    (for configs derived from an experiment file: the bench sweeps, the tests)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def to_plain(value: Any) -> Any:
    """Nested data with tuples as lists, recursively: the plain form YAML and JSON give back."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass `cls` from plain data, rejecting unknown keys and wrong types (no validation of ranges)."""
    _check(isinstance(data, dict), key or "<root>", f"must be a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    _check(
        not unknown,
        f"{key + '.' if key else ''}{unknown[0] if unknown else ''}",
        f"unknown key (known keys: {sorted(names)})",
    )
    values = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, f"{key}.{name}" if key else name)
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin is Literal:
        _check(value in args, key, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _convert(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(key, f"has the wrong type {type(value).__name__}")
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), key, f"must be a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        _check(len(value) == len(args), key, f"must have {len(args)} entries, got {len(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        _check(isinstance(value, dict), key, f"must be a mapping, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, f"must be a number, got {value!r}")
        # NaN passes no range check but also fails none reliably (every comparison is False), and +-inf passes
        # one-sided ones (e.g. a learning rate > 0): neither is ever a meaningful setting.
        _check(math.isfinite(value), key, f"must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} at {key}")


def load_experiment(source: str | Path | dict[str, Any]) -> ExperimentConfig:
    """Load and fully validate an experiment config from a YAML path or an already-parsed mapping."""
    data = _read_yaml(source) if isinstance(source, (str, Path)) else source
    where = f"{source} " if isinstance(source, (str, Path)) else ""
    _check(
        data is None or isinstance(data, dict),
        "<root>",
        f"the experiment config {where}must be a mapping of sections (tasks, sizes, ...), got {type(data).__name__}",
    )
    data = dict(data or {})
    # Sizes and dynamics variants may be given by preset name only; dynamics variants merge over their preset.
    if "dynamics" in data:
        data["dynamics"] = _dynamics_variants(data["dynamics"])
    if "tasks" in data:
        tasks = data["tasks"]
        _check(isinstance(tasks, dict), "tasks", "must be a mapping of task name -> env settings")
        for name, spec in tasks.items():
            _check(spec is None or isinstance(spec, dict), f"tasks.{name}", "must be a mapping of env settings")
        data["tasks"] = {name: ({"task": name} | (spec or {})) for name, spec in tasks.items()}
    experiment = from_dict(ExperimentConfig, data)
    return experiment.validate()


def _dynamics_variants(variants: Any) -> dict[str, Any]:
    _check(isinstance(variants, dict), "dynamics", "must be a mapping of variant name -> dynamics settings")
    resolved = {}
    for name, spec in variants.items():
        _check(spec is None or isinstance(spec, dict), f"dynamics.{name}", "must be a mapping of dynamics settings")
        spec = dict(spec or {})
        kind = spec.get("kind", name if name in DYNAMICS_PRESETS else None)
        _check(
            kind in DYNAMICS_PRESETS, f"dynamics.{name}.kind", f"must be one of {list(DYNAMICS_PRESETS)}, got {kind!r}"
        )
        resolved[name] = to_plain(dataclasses.asdict(DYNAMICS_PRESETS[kind])) | spec
    return resolved


def _read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if path.is_dir():
        raise ConfigError("<file>", f"{path} is a directory, expected a YAML file")
    if not path.is_file():
        raise ConfigError("<file>", f"{path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError("<file>", f"{path} is not valid YAML ({yaml_problem(err)})") from err


def yaml_problem(err: Exception) -> str:
    """A YAML parse error on one line ("line 3, column 7: expected ','"); PyYAML's own message spans several."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(err).split())


def load_train_config(path: str | Path) -> TrainConfig:
    """Load a resolved single-run config (the `config.yaml` written beside every run)."""
    return from_dict(TrainConfig, _read_yaml(path)).validate()


def dump_yaml(config: TrainConfig | ExperimentConfig) -> str:
    return yaml.safe_dump(to_plain(dataclasses.asdict(config)), sort_keys=False)


def with_overrides(config: TrainConfig, **sections: dict[str, Any]) -> TrainConfig:
    """A copy of `config` with fields of named sections replaced, e.g. `with_overrides(c, pwm={"epochs": 3})`."""
    changes = {name: _merge(getattr(config, name), values, name) for name, values in sections.items()}
    return replace(config, **changes).validate()


def experiment_schema() -> dict[str, Any]:
    """JSON schema of the experiment YAML, generated from the dataclasses (committed as
    `workflow/schemas/config.schema.yaml`; a test keeps the two equal)."""

    def schema(hint: Any) -> dict[str, Any]:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            hints = _hints(hint)
            return {
                "type": "object",
                "additionalProperties": False,
                "properties": {f.name: schema(hints[f.name]) for f in fields(hint)},
            }
        if origin is Literal:
            return {"enum": list(args)}
        if origin is tuple:
            item = args[0]
            return {"type": "array", "items": schema(item)}
        if origin is dict:
            return {"type": "object", "additionalProperties": schema(args[1]) if args[1] is not Any else True}
        return {
            bool: {"type": "boolean"},
            int: {"type": "integer"},
            float: {"type": "number"},
            str: {"type": "string"},
        }[hint]

    root = schema(ExperimentConfig)
    props = root["properties"]
    # Tasks map a path-safe name to env settings (task id defaults to the name); variants may omit fields.
    props["tasks"]["propertyNames"] = {"pattern": NAME_PATTERN}
    props["tasks"]["additionalProperties"] = {**schema(EnvConfig), "type": ["object", "null"]}
    props["dynamics"]["propertyNames"] = {"pattern": NAME_PATTERN}
    props["dynamics"]["additionalProperties"] = {**schema(DynamicsConfig), "type": ["object", "null"]}
    props["sizes"]["items"] = {"enum": list(SIZE_PRESETS)}
    props["seeds"]["items"] = {"type": "integer", "minimum": 0, "maximum": 99_999}
    for section, cls in (("world_model", WorldModelConfig), ("pwm", PWMConfig), ("run", RunConfig)):
        props["train"]["properties"][section] = {**schema(cls)}
    props["train"]["properties"]["run"]["properties"].pop("seed")  # the grid sets the seed
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "description": __doc__.splitlines()[0], **root}
