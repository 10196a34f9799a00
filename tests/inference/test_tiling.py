"""Tiling: coverage, padding, batching across images, and the seam bounds of issue 8 (item 2)."""
import math

import pytest
import torch
import torch.nn.functional as F

from varformer.inference.tiling import (TileAccumulator, count_tiles, gaussian_window, pad_to_at_least, plan_tiles,
                                        ramp, stride_starts, tile_starts, tiled_forward, tiled_forward_stream)


def box_blur(radius: int):
    """A local 'model': (2r+1)^2 box blur with zero padding, so a tile's output is wrong only within r px of its
    edges (missing context), by at most the kernel mass that falls outside the tile."""
    k = 2 * radius + 1

    def fn(x):
        w = torch.full((x.shape[1], 1, k, k), 1.0 / k ** 2, dtype=x.dtype)
        return F.conv2d(x, w, padding=radius, groups=x.shape[1])
    return fn


@pytest.mark.parametrize("size,tile,overlap", [(256, 256, 32), (257, 256, 32), (1000, 256, 32), (513, 128, 16),
                                               (300, 64, 63), (97, 32, 0), (3840, 256, 32)])
def test_tile_starts_cover_with_requested_overlap(size, tile, overlap):
    s = tile_starts(size, tile, overlap)
    assert s[0] == 0 and s[-1] == size - tile
    assert all(b > a for a, b in zip(s, s[1:]))
    assert all(a + tile - b >= overlap for a, b in zip(s, s[1:]))  # every overlap at least the requested one
    # minimal: one tile fewer could not keep the overlap
    assert len(s) == 1 or (len(s) - 2) * (tile - overlap) + tile < size


def test_bad_tiling_args():
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(500, 64, 64)
    with pytest.raises(ValueError, match="batch"):
        tiled_forward(lambda x: x, torch.rand(1, 3, 80, 80), tile=64, overlap=8, batch_size=0)
    with pytest.raises(ValueError, match="smaller than the tile"):
        plan_tiles(100, 300, 128, 16)


def test_ramps_are_a_partition_of_unity():
    for n in (1, 2, 7, 32):
        up = ramp(2 * n + 5, n, 0)[:n]
        down = ramp(2 * n + 5, 0, n)[-n:]
        assert torch.allclose(up + down, torch.ones(n), atol=1e-6)
        assert (up > 0).all()


@pytest.mark.parametrize("hw", [(256, 256), (300, 700), (513, 260)])
def test_weights_sum_to_one_where_tiles_meet(hw):
    tiles = plan_tiles(*hw, 256, 32)
    wsum = torch.zeros(hw)
    for t in tiles:
        assert 0 <= t.y <= hw[0] - 256 and 0 <= t.x <= hw[1] - 256
        wsum[t.y:t.y + 256, t.x:t.x + 256] += t.weight_yx
    assert torch.allclose(wsum, torch.ones(hw), atol=1e-5)


@pytest.mark.parametrize("hw", [(1, 1), (5, 300), (64, 64), (70, 33), (200, 300)])
def test_mirror_padding_any_size(hw):
    x = torch.rand(2, 3, *hw)
    xp, orig = pad_to_at_least(x, 64)
    assert orig == hw and xp.shape[-2] >= 64 and xp.shape[-1] >= 64
    assert torch.equal(xp[..., :hw[0], :hw[1]], x)
    if 2 <= hw[1] < 64:  # the first padded column mirrors the one before the last (no edge repeat)
        assert torch.equal(xp[..., :hw[0], hw[1]], x[..., hw[1] - 2])


@pytest.mark.parametrize("hw", [(256, 256), (200, 300), (513, 97), (1, 1), (600, 257)])
def test_identity_comes_back_exactly(hw):
    x = torch.rand(2, 3, *hw)
    y = tiled_forward(lambda t: t.clone(), x, tile=128, overlap=24, batch_size=3)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y, x, atol=1e-6)


