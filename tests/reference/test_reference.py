"""The PPO reference (rsl-rl) and the collect stage on the real Ant, CPU, tiny budgets: outputs, policy format,
evaluation by `evaluate`, the offline dataset, resume after SIGTERM and clear refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from flow_mbpo_pwm import io
from flow_mbpo_pwm.cli import main
from flow_mbpo_pwm.config import ConfigError, load_experiment

# 16 envs x 8 steps per PPO iteration, 12 iterations; 50-step episodes so training episodes finish.
EXPERIMENT = {
    "tasks": {"ant": {"num_envs": 8, "episode_length": 50}},
    "sizes": ["tiny"],
    "dynamics": {"deterministic": {}},
    "seeds": [0, 1],
    "evaluation": {"episodes": 100, "num_envs": 50},
    "reference": {
        "num_envs": 16,
        "env_steps": 16 * 8 * 12,
        "horizon": 8,
        "snapshots": 3,
        "validation_episodes": 4,
        "log_every": 2,
        "save_state_every": 100,
        "device": "cpu",
    },
    "collect": {"seed": 0, "num_envs": 8, "steps_per_snapshot": 60, "noise_scale": 0.25},
}
SNAPSHOT_NAMES = ["step_000000000000.pt", "step_000000000768.pt", "step_000000001536.pt"]


def write_config(folder: Path, data: dict) -> Path:
    path = folder / "experiment.yaml"
    io.write_text(path, yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("config"), EXPERIMENT)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, config_path) -> Path:
    """One completed reference run (seed 0), through the command line."""
    run = tmp_path_factory.mktemp("reference") / "ant" / "reference" / "seed0"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["reference", "--config", str(config_path), "--task", "ant", "--seed", "0", "--run-dir", str(run)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return run


def test_reference_writes_its_declared_outputs(finished):
    from flow_mbpo_pwm.aggregate import read_summaries

    assert sorted(p.name for p in (finished / "snapshots").iterdir()) == SNAPSHOT_NAMES
    assert (finished / "policy.pt").read_bytes() == (finished / "snapshots" / SNAPSHOT_NAMES[-1]).read_bytes()
    summary = io.read_json(finished / "train_summary.json")
    assert (summary["size"], summary["dynamics"], summary["status"]) == ("reference", "ppo", "completed")
    assert summary["env_steps"] == 1536 and summary["epochs"] == 12 and summary["stopped_by"] == "env_steps"
    assert summary["params"]["world_model"] == 0 and summary["params"]["total"] > 0
    assert [c["path"] for c in summary["checkpoints"]] == [f"snapshots/{n}" for n in SNAPSHOT_NAMES]
    assert len(read_summaries([finished / "train_summary.json"])) == 1  # what aggregate reads

    metrics = pd.read_csv(finished / "metrics.csv")
    assert list(metrics["iteration"]) == [2, 4, 6, 8, 10, 12] and (metrics["size"] == "reference").all()
    assert metrics["train_episodes"].sum() > 0 and metrics["train_return_mean"].dropna().gt(0).all()
    assert metrics[["value_loss", "surrogate_loss", "learning_rate", "action_std"]].notna().all(axis=None)
    validation = pd.read_csv(finished / "validation.csv")
    assert list(validation["env_steps"]) == [0, 768, 1536] and (validation["val_episodes"] == 4).all()
    assert list(validation["checkpoint"]) == [f"snapshots/{n}" for n in SNAPSHOT_NAMES]


def test_policy_loads_bitwise_and_is_evaluated_by_evaluate(finished, config_path, tmp_path):
    from flow_mbpo_pwm.checkpoints import load_policy
    from flow_mbpo_pwm.reference_policy import REFERENCE_POLICY_FORMAT

    saved = io.torch_load(finished / "policy.pt")
    assert saved["format"] == REFERENCE_POLICY_FORMAT
    policy, meta = load_policy(finished / "policy.pt")
    for name, tensor in policy.actor.state_dict().items():
        assert torch.equal(tensor, saved["actor"][name]), name  # normaliser statistics included
    assert policy.std.tolist() == meta["std"] and len(meta["std"]) == meta["act_dim"] == 8
    obs = torch.randn(5, 37)
    assert torch.equal(policy(obs), policy.actor.mlp(policy.actor.obs_normalizer(obs)))  # the Gaussian's mean

    out_csv, out_h5 = tmp_path / "eval" / "episodes.csv", tmp_path / "eval" / "trajectories.h5"
    cell = ["--config", str(config_path), "--task", "ant", "--size", "reference", "--dynamics", "ppo", "--seed", "0"]
    code = main(
        ["evaluate", *cell, "--device", "cpu", "--checkpoint", str(finished / "policy.pt"), "--out-csv",
         str(out_csv), "--out-h5", str(out_h5)]
    )  # fmt: skip
    assert code == 0
    episodes = pd.read_csv(out_csv)
    assert len(episodes) == 100
    assert set(zip(episodes["size"], episodes["dynamics"], strict=True)) == {("reference", "ppo")}
    assert (episodes["eval_seed"] == 1_000_000).all() and episodes["return"].notna().all()


def test_collect_writes_a_dataset_with_each_snapshots_own_noise(finished, config_path, tmp_path):
    from flow_mbpo_pwm.checkpoints import load_policy
    from flow_mbpo_pwm.data.datasets import load_dataset, read_dataset

    out = tmp_path / "offline" / "dataset.h5"
    code = main(["collect", "--config", str(config_path), "--task", "ant", "--reference-dir", str(finished),
                 "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert code == 0
    data, attrs = read_dataset(out)
    assert data["observations"].shape == (3 * 8, 60, 37) and data["actions"].shape == (3 * 8, 60, 8)
    assert data["truncated"].any() and (data["actions"].abs() <= 1).all()
    snapshots = json.loads(attrs["snapshots"])
    assert [s["path"] for s in snapshots] == [f"snapshots/{n}" for n in SNAPSHOT_NAMES]
    assert attrs["source"] == "reference" and attrs["noise_scale"] == 0.25 and attrs["streams_per_snapshot"] == 8

    for k, snapshot in enumerate(snapshots):
        policy, meta = load_policy(finished / snapshot["path"])
        assert snapshot["std"] == meta["std"]
        streams = slice(8 * k, 8 * (k + 1))  # snapshot k's envs are streams 8k .. 8k+7
        obs, actions = data["observations"][streams].reshape(-1, 37), data["actions"][streams].reshape(-1, 8)
        noise = actions - policy(obs)
        inside = actions.abs() < 1  # clipped entries do not show the noise
        measured = torch.stack([noise[:, j][inside[:, j]].std() for j in range(8)])
        expected = 0.25 * torch.tensor(meta["std"])
        assert torch.allclose(measured, expected, rtol=0.15), (k, measured, expected)

    buffer = load_dataset(out, "cpu", obs_dim=37, act_dim=8, horizon=4)
    assert len(buffer) == 3 * 8 * 60 and buffer.ready()
    assert torch.equal(buffer.chronological()["action"], data["actions"].transpose(0, 1))


def test_reference_resumes_after_sigterm_and_matches_an_uninterrupted_run(finished, config_path, tmp_path):
    run = tmp_path / "seed0"
    command = [sys.executable, "-m", "flow_mbpo_pwm.cli", "reference", "--config", str(config_path), "--task", "ant",
               "--seed", "0", "--run-dir", str(run)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (run / "work" / "metrics.csv").exists():  # the first log row: training is under way
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 75, output
    assert (run / "work" / "state.pt").is_file() and not (run / "train_summary.json").exists()

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout
    # CPU runs are bitwise reproducible: the resumed run ends exactly where the uninterrupted one did.
    for name in ("metrics.csv", "validation.csv"):
        a, b = pd.read_csv(run / name), pd.read_csv(finished / name)
        columns = [c for c in a.columns if c != "wall_seconds"]
        pd.testing.assert_frame_equal(a[columns], b[columns])
    final, reference = io.torch_load(run / "policy.pt"), io.torch_load(finished / "policy.pt")
    for name, tensor in reference["actor"].items():
        assert torch.equal(final["actor"][name], tensor), name


def test_changed_settings_are_refused_naming_the_key(finished, config_path):
    code = main(["reference", "--config", str(config_path), "--task", "ant", "--seed", "0", "--run-dir",
                 str(finished), "--env-steps", "4096"])  # fmt: skip
    assert code == 2


def test_bad_inputs_give_clear_errors(finished, config_path, tmp_path, capsys):
    from flow_mbpo_pwm.reference_policy import load_reference_policy

    out = tmp_path / "d.h5"
    args = ["collect", "--config", str(config_path), "--task", "ant", "--out", str(out), "--device", "cpu"]
    assert main([*args, "--reference-dir", str(tmp_path / "missing")]) == 1
    assert "no train_summary.json; collect needs a completed reference run" in capsys.readouterr().err
    assert not out.exists()

    foreign = tmp_path / "foreign.pt"
    io.torch_save(foreign, {"format": "flow-mbpo-pwm/policy/1", "meta": {}})
    with pytest.raises(io.CheckpointError, match="not a flow-mbpo-pwm/reference-policy/1 checkpoint"):
        load_reference_policy(foreign)
    with pytest.raises(io.CheckpointError, match="does not exist"):
        load_reference_policy(tmp_path / "none.pt")
    broken = io.torch_load(finished / "policy.pt")
    del broken["meta"]["std"]
    io.torch_save(foreign, broken)
    with pytest.raises(io.CheckpointError, match=r"lacks \['meta.std'\]"):
        load_reference_policy(foreign)

    with pytest.raises(ConfigError, match="dynamics.ppo"):
        load_experiment({**EXPERIMENT, "dynamics": {"ppo": {"kind": "deterministic"}}})
    with pytest.raises(ConfigError, match="collect.seed"):
        load_experiment({**EXPERIMENT, "collect": {"seed": 5}})
    with pytest.raises(ConfigError, match="reference.snapshots"):
        load_experiment({**EXPERIMENT, "reference": {**EXPERIMENT["reference"], "snapshots": 40}})
    disabled = write_config(tmp_path, {**EXPERIMENT, "reference": {"enabled": False}, "pretrain": {"enabled": False}})
    cell = ["--task", "ant", "--size", "reference", "--dynamics", "ppo", "--seed", "0"]
    code = main(["evaluate", "--config", str(disabled), *cell, "--checkpoint", str(finished / "policy.pt"),
                 "--out-csv", str(tmp_path / "e.csv"), "--out-h5", str(tmp_path / "e.h5")])  # fmt: skip
    assert code == 2 and "reference.enabled" in capsys.readouterr().err


def test_wall_clock_cap_stops_the_run_and_saves_the_final_policy(config_path, tmp_path):
    run = tmp_path / "capped"
    args = ["reference", "--config", str(config_path), "--task", "ant", "--seed", "1", "--run-dir", str(run)]
    assert main([*args, "--max-minutes", "0.0001"]) == 0  # 6 ms: over after the first iteration
    summary = io.read_json(run / "train_summary.json")
    assert summary["stopped_by"] == "max_minutes" and summary["epochs"] == 1 and summary["env_steps"] == 128
    assert [c["env_steps"] for c in summary["checkpoints"]] == [0, 128]  # untrained and final
    assert (run / "policy.pt").read_bytes() == (run / "snapshots" / "step_000000000128.pt").read_bytes()


def test_min_noise_std_must_be_below_init_noise_std_and_not_negative():
    for floor in (-0.1, 1.0, 2.0):
        with pytest.raises(ConfigError, match="reference.min_noise_std"):
            load_experiment({**EXPERIMENT, "reference": {**EXPERIMENT["reference"], "min_noise_std": floor}})
    load_experiment({**EXPERIMENT, "reference": {**EXPERIMENT["reference"], "min_noise_std": 0.3}})


def test_min_noise_std_floors_the_exploration_std_and_its_default_keeps_rsl_rls_range():
    from rsl_rl.modules.distribution import GaussianDistribution
    from rsl_rl.utils import resolve_class

    from flow_mbpo_pwm.config import ReferenceConfig
    from flow_mbpo_pwm.reference_policy import build_actor, exploration_std, rsl_model_config

    floored = ReferenceConfig(min_noise_std=0.3, actor_units=(4,))
    assert rsl_model_config(floored)["actor"]["distribution_cfg"]["std_range"] == (0.3, 1e6)
    actor = build_actor(floored, obs_dim=3, act_dim=2)
    with torch.no_grad():
        actor.distribution.std_param.fill_(0.05)  # collapsed below the floor
    actor({"policy": torch.zeros(5, 3)}, stochastic_output=True)
    assert torch.allclose(actor.output_std, torch.full((5, 2), 0.3))
    assert torch.allclose(exploration_std(actor), torch.full((2,), 0.3))  # what metrics and collect read

    # At the default 0 the distribution is the one built before the knob existed (no std_range given).
    _, today = resolve_class(rsl_model_config(ReferenceConfig())["actor"]["distribution_cfg"])
    before = {k: v for k, v in today.items() if k != "std_range"}
    assert GaussianDistribution(2, **today).std_range == GaussianDistribution(2, **before).std_range == [1e-6, 1e6]


def test_settings_saved_before_min_noise_std_still_match_at_its_default(tmp_path):
    from flow_mbpo_pwm.reference import ReferenceFolder, _check_folder, reference_settings

    experiment = load_experiment(EXPERIMENT)
    folder = ReferenceFolder(tmp_path / "seed0")
    old = reference_settings(experiment, "ant", 0)
    del old["reference"]["min_noise_std"]
    io.write_text(folder.settings, yaml.safe_dump(old, sort_keys=False))
    _check_folder(folder, reference_settings(experiment, "ant", 0))  # no difference: the folder is reused

    io.write_text(folder.settings, yaml.safe_dump(old, sort_keys=False))
    floored = load_experiment({**EXPERIMENT, "reference": {**EXPERIMENT["reference"], "min_noise_std": 0.3}})
    with pytest.raises(ConfigError, match="reference.min_noise_std"):
        _check_folder(folder, reference_settings(floored, "ant", 0))


@pytest.mark.parametrize(("archive", "config"), [("reference.tar.gz", "short.yaml"),
                                                 ("reference-config.tar.gz", "config.yaml")])  # fmt: skip
def test_each_pinned_carried_reference_matches_its_config(archive, config):
    """bench/gpu_grid.sh uses a bench/carried/reference*.tar.gz only where its saved settings match the config:
    each pinned one stands in for the reference of the config it was trained for (bench/carried/README.md)."""
    import tarfile

    from flow_mbpo_pwm.reference import reference_settings, settings_defaults
    from flow_mbpo_pwm.train_state import config_differences

    root = Path(__file__).parents[2]
    with tarfile.open(root / "bench" / "carried" / archive) as packed:
        saved = yaml.safe_load(packed.extractfile("results/ant/reference/seed0/work/settings.yaml").read())
    requested = reference_settings(load_experiment(root / "config" / config), "ant", 0)
    assert config_differences(saved, requested, settings_defaults()) == []


def test_a_policy_saved_before_min_noise_std_loads_with_rsl_rls_range(tmp_path):
    from flow_mbpo_pwm.config import ReferenceConfig, to_plain
    from flow_mbpo_pwm.reference_policy import build_actor, load_reference_policy, save_reference_policy

    settings = ReferenceConfig(actor_units=(4,))
    old = to_plain(dataclasses.asdict(settings))
    del old["min_noise_std"]
    actor = build_actor(settings, obs_dim=3, act_dim=2)
    meta = {"task": "ant", "size": "reference", "dynamics": "ppo", "seed": 0, "iteration": 0, "env_steps": 0,
            "obs_dim": 3, "act_dim": 2, "std": [1.0, 1.0], "reference": old}  # fmt: skip
    save_reference_policy(tmp_path / "old.pt", actor, meta)
    policy, _ = load_reference_policy(tmp_path / "old.pt")
    assert policy.actor.distribution.std_range == [1e-6, 1e6]
    assert torch.equal(policy.std, torch.ones(2))
