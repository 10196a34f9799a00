"""Restormer's RealBlur measure (evaluate_realblur.py), checked against the rule it implements, written here from its
description (docs/evaluation.md): intensity matching, ECC homography alignment of the output onto the ground truth,
PSNR over the pixels the warp covers, per-channel Gaussian SSIM weighted by that mask without a 5-pixel border."""
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage import data, img_as_ubyte
from skimage.metrics import structural_similarity

from varformer.cli import main
from varformer.errors import ConfigError, DataError
from varformer.evaluation import check_protocol_needs, evaluate, get_protocol
from varformer.evaluation.realblur import align_to_ground_truth, realblur_psnr_ssim, require_opencv
from varformer.inference import Restorer


def _shifted_output(gt, dy, dx, gain=0.9, blur=0.6):
    """A plausible deblurring output from a second camera: the scene moved by (dy, dx), darker, a little soft."""
    f = ndimage.shift(gt.astype(np.float64), (dy, dx, 0), order=3, mode="reflect")
    f = ndimage.gaussian_filter(f, (blur, blur, 0)) * gain
    return np.clip(np.round(f), 0, 255).astype(np.uint8)


GT = data.astronaut()[120:217, 160:291]  # 97 x 131


def _rule_psnr_ssim(aligned, gt, mask):
    """Steps 3 and 4 from the description, with scikit-image's SSIM map (float64)."""
    psnr = 10 * np.log10(1.0 / (np.sum((gt - aligned) ** 2, dtype=np.float64) / mask.sum(dtype=np.float64)))
    _, ssim_map = structural_similarity(gt.astype(np.float64), aligned.astype(np.float64), channel_axis=2,
                                        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, full=True)
    inner = (slice(5, -5), slice(5, -5))
    per_channel = (ssim_map * mask)[inner].sum(axis=(0, 1)) / mask[inner].sum(axis=(0, 1))
    return psnr, per_channel.mean()


def test_alignment_recovers_the_shift_and_the_metrics_follow_the_rule():
    pytest.importorskip("cv2")
    out = _shifted_output(GT, 1.4, -2.2)
    aligned, gt, mask, warp = align_to_ground_truth(out.astype(np.float32) / 255, GT.astype(np.float32) / 255)
    # the warp takes ground-truth pixels to output pixels; the scene moved by (dy, dx) = (+1.4, -2.2) in the output
    assert abs(warp[0, 2] - (-2.2)) < 0.1 and abs(warp[1, 2] - 1.4) < 0.1
    assert np.allclose(warp[:2, :2], np.eye(2), atol=0.01)
    assert 0 < mask.mean() < 1 and set(np.unique(mask)) <= {0.0, 1.0}
    psnr, ssim = realblur_psnr_ssim(out, GT)
    ref_psnr, ref_ssim = _rule_psnr_ssim(aligned, gt, mask)
    assert abs(psnr - ref_psnr) < 1e-9 and abs(ssim - ref_ssim) < 1e-9
    # alignment and intensity matching are what make the number: plain PSNR on the same pair is far lower
    plain = 10 * np.log10(1 / np.mean((out / 255.0 - GT / 255.0) ** 2))
    assert psnr > plain + 8 and psnr > 28


def test_intensity_matching_and_identity():
    pytest.importorskip("cv2")
    out = _shifted_output(GT, 0.0, 0.0, gain=1.0)
    darker = _shifted_output(GT, 0.0, 0.0, gain=0.8)
    assert abs(realblur_psnr_ssim(out, GT)[0] - realblur_psnr_ssim(darker, GT)[0]) < 0.3  # gain mostly undone
    assert realblur_psnr_ssim(GT, GT) == (float("inf"), 1.0)
    with pytest.raises(DataError, match="8-bit RGB"):
        realblur_psnr_ssim(GT[..., 0], GT[..., 0])


def _write_realblur(root, gray_target=False):
    folder = os.path.join(root, "test", "RealBlur_J")
    for sub, img in (("input", _shifted_output(GT, 0.8, -1.1, blur=1.5)), ("target", GT)):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        Image.fromarray(img[..., 0] if (gray_target and sub == "target") else img).save(
            os.path.join(folder, sub, "scene1.png"))
    return folder


def _restorer(x):
    return x * 0.98 + 0.01


def test_restormer_preset_on_realblur_runs_the_aligned_measure(tmp_path):
    pytest.importorskip("cv2")
    folder = _write_realblur(str(tmp_path))
    res = evaluate(Restorer("r", _restorer), [("realblur-j", str(tmp_path))], "restormer", progress=False, log=None)
    # Restormer's test.py (no padding needed here: see test_author_agreement for the padding) saves img_as_ubyte
    lq = np.asarray(Image.open(os.path.join(folder, "input", "scene1.png")).convert("RGB"))
    x = torch.from_numpy(np.float32(lq) / 255.0).permute(2, 0, 1)[None]
    x = torch.nn.functional.pad(x, (0, 5, 0, 7), "reflect")  # 97 x 131 -> 104 x 136
    saved = img_as_ubyte(torch.clamp(_restorer(x), 0, 1)[0, :, :97, :131].permute(1, 2, 0).numpy())
    aligned, gt, mask, _ = align_to_ground_truth(saved.astype(np.float32) / 255, GT.astype(np.float32) / 255)
    ref_psnr, ref_ssim = _rule_psnr_ssim(aligned, gt, mask)
    row = res.rows[0]
    assert abs(row["psnr"] - ref_psnr) < 1e-9 and abs(row["ssim"] - ref_ssim) < 1e-9
    assert "ECC-aligned" in res.summary["benchmarks"]["realblur-j"]["metrics"]


def test_realblur_refuses_a_gray_target(tmp_path):
    _write_realblur(str(tmp_path), gray_target=True)
    with pytest.raises(DataError, match=r"scene1.png: 8-bit L image: Restormer's evaluate_realblur.py"):
        evaluate(Restorer("r", _restorer), [("realblur-j", str(tmp_path))], "restormer", progress=False, log=None)


def test_without_opencv_the_preset_says_which_extra_before_any_work(tmp_path, monkeypatch, capsys):
    _write_realblur(str(tmp_path))
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[realblur\]"'):
        require_opencv("x")
    calls = []
    with pytest.raises(ConfigError, match=r"preset 'restormer' on realblur-j .*\(opencv-python-headless\)"):
        evaluate(Restorer("spy", lambda x: calls.append(1) or x), [("realblur-j", str(tmp_path))], "restormer",
                 progress=False, log=None)
    assert not calls
    check_protocol_needs(get_protocol("restormer"), ["gopro", "rain100h"])  # other sets need no OpenCV
    check_protocol_needs(get_protocol("full"), ["realblur-j"])               # nor do other presets
    rc = main(["evaluate", "--benchmarks", "realblur-j", "--root", str(tmp_path), "--protocol", "restormer",
               "-o", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "[realblur]" in err and len(err.strip().splitlines()) == 1
