"""An official checkpoint with tie_word_embeddings=True and no lm_head.weight imports with the embedding as its LM
head (found by mutation testing: no test loaded a tied checkpoint). Checkpoints are built with the helpers of
tests/hf/test_official.py."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
from foxacp.hf.official import load_official  # noqa: E402
from tests.hf.test_official import official_config, official_weights, reference_logits, write_checkpoint  # noqa: E402


@pytest.mark.parametrize("pro", [True, False])
def test_a_tied_checkpoint_without_lm_head_uses_the_embedding(tmp_path, pro):
    config = {**official_config(pro), "tie_word_embeddings": True}
    weights = official_weights(pro, False)
    emb = weights["model.embeddings.weight"].clone()
    del weights["lm_head.weight"]
    model = load_official(write_checkpoint(tmp_path / "tied", config, weights), acp=False)
    torch.testing.assert_close(model.lm_head.weight, emb.float(), rtol=0, atol=0)
    torch.testing.assert_close(model.embed.weight, emb.float(), rtol=0, atol=0)
    ids = torch.randint(config["vocab_size"], (1, 12), generator=torch.Generator().manual_seed(0))
    ref = reference_logits(config, {**weights, "lm_head.weight": emb}, ids)
    with torch.no_grad():
        got = model(ids).double()
    torch.testing.assert_close(got, ref.to(got.dtype), rtol=1e-4, atol=1e-4)
