"""For the bench scripts' tests: a script under bench/ imported by its path (bench/ is not a package)."""

import importlib.util
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load_bench_script(name: str) -> ModuleType:
    """bench/<name>.py as the module `name` (registered in sys.modules, as its dataclasses and pickles need)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The pinned 5.3k PPO reference's run folder inside bench/carried/reference-config.tar.gz.
CARRIED_REFERENCE = "results/ant/reference/seed0"

# A tiny Ant cell whose actor reads the standardised latent, for the benches that clone the carried reference onto a
# world model (`fresh_world_model`, `clone_on_a_fresh_world_model`): short CPU data and episodes.
TINY_CLONE_EXPERIMENT = {"tasks": {"ant": {"num_envs": 2, "episode_length": 40}}, "sizes": ["tiny"],
                         "dynamics": {"deterministic": {}}, "seeds": [0], "reference": {"device": "cpu"},
                         "collect": {"num_envs": 2, "steps_per_snapshot": 25},
                         "train": {"pwm": {"horizon": 8, "latent_norm": "standardize"}}}  # fmt: skip


def collect_from_carried_reference(tmp_path: Path, experiment: dict) -> tuple[Path, Path]:
    """The carried 5.3k reference unpacked under `tmp_path` (its run folder: `tmp_path / CARRIED_REFERENCE`),
    `experiment` written as a config, and the offline dataset `collect` makes from the reference's snapshots with
    it. Returns the config's and the dataset's paths."""
    from flow_mbpo_pwm.cli import main

    with tarfile.open(ROOT / "bench" / "carried" / "reference-config.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(experiment))
    dataset = tmp_path / "dataset.h5"
    assert main(["collect", "--config", str(config_path), "--task", "ant", "--reference-dir",
                 str(tmp_path / CARRIED_REFERENCE), "--out", str(dataset), "--device", "cpu"]) == 0  # fmt: skip
    return config_path, dataset


def fresh_world_model(tmp_path: Path, experiment: dict) -> dict[str, Path]:
    """`collect_from_carried_reference` and a fresh (untrained) world model of the experiment's `tiny` deterministic
    cell saved as a pretrained one: the paths `config`, `dataset`, `world_model`, `reference_policy`."""
    from flow_mbpo_pwm import checkpoints
    from flow_mbpo_pwm.algorithms.pwm import PWM
    from flow_mbpo_pwm.config import load_experiment

    config_path, dataset = collect_from_carried_reference(tmp_path, experiment)
    config = load_experiment(config_path).cell("ant", "tiny", "deterministic", 0)
    world_model = tmp_path / "wm.pt"
    checkpoints.save_world_model(world_model, PWM(37, 8, config, "cpu"), {"config": config.to_dict()})
    return {"config": config_path, "dataset": dataset, "world_model": world_model,
            "reference_policy": tmp_path / CARRIED_REFERENCE / "policy.pt"}  # fmt: skip


def clone_on_a_fresh_world_model(tmp_path: Path, experiment: dict) -> dict[str, Path]:
    """`fresh_world_model` and the reference cloned on it for 20 steps (`flow-mbpo-pwm clone`): its paths and
    `actor`."""
    from flow_mbpo_pwm.cli import main

    paths = fresh_world_model(tmp_path, experiment)
    actor = tmp_path / "actor.pt"
    assert main(["clone", "--config", str(paths["config"]), "--task", "ant", "--size", "tiny", "--dynamics",
                 "deterministic", "--dataset", str(paths["dataset"]), "--out", str(actor), "--steps", "20",
                 "--device", "cpu", "--world-model", str(paths["world_model"]), "--reference-policy",
                 str(paths["reference_policy"])]) == 0  # fmt: skip
    return {**paths, "actor": actor}


# The tiny clone experiment trained 4 epochs with the actor held throughout and its state saved at the end
# (`held_clone_run`).
HELD_CLONE_EXPERIMENT = {**TINY_CLONE_EXPERIMENT,
                         "train": {"pwm": {**TINY_CLONE_EXPERIMENT["train"]["pwm"], "epochs": 4,
                                           "actor_delay_epochs": 4, "wm_steps": 1},
                                   "run": {"validate_every": 4, "save_state_every": 4,
                                           "grad_check_every": 0}}}  # fmt: skip


def held_clone_run(tmp_path: Path, experiment: dict = HELD_CLONE_EXPERIMENT) -> tuple[Path, dict[str, Path]]:
    """`clone_on_a_fresh_world_model` and `train` of the experiment's tiny deterministic cell, seed 0, from that world
    model, clone and data (the experiment holds the actor with `pwm.actor_delay_epochs`): the run folder and the
    paths."""
    from flow_mbpo_pwm.cli import main

    paths = clone_on_a_fresh_world_model(tmp_path, experiment)
    run = tmp_path / "run"
    assert main(["train", "--config", str(paths["config"]), "--task", "ant", "--size", "tiny", "--dynamics",
                 "deterministic", "--seed", "0", "--device", "cpu", "--run-dir", str(run), "--world-model-init",
                 str(paths["world_model"]), "--actor-init", str(paths["actor"]), "--offline-data",
                 str(paths["dataset"])]) == 0  # fmt: skip
    return run, paths
