"""Shared fixtures of the VARestorer tests: the reduced model loaded from official-layout files."""
import pytest
from varestorer_testutils import PN, official_model_sd, official_swinir_file, official_vae_file

from varformer.varestorer import VARestorer


@pytest.fixture(scope="session")
def files():
    return official_model_sd(), official_vae_file(), official_swinir_file()


@pytest.fixture(scope="session")
def model(files):
    return VARestorer.from_official(*files, patch_nums=PN)
