"""VARestorer on the shared path (reduced model, 128 px): the registered spec, convert -> model file -> inspect ->
load_restorer, restore at x4 through the CLI with the text from the cache (no text model loaded), the release's
resize and tiled paths by their formulas, batch rows, per-image captions, and the untrained demo recipe."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from text_testutils import FakeCaptioner, FakeEncoder
from varestorer_testutils import PN, SIZE, official_model_sd, official_swinir_file, official_vae_file

from varformer.cli import main
from varformer.config import load_config
from varformer.errors import ConfigError
from varformer.inference import load_restorer, model_restorer
from varformer.inference.images import image_run, restore_batch
from varformer.inference.restorer import with_scale
from varformer.methods import registry
from varformer.varestorer import VARestorer
from varformer.varestorer.files import load_varestorer, save_varestorer
from varformer.varestorer.restorer import TextOptions, TextSource, VARestorerRestorer, restorer_traits
from varformer.varestorer.spec import SPEC
from varformer.varestorer.text import TextCache

T5_ID = "t5-encoder google/flan-t5-xl max_length=512 float32"       # what restore's default encoder is on a CPU
BLIP_ID = "blip-caption Salesforce/blip-image-captioning-large float32"
PN_ARGS = [str(p) for p in PN]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    d = tmp_path_factory.mktemp("release")
    torch.save(official_model_sd(), d / "varestorer.pth")
    torch.save(official_vae_file(), d / "infinity_vae_d32reg.pth")
    torch.save(official_swinir_file(), d / "general_swinir_v1.ckpt")
    return d


@pytest.fixture(scope="module")
def model_file(released):
    out = released / "varestorer.safetensors"
    assert main(["convert", "varestorer", str(released / "varestorer.pth"), "--vae",
                 str(released / "infinity_vae_d32reg.pth"), "--swinir", str(released / "general_swinir_v1.ckpt"),
                 "--patch-nums", *PN_ARGS, "-o", str(out)]) == 0
    return out


def runner(model, prompt="a dog", captioner=None, **kw):
    text = TextSource(TextOptions(prompt=prompt), encoder=FakeEncoder(), captioner=captioner, use_cache=False)
    return VARestorerRestorer(model, text, **kw)


def test_spec_is_registered(model):
    assert "varestorer" in registry.names() and registry.get("varestorer") is SPEC
    assert SPEC.stage_names() == ("distill",) and SPEC.default_protocol == "varestorer"
    assert registry.method_of_model(runner(model)) is SPEC
    traits = SPEC.restorer(runner(model))
    assert (traits.input_size, traits.scale, traits.upsample, traits.fit, traits.tile_overlap, traits.tile_window) \
        == (SIZE, 4, "lanczos", "resize", SIZE // 4, "gaussian")
    assert traits.image_context and traits.text_prompt
    assert {c.name for c in SPEC.converters} == {"varestorer", "varestorer-to-official", "varestorer-captions"}
    cfg = load_config(None, ["method=varestorer", "model.prompt=a cat", "model.depth=2"])
    assert cfg.method == "varestorer" and cfg.model.prompt == "a cat" and cfg.model.text_model == "google/flan-t5-xl"


def test_convert_model_file_inspect_and_load(model, released, model_file):
    info = registry.inspect_weights(model_file)
    assert info.kind == "model" and info.method is SPEC and info.settings == model.settings()
    loaded = load_varestorer(model_file)
    sd = model.state_dict()
    assert loaded.state_dict().keys() == sd.keys()
    assert all(torch.equal(v, sd[k]) for k, v in loaded.state_dict().items())
    assert registry.inspect_weights(released / "varestorer.pth").kind == "official"
    assert registry.inspect_weights(released / "infinity_vae_d32reg.pth").kind == "backbone"
    assert registry.inspect_weights(released / "general_swinir_v1.ckpt").kind == "backbone"
    r = load_restorer(str(model_file), device="cpu", precision="fp32", prompt="a dog")
    assert isinstance(r.model, VARestorerRestorer) and r.scale == 4 and r.model.text.prompt == "a dog"
    assert load_restorer(str(model_file), device="cpu", precision="fp32", scale=2).scale == 2
    with pytest.raises(ConfigError, match="takes no --prompt"):
        load_restorer("identity", device="cpu", prompt="a dog")
    # back to the official layout and in again: the same model
    back = released / "official"
    assert main(["convert", "varestorer-to-official", str(model_file), "-o", str(back)]) == 0
    again = VARestorer.from_official(str(back / "varestorer.pth"), str(back / "infinity_vae_d32reg.pth"),
                                     str(back / "general_swinir_v1.ckpt"), patch_nums=PN)
    assert all(torch.equal(v, sd[k]) for k, v in again.state_dict().items())
    save_varestorer(released / "again.pt", again)                           # the torch-file form of a model file
    assert registry.inspect_weights(released / "again.pt").kind == "model"


def test_convert_names_the_missing_file_and_the_hub_command(released, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "varestorer", str(released / "varestorer.pth"), "--local-files-only",
                 "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "infinity_vae_d32reg.pth" in err and "hf download FoundationVision/Infinity" in err
    assert len(err.splitlines()) == 1


def test_restore_x4_through_the_cli_with_cached_text(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("VARFORMER_CACHE", str(tmp_path / "cache"))
    cache = TextCache(tmp_path / "cache" / "varestorer-text")
    cache.prompt_features(["a dog"], FakeEncoder(identity=T5_ID))          # filled before: T5 is never loaded
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(inp / "a.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(inp / "b.png")
    assert main(["restore", str(inp), "-o", str(tmp_path / "out"), "--weights", str(model_file), "--prompt",
                 "a dog", "--device", "cpu", "--no-progress"]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (80, 112, 3)
    assert np.asarray(Image.open(tmp_path / "out" / "b.png")).shape == (128, 128, 3)
    # no prompt: each input's caption (cached by its pixels), then that caption's features
    for name in ("a.png", "b.png"):
        img = np.asarray(Image.open(inp / name))
        (caption,) = cache.captions([img], FakeCaptioner(identity=BLIP_ID))
        cache.prompt_features([caption], FakeEncoder(identity=T5_ID))
    assert main(["restore", str(inp / "a.png"), "-o", str(tmp_path / "out2"), "--weights", str(model_file),
                 "--scale", "2", "--fit", "tile", "--device", "cpu", "--no-progress"]) == 0
    assert np.asarray(Image.open(tmp_path / "out2" / "a.png")).shape == (40, 56, 3)


def _pil(x_3HW):
    return Image.fromarray(x_3HW.mul(255).round().byte().permute(1, 2, 0).numpy())


def _tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)


def test_resize_path_is_the_releases(model):
    """gen_one_img_anyres with tiled=0: x4 Lanczos, Lanczos to 512 (here 128), one step, 8-bit by truncation,
    Lanczos back to the x4 size."""
    run = runner(model, argmax_bits=True)
    r = model_restorer(run, "cpu", "fp32", traits=restorer_traits(run))
    x = _tensor(Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 20, 3), dtype=np.uint8)))
    got = restore_batch(r, x[None], image_run(r))[0]
    big = _pil(x).resize((80, 96), Image.LANCZOS)
    inp = _tensor(big.resize((SIZE, SIZE), Image.LANCZOS))
    with torch.no_grad():
        y = model(inp[None], [run.text.features_for(x)], argmax_bits=True)[0]
    y8 = Image.fromarray(y.clamp(0, 1).mul(255).floor().byte().permute(1, 2, 0).numpy())   # truncation (D8)
    want = _tensor(y8.resize((80, 96), Image.LANCZOS))
    assert got.shape == (3, 96, 80) and torch.equal(got, want)


def test_tiled_path_is_the_releases(model):
    """--fit tile: x4 Lanczos, reflect padding by the overlap, tiles every tile - overlap px (last flush),
    Gaussian-weighted blend of the truncated 8-bit tiles, padding cropped."""
    run = runner(model, argmax_bits=True)
    r = model_restorer(run, "cpu", "fp32", traits=with_scale(restorer_traits(run), 2, "test"))
    x = torch.rand(3, 80, 72, generator=torch.Generator().manual_seed(2))
    x = _tensor(_pil(x))
    got = restore_batch(r, x[None], image_run(r, fit="tile", batch_size=1))[0]   # one tile per call, as the release
    up = _tensor(_pil(x).resize((144, 160), Image.LANCZOS))
    T, o = SIZE, SIZE // 4
    pad = torch.nn.functional.pad(up[None], (o, o, o, o), mode="reflect")[0]           # (3, 224, 208)
    ys = list(range(0, 224 - T + 1, T - o)) + ([224 - T] if (224 - T) % (T - o) else [])
    xs = list(range(0, 208 - T + 1, T - o)) + ([208 - T] if (208 - T) % (T - o) else [])
    g = np.exp(-((np.arange(T) - (T - 1) / 2) / T) ** 2 / 0.02) / np.sqrt(2 * np.pi * 0.01)
    w = torch.from_numpy(np.outer(g, g) / np.outer(g, g).max()).float()
    acc, wsum = torch.zeros_like(pad), torch.zeros(pad.shape[1:])
    feats = run.text.features_for(x)
    for y0 in ys:
        for x0 in xs:
            with torch.no_grad():
                t = model(pad[None, :, y0:y0 + T, x0:x0 + T], [feats], argmax_bits=True)[0]
            acc[:, y0:y0 + T, x0:x0 + T] += t.clamp(0, 1).mul(255).floor().div(255) * w
            wsum[y0:y0 + T, x0:x0 + T] += w
    want = (acc / wsum)[:, o:o + 160, o:o + 144]
    assert got.shape == (3, 160, 144) and torch.allclose(got, want, atol=1e-5)


def test_batch_rows_equal_each_image_alone_with_their_own_captions(model):
    cap = FakeCaptioner()
    run = runner(model, prompt=None, captioner=cap, argmax_bits=True)
    r = model_restorer(run, "cpu", "fp32", traits=restorer_traits(run))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    x[0, 0], x[1, 2] = 1.0, 1.0                                             # two captions: red, sea, ...
    both = r(x)
    assert both.shape == (3, 3, 128, 128) and cap.images == 3
    assert [run.text.caption(xi) for xi in x[:2]] == ["a red photo", "a photo of the sea"]
    for i in range(3):
        assert torch.allclose(both[i], r(x[i:i + 1])[0], atol=1 / 255 + 1e-6)


def test_demo_recipe_runs_the_pipeline_honestly(tmp_path, monkeypatch):
    monkeypatch.setenv("VARFORMER_CACHE", str(tmp_path / "cache"))
    recipe = SPEC.demo
    assert recipe.stages == () and "not restoration" in recipe.summary
    m = recipe.untrained()
    traits = with_scale(SPEC.restorer(m), recipe.scale, "demo")
    r = model_restorer(m, "cpu", "fp32", name="varestorer-demo", traits=traits)
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(4))
    y = restore_batch(r, x, image_run(r))
    assert y.shape == x.shape and torch.equal(y, restore_batch(r, x, image_run(r)))   # argmax bits: deterministic
    assert not (tmp_path / "cache").exists()                                # no text model, nothing on disk
    assert m.argmax_bits and m.settings().swinir is False


def test_benchmark_entry_feeds_the_forward(model):
    entry = SPEC.benchmark
    assert entry.released().image_size == 512 and entry.input_size(model.settings()) == SIZE
    images, text = entry.inputs(model.settings(), 2, torch.device("cpu"))
    assert images.shape == (2, 3, SIZE, SIZE) and [t.shape for t in text] == [(16, 128)] * 2
    from torch.profiler import profile
    with profile() as prof:
        out = model(images, text)
    assert out.shape == images.shape
    names = {e.name for e in prof.events()}
    assert set(entry.parts) <= names
    assert json.dumps(model.settings().to_metadata())
