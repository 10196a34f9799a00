"""The one strict state-dict check every loader uses: what it reports and that it reports nothing for a match."""
import pytest
import torch
from torch import nn

from varformer.backbone.state_dict_check import check_filled, first_keys, key_mismatch
from varformer.errors import CheckpointMismatchError


def test_a_matching_state_dict_has_no_mismatch_and_shapes_may_be_given_as_tuples():
    own = nn.Linear(3, 2).state_dict()
    assert key_mismatch(own, dict(own)) == []
    assert key_mismatch({"weight": (2, 3), "bias": (2,)}, dict(own)) == []


def test_missing_unexpected_and_reshaped_keys_are_named():
    own = nn.Linear(3, 2).state_dict()
    sd = {"weight": torch.zeros(2, 4), "extra.0": torch.zeros(1), "extra.1": torch.zeros(1)}
    parts = key_mismatch(own, sd)
    assert parts == ["1 missing keys (bias);", "2 unexpected keys (extra.0, extra.1);",
                     "1 keys with other shapes (e.g. weight: checkpoint (2, 4), model (2, 3));"]
    assert key_mismatch(own, dict(own, weight=torch.zeros(2, 4)), ignore_shape=["weight"]) == []
    assert first_keys([f"k{i}" for i in range(7)]) == "k0, k1, k2, k3, ... (3 more)"


def test_a_tensor_left_on_the_meta_device_is_an_error():
    with torch.device("meta"):
        m = nn.Linear(3, 2)
    m.load_state_dict({"weight": torch.zeros(2, 3), "bias": torch.zeros(2, device="meta")}, assign=True)
    with pytest.raises(CheckpointMismatchError, match="file.pt left 1 tensors uninitialised \\(bias\\)"):
        check_filled(m, "file.pt")
    m.load_state_dict({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}, assign=True)
    check_filled(m, "file.pt")
