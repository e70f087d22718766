"""The pieces of a stack of seeds that are not PWM itself: per-seed gradient clipping, stacking per-seed draws, and
calling one seed's code on every seed at once.

A stack trains S seeds of one cell in one process (algorithms/pwm.py): every network's parameters carry a leading
seed axis (`[S, ...]`, `torch.func.stack_module_state`), and the per-seed code — written once, for one seed, with
the ordinary modules — runs on all seeds through `torch.func.functional_call` under `torch.vmap`. Random numbers
are drawn per seed from that seed's generator outside vmap (vmap's own randomness would use the global RNG) and
passed in as tensors: what `stack_draws` assembles.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


def clip_grad_norm_per_seed(grads: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for each seed of stacked gradients `[S, ...]`: seed s's gradients (slice
    s of every tensor) are scaled by `min(1, max_norm / (norm_s + 1e-6))`, in place, where `norm_s` is the L2 norm
    over all of seed s's entries. Returns the pre-clip norms `[S]`."""
    if not grads:
        raise ValueError("clip_grad_norm_per_seed: no gradients")
    per_tensor = torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads], dim=1)
    norms = torch.linalg.vector_norm(per_tensor, dim=1)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.reshape(-1, *(1,) * (g.dim() - 1)))
    return norms


def stack_draws(items: Sequence[Any]) -> Any:
    """Stack S per-seed values of the same structure (tensors, or dicts / lists / tuples / NamedTuples of them)
    along a new leading seed axis."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(list(items))
    if isinstance(first, dict):
        return {key: stack_draws([item[key] for item in items]) for key in first}
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(stack_draws(list(field)) for field in zip(*items, strict=True)))
    if isinstance(first, list | tuple):
        return type(first)(stack_draws(list(field)) for field in zip(*items, strict=True))
    raise TypeError(f"stack_draws: cannot stack {type(first).__name__}")


class _Call(nn.Module):
    """`fn(module, *args)` as a module's forward, so `functional_call` can run any per-seed function (it only
    calls `forward`). Holds `module` as its submodule `m`: the stacked state's keys are prefixed `m.`."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]):
        super().__init__()
        self.m = module
        self.fn = fn

    def forward(self, args: tuple[Any, ...]) -> Any:
        return self.fn(self.m, *args)


def vmapped(module: nn.Module, fn: Callable[..., Any], compile: bool = False) -> Callable[[dict, tuple], Any]:
    """`(state, args) -> fn(module, *args_s)` for every seed s at once (see `per_seed`), made once per function;
    `compile`: the whole vmapped call as one `torch.compile` graph (inductor fuses its elementwise chains, forward
    and backward; no graph breaks allowed, static shapes)."""
    call = _Call(module, fn)

    def run(state: dict[str, torch.Tensor], args: tuple[Any, ...]) -> Any:
        return torch.vmap(lambda st, a: torch.func.functional_call(call, st, (a,)))(state, args)

    if not compile:
        return run
    # Dynamo keeps its compiled graphs, and its recompile limit (8), per code object. Sharing `run`'s, the
    # compiled functions of a PWM epoch (with and without gradients) passed that limit on an H200 and ran eager
    # from then on. So each compiled function gets a code object of its own, named for it (in logs and profiles).
    name = f"per_seed_{getattr(fn, 'func', fn).__name__}"  # a functools.partial: the function it wraps
    code = run.__code__.replace(co_name=name, co_qualname=name)
    own = types.FunctionType(code, run.__globals__, name, run.__defaults__, run.__closure__)
    return torch.compile(own, fullgraph=True, dynamic=False)


def per_seed(module: nn.Module, state: dict[str, torch.Tensor], fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(module, *args_s)` for every seed s at once: `module` (one seed's modules, the single definition) runs
    with seed s's slice of `state` (`{"m.<name>": [S, ...]}`, parameters and per-seed buffers) and of `args`
    (tensors, or structures of tensors, each with a leading seed axis). Random ops inside `fn` are refused (vmap's
    default): draw outside and pass the draws in."""
    return vmapped(module, fn)(state, args)


class PerSeed:
    """`per_seed` for one module, with each function's vmapped call made once and kept; the functions in
    `compiled` are compiled (`vmapped(..., compile=True)`) on their first call."""

    def __init__(self, module: nn.Module, compiled: Sequence[Callable[..., Any]] = ()):
        self.module = module
        self.compiled = set(compiled)
        self.calls: dict[Callable[..., Any], Callable[[dict, tuple], Any]] = {}

    def __call__(self, state: dict[str, torch.Tensor], fn: Callable[..., Any], *args: Any) -> Any:
        call = self.calls.get(fn)
        if call is None:
            call = self.calls[fn] = vmapped(self.module, fn, compile=fn in self.compiled)
        return call(state, args)
