"""Can PWM's actor hold the PPO reference's gait when it reads the latent? The same actor (PWM's architecture:
400-200-100, Mish, LayerNorm, tanh) is fitted to the reference's deterministic action (its Gaussian's mean, clipped
to the bounds) on the offline dataset's observations, as `flow-mbpo-pwm clone` fits it, once per input: `latent`,
z = E(o) of a pretrained world model (what PWM's actor reads); `untrained`, z of a fresh encoder of the same cell;
`observation`, the raw observation; and the pretrained latent transformed before the actor's first layer:
`latent-standardized`, per entry by its statistics on the dataset (`pwm.latent_norm: standardize`, as `clone` and
`train` fit them), `latent-layernorm`, by each latent's own mean and std (a LayerNorm without parameters), and
`latent-centred`, (z - 1/g) * g for SimNorm groups of g entries. Each row: the action error on the held-back tenth of
the observations, then the fitted policy's deterministic return on the Ant (the first episode of every env from one
reset, the env seeded as the held-out evaluation of seed 0) and how many of those episodes end in a fall.

Why: the deterministic cell levels off at ~3k held out whatever it is changed in (docs/results/README.md), and its
actor only ever sees z. If the latent cannot carry a 5.3k gait that the observation carries, the plateau is the
latent's. Usage (CPU is enough: ~45 ms a step at batch 2,048 on 2 cores, 16 ants x 1,000 steps ~1 min a row):

    PYTHONPATH=src python bench/clone_inputs.py --config config/config.yaml --world-model WORLD_MODEL.pt \\
        --dataset results/ant/offline/dataset.h5 --reference-policy results/ant/reference/seed0/policy.pt \\
        --steps 4000 --out bench/out/clone_inputs.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from flow_mbpo_pwm import checkpoints, clone, diagnostics, envs
from flow_mbpo_pwm.algorithms.pwm import PWM, SeedAgent, latent_sample
from flow_mbpo_pwm.config import EvaluationConfig, load_experiment, with_overrides
from flow_mbpo_pwm.data.datasets import read_dataset
from flow_mbpo_pwm.models.actor import Actor
from flow_mbpo_pwm.reference_policy import load_reference_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_epoch import Column, add_world_model_arguments, report, require_files, table, write_record  # noqa: E402

INPUTS = ("latent", "untrained", "observation", "latent-standardized", "latent-layernorm", "latent-centred")


def fit(
    features: Callable, obs: torch.Tensor, labels: torch.Tensor, config: Any, args: argparse.Namespace,
    standardize: bool = False,
) -> Actor:  # fmt: skip
    """PWM's actor on `features(obs)`, fitted as `flow-mbpo-pwm clone` fits it (`clone.fit_step`) on all but the
    held-back rows; `standardize`: reading its input standardised per entry, by statistics fitted as
    `SeedAgent.fit_latent_stats` fits them."""
    torch.manual_seed(args.seed)
    actor = Actor(features(obs[:1]).shape[-1], labels.shape[-1], config.pwm.actor_units, standardize_input=standardize)
    if standardize:
        with torch.no_grad():
            actor.input_norm.fit(latent_sample(features, obs))
    optimizer = torch.optim.Adam(actor.mu_net.parameters(), lr=args.lr)
    rows, _ = clone.split_rows(len(obs), obs.device)
    generator = torch.Generator().manual_seed(args.seed)
    for _ in range(args.steps):
        clone.fit_step(actor, features, obs, labels, rows, args.batch, generator, optimizer)
    return actor


def act(actor: Actor, read: Callable, obs: torch.Tensor) -> torch.Tensor:
    return actor.act(read(obs))


@torch.no_grad()
def episodes(
    policy: Callable, config: Any, count: int, seed: int | None = None, device: torch.device | None = None
) -> tuple[dict[str, float], diagnostics.EpisodeRecord]:
    """`count` first episodes of `policy` on the env side by side (seeded `seed`, by default as the held-out
    evaluation; on `device`, the CPU by default): return mean and std, falls (episodes ended before the last step),
    and the record of them."""
    env_config = with_overrides(config, env={"num_envs": count}).env
    env_seed = EvaluationConfig().seed_base if seed is None else seed
    env = envs.make_from_config(env_config, device or torch.device("cpu"), seed=env_seed)
    recorder = diagnostics.EpisodeRecorder(env.max_episode_steps, env.num_envs, env.obs_dim, env.act_dim, env.device)
    returns = diagnostics.first_episode_returns(env, policy, recorder)
    lengths = diagnostics.first_episode_steps(recorder.record.dones).sum(0)
    stats = {
        "return_mean": returns.mean().item(),
        "return_std": returns.std().item() if count > 1 else 0.0,
        "falls": int((lengths < env.max_episode_steps).sum()),
    }
    return stats, recorder.record


def cloned_agent(
    config: Any, data: dict[str, torch.Tensor], world_model: Path, actor: Path, device: torch.device | None = None
) -> PWM:
    """A one-seed PWM agent (on `device`, the CPU by default) for the dataset's observations and actions, holding
    the pretrained `world_model` and the actor cloned on it (`flow-mbpo-pwm clone`'s actor.pt)."""
    agent = PWM(data["observations"].shape[-1], data["actions"].shape[-1], config, device or torch.device("cpu"))
    checkpoints.load_world_model(world_model, agent.members[0])
    checkpoints.load_actor(actor, agent.members[0], world_model)
    return agent


@torch.no_grad()
def play(policy: Callable, obs: torch.Tensor, labels: torch.Tensor, config: Any, args: argparse.Namespace) -> dict:
    """The fitted policy's action error on the held-back tenth, and its first episodes on the env."""
    _, held_back = clone.split_rows(len(obs), obs.device)
    return {
        "held_back_action_error": clone.action_error(policy, obs, labels, held_back).item(),
        **episodes(policy, config, args.envs)[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_model_arguments(parser, "experiment YAML: the cell's actor and encoder")
    parser.add_argument("--reference-policy", type=Path, required=True, help="the reference's policy.pt")
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS))
    parser.add_argument("--steps", type=int, default=4000, help="Adam steps per fit")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="the fits' initial weights and batches")
    parser.add_argument("--max-observations", type=int, default=0, help="use only the first N (0: all)")
    parser.add_argument("--envs", type=int, default=16, help="episodes per row, side by side")
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    require_files(parser, args.config, args.world_model, args.dataset, args.reference_policy)
    if min(args.steps, args.batch, args.envs, args.episode_length) < 1:
        parser.error("--steps, --batch, --envs and --episode-length must be >= 1")
    device = torch.device("cpu")
    config = load_experiment(args.config).cell(args.task, args.size, args.dynamics, 0)
    config = with_overrides(config, run={"device": "cpu"}, env={"episode_length": args.episode_length})
    data, _ = read_dataset(args.dataset)
    obs = data["observations"].reshape(-1, data["observations"].shape[-1])
    if args.max_observations:
        obs = obs[: args.max_observations]
    reference, _ = load_reference_policy(args.reference_policy, device)
    labels = clone.reference_labels(reference, obs)
    pretrained = SeedAgent(obs.shape[-1], labels.shape[-1], config, 0, device)
    checkpoints.load_world_model(args.world_model, pretrained)
    fresh = SeedAgent(obs.shape[-1], labels.shape[-1], config, 0, device)
    encode, group = pretrained.world_model.encode, config.world_model.simnorm_dim
    features = {
        "latent": encode,
        "untrained": fresh.world_model.encode,
        "observation": lambda o: o,
        "latent-standardized": encode,  # through the actor's own `Standardize`
        "latent-layernorm": lambda o: F.layer_norm(encode(o), (config.world_model.latent_dim,)),
        "latent-centred": lambda o: (encode(o) - 1.0 / group) * group,
    }

    def rows() -> Iterator[dict[str, Any]]:
        for name in args.inputs:
            read = features[name]
            start = time.monotonic()
            actor = fit(read, obs, labels, config, args, standardize=name == "latent-standardized")
            fitted = time.monotonic() - start
            yield {
                "input": name,
                **play(partial(act, actor, read), obs, labels, config, args),
                "fit_seconds": round(fitted, 1),
            }

    line = table([
        Column("input", "input", "", 19), Column("action error", "held_back_action_error", ".4f"),
        Column("return", "return_mean", ".0f", 8), Column("+-", "return_std", ".0f", 6), Column("falls", "falls"),
        Column("fit s", "fit_seconds", ".0f", 6),
    ])  # fmt: skip
    write_record(args.out, device, args, report(rows(), line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
