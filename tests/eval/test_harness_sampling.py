"""generate_until honours lm_eval's generation options (do_sample, temperature, top_k, top_p and the aliases of
max_gen_toks) through foxacp.generate, seeded per request, and refuses the options it cannot honour."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.data import ByteTokenizer
from foxacp.eval.harness import FoxScorer, gen_options
from foxacp.model import FoxLM, ModelConfig
from tests.train.conftest import one_thread  # noqa: F401  (fixture)

TOK = ByteTokenizer()


@pytest.fixture(scope="module")
def scorer() -> FoxScorer:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=320, n_layers=2, d_model=64, n_heads=2, attn_backend="torch")
    return FoxScorer(FoxLM(cfg), TOK, max_len=64, seed=7)


def by_hand(scorer: FoxScorer, context: str, n: int, seed: int, **sampling) -> str:
    """foxacp.generate's continuation of context, decoded (no stop strings)."""
    ctx = TOK.encode(context)
    (ids,) = foxacp.generate(scorer.model, [ctx], n, eos_token_id=TOK.eos_id, seed=seed, **sampling)
    return TOK.decode(ids[len(ctx) :].tolist())


def test_sampling_options_reach_foxacp_generate_with_the_request_seed(scorer):
    sampled = {"do_sample": True, "temperature": 1.5, "top_k": 50, "top_p": 0.95, "max_gen_toks": 12, "until": []}
    got = scorer.generate_until([("abc", {"until": [], "max_gen_toks": 12}), ("abc", sampled), ("abc", sampled)])
    greedy = by_hand(scorer, "abc", 12, seed=0)
    assert got[0] == greedy
    for i in (1, 2):  # the i-th request draws with seed + i: two repeats of one request are two samples
        assert got[i] == by_hand(scorer, "abc", 12, seed=7 + i, temperature=1.5, top_k=50, top_p=0.95)
    assert got[1] != greedy and got[1] != got[2]
    # Reproducible: the same requests give the same samples.
    assert scorer.generate_until([("abc", {"max_gen_toks": 12}), ("abc", sampled)]) == got[:2]


@pytest.mark.parametrize(
    "options",
    [
        {"do_sample": False, "temperature": 0.7},  # do_sample False wins over a temperature
        {"do_sample": True, "temperature": 0.0},  # temperature 0 is greedy
        {"temperature": 0},
        {},
    ],
)
def test_greedy_where_do_sample_is_false_or_the_temperature_is_zero(scorer, options):
    (got,) = scorer.generate_until([("xy", {**options, "max_gen_toks": 8})])
    assert got == by_hand(scorer, "xy", 8, seed=0)


def test_a_temperature_without_do_sample_samples_and_do_sample_alone_samples_at_one(scorer):
    requests = [("xy", {"temperature": 0.9, "max_gen_toks": 8}), ("xy", {"do_sample": True, "max_gen_toks": 8})]
    got = scorer.generate_until(requests)
    assert got[0] == by_hand(scorer, "xy", 8, seed=7, temperature=0.9)
    assert got[1] == by_hand(scorer, "xy", 8, seed=8, temperature=1.0)


def test_the_aliases_of_max_gen_toks_in_lm_evals_order_and_transformers_no_cut_values():
    assert gen_options({"max_new_tokens": 5}).max_new_tokens == 5
    assert gen_options({"max_tokens": 9, "max_new_tokens": 5}).max_new_tokens == 5
    assert gen_options({"max_gen_toks": 3, "max_completion_tokens": 5}).max_new_tokens == 3
    assert gen_options({"max_new_tokens": 5, "max_gen_toks": 3}).max_new_tokens == 3  # lm_eval's own name first
    assert gen_options({}).max_new_tokens == 256
    opts = gen_options({"do_sample": True, "temperature": 0.5, "top_k": 0, "top_p": 1.0, "num_beams": 1})
    assert (opts.temperature, opts.top_k, opts.top_p) == (0.5, None, None)
    assert gen_options({"until": "\n\n"}).until == ["\n\n"]


@pytest.mark.parametrize(
    "options,match",
    [
        ({"repetition_penalty": 1.1}, "repetition_penalty"),
        ({"max_length": 64}, "max_length"),
        ({"num_beams": 4}, "num_beams"),
        ({"num_beams": 0}, "num_beams"),  # 1 only, not "at most 1"
        ({"do_sample": True, "temperature": -1.0}, "temperature"),
        ({"do_sample": True, "top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"until": 3}, "until"),
        ({"max_gen_toks": 0}, "max_gen_toks"),
        ({"max_gen_toks": True}, "max_gen_toks"),  # a bool is no count, though an int to Python
    ],
)
def test_options_it_cannot_honour_are_refused_before_anything_is_generated(scorer, monkeypatch, options, match):
    import foxacp.infer

    calls = []
    monkeypatch.setattr(foxacp.infer, "generate", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match=match):
        scorer.generate_until([("abc", {"max_gen_toks": 4}), ("abc", options)])
    assert calls == []


def test_the_seed_model_arg_reaches_the_scorer(monkeypatch):
    pytest.importorskip("lm_eval")
    from foxacp.eval import harness

    seen = []
    monkeypatch.setattr(harness, "foxacp_lm", lambda **kw: seen.append(kw))
    harness._lm_class().create_from_arg_string("path=RUN,seed=3", {})
    assert seen == [{"path": "RUN", "seed": 3, "batch_size": 1}]
    with pytest.raises(ValueError, match="seed"):
        FoxScorer(FoxLM(ModelConfig(vocab_size=320, n_layers=1, d_model=32, n_heads=1)), TOK, max_len=8, seed=-1)


def fake_generate(monkeypatch, text: str) -> list[dict]:
    """foxacp.generate replaced: every prompt continues with ``text``; returns the keyword arguments of the calls."""
    import foxacp.infer

    calls = []

    def generate(model, prompts, n, **kw):
        calls.append(kw)
        return [torch.tensor([*prompts[0], *TOK.encode(text)])]

    monkeypatch.setattr(foxacp.infer, "generate", generate)
    return calls


def test_the_sampling_options_and_the_seed_are_what_foxacp_generate_gets(scorer, monkeypatch):
    calls = fake_generate(monkeypatch, "zz")
    options = {"do_sample": True, "temperature": 0.8, "top_k": 5, "top_p": 0.5, "max_gen_toks": 2}
    scorer.generate_until([("a", {"max_gen_toks": 2}), ("a", options)])
    common = {"eos_token_id": TOK.eos_id}
    assert calls == [
        {**common, "temperature": 0.0, "top_k": None, "top_p": None, "seed": 7},
        {**common, "temperature": 0.8, "top_k": 5, "top_p": 0.5, "seed": 8},
    ]


def test_the_text_is_cut_before_the_first_stop_string_that_occurs(scorer, monkeypatch):
    fake_generate(monkeypatch, "one. two! three")
    got = scorer.generate_until([("a", {"until": ["!", "."]}), ("a", {"until": ["!", "x"]}), ("a", {"until": "q"})])
    assert got == ["one", "one. two", "one. two! three"]
