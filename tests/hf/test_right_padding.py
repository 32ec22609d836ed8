"""Right padding: taken by a forward that neither makes nor continues a cache (scoring, training with labels),
where each row's logits are those of the row alone; refused, naming the fix, where a cache is made or continued
(generate, use_cache=True, the cache a plain forward returns) and for masks padded elsewhere than on one side."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from foxacp.hf import FoxForCausalLM  # noqa: E402
from foxacp.model import FoxLM  # noqa: E402

LENGTHS = [7, 1, 4]


@pytest.fixture
def pair(tiny_config):
    torch.manual_seed(3)
    lm = FoxLM(tiny_config(n_kv_heads=1, fgate_bias_init=2.0)).eval()
    return lm, FoxForCausalLM.from_foxlm(lm).eval()


def right_padded(lengths: list[int], pad: int = 0) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Rows of random tokens (1..63), and their batch (B, T) padded on the right with ``pad``, and its mask."""
    g = torch.Generator().manual_seed(4)
    rows = [torch.randint(1, 64, (n,), generator=g) for n in lengths]
    ids = torch.full((len(rows), max(lengths)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, : len(r)], mask[b, : len(r)] = r, 1
    return rows, ids, mask


@pytest.mark.parametrize("use_cache", [False, None])
def test_a_forward_without_a_cache_gives_each_right_padded_rows_own_logits(pair, use_cache):
    """use_cache=False, and the plain forward (use_cache=None: its cache is only deferred)."""
    lm, hf = pair
    rows, ids, mask = right_padded(LENGTHS)
    with torch.no_grad():
        out = hf(ids, attention_mask=mask, use_cache=use_cache).logits
        for b, r in enumerate(rows):
            torch.testing.assert_close(out[b, : len(r)], lm(r[None])[0], rtol=1e-5, atol=1e-5)
    assert bool(out.isfinite().all())


def test_training_with_labels_on_right_padded_rows_gives_the_rows_own_loss(pair):
    """The Trainer's call: training mode, labels -100 at the padding. The loss is the mean over every row's labelled
    next tokens, as computed from each row alone, and its gradient reaches the model."""
    lm, hf = pair
    rows, ids, mask = right_padded(LENGTHS, pad=63)
    labels = ids.masked_fill(mask == 0, -100)
    hf.train()
    try:
        loss = hf(ids, attention_mask=mask, labels=labels).loss
    finally:
        hf.eval()
    with torch.no_grad():
        logps = [torch.log_softmax(lm(r[None])[0, :-1].double(), -1).gather(-1, r[1:, None])[:, 0] for r in rows]
    expected = -torch.cat(logps).mean()
    torch.testing.assert_close(loss.detach().double(), expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert lm.embed.weight.grad is not None and bool(lm.embed.weight.grad.isfinite().all())


def test_right_padding_is_refused_where_a_cache_is_made(pair):
    _, hf = pair
    _, ids, mask = right_padded(LENGTHS)
    with torch.no_grad():
        with pytest.raises(ValueError, match="padding_side = 'left'"):
            hf(ids, attention_mask=mask, use_cache=True)
        for use_cache in (True, False):
            with pytest.raises(ValueError, match="padding_side = 'left'"):
                hf.generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=False, use_cache=use_cache)


def test_the_cache_of_a_right_padded_forward_refuses_to_be_continued_and_stays_unfed(pair):
    """A plain forward returns a cache that takes its prompts in only when continued: over right-padded prompts the
    next token would follow the padding, so every continuation is refused and the prompts stay unfed."""
    _, hf = pair
    _, ids, mask = right_padded(LENGTHS)
    nxt = torch.ones(len(LENGTHS), 1, dtype=torch.long)
    with torch.no_grad():
        cache = hf(ids, attention_mask=mask).past_key_values
        for _ in range(2):
            with pytest.raises(ValueError, match="padding_side = 'left'"):
                hf(nxt, attention_mask=torch.cat([mask, torch.ones_like(nxt)], 1), past_key_values=cache)
    assert cache.kv is None and cache.seen == 0 and cache.get_seq_length() == ids.shape[1]


@pytest.mark.parametrize(
    "mask",
    [
        [[0, 1, 0, 1], [1, 1, 1, 1]],  # a hole
        [[0, 1, 1, 0], [1, 1, 1, 1]],  # both ends of one row
        [[0, 1, 1, 1], [1, 1, 1, 0]],  # one row left, another right
    ],
)
def test_masks_padded_elsewhere_than_on_one_side_are_refused_without_a_cache_too(pair, mask):
    _, hf = pair
    with torch.no_grad(), pytest.raises(ValueError, match="not holes or both sides"):
        hf(torch.ones(2, 4, dtype=torch.long), attention_mask=torch.tensor(mask), use_cache=False)
