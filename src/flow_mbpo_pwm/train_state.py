"""What a training run needs to continue bitwise after a restart: RNG states and the saved-config check.

The state file itself (`work/state.pt`) is assembled in `train.py`; this module holds the pieces that are not
about the loop: capturing and restoring every random number generator in a form `torch.load(weights_only=True)`
accepts (tensors and plain values only), and comparing a saved config with the requested one.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from flow_mbpo_pwm.config import flatten

STATE_FORMAT = "flow-mbpo-pwm/train-state/1"


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The global torch (CPU and, on CUDA, the device's), numpy and Python RNG states as tensors/plain values."""
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gauss),
        },
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Set the RNGs from `capture_rng`'s state, whatever device it was loaded onto (a state read with
    `map_location=cuda` holds CUDA tensors, and torch's setters take CPU byte tensors only)."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].cpu().numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].cpu().tolist()), py["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and Python's `random` with the run's seed (docs/contracts.md "Seeds")."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def set_matmul_precision(tf32: bool) -> None:
    """float32 matrix products on CUDA in TF32 (`run.tf32`) or in full float32 (torch's default); process-wide,
    so a run sets it when it starts, before it builds anything. CPU products are unaffected."""
    torch.backends.cuda.matmul.allow_tf32 = tf32


def config_differences(
    saved: dict[str, Any], requested: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[tuple[str, Any, Any]]:
    """(key, saved value, requested value) for every dotted key whose value differs, sorted by key.

    With `defaults` (the typed config's defaults, same nesting), a key the saved config lacks is no difference when
    it is requested at its default: it was added to the package after the run was saved, and a new key's default
    keeps the old behaviour, so an upgrade does not strand runs in flight."""
    a, b = flatten(saved), flatten(requested)
    known = flatten(defaults) if defaults is not None else {}
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va is missing and key in known and _same(known[key], vb):
            continue
        if not _same(va, vb):
            diffs.append((key, None if va is missing else _plain(va), None if vb is missing else _plain(vb)))
    return diffs


def _plain(value: Any) -> Any:
    """YAML round trips turn tuples into lists; compare and report as lists."""
    return list(value) if isinstance(value, tuple) else value


def _same(a: Any, b: Any) -> bool:
    return _plain(a) == _plain(b)
