"""Symlog two-hot encoding for the optional binned reward head (DreamerV3 / TD-MPC2 style, done correctly).

A scalar r is mapped to x = symlog(r), clipped to the bin support, and spread over the two neighbouring bins with
weights that make `sum(p * bins) == x` exactly. The head is trained with cross-entropy against that two-hot target
and decoded with `symexp(softmax(logits) . bins)`. (The public PWM code regressed the 101 logits with MSE against a
scalar instead — the defect this module exists to avoid.)
"""

from __future__ import annotations

import torch


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def two_hot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot encoding of `x` (already in symlog space) on evenly spaced `bins`: `[..., num_bins]`."""
    num_bins = bins.numel()
    low, high = bins[0], bins[-1]
    delta = (high - low) / (num_bins - 1)
    x = x.clamp(low, high)
    position = (x - low) / delta
    index = position.floor().clamp(0, num_bins - 2)
    upper_weight = (position - index).unsqueeze(-1)
    index = index.long().unsqueeze(-1)
    # Out of place, so that it also runs under torch.vmap (a stack of seeds).
    target = torch.zeros(*x.shape, num_bins, dtype=x.dtype, device=x.device)
    return target.scatter(-1, index, 1.0 - upper_weight).scatter_add(-1, index + 1, upper_weight)


def two_hot_decode(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Inverse of `two_hot` for probabilities over `bins`, returned in the original (symexp) space."""
    return symexp((probs * bins).sum(-1))


def two_hot_cross_entropy(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the head's `logits [..., num_bins]` and the two-hot encoding of scalar `target`."""
    return -(two_hot(symlog(target), bins) * torch.log_softmax(logits, dim=-1)).sum(-1)
