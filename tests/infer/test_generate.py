"""generate: greedy decoding is the full forward's argmax, EOS, seeded sampling, errors; the sampler."""

import numpy as np
import pytest
import torch

import foxacp
from foxacp.infer import sample
from foxacp.infer.generate import CHECK_EVERY
from foxacp.model import FoxLM
from foxacp.model.config import VARIANTS

from .models import tiny_model


def model_of(variant: str = "fox_pro") -> FoxLM:
    return tiny_model(variant)


def prompts() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(64, (n,), generator=gen) for n in (9, 30, 1)]


def greedy_by_full_forward(model: FoxLM, prompt: torch.Tensor, n: int) -> torch.Tensor:
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(n):
            seq = torch.cat([seq, model(seq[None])[0, -1].argmax()[None]])
    return seq


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunk", [None, 4])
def test_greedy_equals_the_full_forwards_argmax(variant, chunk):
    model = model_of(variant)
    out = foxacp.generate(model, prompts(), 20, prefill_chunk=chunk)
    for p, got in zip(prompts(), out, strict=True):
        torch.testing.assert_close(got, greedy_by_full_forward(model, p, 20), rtol=0, atol=0)


def test_tensor_prompts_of_one_length_run_as_a_batch():
    model = model_of("fox")
    batch = torch.stack([p[:9] for p in prompts()[:2]])
    out = foxacp.generate(model, batch, 7)
    assert [len(o) for o in out] == [16, 16]
    for p, got in zip(batch, out, strict=True):
        assert torch.equal(got, greedy_by_full_forward(model, p, 7))


def test_eos_stops_a_sequence_and_the_batch():
    model = model_of()
    free = foxacp.generate(model, prompts(), 40)
    new0 = free[0][9:].tolist()
    first = next(i for i in range(3, 40) if new0[i] not in new0[:i])  # a token first produced at step >= 3
    eos = new0[first]
    steps = []
    out = foxacp.generate(model, prompts(), 40, eos_token_id=eos, callback=steps.append)
    for p, f, got in zip(prompts(), free, out, strict=True):
        new = f[len(p) :]
        hits = (new == eos).nonzero()
        end = len(new) if len(hits) == 0 else int(hits[0]) + 1
        assert torch.equal(got, f[: len(p) + end])
    assert len(out[0]) == 9 + first + 1
    # Once every row has produced EOS, decoding stops at the next check.
    stop = foxacp.generate(model, [prompts()[0]] * 2, 40, eos_token_id=eos, callback=steps.append)
    assert [len(s) for s in stop] == [9 + first + 1] * 2
    assert len(steps) - 40 == CHECK_EVERY


def test_a_seed_fixes_sampling():
    model = model_of()
    kw = dict(temperature=1.0, top_k=40, top_p=0.95)
    a = foxacp.generate(model, prompts(), 24, seed=3, **kw)
    b = foxacp.generate(model, prompts(), 24, seed=3, **kw)
    c = foxacp.generate(model, prompts(), 24, seed=4, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    greedy = foxacp.generate(model, prompts(), 24)
    for cut in (dict(top_k=1), dict(top_p=1e-6)):
        narrow = foxacp.generate(model, prompts(), 24, temperature=1.0, seed=5, **cut)
        assert all(torch.equal(x, y) for x, y in zip(narrow, greedy, strict=True))


def test_sample_draws_from_the_cut_distribution():
    # probabilities 0.563, 0.207, 0.126, 0.076, 0.028: top_p 0.75 keeps two tokens, 0.8 three.
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0]).log_softmax(-1).expand(40_000, 5)
    gen = torch.Generator().manual_seed(0)
    probs = logits[0].exp()
    for kw, keep in ((dict(), 5), (dict(top_k=3), 3), (dict(top_p=0.75), 2), (dict(top_p=0.8), 3)):
        draws = sample(logits, temperature=1.0, generator=gen, **kw)
        freq = torch.bincount(draws, minlength=5).double() / len(draws)
        want = torch.zeros(5, dtype=torch.float64)
        want[:keep] = probs[:keep] / probs[:keep].sum()
        assert (freq - want).abs().max() < 0.01, (kw, freq, want)
    hot = sample(logits, temperature=0.5, generator=gen)
    assert torch.bincount(hot, minlength=5)[0] / len(hot) > probs[0] + 0.1


@pytest.mark.parametrize("top_k", [None, 3])
def test_a_tiny_temperature_is_near_greedy(top_k):
    # Dividing first overflowed to inf - inf = NaN below ~1e-37, and argmax of NaN is token 0.
    logits = torch.tensor([[-3.0, 5.0, 1.0, 4.9], [200.0, -1e4, 300.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    for temperature in (1e-6, 1e-30, 1e-38, 1e-45, np.float32(1e-38)):
        draws = sample(logits, temperature=temperature, top_k=top_k, generator=gen)
        assert draws.tolist() == [1, 2], temperature


@pytest.mark.parametrize(
    ("args", "kw", "match"),
    [
        ((torch.zeros(2, 0, dtype=torch.long), 4), {}, "prompt 0 must be a non-empty"),
        (([[1, 2], []], 4), {}, "prompt 1 must be a non-empty"),
        (([], 4), {}, "non-empty list"),
        (([[1, 64]], 4), {}, "outside"),
        (([list(range(10))], 4), dict(max_len=12), "exceeds max_len"),
        (([[1]], 0), {}, "max_new_tokens"),
        (([[1]], 4), dict(temperature=-0.5), "temperature"),
        (([[1]], 4), dict(top_k=0), "top_k"),
        (([[1]], 4), dict(top_p=0.0), "top_p"),
        (([[1]], 4), dict(top_p=1.5), "top_p"),
        (([[1]], 4), dict(prefill_chunk=0), "prefill_chunk"),
        (([[1]], 4), dict(cuda_graph=True), "CUDA"),
        (([[1]], 4), dict(eos_token_id=64), "eos_token_id"),
        (([[1]], 4), dict(eos_token_id=[1, 2]), "eos_token_id"),
        (([[1]], 4), dict(pool_fraction=0.5), "evict=True"),
        (([[1]], 4), dict(memory_report={}), "evict=True"),
    ],
)
def test_errors(args, kw, match):
    with pytest.raises(ValueError, match=match):
        foxacp.generate(model_of("fox"), *args, **kw)
    with pytest.raises(TypeError, match="integer"):
        foxacp.generate(model_of("fox"), [torch.ones(3)], 4)


def test_callback_tokens_outlive_the_step_buffer():
    # A CUDA-graph step returns the same output buffer every time; what the callback keeps must not change
    # when later steps overwrite that buffer (here a CPU step that does the same).
    from foxacp.infer.generate import decode_n_tokens

    model = model_of("fox")
    cache = model.new_cache(2, 8)
    buffer = torch.zeros(2, dtype=torch.long)

    def step(tokens):
        buffer.copy_(tokens + 1)
        return buffer

    seen = []
    out = decode_n_tokens(step, cache, torch.tensor([3, 7]), 5, callback=seen.append)
    assert [t.tolist() for t in seen] == out.t().tolist() == [[3, 7], [4, 8], [5, 9], [6, 10], [7, 11]]
