"""The peer presets against their authors' evaluation, per image, on scikit-image photographs (odd sizes, one
grayscale, degraded a little): the MATLAB scripts through their literal translations (matlab_reference.py), the
Python scripts through the rule each implements, written here from its description.

Each test writes a miniature benchmark, runs ``evaluate`` with the preset, and replays the authors' pipeline on the
same files: their test script (reading, padding, the restorer, saving to 8 bits) and their metric script."""
import os

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data, img_as_ubyte

import matlab_reference as ML
from varformer import metrics as M
from varformer.data.benchmark_data import benchmark_dataset
from varformer.errors import DataError
from varformer.evaluation import evaluate
from varformer.inference import Restorer

PSNR_TOL, SSIM_TOL = 1e-4, 1e-5


def _photos():
    """name -> (clean, degraded) uint8, odd sizes; 'camera' is grayscale (H, W)."""
    rng = np.random.default_rng(0)
    clean = {"astronaut": data.astronaut()[37:128, 201:318], "coffee": data.coffee()[101:178, 250:343],
             "camera": data.camera()[151:234, 199:300], "chelsea": data.chelsea()[50:113, 120:219]}
    out = {}
    for name, c in clean.items():
        f = c.astype(np.float64)
        streaks = 40.0 * (rng.random(c.shape[:2]) < 0.02)  # sparse bright specks: a little "rain"
        deg = f + (streaks[..., None] if c.ndim == 3 else streaks) + rng.normal(0, 4, c.shape)
        out[name] = (c, np.clip(np.round(deg), 0, 255).astype(np.uint8))
    return out


PHOTOS = _photos()


def _blur_restorer(x):
    """A fixed, position-dependent 'restorer' (zero-padded 3x3 blur): its borders depend on the padding used."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype) / 4
    w = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    return 0.97 * F.conv2d(x, w, padding=1, groups=3) + 0.015


def _near_identity_restorer(x):
    """Outputs within a level or two of the input: the ~45-50 dB regime where rounding Y matters most."""
    return x * 0.996 + 0.002


RESTORERS = {"blur": _blur_restorer, "near-identity": _near_identity_restorer}


def _save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def _imread(path):
    """MATLAB's imread on an 8-bit PNG: (H, W, 3) or (H, W) uint8, as stored."""
    return np.asarray(Image.open(path))


def _load_img(path):
    """cv2.imread(path) + BGR2RGB (Restormer's utils.load_img) on an 8-bit file: RGB, gray replicated."""
    return np.asarray(Image.open(path).convert("RGB"))


