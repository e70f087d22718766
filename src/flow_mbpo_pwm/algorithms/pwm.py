"""PWM — policy learning through a learned world model (Georgiev et al., ICLR 2025), one epoch top to bottom.

`PWM.epoch` reads like the paper: imagine H steps with the world model while the real env takes the same actions
(data only) -> actor step (first-order gradients through the model) -> critic steps (TD(lambda) on detached
latents) -> world-model steps (on replayed sub-trajectories). The world model's dynamics are deterministic or flow
matching (models/dynamics.py); nothing here depends on which.

Choices, and where they differ from the public PWM code (docs: ../shared/specs/pwm.md):
- Terminal value discount is gamma^H: a segment of length L (ended by the rollout's end or a real done) contributes
  `sum_{t<L} gamma^t r_t + gamma^L V(z_L)`. The public code multiplies the value by one extra gamma (gamma^(H+1)
  at the rollout's end) — a quirk we do not copy. `pwm.actor_value_coef` weighs the value term (1: PWM's).
- The actor sees `sg(z)` (PWM's `detach: True`): its gradients reach it only through the actions, via the
  dynamics, the reward head and the critic. The loss is backpropagated into the actor's parameters only
  (`backward(inputs=...)`), so it never touches world-model or critic parameters (tested).
- The real env takes the imagined actions, as PWM does: within a rollout it is driven open loop through the model.
  `pwm.env_actions: observed` drives it with the actor's own closed-loop policy instead (the same noise around
  `mu(E(o_i))`); the imagination is unchanged.
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

A stack of seeds: `PWM(..., seeds=(s1, ..., sS))` trains S seeds of one cell at once (a lone run is S = 1, the same
code). Each seed is a `SeedAgent` built from the ordinary modules (the single definition of every network) with its
own initial weights (`torch.manual_seed(seed)`), generator, Adam state, running statistics and replay buffer; its
parameters are views of the stack's `[S, ...]` tensors (`torch.func.stack_module_state`). The epoch's per-seed math
(`_imagine_step`, `_critic_loss`, `_dynamics_step`, `_world_model_terms`, ...) is written for one seed and run on
all through `functional_call` under `vmap` (algorithms/stack.py); every random number is drawn per seed from its
generator outside vmap and passed in (`draw`). Losses are per seed (`[S]`, summed for one backward: seeds share no
parameter), gradients are clipped per seed, and only the seeds that train this epoch (warmed up, not stopped) are
stepped (one Adam update of all seeds per network, algorithms/stacked_adam.py); the others only collect, drawing
nothing from their generators, exactly as they would alone. The env is one batched env whose block s holds seed s's
envs; a seed whose actions went non-finite acts with zero torque there (the caller's guard stops it) so its siblings
run on.

Capture-friendliness: static shapes and loop lengths, RNG from the seeds' generators (torch generators on the
device), metrics returned as `[S]` device tensors, no `.item()` or tensor-valued Python branches in the epoch (the
set of training seeds is a host value: a captured phase is keyed by it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from flow_mbpo_pwm.algorithms.graphs import Call, PhaseGraphs
from flow_mbpo_pwm.algorithms.returns import td_lambda_targets
from flow_mbpo_pwm.algorithms.running_stats import RunningMeanStd
from flow_mbpo_pwm.algorithms.stack import PerSeed, clip_grad_norm_per_seed, stack_draws
from flow_mbpo_pwm.algorithms.stacked_adam import StackedAdam
from flow_mbpo_pwm.config import TrainConfig
from flow_mbpo_pwm.data.replay import ReplayBatch, ReplayBuffer
from flow_mbpo_pwm.models.actor import Actor, saturation_penalty
from flow_mbpo_pwm.models.critic import CriticEnsemble
from flow_mbpo_pwm.models.world_model import WorldModel, rollout_latents


class SequenceSource(Protocol):
    """What the world model trains from: the replay buffer, or an offline dataset with the same `sample`; its
    `observations` are what a seed's latent statistics are fitted on when it warms up."""

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplayBatch: ...

    def observations(self) -> torch.Tensor: ...


class Rollout(NamedTuple):
    """One imagined rollout of H steps for N envs of each of S seeds (everything but `objective` is detached)."""

    objective: torch.Tensor  # [S, N] per env: sum over closed segments of sum_t gamma^t r_t + c gamma^L V(z_L)
    latents: torch.Tensor  # [H, S, N, latent] z_0 .. z_{H-1}
    rewards: torch.Tensor  # [H, S, N] model rewards (normalised units)
    # [H, S, N] min-ensemble V(z_{i+1}), zero where the real env terminated (the critic's bootstraps; with
    # `pwm.critic_bootstrap: real`, V(E(o_{i+1})) of the real env's next observation where a segment closes)
    next_values: torch.Tensor
    dones: torch.Tensor  # [H, S, N] bool: the real env ended its episode at step i
    episodes: torch.Tensor  # training-episode statistics of the real env ([S], float64)
    episode_return_sum: torch.Tensor
    episode_return_max: torch.Tensor
    # [S, N] per env: mean over the H steps of the saturation penalty (`models.actor.saturation_penalty`: -log tanh'(u)
    # over the action entries beyond `pwm.actor_saturation_threshold`; >= 0, with `objective`'s graph), when
    # `pwm.actor_saturation_coef` > 0; else zeros
    saturation: torch.Tensor
    # [S, N] per env: mean over the H - 1 step pairs of the squared change of the deterministic action tanh(mu(z)),
    # mean over action entries (pairs across a reset count 0; with `objective`'s graph), when
    # `pwm.actor_smoothness_coef` > 0; else zeros
    smoothness: torch.Tensor


class WorldModelLoss(NamedTuple):
    total: torch.Tensor
    dynamics: torch.Tensor  # latent MSE (deterministic) or rectified-flow loss (flow), discounted
    reward: torch.Tensor
    latent_mse: torch.Tensor  # imagined vs encoded latents, undiscounted (comparable across dynamics)
    valid_rows: torch.Tensor


NETWORKS = ("world_model", "actor", "critic")
LATENT_STATS_ROWS = 100_000  # observations the latent's statistics are fitted on (`SeedAgent.fit_latent_stats`)
LATENT_STATS_CHUNK = 16_384  # encoded at a time
OPTIMIZERS = {"actor": "actor_optimizer", "critic": "critic_optimizer", "world_model": "wm_optimizer"}


