"""CUDA-graph support of the PWM update phases (algorithms/graphs.py). On the CPU: that an agent stays eager and
loads a captured run's optimiser state; on a GPU (skipped without one): a replayed phase equals the same phase run
eagerly, and the critic and world-model phases side by side on two streams equal them one after the other."""

import pytest
import torch
from pwm_helpers import small_config

from flow_mbpo_pwm.algorithms.graphs import Call, PhaseGraphs, check_side_by_side
from flow_mbpo_pwm.algorithms.pwm import PWM, Rollout
from flow_mbpo_pwm.data.replay import ReplayBuffer


def test_phase_graphs_refuse_a_cpu_device():
    with pytest.raises(ValueError, match="CUDA device"):
        PhaseGraphs(torch.device("cpu"), torch.Generator())


def test_phases_side_by_side_may_not_both_draw_random_numbers():
    """Two phases that both register the agent's generators would race on its seed and offset tensors
    (`PhaseGraphs.side_by_side` checks this first)."""
    with pytest.raises(ValueError, match="at most one phase may draw"):
        check_side_by_side((Call("a", lambda: ()), Call("b", lambda: ())))
    check_side_by_side((Call("a", lambda: ()), Call("b", lambda: (), draws=False)))  # one drawing phase is fine


def test_cpu_agent_stays_eager_and_loads_a_captured_runs_optimiser_state():
    """A state saved by a GPU run with CUDA graphs before the stacked Adam (capturable torch Adam: tensor lr, float32
    step counters) resumes in a CPU agent: its moments and step counts are copied in, its lr becomes the stack's,
    and the agent keeps training."""
    config = small_config()
    saver = PWM(4, 1, config, "cpu", cuda_graphs=True)
    assert saver.graphs is None  # CUDA graphs never apply on the CPU
    state = saver.state_dict()
    for name in ("actor_optimizer", "critic_optimizer", "wm_optimizer"):
        group = state[name]["param_groups"][0]
        group.update(lr=torch.tensor(0.125), capturable=True)  # the format a GPU run with CUDA graphs saved
        for param_state in state[name]["state"].values():
            param_state["step"] = torch.tensor(3.0)
            param_state["exp_avg"] = torch.full_like(param_state["exp_avg"], 0.5)
    loader = PWM(4, 1, config, "cpu")
    loader.load_state_dict(state)
    for optimizer in (loader.actor_optimizer, loader.critic_optimizer, loader.wm_optimizer):
        group = optimizer.param_groups[0]
        assert group["lr"] == 0.125 and not group["capturable"]
        for param_state in optimizer.state.values():
            assert float(param_state["step"]) == 3.0 and param_state["step"].device.type == "cpu"
            assert (param_state["exp_avg"] == 0.5).all()
    loader.set_learning_rates(0.5)
    assert loader.wm_optimizer.param_groups[0]["lr"] == loader.learning_rates(0.5)["wm"]


def _filled_buffers(seeds, horizon, device) -> list[ReplayBuffer]:
    """One replay buffer per seed of 40 steps of 4 envs (obs 4, act 1), episodes of 13 steps."""
    buffers = []
    for seed in seeds:
        buffer = ReplayBuffer(4000, 4, 4, 1, device, horizon=horizon)
        g = torch.Generator(device=device).manual_seed(seed + 1)
        for t in range(40):
            done = torch.full((4,), t % 13 == 12, device=device)
            shapes = ((4, 4), (4, 1), (4,), (4, 4))
            buffer.add(*(torch.randn(s, generator=g, device=device) for s in shapes), done, done)
        buffers.append(buffer)
    return buffers


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_captured_phases_equal_eager_phases_on_cuda(seeds):
    """A lone agent and a stack of three seeds: the replayed world-model phase equals the same code run eagerly."""
    config = small_config("flow")
    device = torch.device("cuda")
    agent = PWM(4, 1, config, device, seeds=seeds)
    assert agent.graphs is not None
    buffers = _filled_buffers(seeds, config.pwm.horizon, device)
    steps = config.pwm.wm_steps
    for _ in range(3):  # eager warm-up, capture + replay, replay
        agent.world_model_steps(buffers, steps)
    assert len(agent.graphs.captured()) == 1

    def state() -> list[torch.Tensor]:
        tensors = []
        for member in agent.members:
            moments = [v for st in member.wm_optimizer.state.values() for v in st.values()]
            tensors += [*member.world_model.parameters(), *moments]
        return tensors

    def generators() -> list[torch.Tensor]:
        return [member.generator.get_state() for member in agent.members]

    before = [t.detach().clone() for t in state()]
    generators_before = generators()
    captured = agent.world_model_steps(buffers, steps)  # replayed
    after_captured = [t.detach().clone() for t in state()]
    generators_captured = generators()
    with torch.no_grad():
        for t, saved in zip(state(), before, strict=True):
            t.copy_(saved)
    for member, saved in zip(agent.members, generators_before, strict=True):
        member.generator.set_state(saved)
    eager = agent._world_model_steps(buffers, steps, agent.live_seeds())  # the same code, eagerly, same state
    for replayed, eager_state in zip(generators_captured, generators(), strict=True):
        assert torch.equal(replayed, eager_state)  # the graph advanced every seed's generator alike
    for key in captured:
        assert torch.allclose(captured[key], eager[key], rtol=1e-4, atol=1e-6), key
    for x, y in zip(after_captured, state(), strict=True):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dynamics", ["deterministic", "flow"])