def _restormer_test_py(restorer, lq_uint8_HW3):
    """Restormer's test.py on one image: /255 in float32, reflect pad to x8, restore, crop, clamp, img_as_ubyte."""
    img = torch.from_numpy(np.float32(lq_uint8_HW3) / 255.0).permute(2, 0, 1)[None]
    h, w = img.shape[2], img.shape[3]
    H, W = ((h + 8) // 8) * 8, ((w + 8) // 8) * 8
    padh, padw = (H - h if h % 8 else 0), (W - w if w % 8 else 0)
    restored = restorer(F.pad(img, (0, padw, 0, padh), "reflect"))[:, :, :h, :w]
    return img_as_ubyte(torch.clamp(restored, 0, 1)[0].permute(1, 2, 0).numpy())


def _rows(result):
    return {r["name"]: r for r in result.rows}


def _assert_agree(rows, refs, what):
    worst_p = max(abs(rows[n]["psnr"] - p) for n, (p, _) in refs.items())
    worst_s = max(abs(rows[n]["ssim"] - s) for n, (_, s) in refs.items())
    assert worst_p < PSNR_TOL and worst_s < SSIM_TOL, f"{what}: PSNR off by {worst_p:.2e}, SSIM by {worst_s:.2e}"


# --------------------------------------------------------------------------- Restormer Deraining/evaluate_PSNR_SSIM.m
@pytest.mark.parametrize("kind", sorted(RESTORERS))
def test_restormer_deraining_equals_its_matlab_script(tmp_path, kind):
    folder = tmp_path / "test" / "Rain100L"
    for name, (clean, deg) in PHOTOS.items():
        _save(str(folder / "input" / f"{name}.png"), deg)
        _save(str(folder / "target" / f"{name}.png"), clean)
    restorer = RESTORERS[kind]
    res = evaluate(Restorer(kind, restorer), [("rain100l", str(tmp_path))], "restormer", batch_size=1,
                   progress=False, log=None)
    refs = {}
    for name in PHOTOS:
        result = _restormer_test_py(restorer, _load_img(str(folder / "input" / f"{name}.png")))
        refs[name] = ML.evaluate_psnr_ssim_m(result, _imread(str(folder / "target" / f"{name}.png")))
    rows = _rows(res)
    _assert_agree(rows, refs, f"restormer deraining ({kind})")
    # the rules that make the difference: rounded Y, and the grayscale target measured as it is
    camera_y = _restormer_test_py(restorer, _load_img(str(folder / "input" / "camera.png")))
    gray_as_rgb = M.psnr(camera_y, np.repeat(PHOTOS["camera"][0][..., None], 3, axis=2), y_channel=True)
    assert abs(gray_as_rgb - refs["camera"][0]) > 0.5
    if kind == "near-identity":
        unrounded = {n: M.psnr(_restormer_test_py(restorer, _load_img(str(folder / "input" / f"{n}.png"))),
                               PHOTOS[n][0], y_channel=True) for n in ("astronaut", "coffee", "chelsea")}
        assert max(abs(unrounded[n] - refs[n][0]) for n in unrounded) > 1e-2


# ------------------------------------------------------------------------------------------------- DiffUIR eval/SOTS.m
def test_diffuir_sots_equals_its_matlab_script(tmp_path):
    folder = tmp_path / "SOTS" / "outdoor"
    names = {}
    for i, (name, (clean, deg)) in enumerate(PHOTOS.items()):
        stem = f"{i + 1:04d}"
        names[stem] = name
        _save(str(folder / "hazy" / f"{stem}_0.8_0.2.png"), deg)
        _save(str(folder / "gt" / f"{stem}.png"), clean)
    res = evaluate(Restorer("blur", _blur_restorer), [("sots-outdoor", str(tmp_path))], "diffuir", batch_size=1,
                   progress=False, log=None)
    refs = {}
    for stem in names:
        # DiffUIR reads with PIL convert('RGB') and rounds its float32 output with tensor2img
        inp = torch.from_numpy(_load_img(str(folder / "hazy" / f"{stem}_0.8_0.2.png")).astype(np.float32) / 255)
        out = torch.clamp(_blur_restorer(inp.permute(2, 0, 1)[None]), 0, 1)[0].permute(1, 2, 0).numpy()
        result = (out * 255.0).round().astype(np.uint8)
        refs[f"{stem}_0.8_0.2"] = ML.sots_m(result, _imread(str(folder / "gt" / f"{stem}.png")))
    _assert_agree(_rows(res), refs, "diffuir SOTS")


# --------------------------------------------------------------- Restormer Motion_Deblurring/evaluate_gopro_hide.m
def test_restormer_hide_equals_matlab_psnr_ssim(tmp_path):
    folder = tmp_path / "test" / "HIDE"
    colour = {n: p for n, p in PHOTOS.items() if p[0].ndim == 3}
    for name, (clean, deg) in colour.items():
        _save(str(folder / "input" / f"{name}.png"), deg[:45, :61])
        _save(str(folder / "target" / f"{name}.png"), clean[:45, :61])
    res = evaluate(Restorer("blur", _blur_restorer), [("hide", str(tmp_path))], "restormer", batch_size=1,
                   progress=False, log=None)
    refs = {n: ML.evaluate_gopro_hide_m(
        _restormer_test_py(_blur_restorer, _load_img(str(folder / "input" / f"{n}.png"))),
        _imread(str(folder / "target" / f"{n}.png"))) for n in colour}
    _assert_agree(_rows(res), refs, "restormer HIDE")
    # a one-channel target: MATLAB's ssim stops on it, so the preset refuses it before restoring anything
    _save(str(folder / "input" / "gray.png"), PHOTOS["camera"][1][:45, :61])
    _save(str(folder / "target" / "gray.png"), PHOTOS["camera"][0][:45, :61])
    calls = []
    with pytest.raises(DataError, match=r"gray.png: one-channel L image: .*size mismatch"):
        evaluate(Restorer("spy", lambda x: calls.append(1) or x), [("hide", str(tmp_path))], "restormer",
                 progress=False, log=None)
    assert not calls


# -------------------------------------------------------------------------------- Restormer Denoising/evaluate_sidd.m
def test_restormer_sidd_equals_matlab_in_single_precision(tmp_path):
    rng = np.random.default_rng(3)
    # blocks of a multiple of 8 like the real 256x256 ones (no padding in either pipeline)
    gt = np.stack([np.stack([PHOTOS[n][0][:32, :40], PHOTOS[n][0][32:64, 40:80]]) for n in ("astronaut", "coffee")])
    noisy = np.clip(np.round(gt + rng.normal(0, 8, gt.shape)), 0, 255).astype(np.uint8)
    sidd = tmp_path / "SIDD" / "val"
    os.makedirs(sidd)
    scipy.io.savemat(str(sidd / "ValidationNoisyBlocksSrgb.mat"), {"ValidationNoisyBlocksSrgb": noisy})
    scipy.io.savemat(str(sidd / "ValidationGtBlocksSrgb.mat"), {"ValidationGtBlocksSrgb": gt})
    res = evaluate(Restorer("blur", _blur_restorer), [("sidd", str(tmp_path))], "restormer", progress=False,
                   log=None)
    # test_real_denoising_SIDD.py: float32 / 255, restore, clamp, kept as float32 (saved to a .mat, never rounded)
    x = torch.from_numpy(noisy.astype(np.float32) / 255.0).reshape(-1, 32, 40, 3).permute(0, 3, 1, 2)
    restored = torch.clamp(_blur_restorer(x), 0, 1).permute(0, 2, 3, 1).numpy().reshape(noisy.shape)
    values = ML.evaluate_sidd_m(restored, gt)
    refs = {f"{i:02d}_{k:02d}": values[2 * i + k] for i in range(2) for k in range(2)}
    _assert_agree(_rows(res), {n: (float(p), float(s)) for n, (p, s) in refs.items()}, "restormer SIDD")
    rounded = M.psnr(torch.from_numpy(restored[0, 0]).permute(2, 0, 1)[None], torch.from_numpy(gt[0, 0] / 255.0)
                     .permute(2, 0, 1)[None])  # what 8-bit rounding would give
    assert abs(float(rounded[0]) - refs["00_00"][0]) > 1e-3


# ------------------------------------------------------------------------------------- MATLAB's rgb2ycbcr on uint8
def test_rounded_luma_is_matlab_rgb2ycbcr_on_uint8_for_every_colour():
    v = np.arange(256, dtype=np.uint8)
    rgb = np.stack(np.meshgrid(v, v, v[::5], indexing="ij"), axis=-1).reshape(256, -1, 3)
    ref = ML.rgb2ycbcr_uint8(rgb)[:, :, 0].astype(np.float64)
    ours = M.rgb_to_luma(rgb.transpose(2, 0, 1)[None].astype(np.float64), "matlab_uint8")[0, 0]
    assert np.array_equal(ours, ref)
    assert ref.min() == 16 and ref.max() == 235
    exact = M.rgb_to_luma(rgb.transpose(2, 0, 1)[None].astype(np.float64), "matlab")[0, 0]
    assert np.abs(exact - ref).max() <= 0.5 + 1e-9 and np.abs(exact - ref).max() > 0.49


def test_literal_ssim_index_is_what_our_basicsr_ssim_computes():
    """Sanity of the translation itself: SSIM_index on one channel = our 'basicsr' SSIM (Wang's valid SSIM)."""
    clean, deg = PHOTOS["coffee"]
    y1, y2 = ML.rgb2ycbcr_uint8(deg)[:, :, 0], ML.rgb2ycbcr_uint8(clean)[:, :, 0]
    assert abs(ML.ssim_index(y1, y2) - M.ssim(y1, y2)) < 1e-12
    assert ML.ssim_index(y1[:10], y2[:10]) == -np.inf  # the script's guard for images under 11 pixels


def test_matlab_reader_refuses_16_bit_ground_truth_before_restoring(tmp_path):
    folder = tmp_path / "test" / "Rain100L"
    clean, deg = PHOTOS["camera"]
    _save(str(folder / "input" / "1.png"), deg)
    os.makedirs(folder / "target")
    Image.fromarray(clean.astype(np.uint16) * 257).save(folder / "target" / "1.png")  # 16-bit grayscale PNG
    calls = []
    with pytest.raises(DataError, match=r"1.png: 16-bit I;16 image: MATLAB's imread returns it as uint16"):
        evaluate(Restorer("spy", lambda x: calls.append(1) or x), [("rain100l", str(tmp_path))], "restormer",
                 progress=False, log=None)
    assert not calls
    assert len(benchmark_dataset("rain100l", str(tmp_path))) == 1  # our own reader takes it


# ----------------------------------------------- Gaussian noise: Restormer's and AirNet's Python scripts, as described
def _clean_set(root):
    folder = os.path.join(root, "CBSD68", "original_png")
    for name in ("astronaut", "coffee", "chelsea"):
        _save(os.path.join(folder, f"{name}.png"), PHOTOS[name][0])
    return folder


def test_restormer_gaussian_denoising_follows_its_scripts(tmp_path):
    folder = _clean_set(str(tmp_path))
    res = evaluate(Restorer("blur", _blur_restorer), [("cbsd68-s25", str(tmp_path))], "restormer", batch_size=1,
                   progress=False, log=None)
    refs = {}
    for name in ("astronaut", "coffee", "chelsea"):
        # test_gaussian_color_denoising.py: float32 / 255, seed(0) per image, + normal(0, 25/255) unclipped, then
        # test.py's padding and img_as_ubyte; evaluate_gaussian_color_denoising.py: PSNR of the uint8 images
        clean = _load_img(os.path.join(folder, f"{name}.png"))
        img = np.float32(clean) / 255.0
        np.random.seed(0)
        img += np.random.normal(0, 25 / 255.0, img.shape)
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        h, w = x.shape[2:]
        x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), "reflect")
        out = img_as_ubyte(torch.clamp(_blur_restorer(x)[:, :, :h, :w], 0, 1)[0].permute(1, 2, 0).numpy())
        mse = np.mean((clean.astype(np.float64) - out.astype(np.float64)) ** 2)
        refs[name] = (20 * np.log10(255.0 / np.sqrt(mse)), None)
    rows = _rows(res)
    worst = max(abs(rows[n]["psnr"] - p) for n, (p, _) in refs.items())
    assert worst < PSNR_TOL, f"restormer Gaussian denoising: PSNR off by {worst:.2e}"


