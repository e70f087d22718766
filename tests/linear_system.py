"""A known linear system for the diagnostics' known-answer tests (tests/test_diagnostics.py,
tests/bench/test_imagined_gait.py): observations o' = A o + B a, reward sum(o) - 0.1 |a|^2, a world model over
observations as latents (E = identity) with chosen dynamics, a deterministic tanh actor, and recorded episodes."""

import torch

from flow_mbpo_pwm.diagnostics import EpisodeRecorder

OBS, ACT, T, N = 3, 2, 40, 5
A_MATRIX = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.7]])
B_MATRIX = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]])


def true_next(o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return o @ A_MATRIX.T + a @ B_MATRIX.T


def true_reward(o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return o.sum(-1) - 0.1 * a.pow(2).sum(-1)


class LinearSystemModel:
    """A world model over observations as latents (E = identity): `next` is `dynamics`, `reward` is `true_reward`."""

    def __init__(self, dynamics):
        self.dynamics = dynamics

    def encode(self, o):
        return o

    def next(self, z, a, generator=None):
        return self.dynamics(z, a)

    def reward(self, z, a):
        return true_reward(z, a)


def linear_actor():
    """A deterministic policy `tanh(W o + b)` (seeded), as PWM's validated actor acts."""
    actor = torch.nn.Module()
    torch.manual_seed(3)
    actor.mu = torch.nn.Linear(OBS, ACT)
    actor.input_norm = torch.nn.Identity()  # PWM's actor reads the raw latent unless `pwm.latent_norm` says otherwise
    actor.act = lambda z: torch.tanh(actor.mu(z))
    return actor


@torch.no_grad()
def linear_system_record(dones_at=(), policy=None, seed=0):
    """T steps of N envs of the linear system, with random actions or `policy(o)` (its own closed loop, as
    validation records a policy); episodes end (and restart at a fresh random observation) at the (t, env) pairs
    in `dones_at`."""
    gen = torch.Generator().manual_seed(seed)
    recorder = EpisodeRecorder(T, N, OBS, ACT, torch.device("cpu"))
    obs = torch.randn(N, OBS, generator=gen)
    for t in range(T):
        actions = torch.rand(N, ACT, generator=gen) * 2 - 1 if policy is None else policy(obs)
        next_obs = true_next(obs, actions)
        done = torch.tensor([(t, n) in dones_at for n in range(N)])
        recorder.add(t, obs, actions, true_reward(obs, actions), next_obs, done)
        obs = torch.where(done.unsqueeze(1), torch.randn(N, OBS, generator=gen), next_obs)
    return recorder