def test_one_tile_vs_overlapping_tiles_differ_only_near_borders_by_a_bounded_amount():
    r, tile, overlap = 2, 96, 24
    fn = box_blur(r)
    x = torch.rand(1, 3, 200, 311)
    full = fn(x)                      # the image as one tile
    tiled = tiled_forward(fn, x, tile=tile, overlap=overlap, batch_size=5)
    diff = (tiled - full).abs().amax(dim=1)[0]

    # band: pixels within r of an edge of some tile that is not an image border
    near = torch.zeros(200, 311, dtype=torch.bool)
    ys, xs = tile_starts(200, tile, overlap), tile_starts(311, tile, overlap)
    for s in ys[1:]:
        near[s:s + r] = True
    for s in ys[:-1]:
        near[s + tile - r:s + tile] = True
    for s in xs[1:]:
        near[:, s:s + r] = True
    for s in xs[:-1]:
        near[:, s + tile - r:s + tile] = True

    # away from the band every tile sees the full receptive field: identical to the one-tile result
    assert diff[~near].max() < 1e-5
    # in the band a wrong tile has window weight <= ramp(r - 1) along the axis of its near edge (the overlap it
    # shares is >= `overlap`, which only lowers the ramp); at most one tile row and one tile column are near
    # their edge at any pixel (overlap >= 2r); a box blur of [0,1] data errs by at most 1. Hence:
    bound = 2 * (0.5 - 0.5 * math.cos(math.pi * (r - 0.5) / overlap))
    assert 0 < diff[near].max() <= bound, (diff[near].max().item(), bound)
    # a hard cut (tiles that just touch: 2x3 tiles of 96 on 192x288) shows far larger seams
    x_cut = x[..., :2 * tile, :3 * tile]
    hard = tiled_forward(fn, x_cut, tile=tile, overlap=0, batch_size=5)
    assert (hard - fn(x_cut)).abs().max() > 5 * bound


def test_constant_image_through_identity_like_model_has_no_seams():
    """A model that is identity except for a dark rim at its input's edges (the classic zero-padding artefact)."""
    tile, overlap, rim = 96, 32, 2

    def rim_darkening(x):
        y = x.clone()
        y[..., :rim, :] *= 0.7
        y[..., -rim:, :] *= 0.7
        y[..., :, :rim] *= 0.7
        y[..., :, -rim:] *= 0.7
        return y

    x = torch.full((1, 3, 150, 230), 0.6)
    out = tiled_forward(rim_darkening, x, tile=tile, overlap=overlap)
    inner = out[0, :, rim:-rim, rim:-rim]  # the outer rim is the model's own output at the image border
    gy = (inner[:, 1:] - inner[:, :-1]).abs().max()
    gx = (inner[:, :, 1:] - inner[:, :, :-1]).abs().max()
    # a rim pixel has window weight <= ramp(rim - 1) and error <= 0.6 * (1 - 0.7**2) per tile, one row + one column
    w = 0.5 - 0.5 * math.cos(math.pi * (rim - 0.5) / overlap)
    bound = 2 * 2 * w * 0.6 * (1 - 0.7 ** 2)  # a gradient is a difference of two such deviations
    assert max(gy, gx) <= bound < 2 / 255
    x_cut = x[..., :tile, :2 * tile]  # two tiles that just touch: the seam the window removes
    hard = tiled_forward(rim_darkening, x_cut, tile=tile, overlap=0)[0, :, rim:-rim, rim:-rim]
    assert (hard[:, :, 1:] - hard[:, :, :-1]).abs().max() > 0.15
    # and the plain identity returns the constant exactly (no seams at all)
    assert torch.allclose(tiled_forward(lambda t: t, x, tile=tile, overlap=overlap), x, atol=1e-6)


def test_stream_batches_tiles_across_images_and_matches_per_image():
    fn = box_blur(1)
    imgs = [torch.rand(3, 70, 90), torch.rand(3, 64, 64), torch.rand(3, 20, 150), torch.rand(3, 130, 65)]
    calls = []

    def counted(x):
        calls.append(x.shape[0])
        return fn(x)

    seen = []
    out = list(tiled_forward_stream(counted, enumerate(imgs), tile=64, overlap=8, batch_size=4,
                                    on_batch=seen.append))
    assert [k for k, _ in out] == [0, 1, 2, 3]
    total = sum(count_tiles(*im.shape[-2:], tile=64, overlap=8) for im in imgs)
    assert sum(calls) == total == sum(seen)
    assert all(c == 4 for c in calls[:-1])  # full batches except the last one: tiles of images share batches
    for (_, o), im in zip(out, imgs):
        ref = tiled_forward(fn, im[None], tile=64, overlap=8, batch_size=1)[0]
        assert o.shape == im.shape and torch.allclose(o, ref, atol=1e-6)


def test_stream_yields_each_image_before_reading_far_ahead():
    read = []

    def source():
        for i in range(5):
            read.append(i)
            yield i, torch.rand(3, 64, 64)

    for key, _ in tiled_forward_stream(lambda x: x, source(), tile=64, overlap=8, batch_size=2):
        assert max(read) <= key + 2  # a finished image is handed back while at most one batch is read ahead


def test_low_precision_restorer_is_accumulated_in_float32():
    x = torch.rand(1, 3, 100, 140)
    y = tiled_forward(lambda t: t.to(torch.bfloat16), x, tile=64, overlap=16)
    assert y.dtype == torch.float32
    assert (y - x).abs().max() < 1e-2


