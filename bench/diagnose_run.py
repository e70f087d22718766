"""Where a trained run's learning stalls: the world-model diagnostics (src/flow_mbpo_pwm/diagnostics.py) of a run
folder's saved state, on fresh validation episodes (validation env and seeds, deterministic policy), with the
gradient check at several finite-difference steps. Works on run folders trained before the diagnostics existed
(e.g. the long Ant runs in RESULTS.md). Usage:

    python bench/diagnose_run.py RUN_DIR [--device cuda] [--starts 8] [--eps 0.01 0.003 0.001]

Prints per imagined step the latent errors (model, copy baseline, ratio), the reward error and the critic's value
error (model, copy baseline, ratio), then per eps the return-gradient cosine (mean and per start state) and its
per-action split.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from flow_mbpo_pwm import diagnostics, envs, io
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import load_train_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--starts", type=int, default=8, help="saved states for the gradient check")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.003, 0.001])
    args = parser.parse_args()
    device = torch.device(args.device)
    config = load_train_config(args.run_dir / "work" / "config.yaml")
    state = io.torch_load(args.run_dir / "work" / "state.pt", map_location=device)
    H, gamma = config.pwm.horizon, config.pwm.gamma

    env = envs.make_from_config(
        config.env,
        device,
        seed=config.run.validation_seed_base + config.run.seed,
        num_envs=config.run.validation_episodes,
    )
    agent = PWM(env.obs_dim, env.act_dim, config, device, cuda_graphs=False)
    agent.load_state_dict(state["agent"])  # running statistics too: rewards in the world model's units
    print(f"{args.run_dir}: epoch {state['epoch']}, {config.size} {config.dynamics_name}, H={H}, device {device}")

    # The validation loop of train.py, recording every step and the start states of the gradient check.
    steps = env.max_episode_steps
    recorder = diagnostics.EpisodeRecorder(steps, env.num_envs, env.obs_dim, env.act_dim, device)
    starts = diagnostics.start_steps(steps, H, args.starts) if diagnostics.JointStateReturns.supported(env) else []
    returns = diagnostics.first_episode_returns(env, agent.act, recorder, tuple(starts))
    print(f"validation return {float(returns.mean()):.1f} +- {float(returns.std(unbiased=False)):.1f}")

    units = diagnostics.reward_units(config.pwm.reward_norm, agent.rew_rms, config.pwm.reward_clip)
    value = agent.critic.value
    found = diagnostics.validation_diagnostics(agent.world_model, recorder, H, gamma, units, value=value)
    rows, fit = found.rows, found.critic
    print(
        f"critic against the episodes' returns-to-go ({fit.states} states): explained variance"
        f" {fit.explained_variance:.3f}, bias {fit.bias:.4g} on a mean return of {fit.return_mean:.4g}"
    )
    print(
        f"\n{'step':>4} {'wm_latent_mse':>14} {'copy_latent_mse':>16} {'ratio':>7} {'wm_reward_mse':>14}"
        f" {'wm_value_mse':>13} {'copy_value_mse':>15} {'ratio':>7}"
    )
    for r in rows:
        print(
            f"{r['step']:>4} {r['wm_latent_mse']:>14.4g} {r['copy_latent_mse']:>16.4g} {r['latent_ratio']:>7.3f}"
            f" {r['wm_reward_mse']:>14.4g} {r['wm_value_mse']:>13.4g} {r['copy_value_mse']:>15.4g}"
            f" {r['value_ratio']:>7.3f}"
        )

    start_states = recorder.start_states(H)
    if start_states is None:
        print("\nno gradient check: the env cannot be placed in a saved state, or episodes are shorter than H")
        return
    exact = {"deterministic": True} if config.env.task == "ant" else {}
    probe = envs.make_from_config(config.env, device, seed=0, num_envs=2 * H * env.act_dim, episode_length=H, **exact)
    env_returns = diagnostics.JointStateReturns(probe, gamma, units)
    for eps in args.eps:
        began = time.perf_counter()
        agreements = diagnostics.gradient_cosines(agent.world_model, start_states, env_returns, gamma, eps)
        per_start = " ".join(f"{a.cosine:+.3f}" for a in agreements)
        per_step = " ".join(f"{diagnostics.nanmean([a.per_step[t] for a in agreements]):+.2f}" for t in range(H))
        mean = diagnostics.nanmean([a.cosine for a in agreements])
        seconds = time.perf_counter() - began
        print(f"\neps {eps:g}: gradient cosine {mean:+.3f} ({seconds:.1f} s); per start: {per_start}")
        print(f"  per action step 1..{H}: {per_step}")
        if math.isnan(mean):
            print("  (NaN: the model's return gradient is zero, e.g. an untrained reward head)")


if __name__ == "__main__":
    main()
