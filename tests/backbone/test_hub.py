import argparse
import shutil

import pytest
import torch

from varformer.backbone import VAR, VQVAE, load_vae, load_var
from varformer.backbone import hub
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError


@pytest.fixture(scope='module')
def files(tmp_path_factory, vae_sd, var_sd):
    folder = tmp_path_factory.mktemp('ckpt')
    torch.save(vae_sd, folder / 'vae_small.pth')
    torch.save(var_sd, folder / 'var_d2.pth')
    return folder


@pytest.fixture(scope='module')
def loaded_vae(files):
    return load_vae(files / 'vae_small.pth', ch=32)


def test_load_from_local_paths(files, loaded_vae, vae_sd, var_sd):
    assert isinstance(loaded_vae, VQVAE) and not loaded_vae.training
    assert all(not t.is_meta for t in loaded_vae.state_dict().values())
    assert torch.equal(loaded_vae.quantize.embedding.weight, vae_sd['quantize.embedding.weight'])
    var = load_var(2, files / 'var_d2.pth', vae=loaded_vae)
    assert isinstance(var, VAR) and var.vae is loaded_vae and not var.training
    for k, v in var.state_dict().items():
        assert torch.equal(v, var_sd[k]), k


def test_checkpoints_folder_is_searched_first(files, loaded_vae, monkeypatch):
    def no_hub(**kwargs):
        raise AssertionError('the hub must not be asked when the file is in the folder')
    monkeypatch.setattr('varformer.backbone.hub.hf_hub_download', no_hub)
    var = load_var(2, vae=loaded_vae, checkpoints_dir=files)
    assert var.depth == 2


def test_the_hub_cache_is_read_without_writing_and_a_download_goes_through_the_hub(files, tmp_path, monkeypatch,
                                                                                    loaded_vae):
    """local_files_only: the file from the Hugging Face cache's own layout, and a miss creates nothing there (old
    huggingface_hub's hf_hub_download made cache folders even on a miss; a dry run must write nothing); otherwise
    hf_hub_download with the repository."""
    cache = tmp_path / 'hf'
    repo = cache / 'models--FoundationVision--var'
    (repo / 'snapshots' / 'abc123').mkdir(parents=True)
    shutil.copy(files / 'var_d2.pth', repo / 'snapshots' / 'abc123' / 'var_d2.pth')
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('abc123')
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_CACHE', str(cache), raising=False)
    before = sorted(cache.rglob('*'))
    var = load_var(2, vae=loaded_vae, checkpoints_dir=tmp_path / 'none', local_files_only=True)
    assert var.depth == 2
    with pytest.raises(WeightsNotFoundError, match='var_d3.pth'):
        hub.resolve_weight_file('var_d3.pth', checkpoints_dir=tmp_path / 'none', local_files_only=True)
    assert sorted(cache.rglob('*')) == before
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(files / 'var_d2.pth')
    monkeypatch.setattr('varformer.backbone.hub.hf_hub_download', fake_download)
    assert hub.resolve_weight_file('var_d3.pth', checkpoints_dir=tmp_path / 'none') == files / 'var_d2.pth'
    assert calls == [('FoundationVision/var', 'var_d3.pth')]


def test_offline_cache_miss_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_CACHE', str(tmp_path / 'hf'), raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        load_vae(checkpoints_dir=tmp_path, local_files_only=True)
    msg = str(err.value)
    assert 'vae_ch160v4096z32.pth' in msg and 'FoundationVision/var' in msg and str(tmp_path) in msg


def test_missing_explicit_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r'var_d16\.pth.*does not exist.*FoundationVision/var'):
        hub.resolve_weight_file('var_d16.pth', path=tmp_path / 'var_d16.pth')


def test_wrong_depth_is_rejected_with_counts_and_guess(files, loaded_vae):
    with pytest.raises(CheckpointMismatchError) as err:
        load_var(3, files / 'var_d2.pth', vae=loaded_vae)
    msg = str(err.value)
    assert 'VAR(depth=3)' in msg and '13 missing keys' in msg and 'blocks.2.' in msg
    assert 'depth-2 VAR (width 128)' in msg and 'other shapes' in msg


def test_vae_file_given_as_var(files, loaded_vae):
    with pytest.raises(CheckpointMismatchError, match=r'324 unexpected keys.*looks like a VQVAE with ch=32'):
        load_var(2, files / 'vae_small.pth', vae=loaded_vae)


def test_wrong_vae_width(files):
    with pytest.raises(CheckpointMismatchError, match=r'other shapes.*VQVAE with ch=32'):
        load_vae(files / 'vae_small.pth', ch=64)


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / 'bad.pth'
    torch.save({'w': torch.zeros(1), 'args': argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointMismatchError, match='weights_only'):
        load_vae(path, ch=32)


def test_truncated_file_gives_clear_error(tmp_path):
    path = tmp_path / 'vae_ch160v4096z32.pth'
    path.write_bytes(b'PK\x03\x04 not really a checkpoint')
    with pytest.raises(CheckpointMismatchError, match='cannot be read as a torch checkpoint'):
        load_vae(path)
