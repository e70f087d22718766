"""True parameter counts of every size preset x dynamics preset (`flow-mbpo-pwm params`).

TD-MPC2's preset names ("5M", "48M") count its Q-ensemble and policy, which PWM drops; the world model PWM actually
trains is smaller. The 5M deterministic world model on Ant (obs 37, act 8) has 1,469,953 parameters (spec: ~1.47M):
encoder 142,848 + dynamics 795,136 + reward 531,969 — the spec's number exactly. The flow variant adds the time
embedding's 32 inputs to the velocity network's first layer (+32 x 512 at 5M) and drops the LayerNorm of the last
layer (-2 x 512): +15,360.
"""

from __future__ import annotations

import torch

from flow_mbpo_pwm.config import DYNAMICS_PRESETS, SIZE_PRESETS, PWMConfig
from flow_mbpo_pwm.models.actor import Actor
from flow_mbpo_pwm.models.critic import CriticEnsemble
from flow_mbpo_pwm.models.world_model import WorldModel


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(
    obs_dim: int, act_dim: int, size: str, dynamics: str, pwm: PWMConfig | None = None
) -> dict[str, int]:
    """`{world_model, actor, critic, total}` for one size preset and dynamics preset."""
    pwm = pwm or PWMConfig()
    wm_config = SIZE_PRESETS[size]
    # On the meta device: shapes only, no memory, so counting a 48M model (or any obs_dim) allocates nothing.
    with torch.device("meta"):
        return _build_and_count(obs_dim, act_dim, wm_config, dynamics, pwm)


def _build_and_count(obs_dim: int, act_dim: int, wm_config, dynamics: str, pwm: PWMConfig) -> dict[str, int]:
    world_model = WorldModel(obs_dim, act_dim, wm_config, DYNAMICS_PRESETS[dynamics])
    actor = Actor(wm_config.latent_dim, act_dim, pwm.actor_units, pwm.init_logstd, pwm.min_logstd)
    critic = CriticEnsemble(wm_config.latent_dim, pwm.critic_units, pwm.num_critics)
    counts = {"world_model": _count(world_model), "actor": _count(actor), "critic": _count(critic)}
    counts["total"] = sum(counts.values())
    return counts


def print_parameter_counts(obs_dim: int, act_dim: int) -> int:
    """Print the table; returns the exit code 0."""
    if obs_dim < 1 or act_dim < 1:
        raise ValueError(f"obs_dim ({obs_dim}) and act_dim ({act_dim}) must be >= 1")
    header = f"{'size':>5} {'dynamics':>13} {'world_model':>12} {'actor':>9} {'critic':>9} {'total':>12}"
    print(f"true parameter counts for obs_dim={obs_dim}, act_dim={act_dim}")
    print(header)
    print("-" * len(header))
    for size in SIZE_PRESETS:
        for dynamics in DYNAMICS_PRESETS:
            c = parameter_counts(obs_dim, act_dim, size, dynamics)
            print(
                f"{size:>5} {dynamics:>13} {c['world_model']:>12,} {c['actor']:>9,} {c['critic']:>9,} {c['total']:>12,}"
            )
    return 0
