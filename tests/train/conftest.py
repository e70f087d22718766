"""Fixtures of the training tests (helpers in train_helpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from train_helpers import TINY_EXPERIMENT, deep_update


@pytest.fixture
def write_experiment(tmp_path):
    """Write `TINY_EXPERIMENT` (deep-updated with `changes`) to a YAML file in tmp_path and return its path."""

    def write(changes: dict[str, Any] | None = None, name: str = "experiment.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(deep_update(TINY_EXPERIMENT, changes or {})))
        return path

    return write
