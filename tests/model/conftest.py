"""The model tests run their small convolutions and the VAR loop single-threaded.

Their tensors are small (width 32, VAR depth 2), so a second OpenMP thread gains little even on an idle machine,
and on the shared, oversubscribed 2-core machine the threads mostly spin at barriers: tests/model took 209 CPU-s
(298 s wall) with 2 threads and 32 CPU-s (33 s wall) with one, same tests, same assertions."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
