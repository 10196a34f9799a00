"""SIDD sRGB validation blocks: ``ValidationNoisyBlocksSrgb.mat`` + ``ValidationGtBlocksSrgb.mat``.

Each file holds one uint8 array indexed [image 40][block 32][H 256][W 256][RGB 3] (1,280 blocks). MATLAB v5/v7
files are read with ``scipy.io.loadmat``; v7.3 files are HDF5 and need ``h5py`` (optional dependency: if it is
missing the error says so). HDF5 stores MATLAB arrays column-major, so their axes come reversed.
Block names are ``<image>_<block>`` (``00_00`` ... ``39_31``).
"""
from __future__ import annotations

import os
from typing import List, Tuple

import numpy as np
import scipy.io

from varformer.errors import DataError

NOISY_FILE = "ValidationNoisyBlocksSrgb.mat"
GT_FILE = "ValidationGtBlocksSrgb.mat"
NOISY_KEY = "ValidationNoisyBlocksSrgb"
GT_KEY = "ValidationGtBlocksSrgb"


def _load_v73(path: str, key: str) -> np.ndarray:
    try:
        import h5py  # optional dependency: only MATLAB v7.3 files need it
    except ImportError:
        raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file; reading it needs the optional package h5py "
                        f"(pip install h5py), or re-save it as v7 in MATLAB: save(f, '{key}', '-v7')") from None
    with h5py.File(path, "r") as fh:
        if key not in fh:
            raise DataError(f"{path}: no variable '{key}' (found: {', '.join(fh.keys())})")
        arr = np.asarray(fh[key])
    return arr.transpose(tuple(range(arr.ndim - 1, -1, -1)))


def load_mat_blocks(path: str, key: str) -> np.ndarray:
    """The (N_img, N_blk, H, W, 3) uint8 block array stored under ``key``."""
    if not os.path.isfile(path):
        raise DataError(f"SIDD validation file not found: {path}")
    try:
        data = scipy.io.loadmat(path, variable_names=[key])
    except NotImplementedError:  # scipy's answer to v7.3 files
        arr = _load_v73(path, key)
    except (ValueError, OSError, TypeError) as e:
        raise DataError(f"unreadable .mat file {path}: {e}") from None
    else:
        if key not in data:
            raise DataError(f"{path}: no variable '{key}' in the file")
        arr = data[key]
    if arr.ndim != 5 or arr.shape[-1] != 3:
        raise DataError(f"{path}: '{key}' has shape {arr.shape}, expected (images, blocks, H, W, 3)")
    return arr


def find_sidd_mat(folder: str) -> Tuple[str, str]:
    return os.path.join(folder, NOISY_FILE), os.path.join(folder, GT_FILE)


class SiddBlocks:
    """Both arrays loaded once (about 250 MB each for the full set); indexable by flat block number."""

    def __init__(self, folder: str):
        noisy_path, gt_path = find_sidd_mat(folder)
        self.noisy = load_mat_blocks(noisy_path, NOISY_KEY)
        self.gt = load_mat_blocks(gt_path, GT_KEY)
        if self.noisy.shape != self.gt.shape:
            raise DataError(f"SIDD validation: noisy blocks {self.noisy.shape} and ground truth {self.gt.shape} "
                            f"differ in shape ({noisy_path}, {gt_path})")
        self.n_img, self.n_blk = self.noisy.shape[:2]

    def __len__(self) -> int:
        return self.n_img * self.n_blk

    def names(self) -> List[str]:
        return [f"{i:02d}_{b:02d}" for i in range(self.n_img) for b in range(self.n_blk)]

    def pair(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        i, b = divmod(index, self.n_blk)
        return self.noisy[i, b], self.gt[i, b]
