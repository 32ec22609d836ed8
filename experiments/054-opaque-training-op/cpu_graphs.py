"""How many graphs a compiled FoX Pro block makes, forward and backward, exact and ACP (CPU, Triton interpreter).

    TRITON_INTERPRET=1 PYTHONPATH=src python experiments/054-opaque-training-op/cpu_graphs.py

Only the opaque path can be traced here: with OPAQUE_WHEN_COMPILING off, Dynamo traces into Triton's
interpreter itself, which says nothing about a GPU (gpu.sh measures both paths there).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from foxacp.model import FoxLM, ModelConfig  # noqa: E402


def main() -> None:
    for acp in (False, True):
        torch.compiler.reset()
        counters.clear()
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=64, n_layers=1, d_model=64, n_heads=4, n_kv_heads=2, acp=acp, log_eps=-3.0)
        block = FoxLM(cfg).blocks[0]
        x = torch.randn(2, 150, 64, requires_grad=True)
        pos = torch.arange(150).expand(2, -1)
        y = torch.compile(block, backend="aot_eager")(x, pos)
        y.square().sum().backward()
        breaks = sum(counters["graph_break"].values())
        print(f"acp={acp}: graphs {counters['stats']['unique_graphs']}, graph breaks {breaks}")


if __name__ == "__main__":
    main()
