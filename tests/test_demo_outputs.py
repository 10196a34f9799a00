"""``varformer demo -o`` is checked before the demo set is built or anything trained (issue #26): a folder with
results is refused unless --overwrite, a folder of the user's always; one line, nothing changed."""
import os

import pytest

from safety_utils import snapshot
from varformer.data.demo_set import DemoSpec
from varformer.demo import run_demo
from varformer.errors import DataError, OutputError

SMALL = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)


def _never(demo_dir):
    raise AssertionError("trained before the output folder was checked")


def test_demo_output_is_refused_before_training(tmp_path):
    out, cache = tmp_path / "results", str(tmp_path / "cache")
    run_demo(cache, str(out), device="cpu", spec=SMALL, progress=False, log=None, protocols=("paper",),
             tasks=("rain",))
    assert os.path.isfile(out / "identity" / "paper" / "summary.json")
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match="already has results"):
        run_demo(cache, str(out), device="cpu", spec=SMALL, train_steps=[_never], progress=False, log=None,
                 protocols=("paper",), tasks=("rain",))
    assert snapshot(tmp_path) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "table.md").write_text("the user's")
    before = snapshot(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="non-empty folder that varformer did not make"):
            run_demo(cache, str(mine), overwrite=overwrite, device="cpu", spec=SMALL, train_steps=[_never],
                     progress=False, log=None, protocols=("paper",), tasks=("rain",))
    assert snapshot(tmp_path) == before
    run_demo(cache, str(out), overwrite=True, device="cpu", spec=SMALL, progress=False, log=None,
             protocols=("paper",), tasks=("rain",))  # with --overwrite: the earlier results replaced
