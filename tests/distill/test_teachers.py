"""A teacher on a whole volume: the chunked forward pass equals one pass over all slices, chunk by chunk."""

from __future__ import annotations

import torch

from prokd.distill.teachers import centre_channels, in_chunks
from tests.distill.test_objective import make_teacher


def test_volume_logits_equal_one_forward_pass_and_respect_the_chunk_size():
    teacher = make_teacher()
    sizes: list[int] = []
    teacher.model.register_forward_hook(lambda module, args, output: sizes.append(args[0].shape[0]))
    inputs = torch.randn(7, 1, 32, 32)
    whole = teacher(inputs)[0]
    sizes.clear()
    chunked = teacher.volume_logits(inputs, slices=3)
    assert sizes == [3, 3, 1]
    assert chunked.shape == (7, 1, 32, 32)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_in_chunks_concatenates_rows_in_order():
    rows = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(in_chunks(lambda batch: batch * 2, rows, slices=2), rows * 2)


def test_centre_channels_keeps_the_middle_slices():
    x = torch.arange(5.0).reshape(1, 5, 1, 1).expand(2, 5, 3, 3)
    assert centre_channels(x, 3)[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0]
