"""CUDA-graph support of the PWM update phases (algorithms/graphs.py). On the CPU: the optimiser-mode helpers and
that an agent stays eager; on a GPU (skipped without one): a replayed phase equals the same phase run eagerly."""

import pytest
import torch
from pwm_helpers import small_config

from flow_mbpo_pwm.algorithms.graphs import PhaseGraphs, make_capturable, make_eager, set_lr
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.data.replay import ReplayBuffer


def adam_with_state() -> torch.optim.Adam:
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([w], lr=0.25)
    w.sum().backward()
    optimizer.step()
    return optimizer


def test_capturable_round_trip_keeps_lr_and_moves_step():
    optimizer = adam_with_state()
    make_capturable(optimizer, torch.device("cpu"))
    group = optimizer.param_groups[0]
    assert group["capturable"] and optimizer.defaults["capturable"]
    assert isinstance(group["lr"], torch.Tensor) and group["lr"].dim() == 0 and float(group["lr"]) == 0.25
    step = next(iter(optimizer.state.values()))["step"]
    assert step.dtype == torch.float32 and float(step) == 1.0
    make_eager(optimizer)
    assert group["lr"] == 0.25 and isinstance(group["lr"], float) and not group["capturable"]


def test_set_lr_fills_a_tensor_lr_in_place_and_assigns_a_float():
    tensor_group = {"lr": torch.tensor(1.0)}
    held = tensor_group["lr"]
    set_lr(tensor_group, 0.5)
    assert tensor_group["lr"] is held and float(held) == 0.5
    float_group = {"lr": 1.0}
    set_lr(float_group, 0.5)
    assert float_group["lr"] == 0.5


def test_phase_graphs_refuse_a_cpu_device():
    with pytest.raises(ValueError, match="CUDA device"):
        PhaseGraphs(torch.device("cpu"), torch.Generator())


def test_cpu_agent_stays_eager_and_loads_a_captured_runs_optimiser_state():
    """A state saved by a capturable agent (tensor lr, capturable Adam) resumes in an eager CPU agent as plain Adam
    (float lr, host step counters), and the eager agent keeps training."""
    config = small_config()
    saver = PWM(4, 1, config, "cpu", cuda_graphs=True)
    assert saver.graphs is None  # CUDA graphs never apply on the CPU
    for optimizer in (saver.actor_optimizer, saver.critic_optimizer, saver.wm_optimizer):
        w = optimizer.param_groups[0]["params"][0]
        w.grad = torch.zeros_like(w)
        optimizer.step()
        make_capturable(optimizer, torch.device("cpu"))  # the format a GPU run with CUDA graphs saves
    loader = PWM(4, 1, config, "cpu")
    loader.load_state_dict(saver.state_dict())
    for optimizer in (loader.actor_optimizer, loader.critic_optimizer, loader.wm_optimizer):
        group = optimizer.param_groups[0]
        assert isinstance(group["lr"], float) and not group["capturable"]
        for state in optimizer.state.values():
            assert state["step"].device.type == "cpu"
    loader.set_learning_rates(0.5)
    assert loader.wm_optimizer.param_groups[0]["lr"] == loader.learning_rates(0.5)["wm"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_phases_equal_eager_phases_on_cuda():
    config = small_config("flow")
    device = torch.device("cuda")
    agent = PWM(4, 1, config, device)
    assert agent.graphs is not None
    buffer = ReplayBuffer(4000, 4, 4, 1, device, horizon=config.pwm.horizon)
    g = torch.Generator(device=device).manual_seed(1)
    for t in range(40):
        done = torch.full((4,), t % 13 == 12, device=device)
        buffer.add(*(torch.randn(s, generator=g, device=device) for s in ((4, 4), (4, 1), (4,), (4, 4))), done, done)
    steps = config.pwm.wm_steps
    for _ in range(3):  # eager warm-up, capture + replay, replay
        agent.world_model_steps(buffer, steps)
    assert len(agent.graphs.captured()) == 1

    def state() -> list[torch.Tensor]:
        moments = [v for st in agent.wm_optimizer.state.values() for v in st.values()]
        return [*agent.world_model.parameters(), *moments]

    before = [t.detach().clone() for t in state()]
    generator = agent.generator.get_state()
    captured = agent.world_model_steps(buffer, steps)  # replayed
    after_captured = [t.detach().clone() for t in state()]
    generator_captured = agent.generator.get_state()
    with torch.no_grad():
        for t, saved in zip(state(), before, strict=True):
            t.copy_(saved)
    agent.generator.set_state(generator)
    eager = agent._world_model_steps(buffer, steps)  # the same code, eagerly, from the same state
    assert torch.equal(agent.generator.get_state(), generator_captured)  # the graph advanced the generator alike
    for key in captured:
        assert torch.allclose(captured[key], eager[key], rtol=1e-4, atol=1e-6), key
    for x, y in zip(after_captured, state(), strict=True):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-6)
