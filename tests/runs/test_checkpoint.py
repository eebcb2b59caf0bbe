"""Checkpoints: atomic writes, weights-only loading, clear errors, enough on their own to rebuild the model."""

from __future__ import annotations

import pytest
import torch

from prokd.models import build_model
from prokd.runs.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)


def test_round_trip_rebuilds_identical_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet-tiny", 3, 2).eval()
    spec = {"name": "unet-tiny", "in_channels": 3, "out_channels": 2, "kwargs": {}}
    path = save_checkpoint(tmp_path / "checkpoints" / "best.pt", {"model": spec, "state_dict": model.state_dict()})
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]
    payload = load_checkpoint(resolve_checkpoint(tmp_path, "best"))
    assert payload["format"] == 1 and payload["model"] == spec
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model_from_checkpoint(payload)(x), model(x))


def test_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path, "best")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a prokd checkpoint"):
        load_checkpoint(foreign)


class Executable:
    """Stands for code a pickle would run on loading."""


def test_refusals_are_one_line(tmp_path):
    code = tmp_path / "code.pt"
    torch.save({"format": 1, "payload": Executable()}, code)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 truncated zip")
    for path, message in ((code, f"{code}: not a prokd checkpoint (refusing to unpickle code)"),
                          (junk, f"{junk}: not a readable checkpoint (")):
        with pytest.raises(CheckpointError) as refused:
            load_checkpoint(path)
        text = str(refused.value)
        assert text.startswith(message) and "\n" not in text and "weights_only" not in text


def test_failed_save_leaves_previous_file_intact(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"value": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"value": Unpicklable()})
    assert load_checkpoint(path)["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
