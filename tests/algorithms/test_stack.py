"""Stack-of-seeds pieces (algorithms/stack.py): per-seed gradient clipping, stacking draws, per-seed calls."""

import pytest
import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_

from flow_mbpo_pwm.algorithms.stack import clip_grad_norm_per_seed, per_seed, stack_draws, vmapped


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_per_seed_clipping_equals_clip_grad_norm_on_each_seed_alone(max_norm):
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4, 5), (3, 7), (3,)]
    scales = torch.tensor([0.01, 1.0, 100.0])  # one seed below the bound, two above (for max_norm 0.5)
    grads = [torch.randn(shape, generator=generator) * scales.reshape(-1, *(1,) * (len(shape) - 1)) for shape in shapes]
    originals = [g.clone() for g in grads]
    norms = clip_grad_norm_per_seed(grads, max_norm)
    assert norms.shape == (3,)
    for s in range(3):
        lone = [nn.Parameter(g[s].clone()) for g in originals]
        for p, g in zip(lone, originals, strict=True):
            p.grad = g[s].clone()
        norm = clip_grad_norm_(lone, max_norm)
        torch.testing.assert_close(norms[s], norm, rtol=1e-6, atol=0)
        for p, g in zip(lone, grads, strict=True):
            torch.testing.assert_close(g[s], p.grad, rtol=1e-6, atol=0)
    if max_norm == 1e6:  # nothing clipped: the gradients are untouched
        assert all(torch.equal(g, o) for g, o in zip(grads, originals, strict=True))
    else:  # every seed's clipped gradient has norm <= the bound, and a seed below it is untouched
        assert torch.equal(grads[0][0], originals[0][0])


def test_stack_draws_keeps_the_structure_and_adds_a_leading_seed_axis():
    a = {"tau": torch.zeros(2, 1), "noise": [torch.ones(3)]}
    b = {"tau": torch.ones(2, 1), "noise": [torch.zeros(3)]}
    stacked = stack_draws([a, b])
    assert stacked["tau"].shape == (2, 2, 1) and stacked["noise"][0].shape == (2, 3)
    assert torch.equal(stacked["tau"][1], b["tau"])


def test_per_seed_runs_one_seeds_code_with_each_seeds_parameters_and_refuses_random_ops():
    torch.manual_seed(0)
    layers = [nn.Linear(3, 2) for _ in range(4)]
    params, _ = torch.func.stack_module_state(layers)
    state = {f"m.{k}": v for k, v in params.items()}
    x = torch.randn(4, 5, 3)
    out = per_seed(layers[0], state, lambda layer, inp: layer(inp).sum(-1), x)
    for s, layer in enumerate(layers):
        torch.testing.assert_close(out[s], layer(x[s]).sum(-1))
    with pytest.raises(RuntimeError, match="randomness"):
        per_seed(layers[0], state, lambda layer, inp: layer(inp + torch.randn(3)), x)


def test_compiled_functions_keep_a_compile_cache_each():
    """Dynamo's recompile limit (8) counts per code object. Five compiled per-seed functions, each called with and
    without gradients (10 graphs), all stay compiled, and each agrees with its eager call."""
    torch.manual_seed(0)
    layers = [nn.Linear(3, 2) for _ in range(2)]
    params, _ = torch.func.stack_module_state(layers)
    state = {f"m.{k}": v for k, v in params.items()}
    x = torch.randn(2, 5, 3)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, recompile_limit=8):
        for k in range(5):

            def scaled(layer, inp, k=k):
                return layer(inp) * (k + 1)

            call = vmapped(layers[0], scaled, compile=True)
            for grad in (True, False):
                with torch.set_grad_enabled(grad):
                    torch.testing.assert_close(call(state, (x,)), per_seed(layers[0], state, scaled, x))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 10
