"""bench/imagined_clone.py end to end on a clone of the pinned 5.3k PPO reference (tiny world model, short CPU
data): it writes an actor the pipeline loads, with its imagined steps in the meta, and its imagined pool is the clone
stage's own imagined latents."""

import subprocess
import sys

import torch
from bench_helpers import ROOT, TINY_CLONE_EXPERIMENT, fresh_world_model, load_bench_script

from flow_mbpo_pwm import checkpoints, clone
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import load_experiment


def test_imagined_clone_fits_an_actor_on_a_pool_of_the_stages_imagined_latents(tmp_path):
    paths = fresh_world_model(tmp_path, TINY_CLONE_EXPERIMENT)
    config_path, dataset, world_model, policy = (paths[k] for k in ("config", "dataset", "world_model",
                                                                      "reference_policy"))  # fmt: skip
    config = load_experiment(config_path).cell("ant", "tiny", "deterministic", 0)
    out = tmp_path / "imagined" / "actor.pt"
    out.parent.mkdir()
    args = ["--config", str(config_path), "--size", "tiny", "--world-model", str(world_model), "--dataset",
            str(dataset), "--reference-policy", str(policy), "--imagined-steps", "2", "--pool", "40",
            "--steps", "20", "--batch", "16", "--out", str(out)]  # fmt: skip
    subprocess.run([sys.executable, "bench/imagined_clone.py", *args], cwd=ROOT, check=True)
    agent = PWM(37, 8, config, "cpu")
    checkpoints.load_world_model(world_model, agent.members[0])
    meta = checkpoints.load_actor(out, agent.members[0], world_model)
    assert meta["imagined_steps"] == 2 and meta["steps"] == 20
    assert (out.parent / "clone_metrics.csv").is_file()

    # The pool: 40 windows of 2 imagined latents each (chunks of POOL_CHUNK), drawn by the stage's own function.
    bench = load_bench_script("imagined_clone")
    cloning = bench.PooledCloning(config, world_model, dataset, policy, out, 2, pool=40)
    cloning._build()
    draw = cloning._imagined(batch=5)
    latents, labels = draw(torch.Generator().manual_seed(0))
    assert latents.shape == (5, config.world_model.latent_dim) and labels.shape == (5, 8)
    generator = torch.Generator().manual_seed(config.run.seed + 1)
    pool, pool_labels = clone.imagined_latents(cloning.agent.world_model, cloning.reference, cloning.windows, 40,
                                               generator)  # fmt: skip
    assert pool.shape == (80, config.world_model.latent_dim)
    assert all(any(torch.equal(z, p) for p in pool) for z in latents)  # every draw is one of the pool's latents
