"""Integer-like arguments of generate: numpy integers are taken as ints everywhere (max_new_tokens, prefill_chunk,
max_len, seed), and bools are refused. numpy ones used to pass max_new_tokens' check and then fail on a max_len the
caller never passed, and prefill_chunk=True was a chunk of 1 token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import foxacp
from tests.infer.models import tiny_model


def test_numpy_max_new_tokens_is_accepted_as_documented_by_its_check():
    model = tiny_model("fox_pro")
    prompt = [torch.arange(10)]
    want = foxacp.generate(model, prompt, 5)
    got = foxacp.generate(model, prompt, np.int64(5))
    assert torch.equal(got[0], want[0])


def test_numpy_prefill_chunk():
    model = tiny_model("fox_pro")
    prompt = [torch.arange(10)]
    want = foxacp.generate(model, prompt, 5, prefill_chunk=4)
    got = foxacp.generate(model, prompt, 5, prefill_chunk=np.int64(4))
    assert torch.equal(got[0], want[0])


def test_bool_prefill_chunk_is_refused_like_bool_max_new_tokens():
    model = tiny_model("fox_pro")
    with pytest.raises(ValueError):
        foxacp.generate(model, [torch.arange(10)], True)
    with pytest.raises(ValueError, match="prefill_chunk"):
        foxacp.generate(model, [torch.arange(10)], 5, prefill_chunk=True)
