"""loglikelihood scores a continuation's tokens as they occur in the text (lm-evaluation-harness's split of a
request), with the subword tokenizers users load: against one plain forward over that split."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from foxacp.data.tokenizer import EOS_TOKEN, TokenizersTokenizer
from foxacp.eval.harness import FoxScorer
from foxacp.model import FoxLM, ModelConfig
from tests.train.conftest import one_thread  # noqa: F401  (fixture)

TEXTS = [
    "Question: What is the capital of France? Answer: Paris. The capital of England is London. "
    "The grass is green. The sky is blue. The pass key is 12345. Remember it. "
] * 40


def _bytelevel_bpe() -> TokenizersTokenizer:
    """A byte-level BPE built exactly as foxacp's ``bpe:N`` tokenizers are (data/tokenizer.py::_bpe)."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    return TokenizersTokenizer(tok, "bpe-test")


def _llama_style() -> TokenizersTokenizer:
    """A SentencePiece-style BPE as Llama-2's tokenizer.json has it (usable through ``hf:``): normalizer
    Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer; merges never cross a word start."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")  # for training only: word-level merges
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"], show_progress=False))
    tok.pre_tokenizer = None
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    return TokenizersTokenizer(tok, "sp-test")


def _model(vocab: int) -> FoxLM:
    torch.manual_seed(0)
    return FoxLM(ModelConfig(vocab_size=vocab, n_layers=2, d_model=64, n_heads=2, attn_backend="torch")).eval()


def _lm_eval_encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's HFLM._encode_pair (also oe-eval's): trailing whitespace of the context moves to the
    continuation, the whole text is encoded once and split after the context's tokens."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    return ctx, whole[len(ctx) :]


def _score(model: FoxLM, ctx: list[int], cont: list[int]) -> float:
    """Slow reference: sum of log p(cont[i] | ctx + cont[:i]) from one plain forward (logit t predicts t + 1)."""
    ids = ctx + cont
    with torch.no_grad():
        logp = model(torch.tensor([ids[:-1]]))[0].double().log_softmax(-1)
    return sum(logp[t - 1, ids[t]].item() for t in range(len(ctx), len(ids)))


def test_loglikelihood_context_with_trailing_space_is_split_as_lm_eval_does(one_thread):  # noqa: F811
    """A context ending in a space: encoded apart, a byte-level BPE would score a lone space token in the context
    and 'Pa' 'ris' (a split it never makes of "Answer: Paris"); the split scores log p(' Paris' tokens | 'Answer:')."""
    tok = _bytelevel_bpe()
    model = _model(tok.vocab_size)
    ctx, cont = _lm_eval_encode_pair(tok, "Question: What is the capital of France? Answer: ", "Paris")
    # the whole text's tokens of " Paris" (they start with 'Ġ...') are not the separate encoding of "Paris"
    assert cont != tok.encode("Paris") and tok.encode("Answer: ")[-1] == tok.tokenizer.token_to_id("Ġ")
    want = _score(model, ctx, cont)
    ((got, _),) = FoxScorer(model, tok, max_len=64).loglikelihood(
        [("Question: What is the capital of France? Answer: ", "Paris")]
    )
    assert got == pytest.approx(want, abs=1e-4), (got, want)


def test_loglikelihood_with_prepend_normalizer_adds_no_spurious_token(one_thread):  # noqa: F811
    """A Llama-2-style tokenizer (``hf:``) encodes " Paris" alone as ['▁', '▁Paris']: encoded apart, every
    continuation that starts with a space would add log p('▁') of a token that is not in "Answer: Paris"."""
    tok = _llama_style()
    model = _model(tok.vocab_size)
    context, continuation = "Question: What is the capital of France? Answer:", " Paris"
    ctx, cont = _lm_eval_encode_pair(tok, context, continuation)
    assert ctx + cont == tok.encode(context + continuation)
    want = _score(model, ctx, cont)
    ((got, _),) = FoxScorer(model, tok, max_len=64).loglikelihood([(context, continuation)])
    assert len(tok.encode(continuation)) == len(cont) + 1  # the spurious '▁'
    assert got == pytest.approx(want, abs=1e-4), (got, want)


def test_an_empty_context_is_eos_and_a_too_long_continuation_is_refused(one_thread):  # noqa: F811
    tok = _bytelevel_bpe()
    scorer = FoxScorer(_model(tok.vocab_size), tok, max_len=8)
    assert scorer.encode_pair("  ", "Paris") == ([tok.eos_id], tok.encode("  Paris"))
    with pytest.raises(ValueError, match="more than max_len=8"):
        scorer.loglikelihood([("Answer:", " Paris" * 10)])
