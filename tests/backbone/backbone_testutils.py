"""Helpers of the backbone tests: the fixture folder, the xz loader and the parity tolerance rule."""
import io
import lzma
from pathlib import Path

import torch


FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures' / 'var'


def load_xz(path: Path):
    with open(path, 'rb') as fh:
        return torch.load(io.BytesIO(lzma.decompress(fh.read())), map_location='cpu', weights_only=True)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float, name: str = '') -> None:
    """|ours - ref| <= atol + rtol * |ref| element-wise, in float64 (the fixtures' rule)."""
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    excess = (ours - ref).abs() - (atol + rtol * ref.abs())
    assert excess.max().item() <= 0, f"{name}: max |diff| {(ours - ref).abs().max().item():.3g} over tolerance"
