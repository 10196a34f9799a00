"""Shared fixtures of the RestoreVAR tests: the reduced model of restorevar_testutils, its official-layout state
dicts, and a few images."""
import pytest
import torch
from restorevar_testutils import SIZE, small_model

from varformer.restorevar import to_official_restorevar


@pytest.fixture(scope="session")
def model():
    return small_model()


@pytest.fixture(scope="session")
def official(model):
    """(restorevar.pth-style state dict, VQVAE state dict) of the small model."""
    return to_official_restorevar(model.state_dict(), model.settings())


@pytest.fixture(scope="session")
def images():
    g = torch.Generator().manual_seed(1)
    lq = torch.rand(3, 3, SIZE, SIZE, generator=g)
    gt = (lq * 0.7 + 0.3 * torch.rand(3, 3, SIZE, SIZE, generator=g)).clamp(0, 1)
    return lq, gt
