"""The example method of docs/extending.md (tests/fixtures/tinyres, a small residual CNN) installed as a real
plug-in -- ``pip install --target`` gives a dist-info with its ``varformer.methods`` entry point -- and run through
``varformer train``, ``evaluate``, ``restore`` and ``benchmark model`` in a fresh process that finds it on
``PYTHONPATH`` alone: nothing in varformer/ knows it. The doc shows the fixture's files verbatim (checked here)."""
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from varformer.files import read_safetensors, safetensors_metadata

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tinyres"
DOC = ROOT / "docs" / "extending.md"

# the commands run in one process, as the console script runs them (varformer.cli.main), each with its own output
DRIVER = r"""
import contextlib, io, json, sys
from varformer.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's refusal of an option
            rc = e.code
    results.append({"argv": argv, "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def test_the_doc_shows_the_example_files_verbatim():
    shown = dict(re.findall(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```\n", DOC.read_text(), re.S))
    files = {str(p.relative_to(ROOT)) for p in FIXTURE.iterdir() if p.is_file()}
    assert set(shown) == files, f"docs/extending.md shows {sorted(shown)}, the fixture has {sorted(files)}"
    for rel, text in shown.items():
        assert text == (ROOT / rel).read_text(), f"docs/extending.md's copy of {rel} differs from the file"
    assert len((FIXTURE / "tinyres.py").read_text().splitlines()) < 150


@pytest.fixture(scope="module")
def plugin_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("plugin")
    source, site = base / "src", base / "site"
    shutil.copytree(FIXTURE, source)  # setuptools writes build/ and *.egg-info next to the sources
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(source)], capture_output=True, text=True)
    assert pip.returncode == 0, f"pip could not install the example (setuptools>=70.1, the test extra?):\n{pip.stderr}"
    assert (site / "varformer_tinyres-0.1.0.dist-info" / "entry_points.txt").read_text().count("varformer.methods")
    image = base / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(image)  # any size: no tiles
    run = base / "run"
    commands = {
        "train": ["train", "l1", "--config", str(FIXTURE / "tinyres.yaml"), "train.total_iters=2",
                  "train.save_every=2", "train.log_every=1", f"train.output_dir={run}", "train.device=cpu",
                  "--no-progress"],
        "evaluate": ["evaluate", "--weights", str(run / "final_ema.safetensors"), "--benchmarks", "demo-rain",
                     "--protocol", "full", "-o", str(base / "eval"), "--device", "cpu", "--precision", "fp32",
                     "--workers", "0", "--no-progress"],
        "restore": ["restore", str(image), "-o", str(base / "restored"), "--weights", str(run / "ckpt_00000002.pt"),
                    "--device", "cpu", "--precision", "fp32", "--no-progress"],
        "benchmark": ["benchmark", "model", "--method", "tinyres", "--device", "cpu", "--precision", "fp32",
                      "--batch-size", "1", "--warmup", "0", "--repeat", "1"],
    }
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(list(commands.values()))], env=env, cwd=base,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = dict(zip(commands, json.loads(done.stdout.splitlines()[-1])))
    return {"base": base, "run": run, "image": image, **results}


def _ok(result) -> None:
    assert result["rc"] == 0, f"varformer {' '.join(result['argv'][:2])}: rc {result['rc']}\n{result['stderr'][-3000:]}"


def test_the_plugin_trains_its_stage_and_exports_its_model_file(plugin_runs):
    r = plugin_runs["train"]
    _ok(r)
    assert "tinyres: width 16, 2 blocks, random init" in r["stderr"] and "step 2/2 total" in r["stderr"]
    export = plugin_runs["run"] / "final_ema.safetensors"
    meta = safetensors_metadata(str(export))
    assert meta["format"] == "tinyres" and json.loads(meta["config"]) == {"width": 16, "blocks": 2}
    assert "method: tinyres" in (plugin_runs["run"] / "config.yaml").read_text()


def test_the_plugin_model_is_evaluated_from_its_export(plugin_runs):
    _ok(plugin_runs["evaluate"])
    summary = json.loads((plugin_runs["base"] / "eval" / "summary.json").read_text())
    assert summary["restorer"] == "final_ema.safetensors" and summary["precision"] == "fp32"
    rain = summary["benchmarks"]["demo-rain"]
    assert rain["images"] > 0 and 5 < rain["psnr"] < 60


def _example_module():
    spec = importlib.util.spec_from_file_location("tinyres_example", FIXTURE / "tinyres.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_plugin_restores_from_a_training_checkpoint_as_its_export_does(plugin_runs):
    _ok(plugin_runs["restore"])
    out = np.asarray(Image.open(plugin_runs["base"] / "restored" / "photo.png").convert("RGB"))
    assert out.shape == (37, 53, 3)
    tensors, _ = read_safetensors(str(plugin_runs["run"] / "final_ema.safetensors"))
    model = _example_module().TinyRes(width=16, blocks=2).eval()
    model.load_state_dict(tensors)
    x = torch.from_numpy(np.array(Image.open(plugin_runs["image"]))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = model(x)
    assert (y - x).abs().max() > 1e-4  # two steps moved it off the identity it starts as
    want = (y[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(out.astype(np.float64) - want).max() <= 1


def test_the_plugin_is_benchmarked_through_its_benchmark_entry(plugin_runs):
    r = plugin_runs["benchmark"]
    _ok(r)
    assert "tinyres" in (r["stdout"] + r["stderr"]).lower()
