"""generate() through transformers equals foxacp.generate, with the FoxCache and without a cache: greedy, batched
left-padded prompts, EOS, sampling; the cache's growth and gate rebasing; what the cache refuses."""

from __future__ import annotations

import json

import pytest
import torch

import foxacp
from foxacp.model import FoxLM

transformers = pytest.importorskip("transformers")
from foxacp.hf import FoxCache, FoxForCausalLM  # noqa: E402
from foxacp.hf import cache as hf_cache  # noqa: E402
from foxacp.hf.modeling import CACHE_FIELD  # noqa: E402

USE_CACHE = pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no_cache"])


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


@USE_CACHE
def test_greedy_generate_equals_foxacp_generate(pair, use_cache):
    lm, hf = pair
    prompt = torch.randint(0, 64, (1, 5))
    out = hf.generate(prompt, max_new_tokens=9, do_sample=False, use_cache=use_cache)
    assert torch.equal(out[0], foxacp.generate(lm, prompt, 9)[0])


@USE_CACHE
def test_batched_left_padded_prompts_equal_foxacp_generate_row_by_row(pair, use_cache):
    lm, hf = pair
    rows = [torch.randint(1, 64, (n,)) for n in (6, 1, 3)]
    ids, mask = left_pad(rows, pad=0)
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False, pad_token_id=0, use_cache=use_cache)
    expected = foxacp.generate(lm, rows, 7)
    for b, r in enumerate(rows):
        assert torch.equal(out[b, ids.shape[1] - len(r) :], expected[b]), b


@USE_CACHE
def test_eos_stops_a_row_as_in_foxacp_generate(pair, use_cache):
    lm, hf = pair
    prompt = torch.randint(0, 64, (1, 4))
    free = foxacp.generate(lm, prompt, 8)[0]
    eos = int(free[6])  # a token the greedy continuation produces
    first = int((free[4:] == eos).nonzero()[0]) + 4
    out = hf.generate(
        prompt, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=eos, use_cache=use_cache
    )
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


def test_the_cache_grows_and_rebases_and_still_equals_foxacp_generate(tiny_config, monkeypatch):
    torch.manual_seed(2)
    lm = FoxLM(tiny_config(fgate_bias_init=-3.0)).eval()  # fast forgetting: |c| passes the rebase threshold
    hf = FoxForCausalLM.from_foxlm(lm)
    monkeypatch.setattr(hf_cache, "HEADROOM", 3)
    rows = [torch.randint(1, 64, (n,)) for n in (5, 2)]
    ids, mask = left_pad(rows, pad=0)
    cache = FoxCache(lm)
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False, pad_token_id=0, cache=cache)
    assert cache.kv.max_len > ids.shape[1] + 3  # it grew
    assert cache.kv.lengths.tolist() == [len(r) + 39 for r in rows]  # the last token is never fed
    expected = foxacp.generate(lm, rows, 40)
    with torch.no_grad():  # row 0's running gate total without rebasing, from every token the cache was fed
        naive = lm.forget_gates(expected[0][None, :-1])[0, 0].double().sum(0)
    assert float(naive.abs().min()) > 64  # so the anchors had to move
    assert torch.all(cache.kv.layers[0].c_last[0].abs() < naive.abs() - 1)
    for b, r in enumerate(rows):
        assert torch.equal(out[b, ids.shape[1] - len(r) :], expected[b]), b


def test_forward_with_a_cache_gives_the_logits_of_the_full_sequence(pair):
    lm, hf = pair
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        first = hf(ids[:, :6], use_cache=True)
        cache = getattr(first, CACHE_FIELD)
        assert isinstance(cache, FoxCache) and cache.get_seq_length() == 6
        nxt = hf(ids[:, 6:], attention_mask=torch.ones(2, 9, dtype=torch.long), **{CACHE_FIELD: cache})
        full = lm(ids)
    torch.testing.assert_close(first.logits, full[:, :6], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nxt.logits, full[:, 6:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="only the prompts may be padded"):
        hf(ids[:, :1], attention_mask=torch.tensor([[1] * 9 + [0]] * 2), **{CACHE_FIELD: cache})
    with pytest.raises(ValueError, match="batch size"):
        hf(ids[:1, :1], **{CACHE_FIELD: cache})
    for match, mask in {
        "only 0": torch.full((2, 9), 2),
        "only left padding": torch.tensor([[1, 0] * 4 + [1]] * 2),
    }.items():
        with pytest.raises(ValueError, match=match):
            hf(ids, attention_mask=mask, use_cache=True)


def test_what_the_cache_refuses(pair):
    lm, hf = pair
    ids = torch.randint(0, 64, (2, 4))
    with pytest.raises(ValueError, match="FoxCache"):
        hf(ids, **{CACHE_FIELD: transformers.DynamicCache()})
    with pytest.raises(NotImplementedError, match="beam search"):
        hf.generate(ids, max_new_tokens=3, num_beams=2, do_sample=False)
    with pytest.raises(TypeError, match="FoxLM"):
        FoxCache(hf)


def test_the_generate_benchmark_runs_and_every_path_agrees_on_the_cpu(capsys, tmp_path):
    from foxacp.hf.bench import main

    argv = ["--preset", "tiny", "--batch", "1,2", "--prompt-len", "5", "--new-tokens", "6", "--vocab-size", "64"]
    assert main([*argv, "--attn-backend", "torch", "--out", str(tmp_path)]) == 0  # torch: quick on the CPU
    records = json.loads(capsys.readouterr().out.splitlines()[1])
    assert [(r["batch"], r["path"]) for r in records] == [
        (b, p) for b in (1, 2) for p in ("foxacp", "dynamic", "static")
    ]
    for r in records:
        assert r["tokens_per_s"] > 0 and r["agree_prefix_min"] == 6  # float32 on the CPU: the same greedy tokens
        # foxacp.generate reads nothing back per step below its first check; transformers' loop reads its stop flag
        assert r["host_reads_per_step"] == (0 if r["path"] == "foxacp" else 1), r
    (folder,) = tmp_path.iterdir()
    assert folder.name.endswith("-hf-generate-cpu")
    assert json.loads((folder / "hf-generate.json").read_text())["rows"] == records
    assert "| 2 | static |" in (folder / "hf-generate.md").read_text()
