"""The lm-evaluation-harness scorer against log-probabilities computed by hand on a random tiny model."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.data import ByteTokenizer
from foxacp.eval.harness import FoxScorer
from foxacp.model import FoxLM, ModelConfig
from tests.train.conftest import one_thread  # noqa: F401  (fixture)

TOK = ByteTokenizer()


def _scorer(max_len: int = 64) -> FoxScorer:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=320, n_layers=2, d_model=64, n_heads=2, attn_backend="torch")
    return FoxScorer(FoxLM(cfg), TOK, max_len=max_len)


def _by_hand(model: FoxLM, ids: list[int], first: int) -> float:
    """log p of ids[first:] given all tokens before each, in one forward."""
    with torch.no_grad():
        logp = model(torch.tensor([ids[:-1]]))[0].double().log_softmax(-1)
    return sum(logp[t - 1, ids[t]].item() for t in range(first, len(ids)))


def test_loglikelihood_is_the_continuations_log_prob_and_greedy_flag():
    s = _scorer()
    ctx, cont = TOK.encode("hello"), TOK.encode(" world")
    (score, _), (empty_score, _) = s.loglikelihood([("hello", " world"), ("", "ab")])
    assert score == pytest.approx(_by_hand(s.model, ctx + cont, len(ctx)), rel=1e-5)
    assert empty_score == pytest.approx(_by_hand(s.model, [TOK.eos_id, *TOK.encode("ab")], 1), rel=1e-5)
    # The greedy flag: true for a continuation made of argmaxes, false once one token is not the argmax. Rows 128+
    # of the head are zeroed so that the argmaxes are ASCII bytes (the text round-trips through the tokenizer).
    with torch.no_grad():
        s.model.lm_head.weight[128:].zero_()
    ids = TOK.encode("x")
    for _ in range(4):
        with torch.no_grad():
            ids.append(int(s.model(torch.tensor([ids]))[0, -1].argmax()))
    assert all(i < 128 for i in ids)
    text = TOK.decode(ids)
    wrong = text[:-1] + chr((ids[-1] + 1) % 128)
    assert [g for _, g in s.loglikelihood([(text[:1], text[1:]), (wrong[:1], wrong[1:])])] == [True, False]
    with pytest.raises(ValueError, match="no tokens"):
        s.loglikelihood([("a", "")])


@pytest.mark.parametrize("max_len", [8, 16, 200])
def test_rolling_loglikelihood_sums_every_token_once(max_len):
    s = _scorer(max_len)
    text = "def f(x):\n    return x + 1\n"
    (got,) = s.loglikelihood_rolling([text])
    ids = [TOK.eos_id, *TOK.encode(text)]
    if len(ids) - 1 <= max_len:  # one window: exactly the full forward
        assert got == pytest.approx(_by_hand(s.model, ids, 1), rel=1e-5)
    else:  # windows condition on fewer tokens, so compare against windowed scoring by hand
        total, done = 0.0, 1
        while done < len(ids):
            c = min(done - 1, max_len // 2)
            stop = min(len(ids), done + max_len - c)
            total += _by_hand(s.model, ids[done - 1 - c : stop], c + 1)
            done = stop
        assert got == pytest.approx(total, rel=1e-5)
        assert len(ids) - 1 > max_len


def test_generate_until_is_greedy_generation_cut_at_the_stop_string():
    s = _scorer()
    (full,) = s.generate_until([("abc", {"until": [], "max_gen_toks": 10})])
    (ids,) = foxacp.generate(s.model, [TOK.encode("abc")], 10, eos_token_id=TOK.eos_id)
    assert full == TOK.decode(ids[3:].tolist())
    assert len(full) > 2
    stop = full[2]
    (cut,) = s.generate_until([("abc", {"until": stop, "max_gen_toks": 10})])
    assert cut == full[: full.index(stop)] and len(cut) < len(full)


def test_lm_eval_model_serves_instances():
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from foxacp.eval.harness import _lm_class

    lm = _lm_class()(_scorer())
    req = Instance(request_type="loglikelihood", doc={}, arguments=("hello", " world"), idx=0)
    assert lm.loglikelihood([req]) == _scorer().loglikelihood([("hello", " world")])


def test_lm_eval_runs_a_local_multiple_choice_task_offline(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    import json

    import lm_eval
    from lm_eval.tasks import TaskManager

    from foxacp.eval.harness import _lm_class

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    docs = [
        {"question": f"{a} plus {b} is", "choices": [f" {a + b}", f" {a + b + 1}"], "answer": 0}
        for a, b in [(1, 2), (3, 4), (2, 2)]
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tiny.yaml").write_text(
        "task: foxacp_tiny\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'test.jsonl'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    scorer = _scorer()
    lm = _lm_class()(scorer)
    out = lm_eval.simple_evaluate(model=lm, tasks=["foxacp_tiny"], task_manager=TaskManager(include_path=str(tmp_path)))
    acc = out["results"]["foxacp_tiny"]["acc,none"]
    want = sum(
        scorer.loglikelihood([(d["question"], d["choices"][0])])[0][0]
        > scorer.loglikelihood([(d["question"], d["choices"][1])])[0][0]
        for d in docs
    ) / len(docs)
    assert acc == pytest.approx(want)


def test_lm_eval_options_reach_the_scorer(monkeypatch):
    """lm_eval's --device and --batch_size apply unless --model_args set them; "auto" batches one at a time."""
    pytest.importorskip("lm_eval")
    from foxacp.eval import harness

    seen = []
    monkeypatch.setattr(harness, "foxacp_lm", lambda **kw: seen.append(kw))
    make = harness._lm_class().create_from_arg_string
    make("path=RUN,max_len=64", {"batch_size": 8, "device": "cuda:1"})
    make("path=RUN,batch_size=2,device=cpu", {"batch_size": 8, "device": "cuda:1"})
    make("path=RUN", {"batch_size": "auto:4", "device": None})
    assert seen == [
        {"path": "RUN", "max_len": 64, "batch_size": 8, "device": "cuda:1"},
        {"path": "RUN", "batch_size": 2, "device": "cpu"},
        {"path": "RUN", "batch_size": 1},
    ]
