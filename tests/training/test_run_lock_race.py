"""The run lock under simultaneous starts: two processes released by one barrier try to lock the same folder,
30 times with no lock there and 30 times over a stale lock (its owner gone): never both hold it."""
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from varformer.errors import RunFolderError
from varformer.training.run_folder import LOCK_NAME, run_lock

TRIALS = 30
HOLD_S = 0.1


def _contender(folders, barrier, results):
    for folder in folders:
        barrier.wait()
        try:
            with run_lock(folder):
                start = time.monotonic()  # system-wide clock: intervals of the two processes compare
                time.sleep(HOLD_S)
                results.put((folder, os.getpid(), start, time.monotonic()))
        except RunFolderError:
            results.put((folder, os.getpid(), None, None))
        except BaseException as e:  # anything else is a failure of the lock, reported to the test
            results.put((folder, os.getpid(), "error", f"{type(e).__name__}: {e}"))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the race is run with forked processes")
@pytest.mark.parametrize("stale", [False, True], ids=["no-lock", "stale-lock"])
def test_two_simultaneous_starts_never_both_hold_the_lock(tmp_path, stale):
    folders = [str(tmp_path / f"run{i}") for i in range(TRIALS)]
    if stale:
        gone = _dead_pid()
        for f in folders:
            os.makedirs(f)
            with open(os.path.join(f, LOCK_NAME), "w") as fh:
                fh.write(f"{gone} {os.uname().nodename} -\n")
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_contender, args=(folders, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(2 * TRIALS)]
    for p in procs:
        p.join(timeout=60)
    errors = [r for r in got if r[2] == "error"]
    assert not errors, errors[0]
    double = unheld = left = 0
    for folder in folders:
        holds = [(a, b) for f, _, a, b in got if f == folder and a is not None]
        unheld += not holds
        if len(holds) == 2 and max(h[0] for h in holds) < min(h[1] for h in holds):  # the intervals overlap
            double += 1
        left += os.path.exists(os.path.join(folder, LOCK_NAME))  # every holder removes its own lock
    assert (double, unheld, left) == (0, 0, 0), \
        f"{double} double holds, {unheld} trials nobody held the lock, {left} locks left behind"
