"""Diagnostics that say where PWM's learning stalls, measured at validation time on held-out real data.

Three questions, each answered per imagined step h = 1..H:
- Does the world model predict latents better than doing nothing? `latent_errors`: roll out from `z_0 = E(o_0)`
  with the model's own predictions and compare with `E(o_h)`, next to the copy baseline that predicts `E(o_0)` for
  every h. A ratio near 1 means the dynamics have learned nothing the actor can use.
- Does the reward head score imagined latents right? The same rollout's `R(z_{h-1}, a_{h-1})` against the real
  reward `r_{h-1}`, in the units the world model regresses (`reward_units`). Step h = 1 is scored on an encoded
  latent, the later ones on imagined latents, so their growth is the cost of compounding latent error.
- Does the critic value imagined latents as it values the real ones? The same rollout's `V(z_h)` against
  `V(E(o_h))` (the critic's pessimistic value, the one the actor's objective adds at the rollout's last latent),
  next to the copy baseline's `V(E(o_0))`: how much the real value changes in h steps. The gradient check below
  sums rewards only, so a model whose reward gradient agrees with the env's can still steer the actor through a
  terminal value read off latents the env never reaches.
- Does the critic value real states as the env pays them? `critic_fit`: its value `V(E(o_t))` of the validation
  episodes' states against their discounted return-to-go, counted where the record holds the return's whole tail
  (an ended episode) or all but a negligible part of it: the explained variance and the mean bias. The actor's
  objective adds `gamma^H V(z_H)`; a critic that does not rank real states cannot steer it anywhere useful.
- Does the model's gradient point where the real env's does? `gradient_cosine`: the cosine between the model's
  gradient of the H-step discounted return `sum_t gamma^t r_t` with respect to the action sequence (autograd) and
  the real env's gradient of the same return (central finite differences from one saved state). The actor only
  ever sees the model's gradient; if it disagrees with the env's, better model losses do not help the policy.
- Which term of the actor's objective carries its update? `objective_split`: the gradient, over the actor's
  parameters, of the imagined rewards `sum_t gamma^t R(z_t, a_t)` and that of the critic's `gamma^H V(z_H)`, their
  norms and their cosine. The gradient check above covers the first term only; where the second is the larger and
  points elsewhere (cosine <= 0), the critic, not the world model's reward gradient, steers the actor.
- Does the policy's imagination pay what the env pays it? The same two terms' values, imagined with the policy
  acting on the model's own latents (its closed loop in the model: what the actor optimises and what the critic's
  targets are made of), against `real_terms`: the same policy's real H steps from the same starts and the critic
  at the real H-th state. The horizon errors above replay the recorded actions (open loop); here the policy acts
  on what the model imagines, so an imagined gait that falls apart within H steps shows as an imagined reward
  term below the real one (and a critic fitted to such imaginations below the real returns).
And two about the policy itself (`action_columns`). Does it act smoothly? `action_jitter`: the mean absolute change of
its action from one step to the next. A policy whose first-order gradients taught it to flip its torques every step
drives the joints at the env's step rate, and the real latents then alternate from step to step (so does the copy
baseline's error along the horizon). Is it saturated? `action_saturation`: the fraction of its action entries at
|tanh(mu)| >= 0.99 (|mu| >= 2.65), where tanh passes on at most 2% of a gradient: a saturated actor learns little
from first-order gradients, whatever the model's. (The Ant agents that stood longest had small actor gradients
until they left standing: docs/results/2026-12-01-det-10M. A standing agent's jitter is ~0 whatever the cause: its
observations barely change.) How hard does it push? `action_magnitude`: the mean |a| of its action entries; the
PPO reference's faster gaits push ever closer to the bounds (bench/action_cap.py). How far did the updates since the
last validation move it? `policy_shift`: the mean absolute change of its action on this validation's states against
the last validation's policy (its checkpoint); PWM's actor takes one Adam step per epoch whatever its gradient's size.

Held-out data: the validation episodes (validation env and seeds) of the deterministic policy `tanh(mu)`, recorded
on the device by `EpisodeRecorder` while validation runs. Not the exploration policy: its noise would be drawn from
the agent's generator and so change the training run; the data cover what the validated policy visits.

Pure functions over tensors and a world model (anything with `encode(o)`, `next(z, a, generator)`,
`reward(z, a)`) and, for the value columns, a value function `z -> V(z)`; no file IO. The only env code is
`JointStateReturns`, for envs that can be placed in a saved state (the Ant's `joint_state`/`set_joint_state`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

RewardUnits = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def reward_units(reward_norm: str, rew_rms: Any, reward_clip: float) -> RewardUnits:
    """Raw env rewards -> the units the world model regresses (mirrors `PWM.world_model_loss`)."""
    if reward_norm == "none":
        return identity
    center = reward_norm == "meanstd"
    return lambda r: rew_rms.normalize(r, reward_clip if center else None, center=center)


@contextlib.contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """Eval mode for the duration, restoring the previous mode (our models have no mode-dependent layers today;
    this keeps the diagnostics honest if one is added)."""
    was_training = getattr(module, "training", None)
    if was_training is not None:
        module.eval()
    try:
        yield
    finally:
        if was_training:
            module.train()


# ------------------------------------------------------------------------------------------------------------------
# Held-out real sequences
# ------------------------------------------------------------------------------------------------------------------


class EpisodeRecord(NamedTuple):
    """T steps of N envs, time-major."""

    obs: torch.Tensor  # [T, N, obs_dim] the observation each action was taken from
    actions: torch.Tensor  # [T, N, act_dim]
    rewards: torch.Tensor  # [T, N] raw env rewards
    next_obs: torch.Tensor  # [T, N, obs_dim] the observation after the step, pre-reset (info["final_obs"])
    dones: torch.Tensor  # [T, N] bool: the episode ended at this step


class StartStates(NamedTuple):
    """Saved env states for the gradient check: S starts, each with its open-loop action sequence."""

    obs: torch.Tensor  # [S, obs_dim]
    joint_q: torch.Tensor  # [S, coords]
    joint_qd: torch.Tensor  # [S, dofs]
    actions: torch.Tensor  # [S, H, act_dim] the actions the policy took from there
    obs_window: torch.Tensor | None = None  # [S, H, obs_dim] the observation each of those actions was taken from


class EpisodeRecorder:
    """Preallocated device buffers filled step by step: no host reads while validation runs. `blocks` > 1: the envs
    are a stack's seeds' validation envs, `num_envs / blocks` per seed, and `split` gives each seed's own recorder."""

    def __init__(
        self, steps: int, num_envs: int, obs_dim: int, act_dim: int, device: torch.device, blocks: int = 1
    ) -> None:
        if blocks < 1 or num_envs % blocks:
            raise ValueError(f"{num_envs} envs cannot be split into {blocks} equal blocks")

        def empty(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(steps, num_envs, *shape, dtype=dtype, device=device)

        self.record = EpisodeRecord(empty(obs_dim), empty(act_dim), empty(), empty(obs_dim), empty(dtype=torch.bool))
        # Per block: step -> (env of the block, q, qd). `joint_states` is the first (a lone run's only) block's.
        self.block_states: list[dict[int, tuple[int, torch.Tensor, torch.Tensor]]] = [{} for _ in range(blocks)]
        self.joint_states = self.block_states[0]

    def add(
        self,
        t: int,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        dones: torch.Tensor,
    ) -> None:
        for buffer, value in zip(self.record, (obs, actions, rewards, next_obs, dones), strict=True):
            buffer[t].copy_(value)

    def add_joint_state(self, t: int, env_index: int, joint_q: torch.Tensor, joint_qd: torch.Tensor) -> None:
        """The env state before step `t` of env `env_index` (joint coordinates and rates, one row)."""
        self.joint_states[t] = (env_index, joint_q[env_index].clone(), joint_qd[env_index].clone())

    def add_joint_states(self, t: int, joint_q: torch.Tensor, joint_qd: torch.Tensor) -> None:
        """The state before step `t` of one env per block (`joint_q` / `joint_qd`: every env's rows): at the k-th
        call env k mod the block's size, so each block keeps the states its seed's lone validation keeps."""
        size = joint_q.shape[0] // len(self.block_states)
        env = len(self.joint_states) % size
        for block, states in enumerate(self.block_states):
            row = block * size + env
            states[t] = (env, joint_q[row].clone(), joint_qd[row].clone())

    def split(self) -> list[EpisodeRecorder]:
        """One recorder per block: its envs' rows (contiguous copies, so a seed's diagnostics read the tensors its
        lone run reads) and its saved states. One block: this recorder."""
        if len(self.block_states) == 1:
            return [self]
        size = self.record.actions.shape[1] // len(self.block_states)
        parts = []
        for block, states in enumerate(self.block_states):
            part = copy.copy(self)
            rows = slice(block * size, (block + 1) * size)
            part.record = EpisodeRecord(*(field[:, rows].contiguous() for field in self.record))
            part.block_states = [states]
            part.joint_states = states
            parts.append(part)
        return parts

    def start_states(self, horizon: int) -> StartStates | None:
        """The saved states whose H following actions were recorded; None when there are none."""
        steps = self.record.actions.shape[0]
        kept = sorted((t, s) for t, s in self.joint_states.items() if t + horizon <= steps)
        if not kept:
            return None
        rec = self.record
        return StartStates(
            obs=torch.stack([rec.obs[t, e] for t, (e, _, _) in kept]),
            joint_q=torch.stack([q for _, (_, q, _) in kept]),
            joint_qd=torch.stack([qd for _, (_, _, qd) in kept]),
            actions=torch.stack([rec.actions[t : t + horizon, e] for t, (e, _, _) in kept]),
            obs_window=torch.stack([rec.obs[t : t + horizon, e] for t, (e, _, _) in kept]),
        )


def start_steps(episode_steps: int, horizon: int, count: int) -> list[int]:
    """`count` steps spread over the episode (not the first: every start state would be a fresh reset), each with
    H steps left; fewer when the episode is too short."""
    room = episode_steps - horizon
    if room < 0 or count < 1:
        return []
    return sorted({(k + 1) * room // (count + 1) for k in range(count)})


@torch.no_grad()
def first_episode_returns(
    env: Any, policy: Callable[[torch.Tensor], torch.Tensor], recorder: EpisodeRecorder | None = None,
    start_steps: tuple[int, ...] = (),
) -> torch.Tensor:  # fmt: skip
    """Return [num_envs] (float64, on the env's device) of every env's first episode from a fresh reset under the
    deterministic `policy(obs) -> action`, all envs in parallel. Every env finishes its first episode within
    `max_episode_steps` (truncation), so the loop has a fixed length and reads nothing on the host. `recorder` keeps
    every step on the device (the world-model diagnostics' held-out data) and, before each of `start_steps`, one
    env's state per block of envs (the gradient check's start states)."""
    obs = env.reset()
    returns = torch.zeros(env.num_envs, dtype=torch.float64, device=env.device)
    running = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
    for t in range(env.max_episode_steps):
        if recorder is not None and t in start_steps:
            recorder.add_joint_states(t, *env.joint_state())
        actions = policy(obs)
        next_obs, reward, terminated, truncated, info = env.step(actions)
        if recorder is not None:
            recorder.add(t, obs, actions, reward, info["final_obs"], terminated | truncated)
        obs = next_obs
        returns += reward.double() * running
        running &= ~(terminated | truncated)
    return returns


class Windows(NamedTuple):
    """B real sub-trajectories of H transitions inside one episode."""

    obs: torch.Tensor  # [B, H+1, obs_dim] o_0 .. o_H
    actions: torch.Tensor  # [B, H, act_dim]
    rewards: torch.Tensor  # [B, H] raw
    ended: torch.Tensor  # [B] bool: the window's last transition ended its episode (o_H is the final observation)


def cut_windows(record: EpisodeRecord, horizon: int, stride: int = 1) -> Windows:
    """Every window of `horizon` transitions starting at a multiple of `stride` in which an episode ends at most at
    the last transition (whose next observation is the real pre-reset one), as the replay buffer samples them.
    Reads the done mask on the host once (validation time only)."""
    T, N = record.dones.shape
    device = record.obs.device
    if horizon < 1 or stride < 1:
        raise ValueError(f"horizon and stride must be >= 1, got {horizon} and {stride}")
    starts = torch.arange(0, max(T - horizon + 1, 0), stride, device=device)
    ends = torch.cat([torch.zeros(1, N, dtype=torch.long, device=device), record.dones.long().cumsum(0)])
    # episode ends among transitions t .. t+H-2 (the window's last transition may end it)
    inside = ends[starts + horizon - 1] - ends[starts]
    start_idx, env = (inside == 0).nonzero(as_tuple=True)
    t0 = starts[start_idx]
    steps = t0.unsqueeze(1) + torch.arange(horizon, device=device)  # [B, H]
    rows = env.unsqueeze(1)
    obs = torch.cat([record.obs[t0, env].unsqueeze(1), record.next_obs[steps, rows]], dim=1)
    return Windows(
        obs=obs,
        actions=record.actions[steps, rows],
        rewards=record.rewards[steps, rows],
        ended=record.dones[steps[:, -1], env],
    )


# ------------------------------------------------------------------------------------------------------------------
# World-model errors along the horizon
# ------------------------------------------------------------------------------------------------------------------


class HorizonErrors(NamedTuple):
    """Per step h = 1..H (index h-1), mean over windows; NaN when there was no window."""

    wm_latent_mse: torch.Tensor  # [H] MSE(z_h, E(o_h)), z_h imagined from z_0 = E(o_0)
    copy_latent_mse: torch.Tensor  # [H] MSE(E(o_0), E(o_h)): the copy-the-last-latent baseline
    wm_reward_mse: torch.Tensor  # [H] (R(z_{h-1}, a_{h-1}) - r_{h-1})^2 in the world model's reward units
    wm_value_mse: torch.Tensor  # [H] (V(z_h) - V(E(o_h)))^2; NaN without a value function
    copy_value_mse: torch.Tensor  # [H] (V(E(o_0)) - V(E(o_h)))^2: how much the real value changes in h steps


ValueFunction = Callable[[torch.Tensor], torch.Tensor]  # latents [..., latent] -> values [...]


def no_value(z: torch.Tensor) -> torch.Tensor:
    """The value columns' stand-in where no critic is given: NaN for every latent."""
    return torch.full(z.shape[:-1], math.nan, dtype=z.dtype, device=z.device)


@torch.no_grad()
def horizon_errors(
    world_model: Any,
    windows: Windows,
    units: RewardUnits = identity,
    generator: torch.Generator | None = None,
    value: ValueFunction = no_value,
) -> HorizonErrors:
    """Latent, reward and value errors of the model's own H-step rollout on real windows (MSE over latent
    entries; the value's squared error averaged over windows)."""
    horizon = windows.actions.shape[1]
    if windows.obs.shape[0] == 0:
        nan = torch.full((horizon,), math.nan, device=windows.obs.device)
        return HorizonErrors(*(nan.clone() for _ in HorizonErrors._fields))
    with eval_mode(world_model):
        encoded = world_model.encode(windows.obs.transpose(0, 1))  # [H+1, B, latent]
        real_values = value(encoded)  # [H+1, B]
        actions = windows.actions.transpose(0, 1)
        rewards = units(windows.rewards).transpose(0, 1)
        z = encoded[0]
        latent, copy, reward, model_value, copy_value = [], [], [], [], []
        for h in range(horizon):
            reward.append((world_model.reward(z, actions[h]) - rewards[h]).pow(2).mean())
            z = world_model.next(z, actions[h], generator)
            latent.append((z - encoded[h + 1]).pow(2).mean())
            copy.append((encoded[0] - encoded[h + 1]).pow(2).mean())
            model_value.append((value(z) - real_values[h + 1]).pow(2).mean())
            copy_value.append((real_values[0] - real_values[h + 1]).pow(2).mean())
    columns = (latent, copy, reward, model_value, copy_value)
    return HorizonErrors(*(torch.stack(c) for c in columns))


# ------------------------------------------------------------------------------------------------------------------
# Gradient agreement
# ------------------------------------------------------------------------------------------------------------------


def model_return(
    world_model: Any, obs: torch.Tensor, gamma: float, generator: torch.Generator | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`actions [H, A] -> sum_t gamma^t R(z_t, a_t)` imagined from `z_0 = E(obs)` (differentiable in the actions;
    the world model's parameters are not touched)."""
    with torch.no_grad():
        z0 = world_model.encode(obs.unsqueeze(0))

    def discounted_return(actions: torch.Tensor) -> torch.Tensor:
        z, total = z0, torch.zeros((), device=actions.device)
        for t in range(actions.shape[0]):
            a = actions[t].unsqueeze(0)
            total = total + gamma**t * world_model.reward(z, a).sum()
            z = world_model.next(z, a, generator)
        return total

    return discounted_return


def model_gradient(discounted_return: Callable[[torch.Tensor], torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    """d return / d actions by autograd, `[H, A]`."""
    with torch.enable_grad():
        a = actions.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(discounted_return(a), a)
    return grad


def finite_difference_gradient(
    env_returns: Callable[[torch.Tensor], torch.Tensor], actions: torch.Tensor, eps: float
) -> torch.Tensor:
    """Central differences of a batched return `env_returns(actions [M, H, A]) -> [M]` at `actions [H, A]`: one
    call with M = 2 H A sequences (each entry moved by +eps, then each by -eps)."""
    H, A = actions.shape
    n = H * A
    steps = eps * torch.eye(n, dtype=actions.dtype, device=actions.device).view(n, H, A)
    returns = env_returns(torch.cat([actions + steps, actions - steps])).double()
    return ((returns[:n] - returns[n:]) / (2 * eps)).view(H, A)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flattened vectors; NaN if either is zero or non-finite (no direction to compare)."""
    a, b = a.double().flatten(), b.double().flatten()
    norms = a.norm() * b.norm()
    value = float(a @ b / norms) if float(norms) > 0 else math.nan
    return value if math.isfinite(value) else math.nan


class GradientAgreement(NamedTuple):
    cosine: float  # over the whole action sequence
    per_step: list[float]  # over the gradient with respect to a_t alone, t = 0..H-1: where along the horizon it fails
    model: torch.Tensor | None = None  # [H, A] the model's gradient
    env: torch.Tensor | None = None  # [H, A] the env's


def gradient_agreement(
    discounted_return: Callable[[torch.Tensor], torch.Tensor],
    env_returns: Callable[[torch.Tensor], torch.Tensor],
    actions: torch.Tensor,
    eps: float,
) -> GradientAgreement:
    """Cosines between the model's autograd gradient and the env's finite-difference gradient of the return."""
    model = model_gradient(discounted_return, actions)
    env = finite_difference_gradient(env_returns, actions, eps)
    per_step = [cosine(model[t], env[t]) for t in range(actions.shape[0])]
    return GradientAgreement(cosine(model, env), per_step, model, env)


def gradient_cosine(
    discounted_return: Callable[[torch.Tensor], torch.Tensor],
    env_returns: Callable[[torch.Tensor], torch.Tensor],
    actions: torch.Tensor,
    eps: float,
) -> float:
    """The cosine over the whole action sequence (`gradient_agreement`)."""
    return gradient_agreement(discounted_return, env_returns, actions, eps).cosine


class JointStateReturns:
    """Discounted returns of action sequences, every row of `env` started from one saved state.

    `env` is a dedicated env (never the training or validation env) with `2 H A` rows and episodes of H steps; it
    needs `joint_state`/`set_joint_state` (the Ant). Each call resets it (episode counters to 0, so no row is
    truncated before its H-th step) and broadcasts the state to every row. Rewards after a row's termination do not
    count, as in the real env."""

    def __init__(self, env: Any, gamma: float, units: RewardUnits = identity):
        self.env, self.gamma, self.units = env, gamma, units

    @staticmethod
    def supported(env: Any) -> bool:
        return hasattr(env, "set_joint_state") and hasattr(env, "joint_state")

    def at(self, joint_q: torch.Tensor, joint_qd: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def returns(actions: torch.Tensor) -> torch.Tensor:
            env = self.env
            rows, horizon = actions.shape[:2]
            if rows != env.num_envs:
                raise ValueError(f"JointStateReturns: {rows} action sequences for an env of {env.num_envs} rows")
            env.reset()
            env.set_joint_state(joint_q.expand(rows, -1), joint_qd.expand(rows, -1))
            total = torch.zeros(rows, dtype=torch.float64, device=env.device)
            running = torch.ones(rows, dtype=torch.bool, device=env.device)
            for t in range(horizon):
                _, reward, terminated, truncated, _ = env.step(actions[:, t].to(env.device))
                total += self.gamma**t * self.units(reward).double() * running
                running &= ~(terminated | truncated)
            return total

        return returns


def gradient_cosines(
    world_model: Any,
    starts: StartStates,
    env_returns: JointStateReturns,
    gamma: float,
    eps: float,
    generator: torch.Generator | None = None,
) -> list[GradientAgreement]:
    """The gradient agreement at every start state. Actions are kept `eps` inside [-1, 1]: the env clips them, so a
    perturbation past the bound would measure the clip, not the dynamics."""
    cosines = []
    with eval_mode(world_model):
        for s in range(starts.obs.shape[0]):
            actions = starts.actions[s].clamp(-1.0 + eps, 1.0 - eps)
            discounted = model_return(world_model, starts.obs[s], gamma, generator)
            returns = env_returns.at(starts.joint_q[s], starts.joint_qd[s])
            cosines.append(gradient_agreement(discounted, returns, actions, eps))
    return cosines


# ------------------------------------------------------------------------------------------------------------------
# The actor's objective, term by term
# ------------------------------------------------------------------------------------------------------------------


class ObjectiveSplit(NamedTuple):
    """The actor's update split by the two terms of its objective: the gradient norms, over the actor's parameters,
    of the imagined rewards' part `sum_t gamma^t R(z_t, a_t)` and of the critic's part `gamma^H V(z_H)`, the
    cosine between the two gradients (NaN where either is zero), and the two terms' values (means over the
    starts): what the imagination promises the policy, to be read against `real_terms` of the same starts."""

    reward_norm: float
    value_norm: float
    cosine: float
    reward_term: float = math.nan
    value_term: float = math.nan


NO_SPLIT = ObjectiveSplit(math.nan, math.nan, math.nan)


def objective_split(
    world_model: Any,
    actor: Any,
    value: ValueFunction,
    obs: torch.Tensor,
    horizon: int,
    gamma: float,
    generator: torch.Generator | None = None,
) -> ObjectiveSplit:
    """The two terms of PWM's actor objective imagined H steps from `z_0 = E(obs)` (`obs [B, obs_dim]`), averaged
    over the B starts, each differentiated with respect to the actor's parameters: does the critic's term carry the
    update, and does it pull with the rewards or against them? As PWM imagines (its actor reads `sg(z_t)`), with
    the validated policy's action `tanh(mu)` (no exploration noise) and no done inside the horizon. Only the actor's
    gradients are formed (`autograd.grad`): no `.grad` of any model is touched."""
    params = [p for p in actor.parameters() if p.requires_grad]
    if obs.shape[0] == 0 or not params:
        return NO_SPLIT
    with eval_mode(world_model), torch.enable_grad():
        with torch.no_grad():
            z = world_model.encode(obs)
        rewards = torch.zeros(obs.shape[0], device=obs.device)
        for t in range(horizon):
            action = actor.act(z.detach())
            rewards = rewards + gamma**t * world_model.reward(z, action)
            z = world_model.next(z, action, generator)
        terms = (rewards.mean(), gamma**horizon * value(z).mean())
        grads = [  # a term the actions do not reach (a model whose latent ignores them) has a zero gradient
            torch.autograd.grad(term, params, allow_unused=True, retain_graph=True)
            if term.requires_grad
            else (None,) * len(params)
            for term in terms
        ]
        values = torch.stack(terms).detach().double()
    # a parameter a term does not reach (the actor's log-std: no noise here) counts as a zero gradient, in both
    flat = [
        torch.cat(
            [(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grad, params, strict=True)]
        ).double()
        for grad in grads
    ]
    read = torch.cat([torch.stack([f.norm() for f in flat]), values]).tolist()  # one host read (validation only)
    return ObjectiveSplit(read[0], read[1], cosine(flat[0], flat[1]), read[2], read[3])


class RealTerms(NamedTuple):
    """The actor's two objective terms as the real env paid them from the same starts, under the same
    deterministic policy (the validation episodes are its own): the windows' discounted rewards
    `sum_{t<H} gamma^t r_t` (the world model's reward units) and `gamma^H V(E(o_H))` (0 where the window's episode
    ended), means over the windows. Against `ObjectiveSplit.reward_term` / `value_term`: does the policy's imagined
    H steps (the model's closed loop, what the actor's update and the critic's targets are made of) pay what its
    real H steps do, and does the critic find the same value at the model's H-th latent as at the real one?"""

    reward_term: float
    value_term: float


NO_REAL_TERMS = RealTerms(math.nan, math.nan)


def discounted_sums(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """`[B]` float64: `sum_t gamma^t r_t` of each row of `rewards [B, T]`."""
    discounts = gamma ** torch.arange(rewards.shape[1], device=rewards.device, dtype=torch.float64)
    return (rewards.double() * discounts).sum(1)


@torch.no_grad()
def real_terms(
    world_model: Any, value: ValueFunction, windows: Windows, gamma: float, units: RewardUnits = identity
) -> RealTerms:
    """`RealTerms` of the recorded windows. One host read (validation time only)."""
    if windows.obs.shape[0] == 0:
        return NO_REAL_TERMS
    horizon = windows.actions.shape[1]
    rewards = discounted_sums(units(windows.rewards), gamma)
    with eval_mode(world_model):
        last = value(world_model.encode(windows.obs[:, -1])).double()
    last = torch.where(windows.ended, 0.0, gamma**horizon * last)
    return RealTerms(*torch.stack([rewards.mean(), last.mean()]).tolist())


# ------------------------------------------------------------------------------------------------------------------
# The critic against the real returns
# ------------------------------------------------------------------------------------------------------------------


class CriticFit(NamedTuple):
    """The critic's values of real states against their discounted returns-to-go: the explained variance
    `1 - Var(G - V) / Var(G)` (1: exact, 0: no better than the returns' mean, negative: worse), the bias `mean(V - G)`,
    the returns' mean (the scale the bias is read against) and how many states were counted."""

    explained_variance: float
    bias: float
    return_mean: float
    states: int


NO_FIT = CriticFit(math.nan, math.nan, math.nan, 0)


def returns_to_go(rewards: torch.Tensor, dones: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`G [T, N]`, `G_t = r_t + gamma G_{t+1}` with the sum cut after a done and at the record's end, and the weight
    `[T, N]` of what the cut leaves out: `gamma^(k - t + 1)` where step k ends the record without a done (0 after a
    done: the episode ended, the return is whole). A done at the record's last step may be a truncation (the
    episode's step limit), so it is counted as a cut there."""
    T = rewards.shape[0]
    G = torch.zeros_like(rewards, dtype=torch.float64)
    left_out = torch.zeros_like(G)
    after, tail = torch.zeros_like(G[0]), torch.ones_like(G[0])
    for t in reversed(range(T)):
        ended = dones[t] if t < T - 1 else torch.zeros_like(dones[t])
        after = torch.where(ended, 0.0, after)
        tail = torch.where(ended, 0.0, tail)
        after = rewards[t].double() + gamma * after
        tail = gamma * tail
        G[t], left_out[t] = after, tail
    return G, left_out


@torch.no_grad()
def critic_fit(
    world_model: Any,
    value: ValueFunction,
    record: EpisodeRecord,
    gamma: float,
    units: RewardUnits = identity,
    cut: float = 0.01,
) -> CriticFit:
    """The critic `value` on the recorded states `E(o_t)` against their discounted return-to-go in the world model's
    reward units, counted where the record leaves out at most `cut` of the tail (`returns_to_go`'s weight
    `gamma^(steps to the record's end)`; with gamma 0.99 and 1 %, a 1,000-step episode's first 542 steps) or none of
    it (its episode ended by a done). Pure on-device arithmetic and one host read (validation time only)."""
    G, left_out = returns_to_go(units(record.rewards), record.dones, gamma)
    counted = left_out <= cut
    with eval_mode(world_model):
        V = value(world_model.encode(record.obs)).double()
    g, v = G[counted], V[counted]
    n = g.numel()
    if n < 2:
        return CriticFit(math.nan, math.nan, math.nan, n)
    stats = torch.stack([(g - v).var(unbiased=False), g.var(unbiased=False), (v - g).mean(), g.mean()]).tolist()
    explained = 1.0 - stats[0] / stats[1] if stats[1] > 0 else math.nan
    return CriticFit(explained, stats[2], stats[3], n)


def nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


# ------------------------------------------------------------------------------------------------------------------
# One validation's diagnostics, as table rows
# ------------------------------------------------------------------------------------------------------------------


class ValidationDiagnostics(NamedTuple):
    rows: list[dict[str, float]]  # per imagined step (wm_diagnostics.csv)
    grad_cosine: float
    split: ObjectiveSplit
    critic: CriticFit
    real: RealTerms = NO_REAL_TERMS


def validation_diagnostics(
    world_model: Any,
    recorder: EpisodeRecorder,
    horizon: int,
    gamma: float,
    units: RewardUnits = identity,
    env_returns: JointStateReturns | None = None,
    eps: float = 0.01,
    generator: torch.Generator | None = None,
    value: ValueFunction = no_value,
    actor: Any | None = None,
) -> ValidationDiagnostics:
    """Per-step errors on the recorded episodes (rows of `step, wm_latent_mse, copy_latent_mse, wm_reward_mse,
    wm_value_mse, copy_value_mse, latent_ratio` and `value_ratio` = model / copy baseline, `grad_cosine_step` = the
    gradient cosine with respect to the action a_{h-1} alone),
    the mean gradient cosine over the recorded start states (NaN without `env_returns` or start states), and the
    actor's objective split into its reward and value terms from the windows' first observations
    (`objective_split`; NaN without `actor`, or without a value function) with the same terms as the real env paid
    them (`real_terms`; NaN without a value function), and the critic against the recorded returns (`critic_fit`;
    NaN without a value function).

    Windows start every `horizon` steps: consecutive starts would share all but one transition, costing H times
    the compute for little new information."""
    windows = cut_windows(recorder.record, horizon, stride=horizon)
    errors = horizon_errors(world_model, windows, units, generator, value)
    columns = torch.stack(list(errors)).double().cpu().tolist()  # the one host read of the errors
    starts = recorder.start_states(horizon) if env_returns is not None else None
    grad, grad_per_step = math.nan, [math.nan] * horizon
    if starts is not None:
        agreements = gradient_cosines(world_model, starts, env_returns, gamma, eps, generator)
        grad = nanmean([a.cosine for a in agreements])
        grad_per_step = [nanmean([a.per_step[t] for a in agreements]) for t in range(horizon)]
    rows = []
    for h in range(horizon):
        row = {"step": h + 1, **{name: values[h] for name, values in zip(HorizonErrors._fields, columns, strict=True)}}
        row["latent_ratio"] = ratio(row["wm_latent_mse"], row["copy_latent_mse"])
        row["value_ratio"] = ratio(row["wm_value_mse"], row["copy_value_mse"])
        rows.append({**row, "grad_cosine_step": grad_per_step[h]})
    split, fit, real = NO_SPLIT, NO_FIT, NO_REAL_TERMS
    if value is not no_value:
        fit = critic_fit(world_model, value, recorder.record, gamma, units)
        real = real_terms(world_model, value, windows, gamma, units)
        if actor is not None:
            split = objective_split(world_model, actor, value, windows.obs[:, 0], horizon, gamma, generator)
    return ValidationDiagnostics(rows, grad, split, fit, real)


def ratio(numerator: float, denominator: float) -> float:
    """`numerator / denominator`, NaN where undefined (a zero or NaN baseline)."""
    return numerator / denominator if denominator > 0 else math.nan


def first_episode_steps(dones: torch.Tensor) -> torch.Tensor:
    """[T, N] bool: step t of env n belongs to its first episode (the step that ends it included), from the
    recorded `dones` [T, N]."""
    ends = dones.to(torch.int32)
    return torch.cumsum(ends, dim=0) - ends == 0


SATURATED = 0.99  # |action| at or above this counts as saturated: tanh'(mu) = 1 - a^2 <= 0.02


def action_columns(record: EpisodeRecord) -> dict[str, float]:
    """validation.csv's policy columns over every env's first episode, in one host read (validation only):
    - `action_jitter`: the mean absolute change of the action between consecutive steps, per action entry, over the
      pairs of steps inside the episode: 0 for a constant action, 2 for one that flips between the bounds -1 and 1
      every step; NaN when no env has two steps;
    - `action_saturation`: the fraction of action entries with |a| >= `SATURATED`, over the episode's steps;
    - `action_magnitude`: the mean |a| of the action entries over the episode's steps (0 idle, 1 bang-bang). The
      PPO reference's gaits ask for ever more torque as they get faster (bench/action_cap.py: mean |a| 0.80 at
      3.1k, 0.93 at 5.3k), so this says whether a policy could run them."""
    actions = record.actions
    inside = first_episode_steps(record.dones).to(actions.dtype)
    saturated = (actions.abs() >= SATURATED).to(actions.dtype).mean(-1)
    sums = [inside.sum(), (saturated * inside).sum(), (actions.abs().mean(-1) * inside).sum()]
    if actions.shape[0] >= 2:
        pairs = inside[1:]  # (t - 1, t) lies inside the episode when step t does: the episode had not ended by t - 1
        change = (actions[1:] - actions[:-1]).abs().mean(-1)
        sums += [(change * pairs).sum(), pairs.sum()]
    values = torch.stack(sums).tolist()
    steps = values[0]
    jitter = values[3] / values[4] if len(values) == 5 and values[4] else math.nan
    return {
        "action_jitter": jitter,
        "action_saturation": values[1] / steps if steps else math.nan,
        "action_magnitude": values[2] / steps if steps else math.nan,
    }


def policy_shift(record: EpisodeRecord, earlier: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """validation.csv's `policy_shift`: how far the deterministic policy moved since an `earlier` one (the last
    validation's checkpoint, `obs -> tanh(mu(E(obs)))` with its own encoder): the mean absolute difference, per action
    entry, between the actions this validation took (`record.actions`) and the actions `earlier` takes on the same
    observations, over every env's first episode. 0 for a policy that did not move; up to 2. It says how much the
    updates between two validations changed what the policy does where it runs, whatever moved it (the actor's
    updates, or the encoder's under a held actor). NaN when no step counts. One host read (validation only)."""
    inside = first_episode_steps(record.dones)
    if not bool(inside.any()):
        return math.nan
    with torch.no_grad():
        before = earlier(record.obs[inside])
    return float((before - record.actions[inside]).abs().mean())


def summary_columns(
    rows: list[dict[str, float]],
    grad_cosine: float,
    split: ObjectiveSplit = NO_SPLIT,
    critic: CriticFit = NO_FIT,
    real: RealTerms = NO_REAL_TERMS,
) -> dict[str, float]:
    """validation.csv's diagnostic columns: the first and the last step (the value only at the last, where the
    actor's objective reads it), the gradient cosine, the actor's objective split (`objective_split`) with its two
    terms as imagined and as paid (`real_terms`), and the critic against the real returns (`critic_fit`)."""
    first, last = rows[0], rows[-1]
    return {
        "wm_latent_mse_h1": first["wm_latent_mse"],
        "copy_latent_mse_h1": first["copy_latent_mse"],
        "wm_latent_mse_hH": last["wm_latent_mse"],
        "copy_latent_mse_hH": last["copy_latent_mse"],
        "latent_ratio_hH": last["latent_ratio"],
        "wm_reward_mse_h1": first["wm_reward_mse"],
        "wm_reward_mse_hH": last["wm_reward_mse"],
        "wm_value_mse_hH": last["wm_value_mse"],
        "copy_value_mse_hH": last["copy_value_mse"],
        "value_ratio_hH": last["value_ratio"],
        "grad_cosine": grad_cosine,
        "actor_grad_reward_norm": split.reward_norm,
        "actor_grad_value_norm": split.value_norm,
        "actor_grad_terms_cosine": split.cosine,
        "imagined_reward_term": split.reward_term,
        "real_reward_term": real.reward_term,
        "imagined_value_term": split.value_term,
        "real_value_term": real.value_term,
        "critic_explained_variance": critic.explained_variance,
        "critic_bias": critic.bias,
        "critic_return_mean": critic.return_mean,
    }
