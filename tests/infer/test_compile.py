"""The one-token decode step under torch.compile: one graph (the decode kernel is an opaque custom op), and
the same logits as eager. Runs the Triton decode kernel through the interpreter."""

import torch
import torch._dynamo

from foxacp.model import FoxLM, ModelConfig
from foxacp.ops import set_value_checks


def test_the_compiled_decode_step_is_one_graph_and_matches_eager():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, attn_backend="triton")
    model = FoxLM(cfg).eval()
    eager_cache, compiled_cache = model.new_cache(2, 80), model.new_cache(2, 80)
    prompts = torch.randint(64, (2, 37))

    def logits(cache, tokens):
        return model(tokens[:, None], cache=cache)[:, -1]

    previous = set_value_checks(False)
    try:
        with torch.no_grad():
            model(prompts, cache=eager_cache)
            model(prompts, cache=compiled_cache)
            tokens = prompts[:, -1]
            explained = torch._dynamo.explain(logits)(model.new_cache(2, 80), tokens)
            assert (explained.graph_count, explained.graph_break_count) == (1, 0)
            compiled = torch.compile(logits, backend="aot_eager", fullgraph=True, dynamic=False)
            for _ in range(5):
                want = logits(eager_cache, tokens)
                torch.testing.assert_close(compiled(compiled_cache, tokens), want, atol=1e-5, rtol=1e-5)
                tokens = want.argmax(-1)
            torch.testing.assert_close(compiled_cache.lengths, eager_cache.lengths)
            torch.testing.assert_close(compiled_cache.layers[1].k, eager_cache.layers[1].k)
    finally:
        set_value_checks(previous)