def test_critic_and_world_model_side_by_side_equal_them_one_after_the_other_on_cuda(dynamics):
    """PWM.epoch's critic and world-model phases, captured, run side by side on two streams: from the same state,
    the same losses, parameters, optimiser state and generator states as one after the other, bit for bit, every
    time (a race between them would show as a difference now and then)."""
    seeds, device = (0, 1), torch.device("cuda")
    config = small_config(dynamics)
    agent = PWM(4, 1, config, device, seeds=seeds)
    buffers = _filled_buffers(seeds, config.pwm.horizon, device)
    H, S, N, latent = config.pwm.horizon, len(seeds), config.env.num_envs, config.world_model.latent_dim
    g = torch.Generator(device=device).manual_seed(7)
    rollout = Rollout(
        objective=torch.zeros(S, N, device=device),  # unused by the two phases
        latents=torch.randn(H, S, N, latent, generator=g, device=device).softmax(-1),
        rewards=torch.randn(H, S, N, generator=g, device=device),
        next_values=torch.randn(H, S, N, generator=g, device=device),
        dones=torch.rand(H, S, N, generator=g, device=device) < 0.1,
        episodes=torch.zeros(S, device=device, dtype=torch.float64),
        episode_return_sum=torch.zeros(S, device=device, dtype=torch.float64),
        episode_return_max=torch.zeros(S, device=device, dtype=torch.float64),
        saturation=torch.zeros(S, N, device=device),
        smoothness=torch.zeros(S, N, device=device),
    )
    training = agent.live_seeds()
    for _ in range(3):  # eager warm-up, capture + replay, replay
        agent.critic_and_world_model(rollout, buffers, config.pwm.wm_steps, training)
    lanes = {agent.graphs.phases[name].lane for name in agent.graphs.captured() if name[0] in ("critic", "world_model")}
    assert lanes == {0, 1}

    def state() -> list[torch.Tensor]:
        tensors = [*agent.stacked.values()]
        for adam in agent.adams.values():
            tensors += [adam.exp_avg, adam.exp_avg_sq, adam.steps]
        return tensors

    def generators() -> list[torch.Tensor]:
        return [member.generator.get_state() for member in agent.members]

    start = [t.detach().clone() for t in state()], generators()
    for _ in range(5):
        results = []
        for concurrent in (True, False):
            with torch.no_grad():
                for t, saved in zip(state(), start[0], strict=True):
                    t.copy_(saved)
            for member, saved in zip(agent.members, start[1], strict=True):
                member.generator.set_state(saved)
            agent.concurrent_phases = concurrent
            (loss, norm), wm_metrics = agent.critic_and_world_model(rollout, buffers, config.pwm.wm_steps, training)
            results.append(([loss, norm, *wm_metrics.values()], [t.detach().clone() for t in state()], generators()))
        agent.concurrent_phases = True
        (side_out, side_state, side_gen), (seq_out, seq_state, seq_gen) = results
        assert all(torch.equal(x, y) for x, y in zip(side_out, seq_out, strict=True))
        assert all(torch.equal(x, y) for x, y in zip(side_state, seq_state, strict=True))
        assert all(torch.equal(x, y) for x, y in zip(side_gen, seq_gen, strict=True))
        assert not all(torch.equal(x, y) for x, y in zip(side_state, start[0], strict=True))  # it did train