def test_airnet_gaussian_denoising_follows_its_test_script(tmp_path):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    folder = _clean_set(str(tmp_path))
    rs = np.random.RandomState(0)  # test.py: np.random.seed(0) once, then sigma 15, 25, 50 in turn
    refs = {}
    for sigma in (15, 25, 50):
        for name in sorted(os.listdir(folder)):
            clean = _load_img(os.path.join(folder, name))  # Image.open(...).convert('RGB')
            h, w = clean.shape[0] - clean.shape[0] % 16, clean.shape[1] - clean.shape[1] % 16
            y, x = (clean.shape[0] - h) // 2, (clean.shape[1] - w) // 2
            clean = clean[y:y + h, x:x + w]  # crop_img(base=16)
            noisy = np.clip(clean + rs.randn(*clean.shape) * sigma, 0, 255).astype(np.uint8)
            if sigma != 50:
                continue
            to_tensor = lambda a: torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]  # noqa: E731
            restored = np.clip(_blur_restorer(to_tensor(noisy)).numpy(), 0, 1)[0].transpose(1, 2, 0)
            gt = to_tensor(clean).numpy()[0].transpose(1, 2, 0)
            refs[name[:-4]] = (peak_signal_noise_ratio(gt, restored, data_range=1),
                               structural_similarity(gt, restored, data_range=1, channel_axis=2))
    res = evaluate(Restorer("blur", _blur_restorer), [("cbsd68-s50", str(tmp_path))], "airnet", batch_size=1,
                   progress=False, log=None)
    _assert_agree(_rows(res), refs, "airnet sigma 50")
