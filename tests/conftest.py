import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
