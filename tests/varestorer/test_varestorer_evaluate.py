"""``evaluate`` with VARestorer's preset on a tiny StableSR-style set (reduced model): the LQ bicubic-resized to 512,
captions of the LQ as read, the network once per image after torch.manual_seed(0) (the release's draws), output
512x512 against the GT as it is, and its published table with the deltas."""
import numpy as np
import pytest
import torch
from PIL import Image
from text_testutils import FakeCaptioner, FakeEncoder

from varformer import metrics as M
from varformer.errors import DataError
from varformer.evaluation import evaluate, get_protocol
from varformer.inference import identity_restorer, model_restorer
from varformer.varestorer.restorer import TextOptions, TextSource, VARestorerRestorer, restorer_traits


@pytest.fixture(scope="module")
def realsr(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr") / "RealSRVal_crop128"
    rng = np.random.default_rng(0)
    for sub in ("test_LR", "test_HR"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        gt = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
        Image.fromarray(gt).save(root / "test_HR" / f"Canon_00{i}_HR.png")
        Image.fromarray(gt).resize((128, 128), Image.BICUBIC).save(root / "test_LR" / f"Canon_00{i}_LR4.png")
    return root


def _restorer(model):
    cap = FakeCaptioner()
    run = VARestorerRestorer(model, TextSource(TextOptions(), encoder=FakeEncoder(), captioner=cap, use_cache=False))
    return model_restorer(run, "cpu", "fp32", name="varestorer", traits=restorer_traits(run)), run, cap


def test_varestorer_preset_is_the_release_driver(model, realsr):
    r, run, cap = _restorer(model)
    res = evaluate(r, [("realsr", str(realsr))], "varestorer", metrics=["psnr", "ssim"], batch_size=2,
                   progress=False, log=None)
    assert [row["height"] for row in res.rows] == [512, 512] and res.summary["benchmarks"]["realsr"]["images"] == 2
    assert cap.shapes == [(128, 128, 3)] * 2                                # captions of the LQ as read
    proto = get_protocol("varestorer")
    for i, row in enumerate(res.rows):
        lq = torch.from_numpy(np.asarray(Image.open(realsr / "test_LR" / f"Canon_00{i}_LR4.png"), np.float32) / 255)
        gt = torch.from_numpy(np.asarray(Image.open(realsr / "test_HR" / f"Canon_00{i}_HR.png"), np.float32) / 255)
        lq, gt = lq.permute(2, 0, 1), gt.permute(2, 0, 1)
        lq512, _ = proto.prepare(lq, gt)
        want = np.asarray(Image.fromarray((lq.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
                          .resize((512, 512), Image.BICUBIC), np.float32) / 255     # PIL's default filter
        assert torch.equal(lq512, torch.from_numpy(want).permute(2, 0, 1))
        small = np.asarray(Image.fromarray((want * 255).round().astype(np.uint8)).resize((128, 128), Image.LANCZOS),
                           np.float32) / 255
        torch.manual_seed(0)                                                  # infer4eval: seed_everything per image
        with torch.no_grad():
            y = model(torch.from_numpy(small).permute(2, 0, 1)[None], [run.image_context(lq)])[0]
        y8 = Image.fromarray(y.mul(255).floor().byte().permute(1, 2, 0).numpy()).resize((512, 512), Image.LANCZOS)
        out = torch.from_numpy(np.asarray(y8, np.float32) / 255).permute(2, 0, 1)
        assert row["psnr"] == pytest.approx(float(M.psnr(out[None], gt[None])[0]), abs=1e-9)
    # one image per call after the seed: the batch size changes nothing, whatever the generator's state before
    torch.manual_seed(123)
    one = evaluate(r, [("realsr", str(realsr))], "varestorer", metrics=["psnr"], batch_size=1, progress=False,
                   log=None)
    assert [row["psnr"] for row in one.rows] == [row["psnr"] for row in res.rows]
    md = res.markdown
    assert "VARestorer (ICLR 2026" in md and "| VARestorer-1 | 21.08/0.5355/" in md and "Δ ours − VARestorer-1" in md


def test_identity_is_the_bicubic_baseline_and_sizes_must_agree(realsr, tmp_path):
    res = evaluate(identity_restorer("cpu"), [("realsr", str(realsr))], "varestorer", metrics=["psnr"],
                   progress=False, log=None)
    lq = Image.open(realsr / "test_LR" / "Canon_000_LR4.png").resize((512, 512), Image.BICUBIC)
    gt = np.asarray(Image.open(realsr / "test_HR" / "Canon_000_HR.png"))
    assert res.rows[0]["psnr"] == pytest.approx(float(M.psnr(np.asarray(lq), gt)), abs=1e-9)
    with pytest.raises(DataError, match="ground truth"):                    # a x1 restorer at native size
        evaluate(identity_restorer("cpu"), [("realsr", str(realsr))], "full", metrics=["psnr"], progress=False,
                 log=None)
