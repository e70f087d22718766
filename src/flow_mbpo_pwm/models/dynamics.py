"""Latent dynamics: deterministic `z' = F(z, a)` and flow-matching `z' = Phi_1(z, a)`, behind one interface.

Both modules offer
- `forward(z, a, generator=None) -> z'`: the next latent, differentiable w.r.t. z and a (the actor's gradients
  flow through it);
- `loss(z, a, target, generator=None) -> (per-sample loss [B], z')`: the training term for one world-model step
  against `target = sg(E(o'))`, and the predicted next latent that the multi-step rollout continues from;
- `draw_next(batch_shape, generator)` / `draw_loss(batch_shape, generator)`: the random inputs of `forward` /
  `loss` as a dict of keyword arguments (empty for deterministic dynamics). Both methods draw exactly these when
  no draws are passed, so a caller that must draw outside `torch.vmap` (a stack of seeds, algorithms/pwm.py)
  computes the same thing.

Deterministic: `F` ends in `Linear -> LayerNorm -> SimNorm`; the loss is the latent MSE. Residual option
(`residual: true`): `z' = SimNorm(log z + f(z, a))`, the residual taken in the same log-simplex chart as the flow
(below), with `f` ending in a plain Linear whose weight starts at zero — so the untrained model is exactly the
copy-the-last-latent baseline, and `f` only has to learn how the latent changes.

Flow matching (documented decisions, each tested in tests/models/test_dynamics.py):
- The velocity head `v(x, c, tau)` ends in a plain Linear. Its target `x1 - x0` has entries of both signs and no
  fixed group sum; a SimNorm-ended head (the fork's defect) can only output positive, sum-one groups.
- Flow space (`project`):
  * "simnorm" (default): the flow runs in log-simplex space, `x = log z` per SimNorm group, and the integrated
    state is mapped back with SimNorm. Because `SimNorm(log z) == z` for any simplex point, a perfect flow lands
    exactly on `E(o')`, and any integrated state is a valid latent (positive groups summing to one) — SimNorm is
    the exact inverse of the flow space's chart, not a distortion. (Running the flow on the simplex itself and
    applying SimNorm afterwards would not be: softmax of probabilities is not the identity.)
  * "none": the flow runs on the latent itself (`x0 = z`, `x1 = E(o')`) and the integrated state is used as is
    (it may leave the simplex; an ablation).
- Source (`source`): "delta" starts from the current latent (`x0 = chart(z)`, velocity conditioned on the action);
  "noise" starts from `x0 ~ N(0, I)` and conditions the velocity on `[z, a]` (stochastic dynamics).
- Time embedding: "sinusoidal" (default: sin/cos at `time_embedding_dim / 2` log-spaced frequencies from 1 to 1000
  rad per unit tau) or "raw" (tau itself, as the fork fed it). The integrator evaluates the velocity at a few fixed
  times; their embeddings are computed once (a buffer) instead of at every evaluation, which saves five kernels of
  each (a fifth of a velocity evaluation's forward pass on the GPU, bench/op_counts.py).
- Loss: rectified flow, `|| v((1 - tau) x0 + tau x1, c, tau) - (x1 - x0) ||^2` averaged over latent entries,
  `tau ~ U[0, 1]` per sample. It replaces the latent MSE of the deterministic model; the rollout then continues
  from the integrated latent (`forward`), so the reward head is trained on the same kind of latents the actor
  imagines with.
- Loss metric (`loss_metric`): "chart" (default) takes the velocity error's plain MSE in flow space. "simplex"
  weights entry i by `p_i = SimNorm(x_tau)_i` (stop-gradient) before squaring: a log-chart error `e` moves the latent
  by about `p * e` (minus each group's mean shift), so near-zero entries, whose log-changes are large and noisy but
  move nothing, stop dominating the loss, and its scale is the deterministic model's latent MSE. The weight depends
  on `x_tau` alone, so the loss's minimiser, the conditional mean velocity, is unchanged.
- Endpoint term (`endpoint_coef`, default 0): adds `endpoint_coef * MSE(z', E(o'))` on the integrated next latent,
  the deterministic model's own loss. Flow matching fits the velocity along straight paths between pairs; the actor
  differentiates through the integrated map, which this term fits where the rollout uses it. With a detached source
  it is also what trains the encoder through the dynamics, as the deterministic model's latent loss does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flow_mbpo_pwm.config import DynamicsConfig
from flow_mbpo_pwm.models.integrators import evaluation_times, integrate
from flow_mbpo_pwm.models.layers import SimNorm, mlp, zero_last_layer

# Smallest probability taken into log space; SimNorm of LayerNorm-bounded logits stays far above it.
LOG_FLOOR = 1e-12


class DeterministicDynamics(nn.Module):
    def __init__(self, latent_dim: int, act_dim: int, units: tuple[int, ...], simnorm_dim: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        if residual:
            self.simnorm = SimNorm(simnorm_dim)
            self.net = mlp(latent_dim + act_dim, units, latent_dim)
            zero_last_layer(self.net)
        else:
            self.net = mlp(latent_dim + act_dim, units, latent_dim, last_act=SimNorm(simnorm_dim))

    def forward(self, z: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        change = self.net(torch.cat([z, a], dim=-1))
        return self.simnorm(torch.log(z.clamp_min(LOG_FLOOR)) + change) if self.residual else change

    def loss(
        self, z: torch.Tensor, a: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z_next = self(z, a)
        return (z_next - target).pow(2).mean(-1), z_next

    def draw_next(self, batch_shape: tuple[int, ...], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        return {}

    def draw_loss(self, batch_shape: tuple[int, ...], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        return {}


class TimeEmbedding(nn.Module):
    """Embedding of the flow time tau in [0, 1]: sinusoidal features or the raw scalar."""

    def __init__(self, kind: str = "sinusoidal", dim: int = 32):
        super().__init__()
        if kind not in ("sinusoidal", "raw"):
            raise ValueError(f"unknown time embedding '{kind}' (known: sinusoidal, raw)")
        self.kind = kind
        self.dim = dim if kind == "sinusoidal" else 1
        freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), max(dim // 2, 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, tau: torch.Tensor) -> torch.Tensor:
        """`tau [..., 1]` -> `[..., dim]`."""
        if self.kind == "raw":
            return tau
        angles = tau * self.freqs
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FlowDynamics(nn.Module):
    def __init__(self, latent_dim: int, act_dim: int, units: tuple[int, ...], simnorm_dim: int, config: DynamicsConfig):
        super().__init__()
        self.source = config.source
        self.project = config.project
        self.detach_source = config.detach_source
        self.endpoint_coef = config.endpoint_coef
        self.loss_metric = config.loss_metric
        self.integrator = config.integrator
        self.substeps = config.substeps
        self.simnorm = SimNorm(simnorm_dim)
        self.time_embedding = TimeEmbedding(config.time_embedding, config.time_embedding_dim)
        cond_dim = act_dim + (latent_dim if self.source == "noise" else 0)
        # Plain Linear last layer: the velocity target is unbounded and of either sign. Zero at init, so the
        # untrained delta flow is the copy-the-last-latent baseline, as the residual deterministic model is: from a
        # random last layer, the pretraining probe's flow never beat that baseline on held-out Ant windows and its
        # encoder collapsed (bench/RESULTS.md, "Why flow's world model did not fit").
        self.velocity_net = mlp(latent_dim + cond_dim + self.time_embedding.dim, units, latent_dim)
        zero_last_layer(self.velocity_net)
        # The embeddings of the integrator's evaluation times, row i for time `times[i]` (not saved: derived).
        times = evaluation_times(self.substeps, self.integrator)
        self._time_rows = {t: i for i, t in enumerate(times)}
        table = self.time_embedding(torch.tensor(times, dtype=torch.float32).unsqueeze(-1))
        self.register_buffer("fixed_time_embeddings", table, persistent=False)

    # The chart between latents and flow space ("simnorm": log-simplex coordinates; "none": identity).
    def to_flow_space(self, z: torch.Tensor) -> torch.Tensor:
        return torch.log(z.clamp_min(LOG_FLOOR)) if self.project == "simnorm" else z

    def from_flow_space(self, x: torch.Tensor) -> torch.Tensor:
        return self.simnorm(x) if self.project == "simnorm" else x

    def velocity(self, x: torch.Tensor, cond: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
        """`v(x, c, tau)`; `tau` a tensor `[..., 1]` (per-sample times: the loss) or a float (one time for all)."""
        row = None if isinstance(tau, torch.Tensor) else self._time_rows.get(float(tau))
        if row is not None:  # an integration time: its precomputed row
            embedding = self.fixed_time_embeddings[row].expand(*x.shape[:-1], -1)
        else:
            if not isinstance(tau, torch.Tensor):
                tau = torch.full((*x.shape[:-1], 1), float(tau), dtype=x.dtype, device=x.device)
            embedding = self.time_embedding(tau)
        return self.velocity_net(torch.cat([x, cond, embedding], dim=-1))

    def _start(
        self, z: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None, noise: torch.Tensor | None = None
    ):
        if self.source == "noise":
            if noise is None:
                noise = self._randn(z.shape[:-1], generator)
            return noise, torch.cat([z, a], dim=-1)
        return self.to_flow_space(z), a

    def forward(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x0, cond = self._start(z, a, generator, noise)
        x1 = integrate(lambda x, t: self.velocity(x, cond, t), x0, self.substeps, self.integrator)
        return self.from_flow_space(x1)

    def loss(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        tau: torch.Tensor | None = None,
        next_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x0, cond = self._start(z.detach() if self.detach_source else z, a, generator, noise)
        x1 = self.to_flow_space(target)
        if tau is None:
            tau = torch.rand((*z.shape[:-1], 1), generator=generator, dtype=z.dtype, device=z.device)
        x_tau = (1.0 - tau) * x0 + tau * x1
        error = self.velocity(x_tau, cond, tau) - (x1 - x0)
        if self.loss_metric == "simplex":
            error = self.simnorm(x_tau.detach()) * error
        flow_loss = error.pow(2).mean(-1)
        z_next = self(z, a, generator, next_noise)
        if self.endpoint_coef:
            flow_loss = flow_loss + self.endpoint_coef * (z_next - target).pow(2).mean(-1)
        return flow_loss, z_next

    def _randn(self, batch_shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        weight = self.velocity_net[-1].weight
        latent = weight.shape[0]
        return torch.randn((*batch_shape, latent), generator=generator, dtype=weight.dtype, device=weight.device)

    def draw_next(self, batch_shape: tuple[int, ...], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """`forward`'s random inputs: the source noise of a noise-source flow (nothing for a delta flow)."""
        return {"noise": self._randn(batch_shape, generator)} if self.source == "noise" else {}

    def draw_loss(self, batch_shape: tuple[int, ...], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """`loss`'s random inputs, in the order `loss` draws them: source noise, tau, the rollout's source noise."""
        draws = {"noise": self._randn(batch_shape, generator)} if self.source == "noise" else {}
        weight = self.velocity_net[-1].weight
        draws["tau"] = torch.rand((*batch_shape, 1), generator=generator, dtype=weight.dtype, device=weight.device)
        if self.source == "noise":
            draws["next_noise"] = self._randn(batch_shape, generator)
        return draws


def build_dynamics(
    latent_dim: int, act_dim: int, units: tuple[int, ...], simnorm_dim: int, config: DynamicsConfig
) -> nn.Module:
    if config.kind == "deterministic":
        return DeterministicDynamics(latent_dim, act_dim, units, simnorm_dim, residual=config.residual)
    if config.kind == "flow":
        return FlowDynamics(latent_dim, act_dim, units, simnorm_dim, config)
    raise ValueError(f"unknown dynamics kind '{config.kind}' (known: deterministic, flow)")
