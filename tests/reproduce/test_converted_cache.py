"""The converted-weights cache of ``reproduce paper`` (issue #26): a record that is not JSON, or a cached file cut
short, is converted again (the cache's own files), never a traceback; a --cache-dir of the user's is refused."""
import json
from types import SimpleNamespace

import pytest
import torch

from safety_utils import snapshot
from varformer.errors import OutputError
from varformer.files import MARKER_NAME, save_safetensors_atomic
from varformer.reproduce import weights as W


@pytest.fixture()
def fake_conversion(tmp_path, monkeypatch):
    """converted_checkpoint with the conversion itself replaced by a tiny stand-in (counted)."""
    calls = []
    report = SimpleNamespace(summary=lambda: "converted")
    model = SimpleNamespace(settings=lambda: SimpleNamespace(to_metadata=lambda: {"depth": "2"}))
    monkeypatch.setattr(W, "read_official", lambda path: {})
    monkeypatch.setattr(W, "convert_official", lambda sd, with_report: (calls.append(1) or {}, {}, report))
    monkeypatch.setattr(W, "build_from_state_dict", lambda *a, **k: model)
    monkeypatch.setattr(W, "check_backbone", lambda m, files: {})
    monkeypatch.setattr(W, "save_varformer", lambda path, m: save_safetensors_atomic({"w": torch.ones(256)}, path))
    source = tmp_path / "net_g_last.pth"
    source.write_bytes(b"the released file")
    return calls, {W.OFFICIAL_FILENAME: source}


def test_a_corrupt_or_cut_short_cache_entry_is_converted_again(tmp_path, fake_conversion):
    calls, files = fake_conversion
    cache = tmp_path / "converted"
    first = W.converted_checkpoint(files, cache, log=None)
    assert first.converted_now and calls == [1] and (cache / MARKER_NAME).is_file()
    assert not W.converted_checkpoint(files, cache, log=None).converted_now and calls == [1]
    record = cache / f"{first.sha256}.json"
    record.write_text('{"sha256": "')  # a record cut short: JSONDecodeError before
    logs = []
    again = W.converted_checkpoint(files, cache, log=logs.append)
    assert again.converted_now and calls == [1, 1] and json.loads(record.read_text())["sha256"] == first.sha256
    assert any("is not valid JSON" in m and "converting again" in m for m in logs)
    data = first.path.read_bytes()
    first.path.write_bytes(data[:-100])  # a cached file cut short
    logs = []
    assert W.converted_checkpoint(files, cache, log=logs.append).converted_now and calls == [1, 1, 1]
    assert any("truncated or corrupt" in m for m in logs) and first.path.read_bytes() == data


def test_a_cache_dir_of_the_users_is_refused(tmp_path, fake_conversion):
    _, files = fake_conversion
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.pdf").write_bytes(b"%PDF")
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="converted-weights cache .* non-empty folder that varformer did not make"):
        W.converted_checkpoint(files, mine, log=None)
    assert snapshot(tmp_path) == before