def test_accumulator_crops_and_normalises():
    acc = TileAccumulator((4, 4), (3, 2), channels=1)
    t = plan_tiles(4, 4, 4, 0)[0]
    acc.add(t, torch.full((1, 4, 4), 2.0))
    assert acc.result().shape == (1, 3, 2) and torch.all(acc.result() == 2.0)


def test_restorer_returning_wrong_shape_is_reported():
    with pytest.raises(RuntimeError, match="restorer returned"):
        tiled_forward(lambda t: t[:, :, :10], torch.rand(1, 3, 80, 80), tile=64, overlap=8)


def test_gaussian_window_is_the_releases_formula():
    for T in (8, 33, 512):
        x = torch.arange(T, dtype=torch.float64)
        g = torch.exp(-(x - (T - 1) / 2) ** 2 / (T * T) / (2 * 0.01)) / math.sqrt(2 * math.pi * 0.01)
        assert torch.allclose(gaussian_window(T).double(), g / g.max(), rtol=1e-6, atol=0)
    assert stride_starts(768, 512, 128) == [0, 256] and stride_starts(1280, 512, 128) == [0, 384, 768]
    assert stride_starts(512, 512, 128) == [0] and stride_starts(896, 512, 128) == [0, 384]
    assert count_tiles(512, 512, 512, 128, window="gaussian") == 4       # padded to 768: two tiles per axis


@pytest.mark.parametrize("scale,hw", [(1, (50, 37)), (2, (40, 61)), (1, (16, 16))])
def test_gaussian_tiling_matches_a_direct_blend(scale, hw):
    """Reflect padding by the overlap, tiles every tile - overlap px (last flush), w(x, y) = g(x) g(y), sum of
    weighted outputs over the summed weights, padding cropped; a network that upsamples by ``scale``."""
    tile, overlap = 16, 4
    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0))
    offsets = iter(torch.linspace(0, 0.5, 100).tolist())

    def fn(t):  # a different offset per tile makes every weight visible
        return torch.stack([F.interpolate(ti[None], scale_factor=scale, mode="nearest")[0] + next(offsets)
                            for ti in t])

    got = tiled_forward(fn, x, tile=tile, overlap=overlap, batch_size=3, scale=scale, window="gaussian")
    offsets = iter(torch.linspace(0, 0.5, 100).tolist())
    pad = F.pad(x, (overlap,) * 4, mode="reflect")[0]
    H, W = pad.shape[-2:]
    starts = [list(range(0, n - tile + 1, tile - overlap)) + ([n - tile] if (n - tile) % (tile - overlap) else [])
              for n in (H, W)]
    g = torch.exp(-((torch.arange(scale * tile) - (scale * tile - 1) / 2) / (scale * tile)) ** 2 / 0.02)
    w = (g[:, None] * g[None, :]) / (g.max() ** 2)
    acc, wsum = torch.zeros(3, scale * H, scale * W), torch.zeros(scale * H, scale * W)
    for y in starts[0]:
        for x0 in starts[1]:
            out = fn(pad[None, :, y:y + tile, x0:x0 + tile])[0]
            acc[:, scale * y:scale * (y + tile), scale * x0:scale * (x0 + tile)] += out * w
            wsum[scale * y:scale * (y + tile), scale * x0:scale * (x0 + tile)] += w
    s, o = scale, scale * overlap
    want = (acc / wsum)[:, o:o + s * hw[0], o:o + s * hw[1]]
    assert got.shape == (1, 3, s * hw[0], s * hw[1]) and torch.allclose(got[0], want, atol=1e-5)
    ident = tiled_forward(lambda t: F.interpolate(t, scale_factor=scale, mode="nearest"), x, tile=tile,
                          overlap=overlap, scale=scale, window="gaussian")
    assert torch.allclose(ident, F.interpolate(x, scale_factor=scale, mode="nearest"), atol=1e-5)


def test_contexts_travel_with_their_images_tiles():
    images = [(k, torch.full((3, h, w), 0.1 * k)) for k, (h, w) in enumerate([(20, 30), (16, 16), (40, 18)])]
    calls = []

    def fn(t, ctx):  # each tile gets its own image's context (its index), whatever the batch mixes
        calls.append(list(ctx))
        return t * 0 + torch.tensor(ctx, dtype=t.dtype)[:, None, None, None]

    outs = dict(tiled_forward_stream(fn, ((k, x, k) for k, x in images), tile=16, overlap=4, batch_size=5,
                                     contexts=True))
    assert any(len(set(c)) > 1 for c in calls)                            # batches mixed images
    for k, x in images:
        assert outs[k].shape == x.shape and torch.all(outs[k] == k)
