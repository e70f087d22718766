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

Side by side (`PhaseGraphs.side_by_side`): phases that share no state — no tensor one writes that another reads or
writes, and at most one of them drawing random numbers — replay concurrently, each on a stream of its own (a lane),
once all of them are captured. A captured phase is launch-bound (small kernels that leave most of the GPU idle), so
two of them side by side take about as long as the longer one. Each lane is also the phase's capture stream: cuBLAS
keeps a workspace per stream and a graph replays with the workspace it was captured with, so two phases captured on
one stream would share it; `side_by_side` runs phases captured on the same lane one after the other instead. A phase
that draws nothing says so (`draws=False`): it then registers no generator, since a registered generator's replay
writes the generator's seed and offset into device tensors that every graph registering it reads. Inputs are copied
and outputs cloned on the caller's stream, so no tensor outlives its stream's use of it.

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
    lane: int = 0  # the stream it was captured on (and replays on side by side)
    inputs: tuple[torch.Tensor, ...] = ()
    outputs: Any = None
    keep: list[Any] = field(default_factory=list)  # objects the graph must outlive (nothing reads them)


@dataclass(frozen=True)
class Call:
    """One phase: as `PhaseGraphs.run(name, fn, *inputs, draws=draws, lane=lane)` (`PhaseGraphs.call`, and
    `side_by_side` for several)."""

    name: Any
    fn: Callable[..., Outputs]
    inputs: tuple[torch.Tensor, ...] = ()
    draws: bool = True
    lane: int = 0


def check_side_by_side(calls: tuple[Call, ...]) -> None:
    """Phases may run side by side only if at most one of them draws random numbers (see the top)."""
    if sum(call.draws for call in calls) > 1:
        raise ValueError(f"side_by_side: at most one phase may draw random numbers, got {[c.name for c in calls]}")


class PhaseGraphs:
    """Captured phases of one agent, by name. `generators`: the device generator(s) the phases draw from (a stack
    of seeds: one per seed, and the scratch one)."""

    def __init__(self, device: torch.device, generators: torch.Generator | Sequence[torch.Generator]):
        if device.type != "cuda":
            raise ValueError(f"PhaseGraphs needs a CUDA device, got {device}")
        self.device = device
        self.generators = [generators] if isinstance(generators, torch.Generator) else list(generators)
        self.stream = torch.cuda.Stream(device=device)  # lane 0
        self.lanes = [self.stream]
        self.phases: dict[Any, _Phase] = {}

    def reset(self) -> None:
        """Drop every captured graph (they are captured again on their next calls)."""
        self.phases.clear()

    def captured(self) -> list[Any]:
        return [name for name, phase in self.phases.items() if phase.graph is not None]

    def run(
        self,
        name: Any,
        fn: Callable[..., Outputs],
        *inputs: torch.Tensor,
        capture_error_mode: str = "thread_local",
        draws: bool = True,
        lane: int = 0,
    ) -> Outputs:
        """Run phase `name` = `fn(*inputs)`: eager on the first call, captured on the second, replayed after.
        `inputs` must keep their shapes and dtypes across calls (they are copied into static tensors).
        `capture_error_mode="relaxed"` is for phases that call a library (Warp) that makes calls the stricter
        modes refuse during capture. `draws=False`: the phase draws no random numbers (see the top). `lane`: the
        stream it runs and is captured on (see `side_by_side`)."""
        phase = self.phases.setdefault(name, _Phase())
        phase.calls += 1
        if phase.graph is None:
            if phase.calls == 1:
                return self._on_stream(self._lane(lane), fn, *inputs)
            try:
                self._capture(phase, fn, inputs, capture_error_mode, draws, lane)
            except Exception as error:
                # A failed capture leaves the registered generator in capture mode: no safe eager fallback.
                raise RuntimeError(
                    f"CUDA graph capture of phase {name!r} failed ({error}); run with run.cuda_graphs=false"
                ) from error
        else:
            self._copy_inputs(name, phase, inputs)
        phase.graph.replay()
        return _clone(phase.outputs)

    def call(self, call: Call) -> Outputs:
        """`run` of one `Call`."""
        return self.run(call.name, call.fn, *call.inputs, draws=call.draws, lane=call.lane)

    def side_by_side(self, *calls: Call) -> list[Outputs]:
        """Run independent phases (see the top), each on its call's lane: concurrently once every one is captured
        on a lane of its own, else one after the other through `run` (their warm-up and capture calls)."""
        check_side_by_side(calls)
        phases = [self.phases.get(call.name) for call in calls]
        ready = all(phase is not None and phase.graph is not None for phase in phases)
        if not ready or len({phase.lane for phase in phases}) < len(calls):  # type: ignore[union-attr]
            return [self.call(call) for call in calls]
        caller = torch.cuda.current_stream(self.device)
        for call, phase in zip(calls, phases, strict=True):
            self._copy_inputs(call.name, phase, call.inputs)  # type: ignore[arg-type]
        lanes = [self._lane(phase.lane) for phase in phases]  # type: ignore[union-attr]
        for lane, phase in zip(lanes, phases, strict=True):
            lane.wait_stream(caller)
            with torch.cuda.stream(lane):
                phase.graph.replay()  # type: ignore[union-attr]
        for lane in lanes:
            caller.wait_stream(lane)
        return [_clone(phase.outputs) for phase in phases]  # type: ignore[union-attr]

    def _lane(self, index: int) -> torch.cuda.Stream:
        while len(self.lanes) <= index:
            self.lanes.append(torch.cuda.Stream(device=self.device))
        return self.lanes[index]

    @staticmethod
    def _copy_inputs(name: Any, phase: _Phase, inputs: tuple[torch.Tensor, ...]) -> None:
        for static, value in zip(phase.inputs, inputs, strict=True):
            if static.shape != value.shape or static.dtype != value.dtype:
                raise ValueError(
                    f"captured phase {name!r}: input changed from {tuple(static.shape)} {static.dtype} to "
                    f"{tuple(value.shape)} {value.dtype}; captured phases need static shapes"
                )
            static.copy_(value)

    def _on_stream(self, stream: torch.cuda.Stream, fn: Callable[..., Outputs], *inputs: torch.Tensor) -> Outputs:
        """Eager warm-up on the capture stream, ordered after and before the caller's stream."""
        caller = torch.cuda.current_stream(self.device)
        stream.wait_stream(caller)
        with torch.cuda.stream(stream):
            out = fn(*inputs)
        caller.wait_stream(stream)
        return out

    def _capture(
        self, phase: _Phase, fn: Callable[..., Outputs], inputs: tuple[torch.Tensor, ...], mode: str, draws: bool,
        lane: int,
    ) -> None:  # fmt: skip
        phase.inputs = tuple(x.detach().clone() for x in inputs)
        graph = torch.cuda.CUDAGraph()
        register = getattr(graph, "register_generator_state", None)
        if register is None:
            raise RuntimeError(
                "this torch has no CUDAGraph.register_generator_state (needed for the agent's generator)"
            )
        for generator in self.generators if draws else ():
            register(generator)
        stream = self._lane(lane)
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph, stream=stream, capture_error_mode=mode):
            phase.outputs = fn(*phase.inputs)
        phase.graph, phase.lane = graph, lane
        torch.cuda.current_stream(self.device).wait_stream(stream)


def _clone(outputs: Outputs) -> Outputs:
    if isinstance(outputs, dict):
        return {key: value.clone() for key, value in outputs.items()}
    return tuple(value.clone() for value in outputs)
