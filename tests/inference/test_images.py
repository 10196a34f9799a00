"""Whole images through a restorer's network (varformer.inference.images): a pre-upsampling super-resolver's
resize path by its formula (PIL filters on 8-bit images), tiles at the output resolution, per-image contexts from
the image as read, and the one-line refusals."""
import numpy as np
import pytest
import torch
from PIL import Image

from varformer.errors import ConfigError
from varformer.inference import Restorer
from varformer.inference.images import calls_needed, image_run, restore_batch, restore_stream
from varformer.methods.api import RestorerTraits


def _pil(x_3HW):
    return Image.fromarray(x_3HW.mul(255).round().byte().permute(1, 2, 0).numpy())


def _tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)


def _image(h, w, seed):
    return _tensor(Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)))


def _sr(fit="resize", upsample="bicubic"):
    """A x3 pre-upsampling 'super-resolver' of input 24: halves its input and adds its image's context."""
    def fn(x, contexts):
        return x * 0.5 + torch.tensor(contexts, dtype=x.dtype)[:, None, None, None]
    traits = RestorerTraits(input_size=24, scale=3, upsample=upsample, fit=fit, tile_overlap=6, image_context=True)
    return Restorer("sr", fn, 24, traits=traits, image_context=lambda x: round(float(x.mean()) * 0.1, 4))


def test_resize_fit_is_upsample_squash_network_and_back():
    r = _sr()
    images = [("a", _image(10, 14, 0)), ("b", _image(8, 8, 1)), ("c", _image(12, 7, 2))]
    calls = []
    out = dict(restore_stream(r, images, image_run(r, batch_size=2), on_batch=calls.append))
    assert calls == [2, 1]                                                  # resized images share batches
    for key, x in images:
        H, W = x.shape[-2:]
        up = _pil(x).resize((3 * W, 3 * H), Image.BICUBIC)
        small = _tensor(up.resize((24, 24), Image.LANCZOS))
        y = (small * 0.5 + round(float(x.mean()) * 0.1, 4)).clamp(0, 1)     # the context of the image as read
        want = y if (3 * H, 3 * W) == (24, 24) else _tensor(_pil(y).resize((3 * W, 3 * H), Image.LANCZOS))
        assert out[key].shape == (3, 3 * H, 3 * W) and torch.allclose(out[key], want, atol=1e-6), key
    assert calls_needed(r, 10, 14, image_run(r)) == 1


def test_tile_fit_runs_at_the_output_resolution_and_protocol_upsampled_inputs_skip_the_upsampling():
    r = _sr(fit="tile")
    x = _image(16, 20, 3)
    run = image_run(r)
    assert (run.fit, run.tile, run.overlap, run.window) == ("tile", 24, 6, "ramp")
    y = restore_batch(r, x[None], run)
    up = _tensor(_pil(x).resize((60, 48), Image.BICUBIC))
    assert y.shape == (1, 3, 48, 60)
    assert torch.allclose(y[0], (up * 0.5 + round(float(x.mean()) * 0.1, 4)).clamp(0, 1), atol=1e-6)
    assert calls_needed(r, 16, 20, run) == 3 * 3                         # tiles of the 48x60 upsampled image
    already = restore_batch(r, up[None], image_run(r, upsampled=True), contexts=[round(float(x.mean()) * 0.1, 4)])
    assert torch.allclose(already, y, atol=1e-6)


def test_refusals_are_one_line():
    r = _sr()
    with pytest.raises(ConfigError, match="takes 24x24 inputs"):
        image_run(r, tile=32)
    with pytest.raises(ConfigError, match="overlap"):
        image_run(r, overlap=24)
    with pytest.raises(ConfigError, match="unknown fit"):
        image_run(r, fit="stretch")
    post = Restorer("x2 net", lambda x: x.repeat_interleave(2, -1).repeat_interleave(2, -2), None,
                    traits=RestorerTraits(scale=2))
    with pytest.raises(ConfigError, match="inside its network"):
        image_run(post, upsampled=True)
    with pytest.raises(ConfigError, match="any size"):
        image_run(post, fit="resize")
    y = restore_batch(post, torch.rand(1, 3, 20, 30), image_run(post, tile=16))   # tiles of a x2 network
    assert y.shape == (1, 3, 40, 60)
    with pytest.raises(ConfigError, match="one context per image"):
        r.network(torch.rand(2, 3, 24, 24))
