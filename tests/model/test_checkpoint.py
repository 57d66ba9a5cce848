"""Checkpoints: bit-exact round trip; corrupt, truncated, mismatched or missing files give specific errors."""

from __future__ import annotations

import json

import pytest
import torch

from mambaesr_runtime.errors import CheckpointError
from mambaesr_runtime.model.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from mambaesr_runtime.model.config import variant
from tinymodels import untrained


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = untrained("tiny", scale=3)
    weights, meta = save_checkpoint(model, tmp_path / "tiny", variant="tiny", training={"steps": 7})
    return model, weights, meta


def test_round_trip_is_bit_exact(saved):
    model, weights, meta = saved
    for path in (weights, meta, weights.with_suffix("")):
        loaded, info = load_checkpoint(path)
        assert info["variant"] == "tiny" and info["training"] == {"steps": 7}
        assert info["config"] == model.cfg
        assert info["param_count"] == sum(p.numel() for p in model.parameters())
        for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)


def test_meta_reads_without_loading_weights(saved):
    _, weights, meta = saved
    weights.unlink()
    assert read_checkpoint_meta(meta)["config"].scale == 3


def test_corrupt_weights_are_reported(saved):
    _, weights, _ = saved
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or were replaced: sha256 differs"):
        load_checkpoint(weights)


def test_truncated_weights_are_reported(saved):
    _, weights, meta = saved
    weights.write_bytes(weights.read_bytes()[:100])
    info = json.loads(meta.read_text())
    info["weights_sha256"] = None  # as if the checksum were unknown: the reader itself must catch it
    meta.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load_checkpoint(weights)


def test_weights_that_do_not_fit_the_config_name_the_keys_and_the_variant(saved):
    _, weights, meta = saved
    info = json.loads(meta.read_text())
    info["config"] = variant("fast").to_dict()
    meta.write_text(json.dumps(info))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(weights)
    message = str(err.value)
    assert "missing keys" in message and "other shapes" in message
    assert "match variant tiny x3" in message


def test_missing_files_and_bad_json(tmp_path, saved):
    _, weights, meta = saved
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    meta.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(weights)
    meta.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a MambaESR checkpoint"):
        load_checkpoint(weights)


def test_invalid_config_in_json(saved):
    _, weights, meta = saved
    info = json.loads(meta.read_text())
    info["config"]["scale"] = 8
    meta.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="scale must be one of"):
        load_checkpoint(weights)


def test_missing_weights_file_names_the_fix(saved):
    _, weights, _ = saved
    weights.unlink()
    with pytest.raises(CheckpointError, match="copy the .safetensors file beside it"):
        load_checkpoint(weights)


def test_save_leaves_no_temporary_files(saved, tmp_path):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.safetensors"]


@pytest.mark.parametrize("change, words", [({"embed_dim": 1000000}, "embed_dim 1000000 \\(limit 512\\)"),
                                           ({"num_blocks": 1000000}, "num_blocks 1000000 \\(limit 32\\)"),
                                           ({"state_dim": 4096, "chunk": 10**6}, "state_dim 4096 .*chunk 1000000"),
                                           ({"scan_layout": "lines", "heads": 1, "context_mixers": 10**6},
                                            "context_mixers 1000000 \\(limit 32\\)")])
def test_an_edited_config_is_refused_before_anything_is_built(saved, monkeypatch, change, words):
    """Before: the checksum covered only the weights, so embed_dim 1000000 allocated 5 GB before a torch traceback
    and num_blocks 1000000 took 141 s. Now the limits refuse it before any model, even a meta one, is built."""
    from mambaesr_runtime.model import net

    _, weights, meta = saved
    info = json.loads(meta.read_text())
    info["config"].update(change)
    meta.write_text(json.dumps(info))
    monkeypatch.setattr(net, "build_model", lambda cfg: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match=f"far larger than any MambaESR variant: {words}"):
        load_checkpoint(weights)
    with pytest.raises(CheckpointError, match="far larger"):
        read_checkpoint_meta(meta)  # the torch-free reader refuses it too


def test_a_config_within_limits_is_checked_against_the_weights_header_first(saved, monkeypatch):
    """An edited config of plausible size is compared with the safetensors header's shapes on the meta device:
    no tensor is read and no real model is built."""
    from safetensors import torch as st_torch

    from mambaesr_runtime.model import checkpoint, net

    _, weights, meta = saved
    info = json.loads(meta.read_text())
    info["config"]["embed_dim"] = 64
    meta.write_text(json.dumps(info))
    devices = []
    real_build = net.build_model

    def build(cfg):
        devices.append(str(torch.get_default_device()))
        return real_build(cfg)

    monkeypatch.setattr(net, "build_model", build)
    monkeypatch.setattr(st_torch, "load_file", lambda *a, **k: pytest.fail("tensors were read"))
    monkeypatch.setattr(checkpoint, "sha256_file", lambda p: pytest.fail("the weights were hashed"))
    with pytest.raises(CheckpointError, match="do not fit its config: .*keys with other shapes"):
        load_checkpoint(weights)
    assert set(devices) <= {"meta"}  # (shapes already built for a config are cached: maybe no build at all)


def test_a_lying_safetensors_header_is_refused(saved):
    _, weights, _meta = saved
    data = weights.read_bytes()
    weights.write_bytes((10**12).to_bytes(8, "little") + data[8:])  # a header "a terabyte long"
    with pytest.raises(CheckpointError, match="header claims 1000000000000 bytes"):
        load_checkpoint(weights)
