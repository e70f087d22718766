"""Policy and agent checkpoints (docs/contracts.md "Checkpoints").

Formats are plain dicts of tensors and plain values with a `"format"` key, written atomically through
`flow_mbpo_pwm.io.torch_save` and read only through `flow_mbpo_pwm.io.torch_load` (`weights_only=True`), so a
checkpoint can never run code. Architectures are rebuilt from `meta["config"]` (a `TrainConfig.to_dict()`).

- policy `flow-mbpo-pwm/policy/1`: `{format, meta, encoder, actor}` — what evaluation needs;
- agent `flow-mbpo-pwm/agent/1` (final.pt): `{format, meta, world_model, actor, critic}` — no optimiser state;
- world model `flow-mbpo-pwm/world-model/1` (`pretrain`'s output): `{format, meta, world_model, rew_rms}` — the
  weights and the reward statistics fitted on the offline data; `train` starts from it (`run.world_model_init`).
- actor `flow-mbpo-pwm/actor/1` (`clone`'s output): `{format, meta, actor}` — an actor fitted on the latents of one
  pretrained world model (`meta.world_model_digest`, that file's content digest); `train` starts every seed's actor
  from it (`run.actor_init`) when it starts from that world model.

Loading refuses damaged files (the integrity record `io.torch_save` writes) and weights that are not finite.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import ConfigError, TrainConfig, from_dict
from flow_mbpo_pwm.io import CheckpointError
from flow_mbpo_pwm.models.actor import Actor
from flow_mbpo_pwm.models.world_model import build_encoder
from flow_mbpo_pwm.reference_policy import REFERENCE_POLICY_FORMAT, policy_from_data

POLICY_FORMAT = "flow-mbpo-pwm/policy/1"
AGENT_FORMAT = "flow-mbpo-pwm/agent/1"
WORLD_MODEL_FORMAT = "flow-mbpo-pwm/world-model/1"
ACTOR_FORMAT = "flow-mbpo-pwm/actor/1"
# What must agree between a cloned actor and the run that starts from it: the actor's shape and its input's.
ACTOR_CONFIG_KEYS = ("world_model.latent_dim", "pwm.actor_units", "pwm.latent_norm")
# What must agree between a pretrained world model and the run that starts from it: the architecture.
WORLD_MODEL_CONFIG_SECTIONS = ("world_model", "dynamics")
POLICY_META_KEYS = (
    "task",
    "size",
    "dynamics",
    "seed",
    "epoch",
    "env_steps",
    "obs_dim",
    "act_dim",
    "val_return",
    "config",
)

__all__ = [
    "ACTOR_FORMAT",
    "AGENT_FORMAT",
    "POLICY_FORMAT",
    "WORLD_MODEL_FORMAT",
    "CheckpointError",
    "Policy",
    "check_policy_matches",
    "load_actor",
    "load_agent",
    "load_policy",
    "load_world_model",
    "save_actor",
    "save_agent",
    "save_policy",
    "save_world_model",
]


class Policy(nn.Module):
    """The deterministic policy of a checkpoint: `policy(obs) = tanh(mu(E(obs)))`."""

    def __init__(self, encoder: nn.Module, actor: Actor):
        super().__init__()
        self.encoder = encoder
        self.actor = actor

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.act(self.encoder(obs))


def _modules(agent_or_models: Any) -> dict[str, nn.Module]:
    if isinstance(agent_or_models, dict):
        return agent_or_models
    return {
        "world_model": agent_or_models.world_model,
        "actor": agent_or_models.actor,
        "critic": agent_or_models.critic,
    }


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_policy(path: str | os.PathLike, agent_or_models: Any, meta: dict[str, Any]) -> None:
    """Write a policy checkpoint from a `PWM` agent or a dict with `encoder` (or `world_model`) and `actor`."""
    missing = [k for k in POLICY_META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"save_policy: meta lacks {missing}")
    modules = _modules(agent_or_models)
    encoder = modules["encoder"] if "encoder" in modules else modules["world_model"].encoder
    io.torch_save(
        path,
        {
            "format": POLICY_FORMAT,
            "meta": dict(meta),
            "encoder": _cpu_state(encoder),
            "actor": _cpu_state(modules["actor"]),
        },
    )


def _read(path: str | os.PathLike, fmt: str, keys: tuple[str, ...], device: Any) -> dict[str, Any]:
    return _check(path, io.torch_load(path, map_location=device), fmt, keys)


def _check(path: str | os.PathLike, data: Any, fmt: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a {fmt} checkpoint (format: {found!r})")
    missing = [k for k in ("meta", *keys) if k not in data]
    if missing:
        raise CheckpointError(f"{path}: {fmt} checkpoint lacks {missing}")
    return data


def _config(path: str | os.PathLike, meta: dict[str, Any]) -> TrainConfig:
    try:
        return from_dict(TrainConfig, meta["config"]).validate()
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: its meta.config is not a valid training config ({err})") from err


def _load_into(path: str | os.PathLike, module: nn.Module, state: dict[str, Any], name: str) -> None:
    # A policy with NaN/Inf weights would act NaN (refused by the env) or be scored as garbage: refuse it here,
    # naming the tensor, rather than deep inside evaluation.
    if isinstance(state, dict):
        for key, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{path}: {name} weight '{key}' holds NaN or Inf values; refusing to use it")
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: {name} weights do not match the architecture of meta.config ({err})") from err


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """`(policy, meta)` of a PWM policy checkpoint, or of the PPO reference's (`flow-mbpo-pwm/reference-policy/1`,
    deterministic action = the Gaussian's mean); raises `CheckpointError` naming the problem (missing file, wrong
    format, unsafe or mismatched contents)."""
    data = io.torch_load(path, map_location=device)
    if isinstance(data, dict) and data.get("format") == REFERENCE_POLICY_FORMAT:
        return policy_from_data(path, data, device)
    data = _check(path, data, POLICY_FORMAT, ("encoder", "actor"))
    meta = data["meta"]
    config = _config(path, meta)
    obs_dim, act_dim = int(meta["obs_dim"]), int(meta["act_dim"])
    pwm = config.pwm
    encoder = build_encoder(obs_dim, config.world_model)
    latent = config.world_model.latent_dim
    actor = Actor(latent, act_dim, pwm.actor_units, pwm.init_logstd, pwm.min_logstd, pwm.standardizes_latent)
    _load_into(path, encoder, data["encoder"], "encoder")
    _load_into(path, actor, data["actor"], "actor")
    return Policy(encoder, actor).to(device).eval(), meta


def check_policy_matches(meta: dict[str, Any], config: TrainConfig, obs_dim: int, act_dim: int) -> None:
    """Raise `CheckpointError` naming the first mismatch between a policy's meta and the cell it is used for."""
    expected = (
        ("obs_dim", obs_dim),
        ("act_dim", act_dim),
        ("size", config.size),
        ("dynamics", config.dynamics_name),
        ("task", config.task_name),
    )
    for key, value in expected:
        if meta.get(key) != value:
            raise CheckpointError(f"checkpoint {key} is {meta.get(key)!r} but the cell expects {value!r}")


