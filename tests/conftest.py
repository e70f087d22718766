import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small tensors: one thread is faster than two contending ones on the 2-core CI machine (measured: flow
    dynamics tests 131 s with two threads, 7 s with one)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
