"""`devices.resolve_device`: the one place every stage turns its configured device into a torch device."""

import pytest
import torch

from flow_mbpo_pwm.config import ConfigError
from flow_mbpo_pwm.devices import resolve_device


def test_auto_and_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("key", ["run.device", "reference.device"])
def test_cuda_without_cuda_is_a_config_error_naming_the_key(key):
    with pytest.raises(ConfigError, match=f"{key}.*CUDA is not available"):
        resolve_device("cuda:0", key)


def test_every_stage_uses_it():
    """No stage keeps a resolver of its own (evaluate's once lacked the error above)."""
    from flow_mbpo_pwm import devices, evaluate, pretrain, reference, train

    for module in (evaluate, pretrain, reference, train):
        assert module.resolve_device is devices.resolve_device, module.__name__
