"""The decoder-free world model: encoder `z = E(o)`, dynamics `z' = next(z, a)`, reward `r = reward(z, a)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from flow_mbpo_pwm.config import DynamicsConfig, WorldModelConfig
from flow_mbpo_pwm.models.dynamics import build_dynamics
from flow_mbpo_pwm.models.layers import SimNorm, mlp, zero_last_layer
from flow_mbpo_pwm.models.twohot import two_hot_cross_entropy, two_hot_decode


def build_encoder(obs_dim: int, config: WorldModelConfig) -> nn.Sequential:
    """obs -> encoder_units -> latent_dim, last layer `Linear -> LayerNorm -> SimNorm`."""
    return mlp(obs_dim, config.encoder_units, config.latent_dim, last_act=SimNorm(config.simnorm_dim))


class RewardHead(nn.Module):
    """`R(z, a)`: [z, a] -> units -> 1 (scalar regression) or -> num_bins (symlog two-hot classification).

    The last weight starts at zero, so the first predictions are 0 (scalar) or the decode of uniform logits."""

    def __init__(self, latent_dim: int, act_dim: int, config: WorldModelConfig):
        super().__init__()
        self.kind = config.reward_head
        out = 1 if self.kind == "scalar" else config.num_bins
        self.net = mlp(latent_dim + act_dim, config.units, out)
        zero_last_layer(self.net)
        self.register_buffer("bins", torch.linspace(config.bin_min, config.bin_max, config.num_bins), persistent=False)

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Predicted reward `[...]`."""
        out = self.net(torch.cat([z, a], dim=-1))
        if self.kind == "scalar":
            return out.squeeze(-1)
        return two_hot_decode(torch.softmax(out, dim=-1), self.bins)

    def loss(self, z: torch.Tensor, a: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss `[...]`: squared error (scalar) or two-hot cross-entropy (binned)."""
        out = self.net(torch.cat([z, a], dim=-1))
        if self.kind == "scalar":
            return (out.squeeze(-1) - target).pow(2)
        return two_hot_cross_entropy(out, target, self.bins)


class WorldModel(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, config: WorldModelConfig, dynamics: DynamicsConfig):
        super().__init__()
        if config.task_dim != 0:
            raise ValueError(f"world_model.task_dim is {config.task_dim}: only single-task models are built here")
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, config.latent_dim
        self.encoder = build_encoder(obs_dim, config)
        self.dynamics = build_dynamics(config.latent_dim, act_dim, config.units, config.simnorm_dim, dynamics)
        self.reward_head = RewardHead(config.latent_dim, act_dim, config)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs)

    def next(
        self, z: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None = None, **draws: torch.Tensor
    ) -> torch.Tensor:
        """`z' = F(z, a)`; a stochastic dynamics draws from `generator` unless given its `draws`
        (`dynamics.draw_next`)."""
        return self.dynamics(z, a, generator, **draws)

    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.reward_head(z, a)


def rollout_latents(
    world_model: Any,
    z: torch.Tensor,
    actions: torch.Tensor,
    generator: torch.Generator | None = None,
    draws: Sequence[dict[str, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """The latents z_1..z_k `[B, k, latent]` that `world_model` rolls from `z [B, latent]` along the recorded
    `actions [B, k, act]` (open loop); a stochastic dynamics draws from `generator`, or takes step h's `draws[h]`."""
    latents = []
    for h in range(actions.shape[1]):
        z = world_model.next(z, actions[:, h], generator, **(draws[h] if draws is not None else {}))
        latents.append(z)
    return torch.stack(latents, 1)
