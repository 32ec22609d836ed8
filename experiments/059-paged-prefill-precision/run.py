"""How far the evicting cache's chunked prefill is from the full forward, by paged-op piece size (CPU, fp32).

    PYTHONPATH=src python experiments/059-paged-prefill-precision/run.py

A 2-layer FoX Pro (d 64, 4 query / 2 KV heads, QK-norm gains x2) whose heads forget at 2-5 nats per token, ACP
at log eps = -30 (so pruning removes nothing that shows: any gap is arithmetic); a 1024-token prompt fed in
chunks of 512 (generate's default with eviction) to the full cache and to the evicting one, whose attention
module calls the paged op on pieces of PAGED_CHUNK new tokens; the largest |logit difference| to model(prompt).
Last, the same prompt fed one token at a time: the precision of decoding itself, for either cache.
"""

from __future__ import annotations

import torch

from foxacp.infer.generate import EVICT_PREFILL_CHUNK
from foxacp.model import FoxLM, ModelConfig, attention


def main() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, acp=True, log_eps=-30.0,
                      init_std=0.1, attn_backend="torch")  # fmt: skip
    model = FoxLM(cfg).eval()
    n, chunk = 1024, EVICT_PREFILL_CHUNK
    with torch.no_grad():
        for block in model.blocks:
            block.attn.fgate.bias.copy_(torch.tensor([-2.0, -3.0, -4.0, -5.0]))
            block.attn.q_norm.weight.mul_(2.0)
            block.attn.k_norm.weight.mul_(2.0)
        seq = torch.randint(64, (1, n), generator=torch.Generator().manual_seed(5))
        full = model(seq)

        def gap(evict: bool, step: int = chunk) -> float:
            cache = model.new_cache(1, n, evict=evict, **({"pool_fraction": 1.0} if evict else {}))
            got = torch.cat([model(seq[:, s : s + step], cache=cache) for s in range(0, n, step)], 1)
            return (got - full).abs().max().item()

        print(f"logit scale (max |logit|): {full.abs().max().item():.2f}; chunks of {chunk}")
        print(f"full cache:                          {gap(False):.2e}")
        default = attention.PAGED_CHUNK
        for piece in (1024, 256, 64, 32, 16, 8):
            attention.PAGED_CHUNK = piece
            mark = "  (default)" if piece == default else ""
            print(f"evicting cache, paged op on {piece:4d} tokens: {gap(True):.2e}{mark}")
        attention.PAGED_CHUNK = default
        print(f"one token at a time (decoding), full cache: {gap(False, 1):.2e}, evicting: {gap(True, 1):.2e}")


if __name__ == "__main__":
    main()
