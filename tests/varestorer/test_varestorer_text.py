"""VARestorer's text cache: hits and misses (the model is used only on a miss), the folder marker, the release's T5
rows (padding to max_length, attention-mask rows, float32), BLIP captions keyed by pixels, one-line errors."""
import json

import numpy as np
import pytest
import torch
from text_testutils import FakeCaptioner, FakeEncoder

from varformer.errors import ConfigError, WeightsNotFoundError
from varformer.varestorer.text import (CACHE_MARKER, BlipCaptioner, T5PromptEncoder, TextCache, image_digest,
                                       to_uint8_image)


def test_prompt_cache_hit_and_miss(tmp_path):
    enc = FakeEncoder()
    cache = TextCache(tmp_path / "cache")
    assert (tmp_path / "cache" / CACHE_MARKER).is_file()
    first = cache.prompt_features(["a dog", "a cat", "a dog"], enc)
    assert enc.calls == 1 and enc.prompts == ["a dog", "a cat"]           # one call, duplicates encoded once
    assert [f.shape for f in first] == [(3, 128), (3, 128), (3, 128)] and torch.equal(first[0], first[2])
    again = TextCache(tmp_path / "cache").prompt_features(["a cat", "a dog"], enc)   # a new process: from disk
    assert enc.calls == 1
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])
    third = cache.prompt_features(["a cat", "the sea"], enc)               # one hit, one miss
    assert enc.calls == 2 and enc.prompts[-1:] == ["the sea"] and torch.equal(third[0], first[1])
    other = FakeEncoder(identity="another model")                          # the model is part of the key
    cache.prompt_features(["a dog"], other)
    assert other.calls == 1


def test_prompt_cache_entry_names_its_prompt_and_model(tmp_path):
    cache = TextCache(tmp_path)
    cache.prompt_features(["a dog"], FakeEncoder())
    path = cache.prompt_path("fake-encoder", "a dog")
    from varformer.files import safetensors_metadata
    assert safetensors_metadata(path) == {"prompt": "a dog", "encoder": "fake-encoder"}
    path.write_bytes(b"garbage")                                           # an unreadable entry is recomputed
    enc = FakeEncoder()
    (f,) = cache.prompt_features(["a dog"], enc)
    assert enc.calls == 1 and f.shape == (3, 128)


def test_cache_folder_marker(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.png").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a text cache"):
        TextCache(tmp_path / "photos")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / CACHE_MARKER).write_text(json.dumps({"version": 99}))
    with pytest.raises(ConfigError, match="another version"):
        TextCache(tmp_path / "old")
    TextCache(tmp_path / "empty")
    TextCache(tmp_path / "empty")                                          # reopened through its marker


def test_caption_cache_keyed_by_pixels(tmp_path):
    rng = np.random.default_rng(0)
    red = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    red[..., 0] = 255
    sea = red[..., ::-1].copy()
    cap = FakeCaptioner()
    cache = TextCache(tmp_path)
    assert cache.captions([red, sea, red], cap) == ["a red photo", "a photo of the sea", "a red photo"]
    assert cap.calls == 1 and cap.images == 2
    same = torch.from_numpy(red).permute(2, 0, 1).float() / 255            # the same pixels as a [0, 1] tensor
    assert image_digest(to_uint8_image(same)) == image_digest(red)
    assert cache.captions([to_uint8_image(same)], cap) == ["a red photo"] and cap.calls == 1
    with pytest.raises(ConfigError, match="8-bit RGB"):
        cache.captions([red.astype(np.float32)], cap)


def test_t5_rows_are_the_release_rows(tmp_path):
    pytest.importorskip("transformers")
    from text_testutils import tiny_t5
    model, tok = tiny_t5(64)
    enc = T5PromptEncoder.from_modules(model, tok, "tiny-t5", max_length=12, batch_size=2)
    prompts = ["a dog", "a photo of the red house", "a cat"]
    got = TextCache(tmp_path).prompt_features(prompts, enc)
    # the release: pad every prompt to max_length, one batch, keep attention-mask-sum rows of the float output
    t = tok(prompts, max_length=12, padding="max_length", truncation=True, return_tensors="pt")
    assert t["input_ids"].shape == (3, 12)
    with torch.no_grad():
        h = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state.float()
    lens = t["attention_mask"].sum(-1).tolist()
    assert lens == [3, 7, 3] and [g.shape[0] for g in got] == lens
    for g, row, n in zip(got, h, lens):
        torch.testing.assert_close(g, row[:n], rtol=1e-5, atol=1e-5)
    assert enc.identity == "t5-encoder tiny-t5 max_length=12 float32"


def test_model_loaded_only_on_a_miss(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from text_testutils import tiny_t5
    model, tok = tiny_t5(32)
    filled = T5PromptEncoder.from_modules(model, tok, "tiny-t5", max_length=8)
    TextCache(tmp_path).prompt_features(["a dog"], filled)
    lazy = T5PromptEncoder("tiny-t5", local_files_only=True, device="cpu", dtype="float32", max_length=8)
    assert lazy.identity == filled.identity and not lazy.loaded
    loads = []
    monkeypatch.setattr(T5PromptEncoder, "load", lambda self: loads.append(self))
    (f,) = TextCache(tmp_path).prompt_features(["a dog"], lazy)
    assert not loads and f.shape == (3, 32)                                 # a hit: nothing loaded
    with pytest.raises(TypeError):                                          # a miss reaches the (stubbed) load
        TextCache(tmp_path).prompt_features(["a cat"], lazy)
    assert loads == [lazy]


def test_offline_missing_model_is_one_line(tmp_path):
    enc = T5PromptEncoder("nobody/no-such-t5", local_files_only=True, device="cpu")
    with pytest.raises(WeightsNotFoundError) as e:
        TextCache(tmp_path).prompt_features(["a dog"], enc)
    msg = str(e.value)
    assert "\n" not in msg and "nobody/no-such-t5" in msg
    assert "hf download nobody/no-such-t5" in msg or "transformers" in msg
    cap = BlipCaptioner("nobody/no-such-blip", local_files_only=True, device="cpu")
    with pytest.raises(WeightsNotFoundError, match="no-such-blip"):
        TextCache(tmp_path).captions([np.zeros((8, 8, 3), np.uint8)], cap)


def test_blip_captions_through_the_cache(tmp_path):
    pytest.importorskip("transformers")
    from text_testutils import tiny_blip
    model, processor, tok = tiny_blip()
    cap = BlipCaptioner.from_modules(model, processor, tok, "tiny-blip")
    img = np.random.default_rng(1).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    cache = TextCache(tmp_path)
    (c,) = cache.captions([img], cap)
    assert isinstance(c, str) and c and "[CLS]" not in c
    with torch.no_grad():   # the release: processor(image), generate with the defaults, decode without specials
        from PIL import Image
        ids = model.generate(pixel_values=processor(images=Image.fromarray(img), return_tensors="pt")["pixel_values"])
    assert c == tok.decode(ids[0], skip_special_tokens=True).strip()
    cap.model = None                                                        # a hit needs no model
    assert cache.captions([img], cap) == [c]
