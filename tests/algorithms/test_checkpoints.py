from dataclasses import replace

import pytest
import torch
from pwm_helpers import small_config

from flow_mbpo_pwm import checkpoints
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import with_overrides
from flow_mbpo_pwm.io import CheckpointError

OBS, ACT = 4, 1


class Payload:
    """Any class: unpickling it would run code chosen by whoever wrote the file."""

    def __reduce__(self):
        return (print, ("this would have run",))


def meta_for(config, **extra):
    return {"task": config.task_name, "size": config.size, "dynamics": config.dynamics_name,
            "seed": config.run.seed, "epoch": 7, "env_steps": 112, "obs_dim": OBS, "act_dim": ACT,
            "val_return": 12.5, "config": config.to_dict(), **extra}  # fmt: skip


@pytest.fixture
def agent():
    torch.manual_seed(0)
    agent = PWM(OBS, ACT, small_config("flow"), "cpu")
    with torch.no_grad():  # move away from the init, so a loader that silently re-inits would be caught
        for p in agent.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return agent


def test_policy_round_trip_gives_the_deterministic_action(agent, tmp_path):
    path = tmp_path / "policy.pt"
    checkpoints.save_policy(path, agent, meta_for(agent.config))
    policy, meta = checkpoints.load_policy(path, "cpu")
    obs = torch.randn(9, OBS)
    torch.testing.assert_close(policy(obs), agent.act(obs, deterministic=True), rtol=0, atol=0)
    assert meta["epoch"] == 7 and meta["val_return"] == 12.5
    checkpoints.check_policy_matches(meta, agent.config, OBS, ACT)


def test_load_refuses_a_pickled_arbitrary_object_with_a_clear_error(tmp_path):
    path = tmp_path / "evil.pt"
    # An arbitrary (non-tensor) object: weights_only loading must refuse to unpickle it.
    torch.save({"format": checkpoints.POLICY_FORMAT, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        checkpoints.load_policy(path)


def test_load_errors_name_the_problem(agent, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoints.load_policy(tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "something/else/1"}, wrong)
    with pytest.raises(CheckpointError, match="not a flow-mbpo-pwm/policy/1 checkpoint"):
        checkpoints.load_policy(wrong)
    partial = tmp_path / "partial.pt"
    torch.save({"format": checkpoints.POLICY_FORMAT, "meta": meta_for(agent.config)}, partial)
    with pytest.raises(CheckpointError, match="lacks"):
        checkpoints.load_policy(partial)
    mismatched = tmp_path / "mismatched.pt"
    checkpoints.save_policy(mismatched, agent, meta_for(agent.config, obs_dim=OBS + 1))
    with pytest.raises(CheckpointError, match="encoder weights do not match"):
        checkpoints.load_policy(mismatched)


def test_check_policy_matches_names_the_first_mismatch(agent):
    meta = meta_for(agent.config)
    with pytest.raises(CheckpointError, match="obs_dim"):
        checkpoints.check_policy_matches(meta, agent.config, OBS + 1, ACT)
    other = with_overrides(agent.config)
    with pytest.raises(CheckpointError, match="dynamics"):
        checkpoints.check_policy_matches(meta, replace(other, dynamics_name="deterministic"), OBS, ACT)
    with pytest.raises(CheckpointError, match="size"):
        checkpoints.check_policy_matches(meta, replace(other, size="5M"), OBS, ACT)


def test_agent_round_trip(agent, tmp_path):
    path = tmp_path / "final.pt"
    checkpoints.save_agent(path, agent, {"task": "pendulum", "epoch": 3, "config": agent.config.to_dict()})
    loaded, meta = checkpoints.load_agent(path, "cpu")
    assert meta["obs_dim"] == OBS and meta["epoch"] == 3
    for name in ("world_model", "actor", "critic"):
        for (k, v), (k2, v2) in zip(getattr(agent, name).state_dict().items(),
                                    getattr(loaded, name).state_dict().items(), strict=True):  # fmt: skip
            assert k == k2 and torch.equal(v, v2)
    with pytest.raises(CheckpointError, match="not a flow-mbpo-pwm/agent/1"):
        checkpoints.save_policy(tmp_path / "policy.pt", agent, meta_for(agent.config))
        checkpoints.load_agent(tmp_path / "policy.pt")


def test_non_finite_weights_are_refused_naming_the_tensor(agent, tmp_path):
    path = tmp_path / "policy.pt"
    with torch.no_grad():
        next(agent.actor.parameters()).view(-1)[0] = float("inf")
    checkpoints.save_policy(path, agent, meta_for(agent.config))  # intact file, poisoned weights
    name = next(iter(agent.actor.state_dict()))
    with pytest.raises(CheckpointError, match=f"policy.pt: actor weight '{name}' holds NaN or Inf"):
        checkpoints.load_policy(path)


def test_a_checkpoint_changed_on_disk_is_refused(agent, tmp_path):
    path = tmp_path / "policy.pt"
    checkpoints.save_policy(path, agent, meta_for(agent.config))
    data = torch.load(path, weights_only=True)
    data["actor"][next(iter(data["actor"]))].view(-1)[0] += 1.0  # keeps the old integrity record
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="policy.pt: damaged checkpoint"):
        checkpoints.load_policy(path)
