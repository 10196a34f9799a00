"""The converted-weights cache of ``reproduce paper`` (issue #26): a record that is not JSON (a JSONDecodeError
traceback before), or a cached model file cut short (named but not recognised before), makes the entry unusable
and the release is converted again over the cache's own files; a --cache-dir of the user's is refused."""
import json

import pytest
import torch

from safety_utils import snapshot
from varformer.errors import OutputError
from varformer.files import MARKER_NAME, folder_kind, save_safetensors_atomic
from varformer.reproduce.weights import CACHE_KIND, cached_record, open_cache_folder

DIGEST = "ab" * 32


def _entry(folder):
    out, record = folder / f"{DIGEST}.safetensors", folder / f"{DIGEST}.json"
    save_safetensors_atomic({"w": torch.ones(256)}, out)
    record.write_text(json.dumps({"sha256": DIGEST, "conversion": "converted"}))
    return out, record


def test_a_cut_short_or_unreadable_entry_is_unusable_not_a_traceback(tmp_path):
    open_cache_folder(tmp_path / "converted")
    assert folder_kind(tmp_path / "converted") == CACHE_KIND
    out, record = _entry(tmp_path / "converted")
    assert cached_record(out, record, DIGEST) == ({"sha256": DIGEST, "conversion": "converted"}, None)
    assert cached_record(out.with_name("cd" * 32 + ".safetensors"), record.with_name("cd" * 32 + ".json"),
                         "cd" * 32) == (None, None)  # absent: converted without a word
    record.write_text('{"sha256": "')  # a record cut short
    assert "is not valid JSON (JSONDecodeError)" in cached_record(out, record, DIGEST)[1]
    record.write_text(json.dumps({"sha256": "ef" * 32}))
    assert "not this file's" in cached_record(out, record, DIGEST)[1]
    _entry(tmp_path / "converted")
    out.write_bytes(out.read_bytes()[:-100])  # a model file cut short
    assert "truncated or corrupt" in cached_record(out, record, DIGEST)[1]
    out.unlink()
    assert "missing" in cached_record(out, record, DIGEST)[1]


def test_a_cache_dir_of_the_users_is_refused_and_an_earlier_cache_is_taken(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.pdf").write_bytes(b"%PDF")
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="converted-weights cache .* non-empty folder that varformer did not make"):
        open_cache_folder(mine)
    assert snapshot(tmp_path) == before
    earlier = tmp_path / "earlier"  # an unmarked cache of an earlier version: its entries alone
    earlier.mkdir()
    _entry(earlier)
    (earlier / "hashes.json").write_text("{}")
    open_cache_folder(earlier)
    assert (earlier / MARKER_NAME).is_file()
