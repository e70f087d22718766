"""Probe: can the Newton Ant's step (its own Warp CUDA graph, launched on Warp's stream) run inside a torch CUDA
graph capture? Variant `graph_launch`: as the env runs normally; `eager_launches`: the env's own graph disabled so
its Warp kernels are recorded one by one. Prints whether capture works and whether a replay equals an eager step.

    PYTHONPATH=src python bench/probe_env_capture.py graph_launch
"""

from __future__ import annotations

import contextlib
import sys

import torch
import warp as wp

from flow_mbpo_pwm import envs


def make_env_capturable(env, streams) -> None:
    """Bench-only stand-in for what the env would need to step under a torch CUDA-graph capture (not product
    code: it reaches into the env's private members). The env's own Warp graph is switched off (Warp refuses
    `capture_launch` on a capturing stream), and its Warp launches go straight onto torch's current stream,
    through wrappers made before any capture, with no event handshake."""
    wrappers = {s.cuda_stream: wp.stream_from_torch(s) for s in streams}
    env._graph, env._use_cuda_graph = None, False

    @contextlib.contextmanager
    def section():
        stream = wrappers[torch.cuda.current_stream(env.device).cuda_stream]
        with wp.ScopedDevice(env._wp_device), wp.ScopedStream(stream, sync_enter=False):
            yield

    env._warp_section = section
    env.supports_torch_graph_capture = True


def main(variant: str) -> int:
    device = torch.device("cuda")
    env = envs.make("ant", 128, device, 0)
    obs = env.reset()
    g = torch.Generator(device=device).manual_seed(0)
    for _ in range(5):
        env.step(torch.rand(128, 8, generator=g, device=device) * 2 - 1)
    actions = torch.rand(128, 8, generator=g, device=device) * 2 - 1
    state = env.state_dict()
    ref = env.step(actions)
    ref = [x.clone() for x in ref[:4]]
    env.load_state_dict(state)
    if "eager_launches" in variant:
        env._graph, env._use_cuda_graph = None, False
    static = actions.clone()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    if variant.startswith("same_stream"):
        # Warp launches straight onto the capturing torch stream, its wrapper made before capture, no handshake.
        warp_stream = wp.stream_from_torch(stream)

        @contextlib.contextmanager
        def section():
            with wp.ScopedDevice(env._wp_device), wp.ScopedStream(warp_stream, sync_enter=False):
                yield

        env._warp_section = section
    torch.cuda.synchronize()
    try:
        mode = "relaxed" if variant.endswith("relaxed") else "thread_local"
        with torch.cuda.graph(graph, stream=stream, capture_error_mode=mode):
            out = env.step(static)
    except Exception as error:  # noqa: BLE001
        print(f"{variant}: capture FAILED: {type(error).__name__}: {error}", flush=True)
        return 1
    env.load_state_dict(state)
    torch.cuda.synchronize()
    graph.replay()
    torch.cuda.synchronize()
    diffs = [float((a.float() - b.float()).abs().max()) for a, b in zip(out[:4], ref, strict=True)]
    print(f"{variant}: capture OK; replay vs eager max abs diff (obs, reward, terminated, truncated): {diffs}")
    # Timing: 16 steps eager vs 16 replays of a 1-step graph.
    import time

    for name, fn in (("eager step", lambda: env.step(actions)), ("replay", graph.replay)):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(160):
            fn()
        torch.cuda.synchronize()
        print(f"  {name}: {(time.perf_counter() - t) / 160 * 1e3:.3f} ms")
    del obs
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
