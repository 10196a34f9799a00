"""Files read as each peer's own loader reads them (varformer.data.image_io.read_image_as) and the peers' noise
rules, each checked against its description: cv2.imread's default flag (Restormer), PIL's convert('RGB') (AirNet,
DiffUIR), MATLAB's imread in the .m metric scripts; AirNet's one noise stream through sigma 15, 25, 50 and
Restormer's per-image seed."""
import os

import numpy as np
import pytest
from PIL import Image
from skimage import data

from data_helpers import write_png16
from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.image_io import read_image_as, reader_refusal
from varformer.errors import DataError


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    gray16 = rng.integers(0, 65536, (9, 13), dtype=np.uint16)
    gray16[0, :4] = [300, 32767, 32896, 65535]  # around the high-byte and 255-clip boundaries
    rgb16 = rng.integers(0, 65536, (9, 13, 3), dtype=np.uint16)
    paths = {"gray16": tmp_path / "gray16.png", "rgb16": tmp_path / "rgb16.png", "gray8": tmp_path / "gray8.png",
             "rgba": tmp_path / "rgba.png", "palette": tmp_path / "palette.png", "rgb": tmp_path / "rgb.png"}
    Image.fromarray(gray16).save(paths["gray16"])
    write_png16(str(paths["rgb16"]), rgb16)
    photo = data.coffee()[:9, :13]
    Image.fromarray(photo[..., 0]).save(paths["gray8"])
    Image.fromarray(np.dstack([photo, np.full((9, 13), 77, np.uint8)])).save(paths["rgba"])
    Image.fromarray(photo).convert("P").save(paths["palette"])
    Image.fromarray(photo).save(paths["rgb"])
    return {k: str(v) for k, v in paths.items()}, gray16, rgb16, photo


def _u8(x):
    return np.round(x * 255).astype(np.uint8)


def test_cv2_reader_keeps_the_high_byte_of_16_bit_files(files):
    paths, gray16, rgb16, photo = files
    arr, note, gray = read_image_as(paths["gray16"], "cv2")
    assert np.array_equal(_u8(arr), np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, axis=2)) and not gray
    assert "high byte" in note
    assert np.array_equal(_u8(read_image_as(paths["rgb16"], "cv2")[0]), (rgb16 >> 8).astype(np.uint8))
    assert np.array_equal(_u8(read_image_as(paths["gray8"], "cv2")[0]), np.repeat(photo[..., :1], 3, axis=2))
    assert np.array_equal(_u8(read_image_as(paths["rgba"], "cv2")[0]), photo)
    # our own reader keeps 16-bit grayscale at full precision: the reason the presets need their own readers
    ours = read_image_as(paths["gray16"], "varformer")[0]
    assert np.abs(ours[..., 0] - gray16 / 65535).max() < 1e-6


def test_cv2_reader_equals_opencv_where_installed(files):
    cv2 = pytest.importorskip("cv2")
    paths = files[0]
    for key in ("gray16", "rgb16", "gray8", "rgba", "palette", "rgb"):
        ref = cv2.cvtColor(cv2.imread(paths[key]), cv2.COLOR_BGR2RGB)
        assert np.array_equal(_u8(read_image_as(paths[key], "cv2")[0]), ref), key


def test_pil_reader_is_convert_rgb(files):
    paths, gray16 = files[0], files[1]
    for key, path in paths.items():
        ref = np.asarray(Image.open(path).convert("RGB"))
        assert np.array_equal(_u8(read_image_as(path, "pil")[0]), ref), key
    # Pillow clips 16-bit grayscale at 255 (AirNet's convert('RGB'))
    assert np.array_equal(_u8(read_image_as(paths["gray16"], "pil")[0])[..., 0], np.minimum(gray16, 255))


