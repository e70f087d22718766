"""CUDA-graph capture of the PWM epoch's phases: the world-model steps, the critic steps and — where the env can
step under capture (`env.supports_torch_graph_capture`) — the imagination + actor step.

Why: on a GPU the epoch's cost is kernel launches, not arithmetic (../shared/specs/pwm.md's timing model: a few
tens of thousands of small kernels per epoch). Capturing a phase once and replaying it launches the whole phase
with one call.

How a phase runs (`PhaseGraphs.run(name, fn, *inputs)`):
1. first call: `fn(*inputs)` eagerly, on the capture stream (warm-up: cuBLAS handles and workspaces
   exist before capture, so no lazy initialisation is recorded into the graph);
2. second call: the inputs are copied into static tensors, `fn(*static_inputs)` is captured into a
   `torch.cuda.CUDAGraph` and replayed once (capture records kernels without running them);
3. later calls: copy the inputs into the static tensors, replay.
Outputs are cloned after each run, so a caller may keep them across the next replay. The captured code is the
eager code itself, so captured and eager differ only by floating-point noise (verified on the GPU, see
bench/RESULTS.md "CUDA graphs").

What a captured phase may touch: tensors whose storage lives as long as the graph (parameters, optimiser state,
running statistics, replay-buffer storage, the static inputs) — never a tensor that is re-assigned between
replays. Hence: Adam (algorithms/stacked_adam.py) keeps its step counts on the device and its lr in a 0-d device
tensor that `PWM.set_learning_rates` fills in place, and loads a saved state by copying into its tensors; random
numbers come from the agent's device generators, registered with every graph (its offset advances on each replay,
as in eager mode); and `PWM.load_state_dict` (which sets the generators' states) calls `reset()`, so phases are
captured again.

Autograd detail: a parameter's gradient accumulator remembers the stream it was created on; one created on the
default stream and still alive (held by an earlier autograd graph, e.g. the imagined rollout's) makes the captured
backward wait on the default stream, which capture forbids. `PWM.epoch` frees the rollout's graph before the
captured phases for that reason.

Host-side effects of a phase (Python counters) run while it is captured, not on replay: the imagination phase's
one, the replay buffer's host count of adds, is advanced by `PWM` after each replay. A capture that fails raises
(it cannot fall back to eager: the registered generator is left mid-capture).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Outputs = dict[str, torch.Tensor] | tuple[torch.Tensor, ...]


@dataclass
class _Phase:
    calls: int = 0
    graph: torch.cuda.CUDAGraph | None = None
    inputs: tuple[torch.Tensor, ...] = ()
    outputs: Any = None
    keep: list[Any] = field(default_factory=list)  # objects the graph must outlive (nothing reads them)


class PhaseGraphs:
    """Captured phases of one agent, by name. `generators`: the device generator(s) the phases draw from (a stack
    of seeds: one per seed, and the scratch one)."""

    def __init__(self, device: torch.device, generators: torch.Generator | Sequence[torch.Generator]):
        if device.type != "cuda":
            raise ValueError(f"PhaseGraphs needs a CUDA device, got {device}")
        self.device = device
        self.generators = [generators] if isinstance(generators, torch.Generator) else list(generators)
        self.stream = torch.cuda.Stream(device=device)
        self.phases: dict[Any, _Phase] = {}

    def reset(self) -> None:
        """Drop every captured graph (they are captured again on their next calls)."""
        self.phases.clear()

    def captured(self) -> list[Any]:
        return [name for name, phase in self.phases.items() if phase.graph is not None]

    def run(
        self, name: Any, fn: Callable[..., Outputs], *inputs: torch.Tensor, capture_error_mode: str = "thread_local"
    ) -> Outputs:
        """Run phase `name` = `fn(*inputs)`: eager on the first call, captured on the second, replayed after.
        `inputs` must keep their shapes and dtypes across calls (they are copied into static tensors).
        `capture_error_mode="relaxed"` is for phases that call a library (Warp) that makes calls the stricter
        modes refuse during capture."""
        phase = self.phases.setdefault(name, _Phase())
        phase.calls += 1
        if phase.graph is None:
            if phase.calls == 1:
                return self._on_stream(fn, *inputs)
            try:
                self._capture(phase, fn, inputs, capture_error_mode)
            except Exception as error:
                # A failed capture leaves the registered generator in capture mode: no safe eager fallback.
                raise RuntimeError(
                    f"CUDA graph capture of phase {name!r} failed ({error}); run with run.cuda_graphs=false"
                ) from error
        else:
            for static, value in zip(phase.inputs, inputs, strict=True):
                if static.shape != value.shape or static.dtype != value.dtype:
                    raise ValueError(
                        f"captured phase {name!r}: input changed from {tuple(static.shape)} {static.dtype} to "
                        f"{tuple(value.shape)} {value.dtype}; captured phases need static shapes"
                    )
                static.copy_(value)
        phase.graph.replay()
        return _clone(phase.outputs)

    def _on_stream(self, fn: Callable[..., Outputs], *inputs: torch.Tensor) -> Outputs:
        """Eager warm-up on the capture stream, ordered after and before the caller's stream."""
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            out = fn(*inputs)
        caller.wait_stream(self.stream)
        return out

    def _capture(self, phase: _Phase, fn: Callable[..., Outputs], inputs: tuple[torch.Tensor, ...], mode: str) -> None:
        phase.inputs = tuple(x.detach().clone() for x in inputs)
        graph = torch.cuda.CUDAGraph()
        register = getattr(graph, "register_generator_state", None)
        if register is None:
            raise RuntimeError(
                "this torch has no CUDAGraph.register_generator_state (needed for the agent's generator)"
            )
        for generator in self.generators:
            register(generator)
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode=mode):
            phase.outputs = fn(*phase.inputs)
        phase.graph = graph
        torch.cuda.current_stream(self.device).wait_stream(self.stream)


def _clone(outputs: Outputs) -> Outputs:
    if isinstance(outputs, dict):
        return {key: value.clone() for key, value in outputs.items()}
    return tuple(value.clone() for value in outputs)
