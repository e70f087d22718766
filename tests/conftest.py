import os

# Intel MKL's matrix products may differ in the last bit with the memory alignment of their operands (a seed's
# slice of a stacked tensor is not aligned as a lone tensor is); its strict reproducibility mode removes that, so
# a seed trained in a stack is bitwise the seed alone (tests/algorithms/test_stacked_seeds.py). Set before torch
# loads MKL. The CLI subprocesses of tests/train run in MKL's default mode unless a test asks (train_helpers).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small tensors: one thread is faster than two contending ones on the 2-core CI machine (measured: flow
    dynamics tests 131 s with two threads, 7 s with one)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
