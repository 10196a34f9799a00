"""The visual report of an evaluation (report.html, crops/) and ``varformer compare`` (compare.html), rendered in a
real headless browser: Debian's chromium, which CI's .ci/run installs (a missing browser fails, it does not skip)."""
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varformer.cli import main
from varformer.data.demo_set import DemoSpec, ensure_demo
from varformer.errors import ConfigError, DataError, OutputError
from varformer.evaluation import evaluate
from varformer.evaluation.compare import compare_runs
from varformer.evaluation.crops import CropGallery, choose_box, sample_key
from varformer.evaluation.html_page import histogram_svg, markdown_to_html
from varformer.inference import Restorer, identity_restorer

SMALL = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _blur3(x):
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: `varformer evaluate` (identity, paper protocol) on two demo sets; run B: a 3x3 box blur on the same;
    run C: identity under the full protocol on one of the sets."""
    base = tmp_path_factory.mktemp("report")
    demo = ensure_demo(str(base / "demo"), SMALL, log=None)
    a, b, c = (str(base / n) for n in ("a", "b", "c"))
    assert main(["evaluate", "--benchmarks", "demo-rain", "demo-noise", "--demo-cache", demo, "--protocol", "paper",
                 "-o", a, "--no-progress", "--workers", "0"]) == 0
    evaluate(Restorer("blur3", _blur3), [("demo-rain", demo), ("demo-noise", demo)], "paper", output_dir=b,
             progress=False, log=None)
    evaluate(identity_restorer(), [("demo-rain", demo)], "full", output_dir=c, progress=False, log=None)
    return {"a": a, "b": b, "c": c, "demo": demo, "base": base}


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        pytest.fail("Debian's chromium is needed to render the HTML reports: apt-get install -y chromium "
                    "(CI's .ci/run installs it)")
    return path


def _dump_dom(html_path: str, profile_dir) -> str:
    """The page's DOM after load (scripts run, images decoded) in headless Chromium."""
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--virtual-time-budget=10000",
           "--dump-dom", "file://" + os.path.abspath(html_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _assert_rendered(html_path: str, dom: str) -> int:
    with open(html_path) as fh:
        n_images = len(re.findall(r"<img ", fh.read()))
    assert n_images > 0
    decoded = re.search(r'<span id="images-decoded">([^<]*)</span>', dom).group(1)
    assert decoded == f"{n_images} of {n_images}"  # every embedded crop decoded: complete, naturalWidth > 0
    return n_images


def test_report_and_compare_render_in_headless_chromium(runs, tmp_path):
    report = os.path.join(runs["a"], "report.html")
    dom = _dump_dom(report, tmp_path / "profile1")
    n = _assert_rendered(report, dom)
    assert n == 3 * 6  # (degraded, restored, ground truth) for each of the 3 + 3 demo images (all kept: k = 4)
    assert dom.count("<table>") >= 2 and "<th>Deraining</th>" in dom and "<td>demo-noise</td>" in dom
    assert dom.count('<svg class="hist"') == 4  # PSNR and SSIM per set
    assert "Worst by PSNR" in dom

    out = tmp_path / "cmp"
    assert main(["compare", runs["a"], runs["b"], "-o", str(out)]) == 0
    page = str(out / "compare.html")
    dom = _dump_dom(page, tmp_path / "profile2")
    assert _assert_rendered(page, dom) == 6 * 4  # degraded, identity, blur3, ground truth for each image
    assert "Δ PSNR blur3 − identity" in dom and "<td>demo-rain</td>" in dom and "<td>coffee_0</td>" in dom
    assert "Same protocol, same metric settings and the same images" in dom


def test_a_click_enlarges_a_row_of_crops(runs, tmp_path):
    with open(os.path.join(runs["a"], "report.html")) as fh:
        text = fh.read()
    probe = """<script>window.addEventListener("load", function () {
      var img = document.querySelector(".crops img"), before = img.clientWidth;
      document.querySelector("label.crops").click();
      document.body.setAttribute("data-zoom", before + " to " + img.clientWidth);
    });</script></body>"""
    probed = tmp_path / "probe.html"
    probed.write_text(text.replace("</body>", probe))
    dom = _dump_dom(str(probed), tmp_path / "profile")
    before, after = map(float, re.search(r'data-zoom="([\d.]+) to ([\d.]+)"', dom).groups())
    assert (before, after) == (128 * 1.5, 128 * 4)  # the crop's pixels x 1.5, x 4 after a click


def test_crops_are_the_same_window_in_both_runs_and_match_the_metrics(runs):
    index = {k: json.load(open(os.path.join(runs[k], "crops", "index.json"))) for k in ("a", "b")}
    for bench in ("demo-rain", "demo-noise"):
        a = {e["name"]: e for e in index["a"]["benchmarks"][bench]}
        b = {e["name"]: e for e in index["b"]["benchmarks"][bench]}
        assert set(a) == set(b) == {"coffee_0", "astronaut_0", "motorcycle_0"}
        for name in a:
            assert a[name]["box"] == b[name]["box"]
            assert a[name]["image_hw"] == [256, 256]  # paper protocol: crops of the 256x256 evaluated images
    from PIL import Image
    entry = index["a"]["benchmarks"]["demo-rain"][0]
    lq, out = (np.asarray(Image.open(os.path.join(runs["a"], "crops", entry["files"][k]))) for k in ("lq", "out"))
    assert lq.shape == (128, 128, 3) and np.array_equal(lq, out)  # identity: restored == degraded
    # no temporary left behind (the folder's marker says the evaluator made it: varformer.files.MARKER_NAME)
    assert [f for f in os.listdir(runs["a"]) if f.startswith(".")] == [".varformer-owned"]


def test_gallery_keeps_the_worst_best_and_a_sample_whatever_the_order():
    rng = np.random.default_rng(0)
    psnrs = rng.uniform(20, 40, 60)
    images = [(f"img{i}", float(p), torch.rand(3, 24, 20, generator=torch.Generator().manual_seed(i)))
              for i, p in enumerate(psnrs)]
    kept = []
    for order in (images, images[::-1]):
        gallery = CropGallery(keep=3, crop_size=16)
        made = []
        real_crop = gallery._crop
        gallery._crop = lambda *a: made.append(a[0]) or real_crop(*a)
        for name, p, x in order:
            gallery.offer({"benchmark": "set", "name": name, "psnr": p}, x, x.flip(-1), x)
        ranked = gallery.ranked("set")
        kept.append({k: [c.name for c in v] for k, v in ranked.items()})
        assert len(made) < len(images)  # crops are made only for images a heap keeps
        assert ranked["worst"][0].pixels["lq"].shape == (16, 16, 3)
    by_psnr = [n for n, _, _ in sorted(images, key=lambda t: t[1])]
    for k in kept:
        assert k["worst"] == by_psnr[:3] and k["best"] == by_psnr[::-1][:3]
        assert k["sample"] == sorted((n for n, _, _ in images), key=lambda n: sample_key("set", n))[:3]


def test_crop_window_is_where_degradation_and_detail_are():
    gt = np.full((3, 100, 120), 128, np.uint8)
    lq = gt.copy()
    lq[:, 70:90, 5:25] = 255  # a degraded patch on a flat image
    top, left, h, w = choose_box(lq, gt, 32)
    assert (h, w) == (32, 32) and top <= 70 and top + 32 >= 90 and left <= 5 and left + 32 >= 25
    assert choose_box(lq, gt, 200) == (0, 0, 100, 120)


def test_histogram_counts_every_image_and_names_the_infinite_ones():
    svg = histogram_svg([30.0, 31.0, 31.5, float("inf")], "PSNR")
    assert "PSNR (n = 3, 1 not finite (not drawn))" in svg
    assert svg.count('stroke-opacity="0.5"') == 3  # one tick per finite value
    bars = [int(c) for c in re.findall(r"<title>(\d+) images in", svg)]
    assert sum(bars) == 3 and "mean 30.83" in svg
    assert "no finite value" in histogram_svg([float("inf")], "PSNR")


def test_results_markdown_becomes_html_tables():
    text = markdown_to_html("## Results: `x`\n\n| Method | A |\n|---|---|\n| **ours** | 1.00/0.500 |\n\n- a <b>\n")
    assert "<h3>Results: <code>x</code></h3>" in text and "<th>Method</th>" in text
    assert '<td><strong>ours</strong></td><td class="num">1.00/0.500</td>' in text
    assert "<li>a &lt;b&gt;</li>" in text and "---" not in text


def test_compare_flags_protocols_and_image_sets_and_refuses_disjoint_runs(runs, tmp_path):
    res = compare_runs([runs["a"], runs["c"]], str(tmp_path / "x"))
    assert res.n_common == 3  # demo-rain only
    assert any(f.startswith("Protocols differ (identity") for f in res.flags)
    assert any(f.startswith("Image sets differ: compared only the 3 images") for f in res.flags)
    blur = compare_runs([runs["a"], runs["b"]], str(tmp_path / "y")).mean_deltas
    assert blur["demo-noise"]["blur3"]["psnr"] > 0  # a box blur removes some noise ...
    assert blur["demo-noise"]["blur3"]["psnr"] == pytest.approx(
        _mean_psnr(runs["b"], "demo-noise") - _mean_psnr(runs["a"], "demo-noise"))

    noise_only = str(tmp_path / "noise")
    evaluate(identity_restorer(), [("demo-noise", runs["demo"])], "full", output_dir=noise_only, progress=False,
             log=None)
    with pytest.raises(DataError, match="no image in common"):
        compare_runs([runs["c"], noise_only], str(tmp_path / "z"))
    with pytest.raises(ConfigError, match="at least two"):
        compare_runs([runs["a"]], str(tmp_path / "z"))
    with pytest.raises(DataError, match="not an evaluation run folder"):
        compare_runs([runs["a"], str(tmp_path)], str(tmp_path / "z"))
    assert not (tmp_path / "z").exists()


def _mean_psnr(run_dir, bench):
    import csv
    with open(os.path.join(run_dir, "per_image.csv")) as fh:
        return float(np.mean([float(r["psnr"]) for r in csv.DictReader(fh) if r["benchmark"] == bench]))


def test_compare_never_overwrites_a_file_it_did_not_make(runs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "compare.html").write_text("<html>my own notes</html>")
    args = ["compare", runs["a"], runs["b"], "-o", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "was not written by 'varformer compare'" in err and len(err.strip().splitlines()) == 1
    assert (out / "compare.html").read_text() == "<html>my own notes</html>"
    assert main(args + ["--overwrite"]) == 0
    assert main(args) == 0  # our own page is replaced without --overwrite
    assert sorted(os.listdir(out)) == ["compare.html"]


def test_multi_protocol_folder_points_to_its_runs(runs, tmp_path, capsys):
    multi = tmp_path / "multi"
    for p in ("paper", "full"):
        shutil.copytree(runs["a"], multi / p)
    assert main(["compare", str(multi), runs["b"], "-o", str(tmp_path / "o")]) == 2
    assert f"it holds runs in {multi / 'full'}, {multi / 'paper'}" in capsys.readouterr().err


def test_evaluate_refuses_a_folder_with_someone_elses_report(runs, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "report.html").write_text("mine")
    for overwrite in (False, True):  # not the evaluator's folder: even --overwrite replaces nothing in it
        with pytest.raises(OutputError, match="non-empty folder that varformer did not make"):
            evaluate(identity_restorer(), [("demo-rain", runs["demo"])], "paper", output_dir=str(out),
                     overwrite=overwrite, progress=False, log=None)
    assert (out / "report.html").read_text() == "mine"
