"""PWM — policy learning through a learned world model (Georgiev et al., ICLR 2025), one epoch top to bottom.

`PWM.epoch` reads like the paper: imagine H steps with the world model while the real env takes the same actions
(data only) -> actor step (first-order gradients through the model) -> critic steps (TD(lambda) on detached
latents) -> world-model steps (on replayed sub-trajectories). The world model's dynamics are deterministic or flow
matching (models/dynamics.py); nothing here depends on which.

Choices, and where they differ from the public PWM code (docs: ../shared/specs/pwm.md):
- Terminal value discount is gamma^H: a segment of length L (ended by the rollout's end or a real done) contributes
  `sum_{t<L} gamma^t r_t + gamma^L V(z_L)`. The public code multiplies the value by one extra gamma (gamma^(H+1)
  at the rollout's end) — a quirk we do not copy.
- The actor sees `sg(z)` (PWM's `detach: True`): its gradients reach it only through the actions, via the
  dynamics, the reward head and the critic. The loss is backpropagated into the actor's parameters only
  (`backward(inputs=...)`), so it never touches world-model or critic parameters (tested).
- Actor loss = -mean_envs(objective / std(ret_rms)), where `ret_rms` tracks the per-env imagined objectives (as PWM).
- Rewards: by default the world model regresses raw real rewards (`pwm.reward_norm="none"`, as the public PWM
  configs). `"std"` divides them by the running std of real env rewards (`rew_rms`, updated as they are collected);
  `"meanstd"` also subtracts the running mean and clips to +-`reward_clip` (the spec's rew_rms). Imagined rewards,
  values and the actor objective live in those units. Centring turns alive-like reward terms into ~0, so an early
  termination costs nothing; clipping r/std would flatten every reward of a standing Ant (config.py says more).
- Learning rates decay linearly with `progress` in [0, 1] (actor and critic to `lr_min`, world model to
  `wm_lr_min`).
- Grad-norm clipping: actor 1.0, critic 100, world model 20 (from the config). Reported grad norms are pre-clip.
- Warm-up (as PWM): until the world model has been trained (`warmed_up`), epochs only collect data (imagination
  without gradients, no updates — an actor trained through an untrained model drives the env into short episodes
  that never yield a training window). The caller decides when, on the host: after the buffer holds a finished
  episode (`buffer.ready()`), `train_world_model(buffer, pwm.wm_warmup_steps)`; pretraining on an offline dataset
  counts too. `train_world_model` sets `warmed_up` once some sampled window was valid (one host read, outside any
  epoch). The epoch itself never reads a device value on the host. `epoch(..., wm_steps=...)` overrides the
  per-epoch count.
- Observations are not normalised (`pwm.normalize_obs=True` is rejected).

Capture-friendliness: static shapes and loop lengths, RNG from `self.generator` (a torch generator on the device),
metrics returned as 0-d device tensors, no `.item()` or tensor-valued Python branches in the epoch.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_

from flow_mbpo_pwm.algorithms.graphs import PhaseGraphs, make_capturable, make_eager, set_lr
from flow_mbpo_pwm.algorithms.returns import td_lambda_targets
from flow_mbpo_pwm.algorithms.running_stats import RunningMeanStd
from flow_mbpo_pwm.config import TrainConfig
from flow_mbpo_pwm.data.replay import ReplayBatch, ReplayBuffer
from flow_mbpo_pwm.models.actor import Actor
from flow_mbpo_pwm.models.critic import CriticEnsemble
from flow_mbpo_pwm.models.world_model import WorldModel


class SequenceSource(Protocol):
    """What the world model trains from: the replay buffer, or an offline dataset with the same `sample`."""

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplayBatch: ...


class Rollout(NamedTuple):
    """One imagined rollout of H steps for N envs (everything but `objective` is detached)."""

    objective: torch.Tensor  # [N] per env: sum over closed segments of sum_t gamma^t r_t + gamma^L V(z_L)
    latents: torch.Tensor  # [H, N, latent] z_0 .. z_{H-1}
    rewards: torch.Tensor  # [H, N] model rewards (normalised units)
    next_values: torch.Tensor  # [H, N] min-ensemble V(z_{i+1}), zero where the real env terminated
    dones: torch.Tensor  # [H, N] bool: the real env ended its episode at step i
    episodes: torch.Tensor  # training-episode statistics of the real env (0-d, float64)
    episode_return_sum: torch.Tensor
    episode_return_max: torch.Tensor


class WorldModelLoss(NamedTuple):
    total: torch.Tensor
    dynamics: torch.Tensor  # latent MSE (deterministic) or rectified-flow loss (flow), discounted
    reward: torch.Tensor
    latent_mse: torch.Tensor  # imagined vs encoded latents, undiscounted (comparable across dynamics)
    valid_rows: torch.Tensor


class PWM(nn.Module):
    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: TrainConfig,
        device: str | torch.device,
        cuda_graphs: bool | None = None,
    ):
        super().__init__()
        cfg = config.pwm
        if cfg.normalize_obs:
            raise ValueError("pwm.normalize_obs=True is not supported: observations enter the encoder raw")
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"PWM: obs_dim ({obs_dim}) and act_dim ({act_dim}) must be >= 1")
        self.config = config
        self.device = torch.device(device)
        self.obs_dim, self.act_dim, self.num_envs = obs_dim, act_dim, config.env.num_envs
        latent = config.world_model.latent_dim
        self.world_model = WorldModel(obs_dim, act_dim, config.world_model, config.dynamics)
        self.actor = Actor(latent, act_dim, cfg.actor_units, cfg.init_logstd, cfg.min_logstd)
        self.critic = CriticEnsemble(latent, cfg.critic_units, cfg.num_critics)
        self.rew_rms = RunningMeanStd(())
        self.ret_rms = RunningMeanStd(())
        # Per-env return of the real env's rewards in the episode running now (training-episode statistics).
        self.register_buffer("episode_return", torch.zeros(self.num_envs, dtype=torch.float64))
        self.to(self.device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, betas=cfg.betas)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, betas=cfg.betas)
        self.wm_optimizer = torch.optim.Adam(self.world_model.parameters(), lr=cfg.wm_lr)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.run.seed)
        # On CUDA the critic and world-model phases run as captured CUDA graphs (algorithms/graphs.py); on the CPU
        # everything stays eager. `cuda_graphs=None` follows the config (`run.cuda_graphs`, default on).
        if cuda_graphs is None:
            cuda_graphs = config.run.cuda_graphs
        self.graphs = PhaseGraphs(self.device, self.generator) if cuda_graphs and self.device.type == "cuda" else None
        if self.graphs is not None:
            for optimizer in (self.actor_optimizer, self.critic_optimizer, self.wm_optimizer):
                make_capturable(optimizer, self.device)
        self.warmed_up = False  # host flag: the world model has been trained; until then epochs only collect

    # ------------------------------------------------------------------------------------------------------------
    # The epoch
    # ------------------------------------------------------------------------------------------------------------

    def epoch(
        self, env: Any, obs: torch.Tensor, buffer: Any, progress: float, wm_steps: int | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One PWM epoch from the real observations `obs [N, obs_dim]`; returns the env's next observations and
        the epoch's metrics (0-d device tensors)."""
        cfg = self.config.pwm
        if env.num_envs != self.num_envs:
            raise ValueError(f"PWM.epoch: env has {env.num_envs} envs, the agent was built for {self.num_envs}")
        lrs = self.set_learning_rates(progress)

        # 1-2. Imagine H steps from E(o) while the real env takes the same actions (collect-only before warm-up).
        # With CUDA graphs and an env that can step under capture, 1-3 run as one captured graph.
        captured = self.warmed_up and self.graphs is not None and getattr(env, "supports_torch_graph_capture", False)
        if captured:
            rollout, obs, actor_metrics = self._imagine_and_act_captured(env, obs, buffer)
        else:
            rollout, obs = self.imagine(env, obs, buffer, with_grad=self.warmed_up)
        metrics = self._metrics(lrs, rollout)
        if not self.warmed_up:
            return obs, metrics
        if captured:
            metrics.update(actor_metrics)
        else:
            # 3. Actor: one step on the imagined objective, gradients through the model into the actions only.
            metrics["actor_loss"], metrics["actor_grad_norm"] = self.actor_step(rollout.objective)
            # Free the imagination's autograd graph: it holds the critic's and world model's gradient accumulators,
            # created on the caller's stream, which a captured phase must not inherit (graphs.py).
            rollout = rollout._replace(objective=rollout.objective.detach())
        # 4. Critic: TD(lambda) regression on the rollout's detached latents.
        metrics["critic_loss"], metrics["critic_grad_norm"] = self.critic_step(rollout)
        # 5. World model: `wm_steps` steps on replayed sub-trajectories.
        wm_metrics = self.world_model_steps(buffer, cfg.wm_steps if wm_steps is None else wm_steps)
        wm_metrics.pop("valid_rows")
        metrics.update(wm_metrics, updated=torch.ones((), device=self.device))
        return obs, metrics

    def imagine(self, env: Any, obs: torch.Tensor, buffer: Any, with_grad: bool = True) -> tuple[Rollout, torch.Tensor]:
        """H imagined steps from `z_0 = E(o)`; the real env takes the same actions and its transitions go to
        `buffer`. Returns the rollout and the env's observations after the H steps."""
        cfg = self.config.pwm
        H, gamma, N, dev = cfg.horizon, cfg.gamma, self.num_envs, self.device
        wm, gen = self.world_model, self.generator
        latents, model_rewards, next_values, dones = [], [], [], []
        objective = torch.zeros(N, device=dev)  # per env: closed segments' sum_t gamma^t r_t + gamma^L V(z_L)
        segment_return = torch.zeros(N, device=dev)  # discounted model rewards of the open segment
        discount = torch.ones(N, device=dev)  # gamma^t within the open segment
        episodes = torch.zeros((), dtype=torch.float64, device=dev)
        episode_sum = torch.zeros((), dtype=torch.float64, device=dev)
        episode_max = torch.full((), -math.inf, dtype=torch.float64, device=dev)
        with torch.no_grad():
            z = wm.encode(obs)
        with torch.set_grad_enabled(with_grad):  # collect-only epochs build no graph
            for i in range(H):
                action = self.actor.sample(z.detach(), gen)  # a_i = tanh(pi(sg(z_i)) + noise)
                reward = wm.reward(z, action)  # r_i = R(z_i, a_i)
                z_next = wm.next(z, action, gen)  # z_{i+1} = F(z_i, a_i)
                next_obs, env_reward, terminated, truncated, info = env.step(action.detach())
                done = terminated | truncated
                buffer.add(obs, action.detach(), env_reward, info["final_obs"], terminated, truncated)
                self.rew_rms.update(env_reward)
                with torch.no_grad():  # training-episode statistics of the real env rewards
                    self.episode_return += env_reward.double()
                    episodes += done.sum()
                    episode_sum += torch.where(done, self.episode_return, 0.0).sum()
                    episode_max = torch.maximum(episode_max, torch.where(done, self.episode_return, -math.inf).max())
                    self.episode_return.masked_fill_(done, 0.0)
                value_next = self.critic.value(z_next) * (~terminated)  # V(z_{i+1}), zero after a real termination
                segment_return = segment_return + discount * reward
                discount = discount * gamma
                closes = done if i < H - 1 else torch.ones_like(done)  # the rollout's end closes every segment
                objective = objective + torch.where(closes, segment_return + discount * value_next, 0.0)
                segment_return = torch.where(closes, 0.0, segment_return)
                discount = torch.where(closes, 1.0, discount)
                latents.append(z.detach())
                model_rewards.append(reward.detach())
                next_values.append(value_next.detach())
                dones.append(done)
                with torch.no_grad():  # envs that ended restart their imagined latent from the new real observation
                    z_reset = wm.encode(next_obs)
                z = torch.where(done.unsqueeze(-1), z_reset, z_next)
                obs = next_obs
        rollout = Rollout(
            objective=objective,
            latents=torch.stack(latents),
            rewards=torch.stack(model_rewards),
            next_values=torch.stack(next_values),
            dones=torch.stack(dones),
            episodes=episodes,
            episode_return_sum=episode_sum,
            episode_return_max=episode_max,
        )
        return rollout, obs

    def _imagine_and_act_captured(
        self, env: Any, obs: torch.Tensor, buffer: Any
    ) -> tuple[Rollout, torch.Tensor, dict[str, torch.Tensor]]:
        """Steps 1-3 (imagination with the real env, actor step) as one captured phase; the actor's std is read
        before its update, as `_metrics` does in the eager path."""

        def imagine_and_act(obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            actor_std = self.actor.std().detach().mean()
            rollout, next_obs = self.imagine(env, obs, buffer, with_grad=True)
            loss, grad_norm = self.actor_step(rollout.objective)
            return (*rollout._replace(objective=rollout.objective.detach()), next_obs, loss, grad_norm, actor_std)

        added = buffer.num_added
        out = self.graphs.run(("imagine_act", env, buffer), imagine_and_act, obs, capture_error_mode="relaxed")
        if buffer.num_added == added:  # a replay: the buffer's host-side count of adds did not run
            buffer.num_added += self.config.pwm.horizon
        fields = len(Rollout._fields)
        next_obs, loss, grad_norm, actor_std = out[fields:]
        actor_metrics = {"actor_loss": loss, "actor_grad_norm": grad_norm, "actor_std": actor_std}
        return Rollout(*out[:fields]), next_obs, actor_metrics

    def actor_step(self, objective: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maximise the imagined objective scaled by the running std of objectives (ret_rms). Only the actor's
        parameters receive gradients. Returns (loss, pre-clip grad norm)."""
        self.ret_rms.update(objective.detach())
        loss = -(objective / self.ret_rms.std().to(objective.dtype)).mean()
        grad_norm = self._optimize(
            self.actor_optimizer, list(self.actor.parameters()), loss, self.config.pwm.actor_grad_clip
        )
        self.actor.clamp_logstd_()
        return loss.detach(), grad_norm

    def critic_step(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """TD(lambda) targets on the detached latents; `critic_iterations` shuffled passes of `critic_minibatches`
        minibatches, MSE of every ensemble member. Returns mean (loss, pre-clip grad norm)."""
        inputs = (rollout.latents, rollout.rewards, rollout.next_values, rollout.dones)
        if self.graphs is not None:
            return self.graphs.run("critic", self._critic_updates, *inputs)  # type: ignore[return-value]
        return self._critic_updates(*inputs)

    def _critic_updates(
        self, latents: torch.Tensor, rewards: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config.pwm
        H, N = rewards.shape
        with torch.no_grad():
            targets = td_lambda_targets(rewards, next_values, dones, cfg.gamma, cfg.lam)
        states, targets = latents.reshape(H * N, -1), targets.reshape(-1)
        minibatches = min(cfg.critic_minibatches, H * N)
        size = (H * N) // minibatches
        total_loss = torch.zeros((), device=self.device)
        total_norm = torch.zeros((), device=self.device)
        params = list(self.critic.parameters())
        for _ in range(cfg.critic_iterations):
            order = torch.randperm(H * N, generator=self.generator, device=self.device)
            for b in range(minibatches):
                idx = order[b * size : (b + 1) * size]
                loss = (self.critic(states[idx]) - targets[idx]).pow(2).mean()
                total_norm += self._optimize(self.critic_optimizer, params, loss, cfg.critic_grad_clip)
                total_loss += loss.detach()
        updates = cfg.critic_iterations * minibatches
        return total_loss / updates, total_norm / updates

    def _metrics(self, lrs: dict[str, float], rollout: Rollout) -> dict[str, torch.Tensor]:
        """The epoch's metrics; losses and grad norms start at zero (what a collect-only epoch reports)."""
        dev = self.device
        losses = (
            "actor_loss", "critic_loss", "wm_loss", "wm_dynamics_loss", "wm_reward_loss", "wm_latent_mse",
            "actor_grad_norm", "critic_grad_norm", "wm_grad_norm",
        )  # fmt: skip
        return {
            **{name: torch.zeros((), device=dev) for name in losses},
            **{f"{name}_lr": torch.full((), lr, device=dev) for name, lr in lrs.items()},
            "episodes_finished": rollout.episodes,
            "episode_return_sum": rollout.episode_return_sum,
            "episode_return_max": rollout.episode_return_max,
            "imagined_objective": rollout.objective.detach().mean(),
            "actor_std": self.actor.std().detach().mean(),
            "updated": torch.zeros((), device=dev),
        }

    # ------------------------------------------------------------------------------------------------------------
    # World model
    # ------------------------------------------------------------------------------------------------------------

    def world_model_loss(self, batch: ReplayBatch) -> WorldModelLoss:
        """`L = (1/H) sum_t gamma^t [c_dyn dyn_t + c_rew (R(z_t, a_t) - r_t)^2]` over the batch's valid rows,
        rolling out from `z_0 = E(o_0)` with the model's own predictions; `dyn_t` is the latent MSE (deterministic)
        or the rectified-flow loss (flow) against `sg(E(o_{t+1}))`; `c_dyn`, `c_rew` are `pwm.wm_dynamics_coef` and
        `pwm.wm_reward_coef` (1 and 1 by default, as PWM). Also reports the rollout's undiscounted latent MSE,
        which — unlike `dyn_t` — means the same for both dynamics (how far imagined latents are from encoded ones).
        """
        cfg = self.config.pwm
        wm = self.world_model
        obs = batch.obs.transpose(0, 1)  # [H+1, B, obs_dim]
        action = batch.action.transpose(0, 1)
        reward = batch.reward
        if cfg.reward_norm != "none":
            center = cfg.reward_norm == "meanstd"
            reward = self.rew_rms.normalize(reward, cfg.reward_clip if center else None, center=center)
        reward = reward.transpose(0, 1)
        horizon = action.shape[0]
        with torch.no_grad():
            targets = wm.encode(obs[1:])
        z = wm.encode(obs[0])
        latents, predictions = [], []
        dynamics_loss = torch.zeros(obs.shape[1], device=obs.device)
        for t in range(horizon):
            latents.append(z)
            step_loss, z = wm.dynamics.loss(z, action[t], targets[t], self.generator)
            dynamics_loss = dynamics_loss + cfg.gamma**t * step_loss
            predictions.append(z.detach())
        # The reward term on all rollout latents at once (one pass of the head instead of H).
        discounts = cfg.gamma ** torch.arange(horizon, device=obs.device, dtype=dynamics_loss.dtype)
        reward_loss = (discounts.unsqueeze(1) * wm.reward_head.loss(torch.stack(latents), action, reward)).sum(0)
        latent_mse = (torch.stack(predictions) - targets).pow(2).mean(-1).sum(0)
        weight = batch.valid.to(dynamics_loss.dtype)
        denominator = horizon * weight.sum().clamp_min(1.0)

        def mean(per_row: torch.Tensor) -> torch.Tensor:
            return (per_row * weight).sum() / denominator

        dynamics, rewards = mean(dynamics_loss), mean(reward_loss)
        total = cfg.wm_dynamics_coef * dynamics + cfg.wm_reward_coef * rewards
        return WorldModelLoss(total, dynamics, rewards, mean(latent_mse), weight.sum())

    def train_world_model(self, source: SequenceSource, steps: int) -> dict[str, torch.Tensor]:
        """Warm-up or pretraining, called by the host: `steps` world-model updates on batches of `pwm.wm_batch`
        sub-trajectories from `source` (the replay buffer or an offline dataset). Marks the agent warmed up if any
        sampled window was valid (one host read). Returns mean losses and grad norm (0-d device tensors)."""
        metrics = self.world_model_steps(source, steps)
        valid_rows = metrics.pop("valid_rows")
        if steps > 0 and bool(valid_rows > 0):
            self.warmed_up = True
        return metrics

    def world_model_steps(self, source: SequenceSource, steps: int) -> dict[str, torch.Tensor]:
        """The epoch's world-model phase: `steps` updates, no host reads. Mean losses, latent MSE and grad norm,
        plus `valid_rows` (sampled rows that were real windows)."""
        if steps < 0:
            raise ValueError(f"world-model steps must be >= 0, got {steps}")
        # The epoch's phase (the replay buffer, `wm_steps` updates) is captured; warm-up/pretraining stay eager.
        if self.graphs is not None and isinstance(source, ReplayBuffer) and steps == self.config.pwm.wm_steps:
            return self.graphs.run(  # type: ignore[return-value]
                ("world_model", source, steps), lambda: self._world_model_steps(source, steps)
            )
        return self._world_model_steps(source, steps)

    def _world_model_steps(self, source: SequenceSource, steps: int) -> dict[str, torch.Tensor]:
        cfg = self.config.pwm
        totals = torch.zeros(5, device=self.device)
        valid_rows = torch.zeros((), device=self.device)
        params = list(self.world_model.parameters())
        for _ in range(steps):
            losses = self.world_model_loss(source.sample(cfg.wm_batch, self.generator))
            grad_norm = self._optimize(self.wm_optimizer, params, losses.total, cfg.wm_grad_clip)
            totals += torch.stack([*(x.detach() for x in losses[:4]), grad_norm])
            valid_rows += losses.valid_rows
        totals = totals / max(steps, 1)
        names = ("wm_loss", "wm_dynamics_loss", "wm_reward_loss", "wm_latent_mse", "wm_grad_norm")
        return {**dict(zip(names, totals, strict=True)), "valid_rows": valid_rows}

    # ------------------------------------------------------------------------------------------------------------
    # Acting, optimisation helpers, state
    # ------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for real observations: `tanh(mu(E(o)))`, or a sample of the training policy (this draws from
        the agent's generator)."""
        z = self.world_model.encode(obs)
        return self.actor.act(z) if deterministic else self.actor.sample(z, self.generator)

    def learning_rates(self, progress: float) -> dict[str, float]:
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {progress}")
        cfg = self.config.pwm

        def decay(start: float, end: float) -> float:
            return start + (end - start) * progress

        return {
            "actor": decay(cfg.actor_lr, cfg.lr_min),
            "critic": decay(cfg.critic_lr, cfg.lr_min),
            "wm": decay(cfg.wm_lr, cfg.wm_lr_min),
        }

    def set_learning_rates(self, progress: float) -> dict[str, float]:
        lrs = self.learning_rates(progress)
        for name, optimizer in (
            ("actor", self.actor_optimizer),
            ("critic", self.critic_optimizer),
            ("wm", self.wm_optimizer),
        ):
            for group in optimizer.param_groups:
                set_lr(group, lrs[name])  # in place where a captured graph holds the lr tensor
        return lrs

    @staticmethod
    def _optimize(
        optimizer: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor, clip: float
    ) -> torch.Tensor:
        """One step on `params` only (gradients are accumulated into nothing else); returns the pre-clip norm."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        norm = clip_grad_norm_(params, clip)
        optimizer.step()
        return norm.detach()

    def parameter_counts(self) -> dict[str, int]:
        counts = {
            name: sum(p.numel() for p in getattr(self, name).parameters())
            for name in ("world_model", "actor", "critic")
        }
        counts["total"] = sum(counts.values())
        return counts

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Models, running statistics, optimisers and the generator: everything a bitwise resume needs."""
        return {
            "modules": super().state_dict(*args, **kwargs),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "wm_optimizer": self.wm_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "warmed_up": self.warmed_up,
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> Any:  # type: ignore[override]
        required = {"modules", "actor_optimizer", "critic_optimizer", "wm_optimizer", "generator", "warmed_up"}
        missing = required - set(state)
        if missing:
            raise KeyError(f"PWM.load_state_dict: missing {sorted(missing)}")
        result = super().load_state_dict(state["modules"], strict=strict)
        for name in ("actor_optimizer", "critic_optimizer", "wm_optimizer"):
            optimizer = getattr(self, name)
            optimizer.load_state_dict(state[name])
            # The saved groups carry the saving run's mode (capturable, tensor lr, step counters' device); use this
            # agent's.
            if self.graphs is not None:
                make_capturable(optimizer, self.device)
            else:
                make_eager(optimizer)
        self.generator.set_state(state["generator"].cpu())
        if self.graphs is not None:  # the optimisers' state tensors are new objects: capture again
            self.graphs.reset()
        self.warmed_up = bool(state.get("warmed_up", False))
        return result
