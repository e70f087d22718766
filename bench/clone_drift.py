"""Does a cloned actor keep its gait while the world model trains on under it?
PWM's actor reads z = E(o), and the world model (the encoder E with it) keeps training online, `pwm.wm_steps`
updates per epoch. An actor that is not updated (`pwm.actor_delay_epochs`) still acts differently once E moves.
Here the cloned actor (`flow-mbpo-pwm clone`'s actor.pt) is held while the pretrained world model it was cloned on
goes on training on the offline dataset (the same loss, optimiser and constant learning rate as `pretrain`), and at
each of `--at` world-model steps:

- drift on the same observations (every `--sample-every`-th of the dataset): how far the actor's standardised input
  moved, mean |(E_k(o) - E_0(o)) / std| over entries, and how far its action moved, mean |a_k(o) - a_0(o)|, with
  the reference's action error (the clone's fit) beside it;
- the held actor's first episodes on the env (`--envs`, deterministic): return, falls, mean |a|.

Why: the clone sweep (docs/results/2026-12-07-det-clone) held the clone for all 4,000 epochs in one point and its
first validation, after 250 epochs (2,000 world-model updates), was ~1.4k, where the same clone had fitted the 5.3k
reference's action within 0.042. Offline continued training has no online data, so it measures the encoder's drift
under the world model's own loss alone; online, the new states add to it.

    PYTHONPATH=src python bench/clone_drift.py --config CONFIG --world-model WORLD_MODEL.pt --dataset ant.h5 \\
        --actor actor.pt --reference-policy results/ant/reference/seed0/policy.pt --at 0 250 1000 --out drift.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import clone, diagnostics
from flow_mbpo_pwm.config import load_experiment, with_overrides
from flow_mbpo_pwm.data.datasets import read_dataset, stream_buffer
from flow_mbpo_pwm.reference_policy import load_reference_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clone_inputs import cloned_agent, episodes  # noqa: E402
from train_epoch import Column, add_world_model_arguments, report, require_files, table, write_record  # noqa: E402


def play(agent: Any, config: Any, count: int) -> dict[str, float]:
    """The held actor's first episodes (deterministic `tanh(mu(E(o)))`): return, falls, mean |a|."""
    stats, record = episodes(agent.act, config, count)
    return {**stats, **diagnostics.action_columns(record)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_model_arguments(parser, "experiment YAML: the cell the actor was cloned for")
    parser.add_argument("--actor", type=Path, required=True, help="the cloned actor.pt (`clone`)")
    parser.add_argument("--reference-policy", type=Path, required=True, help="the reference's policy.pt")
    parser.add_argument("--at", type=int, nargs="+", default=[0, 250, 1000], help="world-model steps to measure at")
    parser.add_argument("--envs", type=int, default=16, help="episodes per measurement, side by side")
    parser.add_argument("--sample-every", type=int, default=50, help="dataset observations for the drift")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    require_files(parser, args.config, args.world_model, args.dataset, args.actor)
    if min(args.at) < 0 or args.at != sorted(args.at) or min(args.envs, args.sample_every) < 1:
        parser.error("--at must be non-negative and ascending, --envs and --sample-every >= 1")
    torch.set_num_threads(1)
    device = torch.device("cpu")
    config = load_experiment(args.config).cell(args.task, args.size, args.dynamics, 0)
    config = with_overrides(config, run={"device": "cpu"})
    data, _ = read_dataset(args.dataset)
    obs_dim = data["observations"].shape[-1]
    agent = cloned_agent(config, data, args.world_model, args.actor)
    member = agent.members[0]
    agent.rew_rms.update(data["rewards"])  # as `pretrain` fits them
    agent.set_learning_rates(0.0)  # pretraining's constant rate
    buffer = stream_buffer(data, device, config.pwm.horizon)
    sample = data["observations"].reshape(-1, obs_dim)[:: args.sample_every]
    reference, _ = load_reference_policy(args.reference_policy, device)
    labels = clone.reference_labels(reference, sample)
    actor = member.actor
    with torch.no_grad():
        start_input = actor.input_norm(member.world_model.encode(sample))
        start_action = member.act(sample)

    def rows():
        step, started = 0, time.monotonic()
        for at in args.at:
            while step < at:
                chunk = min(config.pwm.wm_steps or 1, at - step)
                agent.world_model_steps(buffer, chunk)
                step += chunk
            trained = time.monotonic() - started
            with torch.no_grad():
                moved = (actor.input_norm(member.world_model.encode(sample)) - start_input).abs().mean()
                action = member.act(sample)
            yield {
                "world_model_steps": at,
                "input_drift": moved.item(),
                "action_drift": (action - start_action).abs().mean().item(),
                "reference_action_error": (action - labels).abs().mean().item(),
                **play(member, config, args.envs),
                "train_seconds": round(trained, 1),
            }

    line = table([
        Column("wm steps", "world_model_steps"), Column("input drift", "input_drift", ".4f"),
        Column("action drift", "action_drift", ".4f"), Column("ref error", "reference_action_error", ".4f"),
        Column("return", "return_mean", ".0f", 7), Column("+-", "return_std", ".0f", 5), Column("falls", "falls"),
        Column("mean |a|", "action_magnitude", ".3f"),
    ])  # fmt: skip
    write_record(args.out, device, args, report(rows(), line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
