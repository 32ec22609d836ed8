"""Inference against the full forward and at its edges: greedy with ACP and eviction over long decodes (the
cache rebasing c), long prefill chunks, EOS, sampling edges, seeds, a prompt that fills max_len; on the GPU the
CUDA-graph step against eager."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.infer import sample
from foxacp.infer.generate import prefill
from foxacp.model import FoxLM
from tests.train.conftest import one_thread  # noqa: F401

from .models import tiny_model


def model_of(variant="fox_pro", acp=True, bias=-1.0, backend="torch", **kw) -> FoxLM:
    return tiny_model(variant, acp=acp, bias=bias, backend=backend, **kw)


def fast_forgetting(**kw) -> FoxLM:
    model = model_of(**kw)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.fgate.bias.copy_(torch.tensor([-6.0, -7.0, 3.0, 4.0]))
    return model


def toks(n, seed):
    return torch.randint(64, (n,), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def full_greedy(model, prompt, n):
    """Greedy by recomputing the full forward each step: (tokens, logits (n, V))."""
    seq, logits = prompt.clone(), []
    for _ in range(n):
        lg = model(seq[None])[0, -1].float()
        logits.append(lg)
        seq = torch.cat([seq, lg.argmax()[None]])
    return seq, torch.stack(logits)


@pytest.mark.parametrize("variant", ["fox_pro", "fox"])
@pytest.mark.parametrize("chunk", [None, 7, 16, 17])
def test_acp_greedy_matches_full_forward(variant, chunk):
    model = model_of(variant, acp=True)
    rows = [toks(n, i) for i, n in enumerate((1, 37, 80))]
    out = foxacp.generate(model, rows, 20, prefill_chunk=chunk)
    for p, got in zip(rows, out, strict=True):
        want, _ = full_greedy(model, p, 20)
        assert torch.equal(got, want)


@pytest.mark.parametrize("chunk", [None, 33, 64])
def test_evict_greedy_matches_no_evict_long_decode(chunk):
    model = fast_forgetting()
    rows = [toks(n, i) for i, n in enumerate((1, 70, 130))]
    a = foxacp.generate(model, rows, 150, prefill_chunk=chunk, evict=True, pool_fraction=1.0)
    b = foxacp.generate(model, rows, 150, prefill_chunk=chunk)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    for p, got in zip(rows, a, strict=True):
        want, _ = full_greedy(model, p, 150)
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    "lens,chunk,max_len", [((64, 65, 1), 1, None), ((600, 5), None, None), ((128, 3), 64, 400), ((200, 200), 50, None)]
)
def test_evict_edge_lengths(lens, chunk, max_len):
    model = fast_forgetting()
    rows = [toks(n, i) for i, n in enumerate(lens)]
    a = foxacp.generate(model, rows, 40, prefill_chunk=chunk, evict=True, max_len=max_len)
    b = foxacp.generate(model, rows, 40, prefill_chunk=chunk, max_len=max_len)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_seed_same_output_and_batch_composition():
    model = model_of()
    rows = [toks(n, i) for i, n in enumerate((5, 9))]
    a = foxacp.generate(model, rows, 30, temperature=1.0, seed=3)
    b = foxacp.generate(model, rows, 30, temperature=1.0, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("evict", [False, True])
def test_long_decode_logits_match_full_forward(evict):
    # Heads forget at ~1 nat per token, so c runs to ~-2000 over the sequence; the cache rebases.
    model = model_of("fox_pro", acp=True)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.fgate.bias.copy_(torch.tensor([-0.5, -2.0, 1.0, 3.0]))
        prompt = toks(300, 0)
        n = 1700
        cache = model.new_cache(1, 300 + n, **({"evict": True, "pool_fraction": 1.0} if evict else {}))
        if evict:
            last = prefill(model, cache, [prompt], 128)
        else:
            last = prefill(model, cache, [prompt], None)
        seq, logits = [prompt], [last[0]]
        for i in range(n - 1):
            t = logits[-1].argmax()[None]
            seq.append(t)
            if (i + 1) % 16 == 0:
                cache.rebase()
            logits.append(model(t[None], cache=cache)[0, -1].float())
        seq = torch.cat(seq)
        full = model(seq[None])[0, len(prompt) - 1 :].float()
        got = torch.stack(logits)
    torch.testing.assert_close(got, full, atol=2e-4, rtol=2e-4)


def test_single_chunk_prefill_logits_match_full_forward():
    # A long prompt fed as one chunk: every position's logits should be the full forward's (lm.py docstring),
    # as precisely as when the same prompt is fed in chunks of 256.
    model = model_of("fox", acp=False)
    with torch.no_grad():
        for b in model.blocks:
            b.attn.fgate.bias.copy_(torch.tensor([1.0, -1.0, -3.0, 4.0]))
        seq = toks(4096, 5)[None]
        full = model(seq)
        errs = {}
        for chunk in (256, 4096):
            cache = model.new_cache(1, 4096)
            got = torch.cat([model(seq[:, s : s + chunk], cache=cache) for s in range(0, 4096, chunk)], 1)
            errs[chunk] = (got - full).abs().max().item()
    assert errs[4096] < 2e-4, errs  # chunks of 256: ~8e-5; one chunk: ~1.4e-3


gpu = pytest.mark.gpu


@gpu
def test_gpu_seeded_sampling_graph_vs_eager():
    model = model_of(backend=None).cuda()
    rows = [toks(n, i) for i, n in enumerate((5, 40, 100))]
    kw = dict(temperature=1.0, top_k=20, top_p=0.95, seed=5)
    g = foxacp.generate(model, rows, 60, cuda_graph=True, **kw)
    e = foxacp.generate(model, rows, 60, cuda_graph=False, **kw)
    assert all(torch.equal(a, b) for a, b in zip(g, e, strict=True))


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_evict_graph(dtype):
    model = fast_forgetting(backend=None).cuda().to(dtype)
    rows = [toks(n, i) for i, n in enumerate((1, 70, 130, 600))]
    a = foxacp.generate(model, rows, 200, prefill_chunk=64, evict=True, pool_fraction=1.0)
    b = foxacp.generate(model, rows, 200, prefill_chunk=64, cuda_graph=False)
    c = foxacp.generate(model, rows, 200, prefill_chunk=64, evict=True, cuda_graph=False)
    if dtype == torch.float32:
        for i in range(len(rows)):
            assert torch.equal(a[i], c[i]) and torch.equal(a[i], b[i])
            want, _ = full_greedy(model, rows[i].cuda(), 200)
            assert torch.equal(a[i], want.cpu())


@gpu
def test_gpu_eos_graph():
    model = model_of(backend=None).cuda()
    rows = [toks(n, i) for i, n in enumerate((5, 40))]
    ref = foxacp.generate(model, rows, 50, cuda_graph=False)
    eos = int(ref[0][len(rows[0]) + 3])
    g = foxacp.generate(model, rows, 50, eos_token_id=eos)
    e = foxacp.generate(model, rows, 50, eos_token_id=eos, cuda_graph=False)
    assert all(torch.equal(a, b) for a, b in zip(g, e, strict=True))
    assert int(g[0][-1]) == eos and len(g[0]) == len(rows[0]) + 4


def test_sampling_edges():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    for kw in (dict(top_k=100), dict(top_p=1.0), dict(top_k=4, top_p=1.0)):
        draws = torch.stack([sample(logits, temperature=1.0, generator=g, **kw) for _ in range(4000)])
        freq = torch.bincount(draws.flatten(), minlength=4) / 4000
        torch.testing.assert_close(freq, logits.softmax(-1)[0], atol=0.03, rtol=0)
    # top_k=1 with a tie keeps both tied tokens
    tied = torch.tensor([[1.0, 1.0, 0.0]])
    draws = torch.stack([sample(tied, temperature=1.0, top_k=1, generator=g) for _ in range(400)])
    assert set(draws.flatten().tolist()) == {0, 1}


def test_eos_first_token_and_max_new_tokens_one():
    model = model_of()
    rows = [toks(n, i) for i, n in enumerate((5, 9))]
    ref = foxacp.generate(model, rows, 20)
    eos = int(ref[0][5])  # row 0's first generated token
    out = foxacp.generate(model, rows, 20, eos_token_id=eos)
    assert torch.equal(out[0], ref[0][:6])
    assert torch.equal(out[1], foxacp.generate(model, rows[1:], 20, eos_token_id=eos)[0])
    one = foxacp.generate(model, rows, 1, evict=False)
    assert [len(o) for o in one] == [6, 10]


def test_prompt_filling_max_len_with_one_new_token():
    # One new token needs no decode step (it comes from the prefill logits): len(prompt) positions suffice.
    model = model_of()
    p = toks(10, 0)
    foxacp.generate(model, [p], 1, max_len=10)