class SeedAgent(nn.Module):
    """One seed: its networks (the single definition of each), running statistics, generator, optimisers and
    warm-up flag — what one run's checkpoints and state hold (`state_dict`, the format of a lone run). Inside a
    `PWM` stack its parameters and statistics share storage with the stack's `[S, ...]` tensors, so the stack's
    updates are its updates and reading it (validation, checkpoints) copies nothing."""

    def __init__(self, obs_dim: int, act_dim: int, config: TrainConfig, seed: int, device: torch.device):
        super().__init__()
        cfg = config.pwm
        self.config, self.device, self.seed = config, device, seed
        self.obs_dim, self.act_dim = obs_dim, act_dim
        latent = config.world_model.latent_dim
        with torch.random.fork_rng(devices=[]):  # initial weights: a function of the seed alone
            torch.manual_seed(seed)
            self.world_model = WorldModel(obs_dim, act_dim, config.world_model, config.dynamics)
            standardize = cfg.standardizes_latent
            self.actor = Actor(latent, act_dim, cfg.actor_units, cfg.init_logstd, cfg.min_logstd, standardize)
            self.critic = CriticEnsemble(latent, cfg.critic_units, cfg.num_critics, standardize_input=standardize)
        self.rew_rms = RunningMeanStd(())
        self.ret_rms = RunningMeanStd(())
        # Per-env return of the real env's rewards in the episode running now (training-episode statistics).
        self.register_buffer("episode_return", torch.zeros(config.env.num_envs, dtype=torch.float64))
        self.to(device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.warmed_up = False  # host flag: the world model has been trained; until then epochs only collect

    def draw_step(self, n: int, generator: torch.Generator) -> dict[str, Any]:
        """The random inputs of one imagined step of `n` envs, in the order a lone `Actor.sample` and
        `WorldModel.next` draw them: the actor's noise, then the dynamics' draws."""
        noise = torch.randn(n, self.act_dim, generator=generator, device=self.device)
        return {"action": noise, "dynamics": self.world_model.dynamics.draw_next((n,), generator)}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """This seed's actions for real observations: `tanh(mu(E(o)))`, or a sample of the training policy (this
        draws from the seed's generator)."""
        z = self.world_model.encode(obs)
        return self.actor.act(z) if deterministic else self.actor.sample(z, self.generator)

    @torch.no_grad()
    def fit_latent_stats(self, obs: torch.Tensor) -> int:
        """With `pwm.latent_norm: standardize`, the actor's and the critics' latent statistics: this seed's encoder
        on `obs [n, obs_dim]` (at most `LATENT_STATS_ROWS` of them, evenly spread). Nothing otherwise. Returns how
        many observations they were fitted on (0: none)."""
        if not self.config.pwm.standardizes_latent:
            return 0
        if len(obs) == 0:
            raise ValueError("fit_latent_stats: no observations to fit the latent's statistics on")
        z = latent_sample(lambda chunk: self.world_model.encode(chunk.to(self.device)), obs)
        self.actor.input_norm.fit(z)
        self.critic.input_norm.fit(z)
        return len(z)

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
        result = super().load_state_dict(state["modules"], strict=strict)  # copies into the stack's storage
        for name in OPTIMIZERS.values():
            getattr(self, name).load_state_dict(state[name])  # copies into the stack's Adam state
        self.generator.set_state(state["generator"].cpu())
        self.warmed_up = bool(state.get("warmed_up", False))
        return result


def latent_sample(encode: Callable[[torch.Tensor], torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
    """`encode` of at most `LATENT_STATS_ROWS` of `obs`, evenly spread (every k-th from the first), encoded
    `LATENT_STATS_CHUNK` at a time: the latents a seed's latent statistics are fitted on."""
    rows = obs[:: -(-len(obs) // LATENT_STATS_ROWS)]
    return torch.cat([encode(chunk) for chunk in rows.split(LATENT_STATS_CHUNK)])


def _share_storage(module: nn.Module, name: str, stacked: torch.Tensor, index: int) -> None:
    """Make `module`'s tensor `name` (a parameter or buffer) the view `stacked[index]`."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    view = stacked.detach()[index]
    if leaf in owner._parameters:
        setattr(owner, leaf, nn.Parameter(view))
    else:
        setattr(owner, leaf, view)


class PWM(nn.Module):
    """PWM for a stack of S seeds of one cell (`seeds`, default the config's one seed): a lone run is the stack
    with S = 1. `members[s]` is seed s's `SeedAgent`; the epoch runs every seed at once (algorithms/stack.py)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: TrainConfig,
        device: str | torch.device,
        cuda_graphs: bool | None = None,
        seeds: Sequence[int] | None = None,
    ):
        super().__init__()
        cfg = config.pwm
        if cfg.normalize_obs:
            raise ValueError("pwm.normalize_obs=True is not supported: observations enter the encoder raw")
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"PWM: obs_dim ({obs_dim}) and act_dim ({act_dim}) must be >= 1")
        seeds = (config.run.seed,) if seeds is None else tuple(int(s) for s in seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"PWM: seeds must be distinct and at least one, got {list(seeds)}")
        self.config = config
        self.device = torch.device(device)
        self.obs_dim, self.act_dim, self.num_envs = obs_dim, act_dim, config.env.num_envs
        self.seeds, self.num_seeds = seeds, len(seeds)
        S, dev = self.num_seeds, self.device
        self.members = nn.ModuleList(SeedAgent(obs_dim, act_dim, config, seed, dev) for seed in seeds)
        # The stack: each network's parameters [S, ...] (autograd leaves the updates differentiate), the running
        # statistics [S] and the training-episode returns [S, N]; every member's tensors become views of its slice.
        # Saved buffers of the networks (the latent's statistics, `pwm.latent_norm`) are stacked too, each seed's its
        # own, and left out of the optimisers.
        self.stacked: dict[str, torch.Tensor] = {}
        params_of: dict[str, list[torch.Tensor]] = {}
        for net in NETWORKS:
            modules = [getattr(m, net) for m in self.members]
            params, buffers = torch.func.stack_module_state(modules)
            saved = {name: buffers[name] for name in modules[0].state_dict() if name in buffers}
            params_of[net] = list(params.values())
            for name, tensor in {**params, **saved}.items():
                self.stacked[f"{net}.{name}"] = tensor
                for s, member in enumerate(self.members):
                    _share_storage(getattr(member, net), name, tensor, s)
        self.rew_stats = RunningMeanStd((), seeds=S).to(dev)
        self.ret_stats = RunningMeanStd((), seeds=S).to(dev)
        self.episode_returns = torch.zeros(S, self.num_envs, dtype=torch.float64, device=dev)
        for s, member in enumerate(self.members):
            for stats, rms in ((self.rew_stats, member.rew_rms), (self.ret_stats, member.ret_rms)):
                for name in ("mean", "var", "count"):
                    _share_storage(rms, name, getattr(stats, name), s)
            _share_storage(member, "episode_return", self.episode_returns, s)
        self._state = {f"m.{name}": tensor for name, tensor in self.stacked.items()}
        # The imagination differentiates through the world model and the critic into the actions only, so their
        # parameters enter it detached (views of the same storage): a compiled step then computes no gradients
        # for them, which the actor's backward would throw away.
        self._acting_state = {k: t if k.startswith("m.actor.") else t.detach() for k, t in self._state.items()}
        # Where `run.compile` asks, the per-step pieces of every phase are compiled, each one graph reused at every
        # step of the horizon or minibatch: the world-model loss's rollout step and its terms (flow: 85-92% of the
        # world-model phase's kernels), the imagination's step (with the actor penalties' terms where they are on:
        # eager, it cost ~7% of a 5M deterministic epoch) and value, and the critic's minibatch loss (its
        # ensemble's LayerNorm and Mish chains: the critic phase is ~30% of a one-seed deterministic epoch).
        self._wm_terms = partial(_world_model_terms, gamma=cfg.gamma, coefs=(cfg.wm_dynamics_coef, cfg.wm_reward_coef))
        steps = (_dynamics_step, self._wm_terms, _imagine_step, _imagine_step_with_terms, _value, _critic_loss)
        self._per_seed = PerSeed(self.members[0], compiled=steps if config.run.compile else ())
        self._net_params = params_of
        # One Adam per network over the stacked parameters (algorithms/stacked_adam.py); each member's optimisers
        # are its seed's views of it (a lone run's torch.optim.Adam state). The world model's betas are torch's
        # defaults, as in PWM.
        settings = {
            "actor": (cfg.actor_lr, cfg.betas),
            "critic": (cfg.critic_lr, cfg.betas),
            "world_model": (cfg.wm_lr, (0.9, 0.999)),
        }
        self.adams: dict[str, StackedAdam] = {}
        for net, (lr, betas) in settings.items():
            seed_params = [list(getattr(m, net).parameters()) for m in self.members]
            self.adams[net] = StackedAdam(self._net_params[net], seed_params, lr, betas)
            for member, optimizer in zip(self.members, self.adams[net].seeds, strict=True):
                setattr(member, OPTIMIZERS[net], optimizer)
        # Draws of seeds that do not train in a phase (not warmed up yet, or stopped) come from this generator, so
        # their own streams advance exactly as in a lone run.
        self.scratch_generator = torch.Generator(device=dev)
        self.stopped = [False] * S  # host flags: seeds stopped by the caller (e.g. the collapse guard)
        self._logstd_floor = cfg.min_logstd  # the actors' floor as built (`set_logstd_floor`)
        self._masks: dict[tuple[bool, ...], torch.Tensor] = {}
        # On CUDA the critic and world-model phases run as captured CUDA graphs (algorithms/graphs.py); on the CPU
        # everything stays eager. `cuda_graphs=None` follows the config (`run.cuda_graphs`, default on).
        if cuda_graphs is None:
            cuda_graphs = config.run.cuda_graphs
        generators = [*(m.generator for m in self.members), self.scratch_generator]
        self.graphs = PhaseGraphs(dev, generators) if cuda_graphs and dev.type == "cuda" else None
        self.concurrent_phases = True  # captured critic and world-model phases side by side (`critic_and_world_model`)
        # Host flag, set by `train` before the first epoch (`pwm.freeze_encoder`, a pretrained world model only):
        # the world-model loss does not reach the encoder. Pretraining leaves it off.
        self.encoder_frozen = False

    # ------------------------------------------------------------------------------------------------------------
    # The epoch
    # ------------------------------------------------------------------------------------------------------------

    def epoch(
        self, env: Any, obs: torch.Tensor, buffers: Any, progress: float, wm_steps: int | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One PWM epoch of every seed from the real observations `obs [S*N, obs_dim]` (seed s: rows s*N..);
        `buffers`: one replay buffer per seed (or the buffer, for S = 1). Returns the env's next observations and
        the epoch's metrics (`[S]` device tensors). Seeds that do not train (`training_seeds`) only collect."""
        cfg = self.config.pwm
        if env.num_envs != self.num_seeds * self.num_envs:
            raise ValueError(
                f"PWM.epoch: env has {env.num_envs} envs, the agent was built for {self.num_envs} per seed x "
                f"{self.num_seeds} seeds"
            )
        buffers = self._per_seed_sources(buffers)
        lrs = self.set_learning_rates(progress)
        training = self.training_seeds()

        # 1-2. Imagine H steps from E(o) while the real env takes the same actions (collect-only before warm-up).
        # With CUDA graphs and an env that can step under capture, 1-3 run as one captured graph.
        captured = any(training) and self.graphs is not None and getattr(env, "supports_torch_graph_capture", False)
        if captured:
            rollout, obs, actor_metrics = self._imagine_and_act_captured(env, obs, buffers, training)
        else:
            rollout, obs = self.imagine(env, obs, buffers, with_grad=any(training))
        metrics = self._metrics(lrs, rollout)
        if not any(training):
            return obs, metrics
        if captured:
            metrics.update(actor_metrics)
        else:
            # 3. Actor: one step on the imagined objective, gradients through the model into the actions only.
            metrics["actor_loss"], metrics["actor_grad_norm"] = self.actor_step(
                rollout.objective, training, rollout.saturation, rollout.smoothness, buffers
            )
            # Free the imagination's autograd graph: it holds the critic's and world model's gradient accumulators,
            # created on the caller's stream, which a captured phase must not inherit (graphs.py).
            rollout = _detached(rollout)
        # 4. Critic: TD(lambda) regression on the rollout's detached latents.
        # 5. World model: `wm_steps` steps on replayed sub-trajectories.
        # The two share no state: captured, they run side by side (`critic_and_world_model`).
        critic, wm_metrics = self.critic_and_world_model(
            rollout, buffers, cfg.wm_steps if wm_steps is None else wm_steps, training
        )
        metrics["critic_loss"], metrics["critic_grad_norm"] = critic
        wm_metrics.pop("valid_rows")
        metrics.update(wm_metrics, updated=self._mask(training).to(torch.float32))
        # Seeds that only collected report what a collect-only epoch reports: zero losses and grad norms.
        mask = self._mask(training)
        for name in LOSS_METRICS:
            metrics[name] = torch.where(mask, metrics[name], 0.0)
        return obs, metrics

    def imagine(
        self, env: Any, obs: torch.Tensor, buffers: Any, with_grad: bool = True
    ) -> tuple[Rollout, torch.Tensor]:
        """H imagined steps from `z_0 = E(o)`; the real env takes the same actions (or, with `pwm.env_actions:
        observed`, the same noise around the actor's mean on its own latent) and its transitions go to each
        seed's buffer. Returns the rollout (fields `[S, ...]` / `[H, S, ...]`) and the env's observations after the
        H steps. A seed whose actions went non-finite acts with zero torque (the guard stops it; its siblings run
        on)."""
        cfg = self.config.pwm
        H, gamma, S, N, dev = cfg.horizon, cfg.gamma, self.num_seeds, self.num_envs, self.device
        buffers = self._per_seed_sources(buffers)
        latents, model_rewards, next_values, dones = [], [], [], []
        objective = torch.zeros(S, N, device=dev)  # per env: closed segments' sum_t gamma^t r_t + c gamma^L V(z_L)
        saturation = torch.zeros(S, N, device=dev)  # per env: sum_t of -log tanh'(u_t) (with a saturation penalty)
        smoothness = torch.zeros(S, N, device=dev)  # per env: sum_t of |tanh(mu_t) - tanh(mu_{t-1})|^2 / act_dim
        penalised = cfg.actor_saturation_coef > 0 or cfg.actor_smoothness_coef > 0
        previous: tuple[torch.Tensor, torch.Tensor] | None = None  # the last step's tanh(mu) and done
        segment_return = torch.zeros(S, N, device=dev)  # discounted model rewards of the open segment
        discount = torch.ones(S, N, device=dev)  # gamma^t within the open segment
        episodes = torch.zeros(S, dtype=torch.float64, device=dev)
        episode_sum = torch.zeros(S, dtype=torch.float64, device=dev)
        episode_max = torch.full((S,), -math.inf, dtype=torch.float64, device=dev)
        obs = obs.reshape(S, N, -1)
        with torch.no_grad():
            z = self.per_seed(_encode, obs)
        z_observed = z  # E(o_i) of the env's own observation (read by `pwm.env_actions: observed`)
        with torch.set_grad_enabled(with_grad):  # collect-only epochs build no graph
            for i in range(H):
                draws = self.draw(lambda s, g: self.members[s].draw_step(N, g))
                if penalised:
                    step = self._per_seed(self._acting_state, _imagine_step_with_terms, z, draws)
                    action, reward, z_next, log_slope, mean_action = step
                    if cfg.actor_saturation_coef > 0:
                        saturation = saturation + saturation_penalty(log_slope, cfg.actor_saturation_threshold)
                    if cfg.actor_smoothness_coef > 0 and previous is not None:
                        change = (mean_action - previous[0]).pow(2).mean(-1)
                        smoothness = smoothness + torch.where(previous[1], 0.0, change)
                else:
                    action, reward, z_next = self._per_seed(self._acting_state, _imagine_step, z, draws)
                env_action = action.detach()
                if cfg.env_actions == "observed" and i > 0:  # at i = 0 the two are the same: z_0 = E(o_0)
                    with torch.no_grad():
                        env_action = self._per_seed(self._acting_state, _observed_action, z_observed, draws)
                taken = torch.nan_to_num(env_action, nan=0.0, posinf=0.0, neginf=0.0)
                next_obs, env_reward, terminated, truncated, info = env.step(taken.reshape(S * N, -1))
                next_obs, final_obs = next_obs.reshape(S, N, -1), info["final_obs"].reshape(S, N, -1)
                env_reward, terminated, truncated = (x.reshape(S, N) for x in (env_reward, terminated, truncated))
                done = terminated | truncated
                if cfg.actor_smoothness_coef > 0:
                    previous = (mean_action, done)
                for s, buffer in enumerate(buffers):
                    buffer.add(obs[s], taken[s], env_reward[s], final_obs[s], terminated[s], truncated[s])
                self.rew_stats.update(env_reward)
                with torch.no_grad():  # training-episode statistics of the real env rewards
                    self.episode_returns += env_reward.double()
                    episodes += done.sum(1)
                    episode_sum += torch.where(done, self.episode_returns, 0.0).sum(1)
                    ended = torch.where(done, self.episode_returns, -math.inf).amax(1)
                    episode_max = torch.maximum(episode_max, ended)
                    self.episode_returns.masked_fill_(done, 0.0)
                # V(z_{i+1}), zero after a termination
                value_next = self._per_seed(self._acting_state, _value, z_next) * (~terminated)
                segment_return = segment_return + discount * reward
                discount = discount * gamma
                closes = done if i < H - 1 else torch.ones_like(done)  # the rollout's end closes every segment
                closed = segment_return + cfg.actor_value_coef * discount * value_next
                objective = objective + torch.where(closes, closed, 0.0)
                segment_return = torch.where(closes, 0.0, segment_return)
                discount = torch.where(closes, 1.0, discount)
                latents.append(z.detach())
                model_rewards.append(reward.detach())
                critic_next = value_next.detach()
                if cfg.critic_bootstrap == "real":  # where a segment closes, the critic bootstraps from E(o_{i+1})
                    with torch.no_grad():
                        z_final = self.per_seed(_encode, final_obs)
                        real_next = self._per_seed(self._acting_state, _value, z_final) * (~terminated)
                    critic_next = torch.where(closes, real_next, critic_next)
                next_values.append(critic_next)
                dones.append(done)
                with torch.no_grad():  # envs that ended restart their imagined latent from the new real observation
                    z_reset = self.per_seed(_encode, next_obs)
                z, z_observed = torch.where(done.unsqueeze(-1), z_reset, z_next), z_reset
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
            saturation=saturation / H,
            smoothness=smoothness / max(H - 1, 1),
        )
        return rollout, obs.reshape(S * N, -1)

    def _imagine_and_act_captured(
        self, env: Any, obs: torch.Tensor, buffers: list[Any], training: tuple[bool, ...]
    ) -> tuple[Rollout, torch.Tensor, dict[str, torch.Tensor]]:
        """Steps 1-3 (imagination with the real env, actor step) as one captured phase; the actor's std is read
        before its update, as `_metrics` does in the eager path."""

        def imagine_and_act(obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            actor_std = self.per_seed(_actor_std)
            rollout, next_obs = self.imagine(env, obs, buffers, with_grad=True)
            loss, grad_norm = self.actor_step(
                rollout.objective, training, rollout.saturation, rollout.smoothness, buffers
            )
            return (*_detached(rollout), next_obs, loss, grad_norm, actor_std)

        added = [buffer.num_added for buffer in buffers]
        key = ("imagine_act", env, *buffers, training)
        out = self.graphs.run(key, imagine_and_act, obs, capture_error_mode="relaxed")
        for buffer, before in zip(buffers, added, strict=True):
            if buffer.num_added == before:  # a replay: the buffer's host-side count of adds did not run
                buffer.num_added += self.config.pwm.horizon
        fields = len(Rollout._fields)
        next_obs, loss, grad_norm, actor_std = out[fields:]
        actor_metrics = {"actor_loss": loss, "actor_grad_norm": grad_norm, "actor_std": actor_std}
        return Rollout(*out[:fields]), next_obs, actor_metrics

    def actor_step(
        self,
        objective: torch.Tensor,
        training: tuple[bool, ...] | None = None,
        saturation: torch.Tensor | None = None,
        smoothness: torch.Tensor | None = None,
        sources: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maximise the imagined objective `[S, N]` scaled by each seed's running std of objectives (ret_rms), minus
        `pwm.actor_saturation_coef` x the rollout's `saturation` `[S, N]` and `pwm.actor_smoothness_coef` x its
        `smoothness` where those are set, and `pwm.actor_consistency_coef` x `actor_consistency` on windows
        replayed from `sources` (each seed's buffer; required with that coefficient). Only the actor's parameters
        receive gradients; only `training` seeds are updated. Returns per-seed (loss, pre-clip grad norm)."""
        cfg = self.config.pwm
        training = self.live_seeds() if training is None else training
        self.ret_stats.update(objective.detach(), self._mask(training))
        loss = -(objective / self.ret_stats.std().to(objective.dtype).unsqueeze(1)).mean(1)
        for coef, penalty in ((cfg.actor_saturation_coef, saturation), (cfg.actor_smoothness_coef, smoothness)):
            if coef > 0 and penalty is not None:
                loss = loss + coef * penalty.mean(1)
        if cfg.actor_consistency_coef > 0:
            if sources is None:
                raise ValueError("actor_step: pwm.actor_consistency_coef needs the replay buffers (`sources`)")
            loss = loss + cfg.actor_consistency_coef * self.actor_consistency(sources, training)
        grad_norm = self._optimize("actor", loss, cfg.actor_grad_clip, training)
        for member, trains in zip(self.members, training, strict=True):
            if trains:
                member.actor.clamp_logstd_()
        return loss.detach(), grad_norm

    def actor_consistency(self, sources: Any, training: tuple[bool, ...] | None = None) -> torch.Tensor:
        """Per seed `[S]`: the mean over `wm_batch` windows replayed from its source (valid rows) and their steps
        h = 1..H of mean((tanh(mu(z_h)) - sg tanh(mu(E(o_h))))^2), z_h rolled by the world model from E(o_0) along
        the recorded actions; only the actor's parameters get its gradient (`pwm.actor_consistency_coef`). The
        windows and the dynamics' draws come from each `training` seed's generator."""
        cfg = self.config.pwm
        training = self.live_seeds() if training is None else training
        sources = self._per_seed_sources(sources)
        batch = self.draw(lambda s, g: sources[s].sample(cfg.wm_batch, g), training)
        horizon = batch.action.shape[2]
        dynamics = self.members[0].world_model.dynamics  # draws by shape only: any seed's module will do
        draws = self.draw(lambda s, g: [dynamics.draw_next((cfg.wm_batch,), g) for _ in range(horizon)], training)
        return self._per_seed(self._acting_state, _actor_consistency, batch, draws)

    def critic_step(
        self, rollout: Rollout, training: tuple[bool, ...] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TD(lambda) targets on the detached latents; `critic_iterations` shuffled passes of `critic_minibatches`
        minibatches, MSE of every ensemble member. Returns per-seed mean (loss, pre-clip grad norm)."""
        training = self.live_seeds() if training is None else training
        call = self._critic_call(rollout, training)
        if self.graphs is not None:
            return self.graphs.call(call)  # type: ignore[return-value]
        return call.fn(*call.inputs)

    def critic_and_world_model(
        self, rollout: Rollout, buffers: Any, wm_steps: int, training: tuple[bool, ...]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        """The epoch's critic phase (`critic_step`) and world-model phase (`world_model_steps`). They share no
        state and only the world model's draws random numbers once the critic's shuffles are drawn (first, as the
        critic drew them before the world model), so where both are captured they run side by side on two streams
        (algorithms/graphs.py), unless `concurrent_phases` is off: the same kernels on the same inputs."""
        buffers = self._per_seed_sources(buffers)
        if self.graphs is None or not self._world_model_captured(buffers, wm_steps) or not self.concurrent_phases:
            return self.critic_step(rollout, training), self.world_model_steps(buffers, wm_steps, training)
        critic = self._critic_call(rollout, training)
        world_model = Call(
            ("world_model", *buffers, wm_steps, training), lambda: self._world_model_steps(buffers, wm_steps, training)
        )
        wm_metrics, critic_out = self.graphs.side_by_side(world_model, critic)
        return critic_out, wm_metrics  # type: ignore[return-value]

    def _critic_call(self, rollout: Rollout, training: tuple[bool, ...]) -> Call:
        """The critic's phase on `rollout`, its shuffles drawn now (`critic_orders`), as a `Call`: it draws nothing
        itself, and is captured on lane 1, a stream of its own beside the world model's (lane 0), so the two can run
        side by side (`critic_and_world_model`)."""
        H, N = rollout.rewards.shape[0], rollout.rewards.shape[2]
        inputs = (rollout.latents, rollout.rewards, rollout.next_values, rollout.dones)
        orders = self.critic_orders(H * N, training)
        updates = partial(self._critic_updates, training=training)
        return Call(("critic", training), updates, (*inputs, orders), draws=False, lane=1)

    def critic_orders(self, rows: int, training: tuple[bool, ...]) -> torch.Tensor:
        """The critic's shuffles of its `rows` (H x N) training rows, one per pass and seed, `[passes, S, rows]`,
        each seed's from its generator (a captured phase of their own where the critic's is captured)."""

        def orders() -> tuple[torch.Tensor]:
            draw = partial(self.draw, lambda s, g: torch.randperm(rows, generator=g, device=self.device), training)
            return (torch.stack([draw() for _ in range(self.config.pwm.critic_iterations)]),)

        if self.graphs is not None:
            return self.graphs.run(("critic_orders", rows, training), orders)[0]  # type: ignore[index]
        return orders()[0]

    def _critic_updates(
        self,
        latents: torch.Tensor,
        rewards: torch.Tensor,
        next_values: torch.Tensor,
        dones: torch.Tensor,
        orders: torch.Tensor,
        training: tuple[bool, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config.pwm
        H, S, N = rewards.shape
        with torch.no_grad():  # per column: the seeds' envs side by side
            flat = (x.reshape(H, S * N) for x in (rewards, next_values, dones))
            targets = td_lambda_targets(*flat, cfg.gamma, cfg.lam).reshape(H, S, N)
        states = latents.transpose(0, 1).reshape(S, H * N, -1)
        targets = targets.transpose(0, 1).reshape(S, H * N)
        minibatches = min(cfg.critic_minibatches, H * N)
        size = (H * N) // minibatches
        total_loss = torch.zeros(S, device=self.device)
        total_norm = torch.zeros(S, device=self.device)
        for order in orders:
            for b in range(minibatches):
                idx = order[:, b * size : (b + 1) * size]
                batch = torch.take_along_dim(states, idx.unsqueeze(-1), dim=1)
                loss = self.per_seed(_critic_loss, batch, torch.take_along_dim(targets, idx, dim=1))
                total_norm += self._optimize("critic", loss, cfg.critic_grad_clip, training)
                total_loss += loss.detach()
        updates = cfg.critic_iterations * minibatches
        return total_loss / updates, total_norm / updates

    def _metrics(self, lrs: dict[str, float], rollout: Rollout) -> dict[str, torch.Tensor]:
        """The epoch's metrics; losses and grad norms start at zero (what a collect-only epoch reports)."""
        dev, S = self.device, self.num_seeds
        return {
            **{name: torch.zeros(S, device=dev) for name in LOSS_METRICS},
            **{f"{name}_lr": torch.full((S,), lr, device=dev) for name, lr in lrs.items()},
            "episodes_finished": rollout.episodes,
            "episode_return_sum": rollout.episode_return_sum,
            "episode_return_max": rollout.episode_return_max,
            "imagined_objective": rollout.objective.detach().mean(1),
            "actor_std": self.per_seed(_actor_std),
            "updated": torch.zeros(S, device=dev),
        }

    # ------------------------------------------------------------------------------------------------------------
    # World model
    # ------------------------------------------------------------------------------------------------------------

    def world_model_loss(self, batch: ReplayBatch, training: tuple[bool, ...] | None = None) -> WorldModelLoss:
        """Per seed, `L = (1/H) sum_t gamma^t [c_dyn dyn_t + c_rew (R(z_t, a_t) - r_t)^2]` over the batch's valid
        rows, rolling out from `z_0 = E(o_0)` with the model's own predictions (`_world_model_terms`); `c_dyn`,
        `c_rew` are `pwm.wm_dynamics_coef` and `pwm.wm_reward_coef` (1 and 1 by default, as PWM). `batch` carries
        a leading seed axis. Rewards are normalised by each seed's `rew_rms` (`pwm.reward_norm`); a flow's tau and
        noise are drawn from each seed's generator (`training` seeds; the others from the scratch generator)."""
        cfg = self.config.pwm
        reward = batch.reward
        if cfg.reward_norm != "none":
            center = cfg.reward_norm == "meanstd"
            reward = self.rew_stats.normalize(reward, cfg.reward_clip if center else None, center=center)
        rows, horizon = batch.action.shape[1:3]
        dynamics = self.members[0].world_model.dynamics  # draws by shape only: any seed's module will do
        draws = self.draw(lambda s, g: [dynamics.draw_loss((rows,), g) for _ in range(horizon)], training)
        obs, action, reward = (x.transpose(1, 2) for x in (batch.obs, batch.action, reward))  # [S, H(+1), B, ...]
        with torch.no_grad():
            targets = self.per_seed(_encode, obs[:, 1:])  # sg(E(o_{t+1}))
        z = self.per_seed(_encode, obs[:, 0])
        if self.encoder_frozen:  # `pwm.freeze_encoder`: no gradient reaches the encoder (its Adam steps are 0)
            z = z.detach()
        latents, step_losses = [], []
        for t in range(horizon):  # the rollout on the model's own predictions
            latents.append(z)
            step_loss, z = self.per_seed(_dynamics_step, z, action[:, t], targets[:, t], draws[t])
            step_losses.append(step_loss)
        latents, step_losses = torch.stack(latents, dim=1), torch.stack(step_losses, dim=1)  # [S, H, B, ...]
        predictions = torch.cat([latents[:, 1:], z.unsqueeze(1)], dim=1).detach()  # sg(z_1 .. z_H)
        terms = (latents, step_losses, predictions, action, reward, targets, batch.valid)
        losses = self.per_seed(self._wm_terms, *terms)
        return WorldModelLoss(*losses)

    def train_world_model(
        self, sources: Any, steps: int, seeds: Sequence[bool] | None = None
    ) -> dict[str, torch.Tensor]:
        """Warm-up or pretraining, called by the host: `steps` world-model updates of the seeds selected by `seeds`
        (default: every seed not stopped) on batches of `pwm.wm_batch` sub-trajectories from each seed's source
        (its replay buffer, or one offline dataset shared by all). Marks a selected seed warmed up if any of its
        sampled windows was valid (one host read), and then fits its latent's statistics on its source's
        observations (`SeedAgent.fit_latent_stats`). Returns per-seed mean losses and grad norm."""
        selected = self.live_seeds() if seeds is None else tuple(bool(x) for x in seeds)
        if len(selected) != self.num_seeds:
            raise ValueError(f"train_world_model: {len(selected)} seed flags for {self.num_seeds} seeds")
        metrics = self.world_model_steps(sources, steps, selected)
        valid_rows = metrics.pop("valid_rows").tolist()
        sources = self._per_seed_sources(sources)
        for member, source, chosen, rows in zip(self.members, sources, selected, valid_rows, strict=True):
            if steps > 0 and chosen and rows > 0:
                member.warmed_up = True
                member.fit_latent_stats(source.observations())
        return metrics

    def world_model_steps(
        self, sources: Any, steps: int, training: tuple[bool, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        """The epoch's world-model phase: `steps` updates of the `training` seeds, no host reads. Per-seed mean
        losses, latent MSE and grad norm, plus `valid_rows` (sampled rows that were real windows)."""
        if steps < 0:
            raise ValueError(f"world-model steps must be >= 0, got {steps}")
        training = self.live_seeds() if training is None else training
        sources = self._per_seed_sources(sources)
        if self.graphs is not None and self._world_model_captured(sources, steps):
            return self.graphs.run(  # type: ignore[return-value]
                ("world_model", *sources, steps, training), lambda: self._world_model_steps(sources, steps, training)
            )
        return self._world_model_steps(sources, steps, training)

    def _world_model_captured(self, sources: list[Any], steps: int) -> bool:
        """The epoch's phase (the replay buffers, `wm_steps` updates) is captured; warm-up/pretraining stay eager."""
        return all(isinstance(source, ReplayBuffer) for source in sources) and steps == self.config.pwm.wm_steps

    def _world_model_steps(self, sources: list[Any], steps: int, training: tuple[bool, ...]) -> dict[str, torch.Tensor]:
        cfg = self.config.pwm
        totals = torch.zeros(self.num_seeds, 5, device=self.device)
        valid_rows = torch.zeros(self.num_seeds, device=self.device)
        for _ in range(steps):
            batch = self.draw(lambda s, g: sources[s].sample(cfg.wm_batch, g), training)
            losses = self.world_model_loss(batch, training)
            grad_norm = self._optimize("world_model", losses.total, cfg.wm_grad_clip, training)
            totals += torch.stack([*(x.detach() for x in losses[:4]), grad_norm], dim=1)
            valid_rows += losses.valid_rows
        totals = totals / max(steps, 1)
        names = ("wm_loss", "wm_dynamics_loss", "wm_reward_loss", "wm_latent_mse", "wm_grad_norm")
        return {**dict(zip(names, totals.unbind(1), strict=True)), "valid_rows": valid_rows}

    # ------------------------------------------------------------------------------------------------------------
    # Seeds of the stack
    # ------------------------------------------------------------------------------------------------------------

    def per_seed(self, fn: Any, *args: Any) -> Any:
        """`fn(seed_agent, *args_s)` on every seed at once, with each seed's parameters (algorithms/stack.py)."""
        return self._per_seed(self._state, fn, *args)

    def draw(self, fn: Any, training: Sequence[bool] | None = None) -> Any:
        """`fn(s, generator)` for every seed s, stacked: seed s draws from its own generator, or — a seed not in
        `training` — from the scratch generator, leaving its own stream as a lone run that does not train."""
        return stack_draws(
            [
                fn(s, member.generator if training is None or training[s] else self.scratch_generator)
                for s, member in enumerate(self.members)
            ]
        )

    def live_seeds(self) -> tuple[bool, ...]:
        """The seeds not stopped: whom a direct call of a phase (`actor_step`, `critic_step`, `world_model_steps`,
        `train_world_model`) updates by default."""
        return tuple(not stop for stop in self.stopped)

    def training_seeds(self) -> tuple[bool, ...]:
        """Which seeds update this epoch: warmed up and not stopped."""
        return tuple(m.warmed_up and not stop for m, stop in zip(self.members, self.stopped, strict=True))

    def stop_seed(self, index: int) -> None:
        """Stop seed `index` (e.g. its models went non-finite): it no longer trains; its siblings are unaffected."""
        self.stopped[index] = True

    def _mask(self, flags: Sequence[bool]) -> torch.Tensor:
        key = tuple(bool(x) for x in flags)
        if key not in self._masks:
            self._masks[key] = torch.tensor(key, device=self.device)
        return self._masks[key]

    def _per_seed_sources(self, sources: Any) -> list[Any]:
        """One source per seed: a sequence of them, or one source shared by every seed."""
        if isinstance(sources, list | tuple):
            if len(sources) != self.num_seeds:
                raise ValueError(f"PWM: {len(sources)} buffers/sources for {self.num_seeds} seeds")
            return list(sources)
        return [sources] * self.num_seeds

    # ------------------------------------------------------------------------------------------------------------
    # Acting, optimisation helpers, state
    # ------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for real observations `[S*N', obs_dim]` (seed s: rows s*N'..): `tanh(mu(E(o)))`, or a sample of
        the training policy (this draws from each seed's generator). Seed by seed with its own modules, so a
        seed acts exactly as its saved policy checkpoint does (not a hot path: validation and evaluation)."""
        blocks = obs.reshape(self.num_seeds, -1, obs.shape[-1])
        return torch.cat([m.act(o, deterministic) for m, o in zip(self.members, blocks, strict=True)])

    def learning_rates(self, progress: float) -> dict[str, float]:
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {progress}")
        cfg = self.config.pwm

        def decay(start: float, end: float) -> float:
            return start + (end - start) * progress

        actor_frozen = progress < cfg.actor_delay_progress  # the first `actor_delay_epochs` epochs
        return {
            "actor": 0.0 if actor_frozen else decay(cfg.actor_lr, cfg.lr_min),
            "critic": decay(cfg.critic_lr, cfg.lr_min),
            "wm": decay(cfg.wm_lr, cfg.wm_lr_min),
        }

    def set_learning_rates(self, progress: float) -> dict[str, float]:
        lrs = self.learning_rates(progress)
        for net, name in (("actor", "actor"), ("critic", "critic"), ("world_model", "wm")):
            self.adams[net].set_lr(lrs[name])  # in place: a captured graph holds the lr tensor
        return lrs

    def set_logstd_floor(self, min_logstd: float) -> None:
        """Every seed's actor log-std floor (`PWMConfig.logstd_floor` of the epoch), in place where it changes: the
        captured phases and compiled steps read the tensor."""
        if min_logstd != self._logstd_floor:
            for member in self.members:
                member.actor.set_floor(min_logstd)
            self._logstd_floor = min_logstd

    def _optimize(self, net: str, loss: torch.Tensor, clip: float, training: Sequence[bool]) -> torch.Tensor:
        """One step of network `net` of every `training` seed on its loss (`loss [S]`; gradients are accumulated
        into nothing else), each seed's gradients clipped by their own norm; returns the pre-clip norms `[S]`."""
        params = self._net_params[net]
        for p in params:
            p.grad = None
        loss.sum().backward(inputs=params)
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]  # None: not reached (a frozen part)
        norms = clip_grad_norm_per_seed(grads, clip)
        self.adams[net].step(grads, self._mask(training))  # a seed that does not train is left exactly as it was
        return norms.detach()

    def parameter_counts(self) -> dict[str, int]:
        member = self.members[0]
        counts = {name: sum(p.numel() for p in getattr(member, name).parameters()) for name in NETWORKS}
        counts["total"] = sum(counts.values())
        return counts

    def seed_state_dict(self, index: int) -> dict[str, Any]:
        """Seed `index`'s state in the format of a lone run's agent state."""
        return self.members[index].state_dict()

    def load_seed_state_dict(self, index: int, state: dict[str, Any], strict: bool = True) -> Any:
        result = self.members[index].load_state_dict(state, strict=strict)
        # The Adam state is copied in place (the graphs' addresses stay valid); capture again all the same, as the
        # generators' states were set anew.
        if self.graphs is not None:
            self.graphs.reset()
        return result

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """A lone agent's state: models, running statistics, optimisers, generator (stacks: `seed_state_dict`)."""
        return self.seed_state_dict(self._lone_index())

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> Any:  # type: ignore[override]
        return self.load_seed_state_dict(self._lone_index(), state, strict=strict)

    # A lone agent (S = 1) reads as before: its networks, statistics, generator, optimisers and warm-up flag.
    def _lone_index(self) -> int:
        if self.num_seeds != 1:
            raise AttributeError(f"a stack of {self.num_seeds} seeds has no single agent: use members[s]")
        return 0

    world_model = property(lambda self: self.members[self._lone_index()].world_model)
    actor = property(lambda self: self.members[self._lone_index()].actor)
    critic = property(lambda self: self.members[self._lone_index()].critic)
    rew_rms = property(lambda self: self.members[self._lone_index()].rew_rms)
    ret_rms = property(lambda self: self.members[self._lone_index()].ret_rms)
    generator = property(lambda self: self.members[self._lone_index()].generator)
    actor_optimizer = property(lambda self: self.members[self._lone_index()].actor_optimizer)
    critic_optimizer = property(lambda self: self.members[self._lone_index()].critic_optimizer)
    wm_optimizer = property(lambda self: self.members[self._lone_index()].wm_optimizer)

    @property
    def warmed_up(self) -> bool:
        return self.members[self._lone_index()].warmed_up

    @warmed_up.setter
    def warmed_up(self, value: bool) -> None:
        self.members[self._lone_index()].warmed_up = bool(value)


LOSS_METRICS = (
    "actor_loss", "critic_loss", "wm_loss", "wm_dynamics_loss", "wm_reward_loss", "wm_latent_mse",
    "actor_grad_norm", "critic_grad_norm", "wm_grad_norm",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# One seed's computations (run on every seed at once by `PWM.per_seed`; random inputs are passed in)
# ----------------------------------------------------------------------------------------------------------------


def _encode(agent: SeedAgent, obs: torch.Tensor) -> torch.Tensor:
    return agent.world_model.encode(obs)


def _imagine_step(
    agent: SeedAgent, z: torch.Tensor, draws: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    action = agent.actor.sample(z.detach(), noise=draws["action"])  # a_i = tanh(pi(sg(z_i)) + noise)
    return action, *_model_step(agent, z, action, draws)


def _observed_action(agent: SeedAgent, z_observed: torch.Tensor, draws: dict[str, Any]) -> torch.Tensor:
    """`pwm.env_actions: observed`: the env's action from its own encoded observation, with the imagined step's
    noise."""
    return agent.actor.sample(z_observed, noise=draws["action"])


def _model_step(
    agent: SeedAgent, z: torch.Tensor, action: torch.Tensor, draws: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    wm = agent.world_model
    reward = wm.reward(z, action)  # r_i = R(z_i, a_i)
    z_next = wm.next(z, action, **draws["dynamics"])  # z_{i+1} = F(z_i, a_i)
    return reward, z_next


def _imagine_step_with_terms(
    agent: SeedAgent, z: torch.Tensor, draws: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_imagine_step` (bitwise the same action, reward and latent), the action entries' log tanh slopes and the
    deterministic action tanh(mu): the terms of the actor's penalties."""
    action, log_slope, mean_action = agent.actor.sample_with_terms(z.detach(), draws["action"])
    return action, *_model_step(agent, z, action, draws), log_slope, mean_action


def _actor_consistency(agent: SeedAgent, batch: ReplayBatch, draws: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """One seed's `PWM.actor_consistency` on its replayed `batch`."""
    wm, actor = agent.world_model, agent.actor
    with torch.no_grad():
        real = wm.encode(batch.obs)  # [B, H+1, latent]
        imagined = rollout_latents(wm, real[:, 0], batch.action, draws=draws)
        target = actor.act(real[:, 1:])
    error = (actor.act(imagined) - target).pow(2).mean((-1, -2))  # [B]
    valid = batch.valid.to(error.dtype)
    return (error * valid).sum() / valid.sum().clamp(min=1.0)


def _detached(rollout: Rollout) -> Rollout:
    """The rollout without the imagination's autograd graph (its other fields are detached already)."""
    return rollout._replace(
        objective=rollout.objective.detach(),
        saturation=rollout.saturation.detach(),
        smoothness=rollout.smoothness.detach(),
    )


def _value(agent: SeedAgent, z: torch.Tensor) -> torch.Tensor:
    return agent.critic.value(z)


def _critic_loss(agent: SeedAgent, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (agent.critic(states) - targets).pow(2).mean()


def _actor_std(agent: SeedAgent) -> torch.Tensor:
    return agent.actor.std().detach().mean()


def _dynamics_step(
    agent: SeedAgent, z: torch.Tensor, action: torch.Tensor, target: torch.Tensor, draws: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the world-model rollout: `dyn_t` (the latent MSE, deterministic, or the rectified-flow loss,
    flow, against the target latent) and the predicted next latent."""
    return agent.world_model.dynamics.loss(z, action, target, **draws)


def _world_model_terms(
    agent: SeedAgent,
    latents: torch.Tensor,
    step_losses: torch.Tensor,
    predictions: torch.Tensor,
    action: torch.Tensor,
    reward: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    gamma: float,
    coefs: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, ...]:
    """One seed's world-model loss from its `[H, B, ...]` rollout (`latents` z_0..z_{H-1}, `step_losses` dyn_t,
    `predictions` sg(z_1..z_H)) against `targets` sg(E(o_1..o_H)) and the normalised rewards: the total weighs the
    discounted dynamics and reward terms by `coefs` (dynamics, reward). Also reports the rollout's undiscounted
    latent MSE, which — unlike `dyn_t` — means the same for both dynamics (how far imagined latents are from
    encoded ones). Means over the valid rows. Returns the fields of `WorldModelLoss`."""
    horizon = action.shape[0]
    dynamics_loss = torch.zeros(action.shape[1], device=action.device)
    for t in range(horizon):
        dynamics_loss = dynamics_loss + gamma**t * step_losses[t]
    # The reward term on all rollout latents at once (one pass of the head instead of H), as one [H*B] batch.
    discounts = gamma ** torch.arange(horizon, device=action.device, dtype=dynamics_loss.dtype)
    rows = latents.flatten(0, 1), action.flatten(0, 1), reward.flatten(0, 1)
    per_step = agent.world_model.reward_head.loss(*rows).unflatten(0, (horizon, -1))
    reward_loss = (discounts.unsqueeze(1) * per_step).sum(0)
    latent_mse = (predictions - targets).pow(2).mean(-1).sum(0)
    weight = valid.to(dynamics_loss.dtype)
    denominator = horizon * weight.sum().clamp_min(1.0)

    def mean(per_row: torch.Tensor) -> torch.Tensor:
        return (per_row * weight).sum() / denominator

    dynamics, rewards = mean(dynamics_loss), mean(reward_loss)
    total = coefs[0] * dynamics + coefs[1] * rewards
    return total, dynamics, rewards, mean(latent_mse), weight.sum()