def test_matlab_readers(files):
    paths, _, _, photo = files
    arr, note, gray = read_image_as(paths["gray8"], "matlab")
    assert gray and "one channel" in note and np.array_equal(_u8(arr)[..., 1], photo[..., 0])
    assert not read_image_as(paths["rgba"], "matlab")[2]  # imread returns RGB (and alpha separately)
    for key, why in (("gray16", "16-bit I;16 image: MATLAB's imread returns it as uint16"),
                     ("rgb16", "16-bit RGB image"), ("palette", "palette image")):
        assert why in reader_refusal(paths[key], "matlab")
        with pytest.raises(DataError, match="convert it to 8-bit RGB"):
            read_image_as(paths[key], "matlab")
    assert "size mismatch" in reader_refusal(paths["gray8"], "matlab_rgb")
    assert reader_refusal(paths["rgb"], "matlab_rgb") is None and reader_refusal(paths["rgb"], "skimage") is None
    assert "8-bit RGB files only" in reader_refusal(paths["rgba"], "skimage")
    with pytest.raises(DataError, match="unknown image reader"):
        reader_refusal(paths["rgb"], "imageio")


# ------------------------------------------------------------------------------------------------------ noise rules
def _clean_set(root, sizes=((37, 50), (20, 24), (41, 45))):
    folder = os.path.join(root, "CBSD68", "original_png")
    os.makedirs(folder)
    photo = data.astronaut()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(photo[3 * i:3 * i + h, 5 * i:5 * i + w]).save(os.path.join(folder, f"{i:04d}.png"))
    return folder


def _airnet_reference(folder):
    """AirNet's test.py as described: seed 0 once; for sigma 15, 25, 50 in turn, every image in order: its RGB
    crop to multiples of 16, + randn * sigma, clipped, truncated to uint8."""
    rs = np.random.RandomState(0)
    out = {}
    for sigma in (15, 25, 50):
        for name in sorted(os.listdir(folder)):
            clean = np.array(Image.open(os.path.join(folder, name)).convert("RGB"))
            h, w = clean.shape[0] - clean.shape[0] % 16, clean.shape[1] - clean.shape[1] % 16
            y, x = (clean.shape[0] - h) // 2, (clean.shape[1] - w) // 2
            clean = clean[y:y + h, x:x + w]
            out[sigma, name[:-4]] = np.clip(clean + rs.randn(*clean.shape) * sigma, 0, 255).astype(np.uint8)
    return out


def test_airnet_noise_is_one_stream_through_the_three_sigmas(tmp_path):
    folder = _clean_set(str(tmp_path))
    ref = _airnet_reference(folder)
    for sigma in (50, 15, 25):  # any order of evaluation, any order of access
        ds = benchmark_dataset(f"cbsd68-s{sigma}", str(tmp_path), noise_rule="airnet", lq_reader="pil")
        for i in (2, 0, 1, 2):
            item = ds[i]
            assert np.array_equal(_u8(item["lq"].permute(1, 2, 0).numpy()), ref[sigma, ds.names()[i]])
    # restarting the stream at sigma 25 (the old rule) gives other noise: sigma 25 continues sigma 15's stream
    restarted = benchmark_dataset("cbsd68-s15", str(tmp_path), noise_rule="airnet", lq_reader="pil")[0]["lq"]
    continued = benchmark_dataset("cbsd68-s25", str(tmp_path), noise_rule="airnet", lq_reader="pil")[0]["lq"]
    assert not np.array_equal(_u8(continued.numpy()), _u8(restarted.numpy()))


def test_restormer_noise_is_seeded_per_image_in_float(tmp_path):
    folder = _clean_set(str(tmp_path))
    ds = benchmark_dataset("cbsd68-s25", str(tmp_path), noise_rule="restormer", lq_reader="cv2")
    for i, name in enumerate(sorted(os.listdir(folder))):
        # test_gaussian_color_denoising.py: float32 image / 255, seed(0), img += normal(0, sigma / 255)
        img = np.float32(np.asarray(Image.open(os.path.join(folder, name)).convert("RGB"))) / 255.0
        np.random.seed(0)
        img += np.random.normal(0, 25 / 255.0, img.shape)
        assert np.array_equal(ds[i]["lq"].permute(1, 2, 0).numpy(), img)
        assert ds[i]["lq"].min() < 0  # not clipped
