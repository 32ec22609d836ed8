"""generate() through transformers equals foxacp.generate: greedy, batched left-padded prompts, EOS, sampling."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.model import FoxLM

pytest.importorskip("transformers")
from foxacp.hf import FoxForCausalLM  # noqa: E402


@pytest.fixture
def pair(tiny_config):
    torch.manual_seed(1)
    lm = FoxLM(tiny_config(n_kv_heads=1, fgate_bias_init=2.0)).eval()
    return lm, FoxForCausalLM.from_foxlm(lm).eval()


def left_pad(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :], mask[b, T - len(r) :] = r, 1
    return ids, mask


def test_greedy_generate_equals_foxacp_generate(pair):
    lm, hf = pair
    prompt = torch.randint(0, 64, (1, 5))
    out = hf.generate(prompt, max_new_tokens=9, do_sample=False)
    assert torch.equal(out[0], foxacp.generate(lm, prompt, 9)[0])


def test_batched_left_padded_prompts_equal_foxacp_generate_row_by_row(pair):
    lm, hf = pair
    rows = [torch.randint(1, 64, (n,)) for n in (6, 1, 3)]
    ids, mask = left_pad(rows, pad=0)
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False, pad_token_id=0)
    expected = foxacp.generate(lm, rows, 7)
    for b, r in enumerate(rows):
        assert torch.equal(out[b, ids.shape[1] - len(r) :], expected[b]), b


def test_eos_stops_a_row_as_in_foxacp_generate(pair):
    lm, hf = pair
    prompt = torch.randint(0, 64, (1, 4))
    free = foxacp.generate(lm, prompt, 8)[0]
    eos = int(free[6])  # a token the greedy continuation produces
    first = int((free[4:] == eos).nonzero()[0]) + 4
    out = hf.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    assert torch.equal(out[0, : first + 1], free[: first + 1])
    assert torch.equal(out[0], foxacp.generate(lm, prompt, 8, eos_token_id=eos)[0])
    assert torch.all(out[0, first + 1 :] == eos)


def test_sampling_gives_tokens_of_the_vocabulary_and_top_k_1_is_greedy(pair):
    lm, hf = pair
    prompt = torch.randint(0, 64, (2, 3))
    torch.manual_seed(0)
    sampled = hf.generate(prompt, max_new_tokens=6, do_sample=True, temperature=1.5, top_k=0)
    assert sampled.shape == (2, 9) and int(sampled.min()) >= 0 and int(sampled.max()) < 64
    assert torch.equal(sampled[:, :3], prompt)
    greedy = hf.generate(prompt, max_new_tokens=6, do_sample=True, top_k=1)
    assert torch.equal(greedy, torch.stack(foxacp.generate(lm, prompt, 6)))
