"""Generate() edges."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.model import FoxLM
from tests.infer.models import full_greedy, tiny_model


def toks(n, seed):
    return torch.randint(64, (n,), generator=torch.Generator().manual_seed(seed))


def fast(acp=True, evict_ok=True) -> FoxLM:
    m = tiny_model("fox_pro", acp=acp)
    with torch.no_grad():
        for b in m.blocks:
            b.attn.fgate.bias.copy_(torch.tensor([-6.0, -7.0, 3.0, 4.0]))
    return m


@pytest.mark.parametrize("chunk", [1, 5, 16, 17, 64])
def test_chunks_ragged(chunk):
    model = tiny_model("fox_pro")
    rows = [toks(n, i) for i, n in enumerate((17, 3, 33, 16))]
    out = foxacp.generate(model, rows, 18, prefill_chunk=chunk)
    for p, got in zip(rows, out, strict=True):
        assert torch.equal(got, full_greedy(model, p, 18))


def test_eos_as_last_allowed_token_and_all_stop():
    model = tiny_model("fox_pro")
    rows = [toks(n, i) for i, n in enumerate((5, 9))]
    ref = foxacp.generate(model, rows, 17)
    eos = int(ref[0][-1])
    out = foxacp.generate(model, rows, 17, eos_token_id=eos)
    n0 = (ref[0][5:] == eos).nonzero()
    assert torch.equal(out[0], ref[0][: 5 + int(n0[0]) + 1])


def test_prompt_exactly_max_len_raises_for_more_tokens():
    model = tiny_model("fox_pro")
    with pytest.raises(ValueError, match="max_len"):
        foxacp.generate(model, [toks(10, 0)], 2, max_len=10)


def test_max_len_exact_fit_for_n_tokens():
    # n new tokens feed n-1 tokens back: len + n - 1 positions, or len + n per the docstring.
    model = tiny_model("fox_pro")
    p = toks(10, 0)
    out = foxacp.generate(model, [p], 5, max_len=15)
    assert torch.equal(out[0], full_greedy(model, p, 5))


def test_seed_determinism_same_batch_and_temperature_tiny():
    model = tiny_model("fox_pro")
    rows = [toks(n, i) for i, n in enumerate((5, 9))]
    greedy = foxacp.generate(model, rows, 20)
    tiny = foxacp.generate(model, rows, 20, temperature=1e-9, seed=1)
    for a, b in zip(greedy, tiny, strict=True):
        assert torch.equal(a, b)
    for kw in (dict(top_k=1), dict(top_k=64), dict(top_k=1000, top_p=1.0)):
        a = foxacp.generate(model, rows, 20, temperature=0.7, seed=7, **kw)
        b = foxacp.generate(model, rows, 20, temperature=0.7, seed=7, **kw)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_evict_equals_no_evict_greedy_with_eos():
    model = fast()
    rows = [toks(n, i) for i, n in enumerate((1, 70, 130))]
    ref = foxacp.generate(model, rows, 60)
    eos = int(ref[1][75])
    a = foxacp.generate(model, rows, 60, evict=True, eos_token_id=eos, prefill_chunk=16)
    b = foxacp.generate(model, rows, 60, eos_token_id=eos, prefill_chunk=16)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_evict_memory_report_and_no_leak():
    model = fast()
    rows = [toks(n, i) for i, n in enumerate((1, 70, 130))]
    report = {}
    foxacp.generate(model, rows, 100, evict=True, memory_report=report, prefill_chunk=32)
    for layer in report["layers"]:
        assert layer["blocks_held"] + layer["blocks_free"] == layer["pool_blocks"]


def test_evict_small_pool_fraction():
    model = fast()
    rows = [toks(n, i) for i, n in enumerate((300, 200))]
    a = foxacp.generate(model, rows, 100, evict=True, pool_fraction=0.6, prefill_chunk=64)
    b = foxacp.generate(model, rows, 100, prefill_chunk=64)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_evict_max_new_tokens_one_and_two():
    model = fast()
    rows = [toks(n, i) for i, n in enumerate((64, 128, 1))]
    for n in (1, 2):
        a = foxacp.generate(model, rows, n, evict=True)
        b = foxacp.generate(model, rows, n)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_evict_prompt_max_len_one_token():
    model = fast()
    rows = [toks(128, 0), toks(64, 1)]
    a = foxacp.generate(model, rows, 1, evict=True, max_len=128)
    b = foxacp.generate(model, rows, 1, max_len=128)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
