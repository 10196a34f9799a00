"""Multi-process tests with a deadline (tests/training, tests/restorevar)."""
import pytest


def spawn_and_wait(fn, args, nprocs: int = 2, timeout_s: float = 300.0) -> None:
    """``torch.multiprocessing.spawn`` with a deadline: a rank killed from outside (e.g. out of memory) would leave
    the others waiting on a collective for ever; past the deadline every rank is killed and the test fails."""
    import time
    import torch.multiprocessing as mp
    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{nprocs}-process run did not finish within {timeout_s:.0f} s")
