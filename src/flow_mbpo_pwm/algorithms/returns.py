"""Return targets of the PWM critic: TD(lambda) over one imagined rollout of H steps."""

from __future__ import annotations

import torch


def td_lambda_targets(
    rewards: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """lambda-returns `G_i` for i = 0..H-1 of a rollout, all inputs `[H, N]`.

    `rewards[i]` = r_i, `next_values[i]` = V(z_{i+1}) (already zero where the real env terminated at step i),
    `dones[i]` = the real env ended its episode at step i (terminated or truncated). The last step is always treated
    as done: the rollout ends there. Recursion (backwards):

        G_i = r_i + gamma * V_{i+1}                                              if done_i
        G_i = r_i + gamma * ((1 - lam) * V_{i+1} + lam * G_{i+1})               otherwise

    which is the lambda-weighted average of the n-step returns truncated at the first done (the form PWM and SHAC
    compute with their A/B accumulators).
    """
    if not (rewards.shape == next_values.shape == dones.shape) or rewards.dim() != 2:
        raise ValueError(
            f"rewards, next_values and dones must all be [H, N], got {rewards.shape}, "
            f"{next_values.shape}, {dones.shape}"
        )
    done = dones.to(rewards.dtype).clone()
    done[-1] = 1.0
    targets = torch.empty_like(rewards)
    following = torch.zeros_like(rewards[0])
    for i in reversed(range(rewards.shape[0])):
        blended = (1.0 - lam) * next_values[i] + lam * following
        following = rewards[i] + gamma * (done[i] * next_values[i] + (1.0 - done[i]) * blended)
        targets[i] = following
    return targets
