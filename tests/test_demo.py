"""``varformer demo`` trains a fixed, seeded number of steps of any method's demo recipe: the same table on every
run (here twice in a row, at a tiny scale: a small demo set, a step or two per stage, one protocol, one task), through
one generic path whichever way the method is named."""
import re

import pytest

import varformer.demo as demo_pkg
from varformer.checkpoints import save_model_file
from varformer.cli import main
from varformer.data.demo_set import DemoSpec
from varformer.demo import DemoTraining, find_trained_weights, run_demo
from varformer.errors import ConfigError
from varformer.methods import registry

SMALL = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)


def _row_names(table):
    return [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")][1:]


def test_the_demo_prints_the_same_table_twice(tmp_path):
    tables, logs = [], []
    for i in range(2):
        step = DemoTraining(registry.get(registry.DEFAULT), str(tmp_path / f"run{i}"), "cpu", steps=(1, 1),
                            val_images=0, log=logs.append)
        outcome = run_demo(str(tmp_path / "cache"), device="cpu", spec=SMALL, train_steps=[step], progress=False,
                           log=logs.append, protocols=("paper",), tasks=("rain",))
        tables.append(outcome.table)
        assert [r.stage for r in step.runs] == [s for s, _ in registry.get(registry.DEFAULT).demo.stages]
        assert all(r.result.step == 1 for r in step.runs)
    assert tables[0] == tables[1]
    assert _row_names(tables[0]) == ["| identity", f"| demo-{registry.DEFAULT} (1+1 steps)"]
    assert any("stage1 1 steps, stage2 1 steps (seeded, batch 1, fp32" in m for m in logs)


@pytest.fixture
def small_demo(monkeypatch):
    """The command's demo at the tiny scale: the small demo set, one protocol, one task."""
    real = demo_pkg.run_demo

    def small(*args, **kwargs):
        return real(*args, spec=SMALL, protocols=("paper",), tasks=("rain",), **kwargs)

    monkeypatch.setattr(demo_pkg, "run_demo", small)


def test_method_and_its_old_spelling_take_the_same_generic_path(tmp_path, capsys, small_demo):
    """``--method restorevar`` and ``--model restorevar`` train the same recipe through ``DemoTraining`` (the same
    table, digit for digit) and write the same kind of report; the old spelling says the new one."""
    outs = []
    for i, flag in enumerate(["--method", "--model"]):
        run_dir = tmp_path / f"run{i}"
        rc = main(["demo", flag, "restorevar", "--steps", "1", "2", "--demo-cache", str(tmp_path / "cache"),
                   "--device", "cpu", "--no-progress", "--run-dir", str(run_dir)])
        out, err = capsys.readouterr()
        assert rc == 0, err
        outs.append(out)
        assert ("--model is now --method" in err) == (flag == "--model")
        page = (run_dir / "report" / "demo.html").read_text()
        assert "<polyline" in page and page.count("data:image/png;base64,") == 5 * 3  # 5 tasks: in | out | target
        assert "demo-restorevar (1+2 steps)" in page and "stage2" in page
        assert (run_dir / "report" / "demo-restorevar (1+2 steps)" / "paper" / "report.html").is_file()
    tables = [re.findall(r"^\| .*\|$", o, re.M) for o in outs]
    assert tables[0] == tables[1] and any("| demo-restorevar (1+2 steps) | paper |" in t for t in tables[0])


def test_steps_must_give_one_length_per_stage(tmp_path):
    with pytest.raises(ConfigError, match="one number per stage"):
        DemoTraining(registry.get(registry.DEFAULT), str(tmp_path), "cpu", steps=(1, 2, 3))
    assert main(["demo", "--steps", "1", "--demo-cache", str(tmp_path / "c"), "--run-dir", str(tmp_path / "r")]) == 2


def test_weights_under_checkpoints_are_any_methods_model_files(tmp_path):
    spec = registry.get("restorevar")
    model = spec.build(spec.settings(depth=1, vae_ch=32, patch_nums=[1, 2, 3, 4], refiner_depth=1, refiner_dim=32,
                                     refiner_heads=1, refiner_mlp_dim=32))
    save_model_file(str(tmp_path / "mine.safetensors"), spec.name, model.settings().to_metadata(),
                    model.state_dict())
    (tmp_path / "notes.pt").write_bytes(b"not a weights file")
    logs = []
    assert find_trained_weights(str(tmp_path), log=logs.append) == [str(tmp_path / "mine.safetensors")]
    assert find_trained_weights(str(tmp_path), method=spec.name) == [str(tmp_path / "mine.safetensors")]
    assert find_trained_weights(str(tmp_path), method=registry.DEFAULT) == []
    assert any("notes.pt" in m for m in logs)
