"""``varformer restore``: inputs, robust reading, outputs, skipping, failures (identity restorer; model below)."""

import numpy as np
import pytest
import torch
from PIL import Image

from varformer.cli import main
from varformer.errors import DataError, OutputError, VarformerError, WeightsNotFoundError
from varformer.inference import identity_restorer, load_restorer, model_restorer
from varformer.restore import apply_exif_orientation, collect_inputs, plan_jobs, restore_paths


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def mixed_folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(_rgb(200, 300, 0)).save(d / "a_200x300.png")
    Image.fromarray(_rgb(256, 256, 1)).save(d / "b_256.jpg", quality=95)
    Image.fromarray(_rgb(513, 97, 2)).save(d / "c_513x97.png")
    Image.fromarray(_rgb(40, 50, 3)[..., 0]).save(d / "d_gray.png")
    Image.fromarray(np.dstack([_rgb(30, 20, 4), np.full((30, 20), 128, np.uint8)])).save(d / "e_rgba.png")
    Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 20)).save(d / "f_gray16.png")
    (d / "g_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    good = (d / "a_200x300.png").read_bytes()
    (d / "h_truncated.png").write_bytes(good[: len(good) // 2])  # header fine, pixel data cut
    (d / "notes.txt").write_text("not an image")
    return d


def test_identity_restores_mixed_folder(mixed_folder, tmp_path):
    out = tmp_path / "out"
    logs = []
    rep = restore_paths([str(mixed_folder)], str(out), identity_restorer("cpu"), tile=64, overlap=16, batch_size=3,
                        progress=False, log=logs.append)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_200x300.png", "b_256.png", "c_513x97.png", "d_gray.png", "e_rgba.png", "f_gray16.png"]
    assert sorted(p.name for p, _ in rep.failed) == ["g_corrupt.png", "h_truncated.png"]
    assert any("g_corrupt.png" in m for m in logs) and any("h_truncated.png" in m for m in logs)
    assert any("grayscale" in n for n in rep.notes) and any("alpha" in n for n in rep.notes)
    # identity through tiling and 8-bit PNG is lossless for 8-bit inputs
    for name in ("a_200x300", "c_513x97"):
        assert np.array_equal(np.asarray(Image.open(out / f"{name}.png")),
                              np.asarray(Image.open(mixed_folder / f"{name}.png")))
    gray = np.asarray(Image.open(out / "d_gray.png"))
    assert gray.shape == (40, 50, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    assert np.asarray(Image.open(out / "f_gray16.png")).dtype == np.uint8
    assert not list(out.glob(".*"))  # no temporary files left


def test_skip_existing_and_cli(mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["restore", str(mixed_folder / "a_200x300.png"), str(mixed_folder / "c_*.png"), "-o", str(out),
            "--weights", "identity", "--tile", "64", "--overlap", "8", "--no-progress"]
    assert main(argv) == 0
    first = (out / "a_200x300.png").stat().st_mtime_ns
    assert main(argv + ["--skip-existing"]) == 0
    assert (out / "a_200x300.png").stat().st_mtime_ns == first
    assert "0 written, 2 skipped" in capsys.readouterr().out
    # a folder with a corrupt file: the others are written, exit status 1 says something failed
    assert main(["restore", str(mixed_folder), "-o", str(out), "--weights", "identity", "--tile", "64",
                 "--no-progress"]) == 1


def test_failure_mid_run_keeps_finished_outputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        Image.fromarray(_rgb(64, 64, i)).save(d / f"{i}.png")
    calls = []

    def flaky(x):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return x

    logs = []
    with pytest.raises(RuntimeError, match="out of memory"):
        restore_paths([str(d)], str(tmp_path / "out"), flaky, tile=64, overlap=8, batch_size=1, progress=False,
                      log=logs.append)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png"]  # complete files only
    assert "2 output(s) were written" in logs[-1]


def test_inputs_and_names(tmp_path):
    (tmp_path / "x").mkdir()
    Image.fromarray(_rgb(8, 8, 0)).save(tmp_path / "x" / "a.png")
    Image.fromarray(_rgb(8, 8, 0)).save(tmp_path / "x" / "a.jpg")
    srcs = collect_inputs([str(tmp_path / "x"), str(tmp_path / "x" / "a.png")])  # duplicates collapse
    assert [p.name for p in srcs] == ["a.jpg", "a.png"]
    jobs, notes = plan_jobs(srcs, tmp_path / "out")
    assert sorted(j.out.name for j in jobs) == ["a_jpg.png", "a_png.png"] and len(notes) == 2
    with pytest.raises(DataError, match="overwrite its input"):
        plan_jobs(collect_inputs([str(tmp_path / "x" / "a.png")]), tmp_path / "x")
    with pytest.raises(DataError, match="input not found"):
        collect_inputs([str(tmp_path / "missing.png")])
    with pytest.raises(DataError, match="no images match"):
        collect_inputs([str(tmp_path / "*.webp")])


def test_exif_orientation_matches_pillow(tmp_path):
    from PIL import ImageOps

    arr = _rgb(6, 10, 5)
    for orientation in range(1, 9):
        p = tmp_path / f"o{orientation}.jpg"
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(arr).save(p, exif=exif, quality=100)
        with Image.open(p) as im:
            want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            raw = np.asarray(im.convert("RGB"))
        got, note = apply_exif_orientation(raw, p)
        assert np.array_equal(got, want), orientation
        assert (note is None) == (orientation == 1)


def test_missing_weights_error_says_what_to_do(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        load_restorer(str(tmp_path / "nope.pt"))
    msg = str(e.value)
    assert "checkpoints/" in msg and "varformer convert official" in msg
    with pytest.raises(VarformerError, match="precision"):
        load_restorer("identity", precision="fp16")
    with pytest.raises(VarformerError, match="--tile 256"):
        restore_paths([str(tmp_path)], str(tmp_path / "o"), model_restorer(torch.nn.Identity(), "cpu", input_size=256),
                      tile=128, progress=False)


def test_restore_folder_with_a_small_varformer_checkpoint(tmp_path):
    """A real (random-init, small) VarFormer saved with save_varformer, loaded by --weights, on mixed sizes."""
    from varformer.model import save_varformer
    from varformer.model.varformer import VarFormer

    torch.manual_seed(0)
    model = VarFormer(depth=2, vae_ch=32, n_cross=1)
    ckpt = tmp_path / "small.pt"
    save_varformer(ckpt, model)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(_rgb(200, 180, 0)).save(d / "small.png")             # padded to one tile
    Image.fromarray(_rgb(256, 300, 1)[..., 0]).save(d / "gray_wide.png")   # grayscale, two tiles
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    restorer = load_restorer(str(ckpt), device="cpu", precision="fp32")
    calls = []

    def counted(x):
        calls.append(x.shape[0])
        return restorer(x)

    rep = restore_paths([str(d)], str(out), counted, tile=256, overlap=32, batch_size=3, progress=False,
                        log=lambda m: None)
    assert calls == [3]  # the three tiles of both images in one model call
    assert sorted(p.name for p in rep.written) == ["gray_wide.png", "small.png"]
    assert [p.name for p, _ in rep.failed] == ["broken.jpg"]
    a = np.asarray(Image.open(out / "small.png"))
    b = np.asarray(Image.open(out / "gray_wide.png"))
    assert a.shape == (200, 180, 3) and b.shape == (256, 300, 3)
    # (that batching tiles of several images leaves each result unchanged is tested with the model)


def test_bf16_restorer_holds_bf16_weights(tmp_path):
    """--precision bf16 loads the model with its autocast-cast weights held in bf16 (less memory, same output)."""
    from varformer.model import save_varformer
    from varformer.model.varformer import VarFormer

    model = VarFormer(depth=2, vae_ch=32, n_cross=1)
    ckpt = tmp_path / "small.safetensors"
    save_varformer(ckpt, model)
    r = load_restorer(str(ckpt), device="cpu", precision="bf16")
    assert r.precision == "bf16" and r.model.weights_precision == "bf16"
    assert r.model.unet_decoder.conv_out.weight.dtype == torch.bfloat16
    assert r.model.vae.quant_conv.weight.dtype == torch.float32
    assert load_restorer(str(ckpt), device="cpu", precision="fp32").model.weights_precision == "fp32"


def test_compile_option_compiles_the_unet_in_place(tmp_path):
    """--compile wraps the U-Net's call in torch.compile without renaming anything (the compilation itself runs
    at the first call and takes minutes on a CPU, so it is measured by the benchmark, not here)."""
    from varformer.model import save_varformer
    from varformer.model.varformer import VarFormer

    model = VarFormer(depth=2, vae_ch=32, n_cross=1)
    keys = list(model.state_dict())
    ckpt = tmp_path / "small.safetensors"
    save_varformer(ckpt, model)
    r = load_restorer(str(ckpt), device="cpu", precision="fp32", compile_unet=True)
    assert list(r.model.state_dict()) == keys
    assert r.model.unet_encoder._compiled_call_impl is not None
    assert r.model.unet_decoder._compiled_call_impl is not None
    assert r.model.vae.encoder._compiled_call_impl is None


def test_output_must_be_a_writable_folder_of_its_own(tmp_path, capsys):
    """Checked before a model is loaded: a file name, an input folder, a folder that cannot be written."""
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(2):
        Image.fromarray(_rgb(16, 16, i)).save(d / f"{i}.jpg")
    (tmp_path / "a_file").write_text("x")
    cases = [(str(tmp_path / "result.png"), "names a file; -o takes a folder"),
             (str(d), "is a folder the inputs come from"),
             (str(tmp_path / "a_file" / "out"), "cannot write into the output folder")]
    for out, expect in cases:
        # weights that do not exist: the output is refused before the model would be looked for
        assert main(["restore", str(d), "-o", out, "--weights", str(tmp_path / "none.pt"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert expect in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "result.png").exists() and sorted(p.name for p in d.iterdir()) == ["0.jpg", "1.jpg"]


def test_replacing_an_existing_output_is_noted(tmp_path):
    d, out = tmp_path / "in", tmp_path / "out"
    d.mkdir()
    out.mkdir()
    Image.fromarray(_rgb(16, 16, 0)).save(d / "a.png")
    Image.fromarray(_rgb(9, 9, 1)).save(out / "a.png")  # another picture of the same name, not a restore's
    before = (out / "a.png").read_bytes()
    with pytest.raises(OutputError, match="not written by varformer restore: pass --overwrite"):
        restore_paths([str(d)], str(out), identity_restorer("cpu"), tile=64, overlap=8, progress=False)
    assert (out / "a.png").read_bytes() == before
    logs = []
    rep = restore_paths([str(d)], str(out), identity_restorer("cpu"), tile=64, overlap=8, progress=False,
                        overwrite=True, log=logs.append)
    assert rep.written == [out / "a.png"] and np.asarray(Image.open(out / "a.png")).shape == (16, 16, 3)
    assert any("a.png is replaced" in m and "--overwrite" in m for m in logs)
    logs = []  # now an earlier restore's output: replaced again without --overwrite, with a note
    rep = restore_paths([str(d)], str(out), identity_restorer("cpu"), tile=64, overlap=8, progress=False,
                        log=logs.append)
    assert rep.written == [out / "a.png"]
    assert any("an earlier restore's output) is replaced" in m and "--skip-existing" in m for m in logs)


def test_ctrl_c_says_interrupted(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.fromarray(_rgb(64, 64, i)).save(d / f"{i}.png")
    calls = []

    def interrupted(x):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return x

    logs = []
    with pytest.raises(KeyboardInterrupt):
        restore_paths([str(d)], str(tmp_path / "out"), interrupted, tile=64, overlap=8, batch_size=1,
                      progress=False, log=logs.append)
    assert logs[-1].startswith("restore interrupted after 1 output(s)") and "error" not in logs[-1]
