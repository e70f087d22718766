"""The torch device a stage runs on, from its config (`run.device`, `reference.device`: auto | cpu | cuda | cuda:N),
checked before any work is done."""

from __future__ import annotations

import torch

from flow_mbpo_pwm.config import ConfigError


def resolve_device(name: str, key: str = "run.device") -> torch.device:
    """`auto`: CUDA where it is available, else the CPU. A CUDA device on a machine without CUDA is a `ConfigError`
    naming `key`, not an error from deep inside the first kernel."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(key, f"is '{name}' but CUDA is not available on this machine")
    return device
