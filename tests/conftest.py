import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """One intra-op thread for the whole suite: the test models are small (width 32, VAR depth 2), so a second
    OpenMP thread gains little, and on a busy 2-core machine it makes every small op wait at a barrier (measured
    several times slower). Results do not depend on it: every tolerance holds for any thread count."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
