"""The PPO reference's policy checkpoint, format `flow-mbpo-pwm/reference-policy/1` (docs/contracts.md).

`{"format", "meta", "actor"}`: `actor` is the state dict of rsl-rl's actor (`MLPModel`: the observation
normaliser's running mean/var/std/count, the MLP's weights and the Gaussian's learnable std); `meta` holds the
cell keys (task, size="reference", dynamics="ppo", seed), `iteration`, `env_steps`, `obs_dim`, `act_dim`, `std`
(the exploration std per action dimension, as a list; `collect` samples with it), `env_task` and `reference` (the
`ReferenceConfig` as a dict, from which the architecture is rebuilt). Tensors and plain values only: written with
`io.torch_save`, read with `io.torch_load` (`weights_only=True`), never unpickled.

The actor is rebuilt with rsl-rl's own `MLPModel`, so a loaded policy computes exactly what the trained one did.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import ConfigError, ReferenceConfig, from_dict
from flow_mbpo_pwm.io import CheckpointError

REFERENCE_POLICY_FORMAT = "flow-mbpo-pwm/reference-policy/1"
META_KEYS = ("task", "size", "dynamics", "seed", "iteration", "env_steps", "obs_dim", "act_dim", "std", "reference")
POLICY_GROUP = "policy"  # the one observation group of envs/rsl_adapter.py


def rsl_model_config(reference: ReferenceConfig) -> dict[str, Any]:
    """rsl-rl's runner config (the dict `PPO.construct_algorithm` reads) for these settings."""
    model = {"class_name": "rsl_rl.models.MLPModel", "activation": reference.activation}
    return {
        "num_steps_per_env": reference.horizon,
        "obs_groups": {"actor": [POLICY_GROUP], "critic": [POLICY_GROUP]},
        "actor": {
            **model,
            "hidden_dims": list(reference.actor_units),
            "obs_normalization": reference.empirical_normalization,
            "distribution_cfg": {
                "class_name": "rsl_rl.modules.distribution.GaussianDistribution",
                "init_std": reference.init_noise_std,
                # min_noise_std 0 gives rsl-rl's default range, (1e-6, 1e6).
                "std_range": (max(reference.min_noise_std, 1e-6), 1e6),
                "std_type": "scalar",
            },
        },
        "critic": {
            **model,
            "hidden_dims": list(reference.critic_units),
            "obs_normalization": reference.empirical_normalization,
        },
        "algorithm": {
            "class_name": "rsl_rl.algorithms.PPO",
            "num_learning_epochs": reference.learning_epochs,
            "num_mini_batches": reference.mini_batches,
            "clip_param": reference.clip_param,
            "gamma": reference.gamma,
            "lam": reference.lam,
            "value_loss_coef": reference.value_loss_coef,
            "entropy_coef": reference.entropy_coef,
            "learning_rate": reference.learning_rate,
            "max_grad_norm": reference.max_grad_norm,
            "use_clipped_value_loss": True,
            "schedule": reference.schedule,
            "desired_kl": reference.desired_kl,
        },
        "multi_gpu": None,
    }


def build_actor(reference: ReferenceConfig, obs_dim: int, act_dim: int) -> nn.Module:
    """An untrained rsl-rl actor of these settings (the architecture a checkpoint's weights load into)."""
    from rsl_rl.models import MLPModel
    from rsl_rl.utils import resolve_class
    from tensordict import TensorDict

    cfg = rsl_model_config(reference)
    _, actor_cfg = resolve_class(cfg["actor"])
    obs = TensorDict({POLICY_GROUP: torch.zeros(1, obs_dim)}, batch_size=[1])
    return MLPModel(obs, cfg["obs_groups"], "actor", act_dim, **actor_cfg)


def exploration_std(actor: nn.Module) -> torch.Tensor:
    """The Gaussian's std per action dimension (state-independent), clamped as rsl-rl samples with it."""
    dist = actor.distribution
    return dist.std_param.detach().clamp(dist.std_range[0], dist.std_range[1])


class ReferencePolicy(nn.Module):
    """`policy(obs)` = the Gaussian's mean (the deterministic action; the env clips it to [-1, 1]);
    `policy.std` is the exploration std the checkpoint was trained with."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        self.actor = actor

    @property
    def std(self) -> torch.Tensor:
        return exploration_std(self.actor)

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor({POLICY_GROUP: obs})


def save_reference_policy(path: str | os.PathLike, actor: nn.Module, meta: dict[str, Any]) -> None:
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"save_reference_policy: meta lacks {missing}")
    state = {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()}
    io.torch_save(path, {"format": REFERENCE_POLICY_FORMAT, "meta": dict(meta), "actor": state})


def policy_from_data(
    path: str | os.PathLike, data: Any, device: str | torch.device
) -> tuple[ReferencePolicy, dict[str, Any]]:
    """`(policy, meta)` from an already loaded checkpoint dict; `CheckpointError` names what is wrong."""
    if not isinstance(data, dict) or data.get("format") != REFERENCE_POLICY_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a {REFERENCE_POLICY_FORMAT} checkpoint (format: {found!r})")
    missing = [k for k in ("meta", "actor") if k not in data]
    meta = data.get("meta")
    if not missing and isinstance(meta, dict):
        missing = [f"meta.{k}" for k in META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: {REFERENCE_POLICY_FORMAT} checkpoint lacks {missing}")
    try:
        reference = from_dict(ReferenceConfig, meta["reference"], "meta.reference")
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: its meta.reference is not a valid reference config ({err})") from err
    actor = build_actor(reference, int(meta["obs_dim"]), int(meta["act_dim"]))
    try:
        actor.load_state_dict(data["actor"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: actor weights do not match the architecture of meta.reference ({err})") from err
    return ReferencePolicy(actor).to(device).eval(), meta


def load_reference_policy(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[ReferencePolicy, dict[str, Any]]:
    """`(policy, meta)` of a reference-policy checkpoint; `CheckpointError` for a missing file or wrong format."""
    return policy_from_data(path, io.torch_load(path, map_location=device), device)
