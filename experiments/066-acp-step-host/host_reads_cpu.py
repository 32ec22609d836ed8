"""CPU pre-check for 066: does a training step's forward + backward read values back to the host with ACP on
(value checks off, as the trainer runs after its first step) where the exact step does not?

    PYTHONPATH=src python experiments/066-acp-step-host/host_reads_cpu.py

A small FoX Pro model on the Triton backend (the kernels through Triton's interpreter), eager; counts the aten ops
that read back (foxacp.testing.HOST_READS) during one step of each mode.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel is imported

import dataclasses  # noqa: E402

import torch  # noqa: E402

from foxacp.bench.decode import use_config  # noqa: E402
from foxacp.eval.loss import token_losses  # noqa: E402
from foxacp.model import FoxLM, ModelConfig  # noqa: E402
from foxacp.ops import set_value_checks  # noqa: E402
from foxacp.testing import HOST_READS, CountOps  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64, n_layers=2, d_model=64, n_heads=2, variant="fox_pro", attn_backend="triton",
        record_acp_stats=True,
    )  # fmt: skip
    model = FoxLM(cfg)
    ids = torch.randint(0, 64, (2, 130))
    batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    for acp in (False, True):
        use_config(model, dataclasses.replace(cfg, acp=acp))
        set_value_checks(True)
        token_losses(model, batch).sum().backward()  # the trainer's first step checks the values
        set_value_checks(False)
        with CountOps() as counted:
            token_losses(model, batch).sum().backward()
        reads = {k: v for k, v in counted.ops.items() if k in HOST_READS}
        print(f"{'acp' if acp else 'exact'}: {sum(counted.ops.values())} aten ops, host reads {reads or 'none'}")
    set_value_checks(True)


if __name__ == "__main__":
    main()
