import pytest
from model_helpers import VARIANTS


@pytest.fixture(params=VARIANTS, ids=lambda v: v.name)
def variant(request):
    """Every model variant: attention (plain, GQA, MQA, nano heads, softmax1, ...) x {sdpa, manual},
    Toeplitz (mean x proj) x {parallel, sequential}."""
    return request.param


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine the thread pool's
    contention made single tests swing from 0.5 s to 30 s. Restored after each test."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
