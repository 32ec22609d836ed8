"""foxacp.load of transformers directories (sharded, bf16)."""

from __future__ import annotations

import pytest
import torch

import foxacp
from tests.infer.models import tiny_model

pytest.importorskip("transformers")
from foxacp.hf import FoxForCausalLM  # noqa: E402


def test_sharded_and_bf16_dirs_load(tmp_path):
    lm = tiny_model("fox_pro", acp=True)
    hf = FoxForCausalLM.from_foxlm(lm)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    back = foxacp.load(tmp_path / "sharded")
    for (n, a), b in zip(lm.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert back.config == lm.config
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    low = foxacp.load(tmp_path / "bf16")
    assert low.embed.weight.dtype == torch.float32
    assert torch.equal(low.embed.weight, lm.embed.weight.to(torch.bfloat16).float())
    kept = foxacp.load(tmp_path / "bf16", dtype=torch.bfloat16)
    assert kept.embed.weight.dtype == torch.bfloat16
