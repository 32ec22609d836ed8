"""How far a cached prefill's logits are from the full forward's, by chunk size (CPU, fp32).

    PYTHONPATH=src python experiments/055-long-chunk-prefill-precision/run.py

A 2-layer LLaMA-style FoX (d 64, 4 heads) whose heads forget at log f ~ -0.3 to -3 nats per token; a 4096-token
prompt fed to the cache in chunks of 256, 1024 and 4096; the largest |logit difference| to model(prompt).
"""

from __future__ import annotations

import torch

from foxacp.model import FoxLM, ModelConfig


def main() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, variant="fox", acp=False, attn_backend="torch")
    model = FoxLM(cfg).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.fgate.bias.copy_(torch.tensor([1.0, -1.0, -3.0, 4.0]))
        seq = torch.randint(64, (1, 4096), generator=torch.Generator().manual_seed(5))
        full = model(seq)
        print(f"logit scale (max |logit|): {full.abs().max().item():.2f}")
        for chunk in (256, 1024, 4096):
            cache = model.new_cache(1, 4096)
            got = torch.cat([model(seq[:, s : s + chunk], cache=cache) for s in range(0, 4096, chunk)], 1)
            print(f"chunks of {chunk:4d}: max |logit - full forward's| = {(got - full).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