def save_agent(path: str | os.PathLike, agent: Any, meta: dict[str, Any]) -> None:
    """Write the full agent (world model, actor, critic; no optimisers). `meta` must hold `config`."""
    if "config" not in meta:
        raise ValueError("save_agent: meta lacks 'config'")
    modules = _modules(agent)
    meta = {"obs_dim": agent.obs_dim, "act_dim": agent.act_dim, **meta}
    io.torch_save(
        path, {"format": AGENT_FORMAT, "meta": meta, **{name: _cpu_state(module) for name, module in modules.items()}}
    )


def load_agent(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """`(agent, meta)`: a `PWM` with the saved weights (fresh optimisers and running statistics)."""
    from flow_mbpo_pwm.algorithms.pwm import PWM

    data = _read(path, AGENT_FORMAT, ("world_model", "actor", "critic"), device)
    meta = data["meta"]
    config = _config(path, meta)
    agent = PWM(int(meta["obs_dim"]), int(meta["act_dim"]), config, device)
    for name in ("world_model", "actor", "critic"):
        _load_into(path, getattr(agent, name), data[name], name)
    return agent, meta


def save_world_model(path: str | os.PathLike, agent: Any, meta: dict[str, Any]) -> None:
    """Write a pretrained world model with the agent's reward statistics. `meta` must hold `config`."""
    if "config" not in meta:
        raise ValueError("save_world_model: meta lacks 'config'")
    meta = {"obs_dim": agent.obs_dim, "act_dim": agent.act_dim, **meta}
    io.torch_save(
        path,
        {
            "format": WORLD_MODEL_FORMAT,
            "meta": meta,
            "world_model": _cpu_state(agent.world_model),
            "rew_rms": _cpu_state(agent.rew_rms),
        },
    )


def load_world_model(path: str | os.PathLike, agent: Any) -> dict[str, Any]:
    """Load a pretrained world model (weights, bitwise) and its reward statistics into `agent`; returns its meta.
    Raises `CheckpointError` when the file is not such a checkpoint or was trained for another task, observation
    or action size, or world-model architecture (the first differing key is named)."""
    from flow_mbpo_pwm.train_state import config_differences

    data = _read(path, WORLD_MODEL_FORMAT, ("world_model", "rew_rms"), agent.device)
    meta = data["meta"]
    saved = _config(path, meta)
    if (meta.get("obs_dim"), meta.get("act_dim")) != (agent.obs_dim, agent.act_dim):
        raise CheckpointError(
            f"{path}: pretrained for obs_dim={meta.get('obs_dim')}, act_dim={meta.get('act_dim')}, but this run has "
            f"obs_dim={agent.obs_dim}, act_dim={agent.act_dim}"
        )
    if saved.env.task != agent.config.env.task:
        raise CheckpointError(f"{path}: pretrained on task {saved.env.task!r}, this run is {agent.config.env.task!r}")
    for section in WORLD_MODEL_CONFIG_SECTIONS:
        diffs = config_differences(saved.to_dict()[section], agent.config.to_dict()[section])
        if diffs:
            key, had, wants = diffs[0]
            raise CheckpointError(
                f"{path}: pretrained with {section}.{key}={had!r}, but this run has {section}.{key}={wants!r}"
            )
    _load_into(path, agent.world_model, data["world_model"], "world_model")
    _load_into(path, agent.rew_rms, data["rew_rms"], "rew_rms")
    return meta


def world_model_digest(path: str | os.PathLike) -> str:
    """The content digest of a pretrained world model file (`io.integrity_digest`: independent of the device and
    of how torch lays the file out), by which a cloned actor names the world model it was fitted on."""
    return io.integrity_digest(_read(path, WORLD_MODEL_FORMAT, ("world_model", "rew_rms"), "cpu"))


def save_actor(path: str | os.PathLike, actor: nn.Module, meta: dict[str, Any]) -> None:
    """Write a cloned actor. `meta` must hold `config` (the cell's, from which the shape is rebuilt) and
    `world_model_digest` (`world_model_digest` of the world model whose latents it reads)."""
    missing = [k for k in ("config", "world_model_digest") if k not in meta]
    if missing:
        raise ValueError(f"save_actor: meta lacks {missing}")
    io.torch_save(path, {"format": ACTOR_FORMAT, "meta": dict(meta), "actor": _cpu_state(actor)})


def load_actor(path: str | os.PathLike, agent: Any, world_model: str | os.PathLike) -> dict[str, Any]:
    """Load a cloned actor (weights, bitwise) into `agent.actor`; returns its meta. Raises `CheckpointError` when
    the file is not such a checkpoint, was fitted on another world model than `world_model` (the file this run
    starts from), or has another shape (the first differing key is named)."""
    from flow_mbpo_pwm.config import flatten

    data = _read(path, ACTOR_FORMAT, ("actor",), agent.device)
    meta = data["meta"]
    saved = flatten(_config(path, meta).to_dict())
    wants = flatten(agent.config.to_dict())
    for key in ACTOR_CONFIG_KEYS:
        if saved[key] != wants[key]:
            raise CheckpointError(f"{path}: cloned with {key}={saved[key]!r}, but this run has {key}={wants[key]!r}")
    if meta.get("world_model_digest") != world_model_digest(world_model):
        raise CheckpointError(
            f"{path}: cloned on the latents of another world model than {world_model}; clone it again on that one"
        )
    _load_into(path, agent.actor, data["actor"], "actor")
    return meta
