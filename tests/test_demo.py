"""``varformer demo`` trains a fixed, seeded number of steps: the same table on every run (here twice in a row, at a
tiny scale: a small demo set, a step per stage, one protocol, one task)."""
from varformer.data.demo_set import DemoSpec
from varformer.demo import restorevar_training_step, run_demo, training_step

SMALL = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)


def _two_runs(tmp_path, make_step):
    """The demo run twice in a row, each time with a fresh training step from ``make_step(run_dir, log)``: the two
    tables and every log line."""
    tables, logs = [], []
    for i in range(2):
        step = make_step(str(tmp_path / f"run{i}"), logs.append)
        outcome = run_demo(str(tmp_path / "cache"), device="cpu", spec=SMALL, train_steps=[step], progress=False,
                           log=logs.append, protocols=("paper",), tasks=("rain",))
        tables.append(outcome.table)
    return tables, logs


def _row_names(table):
    return [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")][1:]


def test_the_demo_prints_the_same_table_twice(tmp_path):
    tables, logs = _two_runs(tmp_path, lambda d, log: training_step(d, "cpu", steps=(1, 1), val_images=0, log=log))
    assert tables[0] == tables[1]
    assert _row_names(tables[0]) == ["| identity", "| demo-varformer (1 steps)"]
    assert any("for 1 and 1 steps (seeded" in m for m in logs)


def test_the_restorevar_demo_trains_fixed_steps_and_prints_the_same_table_twice(tmp_path):
    tables, logs = _two_runs(tmp_path, lambda d, log: restorevar_training_step(d, "cpu", steps=(1, 2), log=log))
    assert tables[0] == tables[1]
    assert _row_names(tables[0]) == ["| identity", "| demo-restorevar (1+2 steps)"]
    assert any("stage 1 for 1 steps" in m for m in logs) and any("stage 2 for 2 steps" in m for m in logs)
