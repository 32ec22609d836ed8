"""MFU counts the attention a step computed: over whole rows, or with pack=true over each document (the spans
between cu_seqlens). It used to count whole rows when packed too, overstating a packed step of short documents."""

from __future__ import annotations

import numpy as np
import pytest

from foxacp.data.batches import BatchLoader
from foxacp.data.pipeline import prepare_data
from foxacp.model import flops_per_token
from foxacp.train.config import build_model_config
from foxacp.train.loop import train

from .run_helpers import records, write_short_docs

T, ROWS = 512, 4


def logged_and_actual_flops_per_token(small_config, corpus, out, pack: bool) -> tuple[float, float]:
    cfg = small_config(
        f"corpus={corpus}",
        f"seq_len={T}",
        f"global_batch_tokens={T * ROWS}",
        f"micro_batch_size={ROWS}",
        "steps=1",
        f"pack={str(pack).lower()}",
        "model.acp=false",
        "peak_tflops=1",
        out=out,
    )
    train(cfg)
    rec = records(cfg.run_dir, "train")[1]
    logged = rec["mfu"] * 1e12 / rec["tokens_per_s"]  # the FLOPs per token the MFU was computed with
    # The step's batch, again (the loader is seeded), and the attention it really computed: each query attends to
    # the keys before it in its own sequence (its document when packed).
    tok, cache = prepare_data(cfg.corpus, cfg.tokenizer, cfg.cache_dir, progress=False)
    batch = next(BatchLoader(cache.train, T, ROWS, seed=cfg.seed, packing=pack))
    lengths = np.diff(batch["cu_seqlens"].numpy()) if pack else np.full(ROWS, T)
    pairs_per_token = float((lengths * (lengths + 1) / 2).sum()) / (ROWS * T)
    mcfg = build_model_config(cfg, tok.vocab_size)
    dense = flops_per_token(mcfg, T, 1.0)
    matmul = dense - mcfg.n_layers * 6 * mcfg.d_model * T  # the causal-attention term of the dense count
    # 2 matmuls (QK^T, PV) x 2 FLOPs x d_model per (query, key) pair forward, x3 with the backward
    actual = matmul + mcfg.n_layers * 12 * mcfg.d_model * pairs_per_token
    return logged, actual


def test_mfu_of_a_packed_run_counts_the_attention_it_computed(small_config, tmp_path):
    corpus = write_short_docs(tmp_path / "short", 4000)  # ~90-byte documents: ~6 per 512-token row
    logged, actual = logged_and_actual_flops_per_token(small_config, corpus, tmp_path / "packed", pack=True)
    assert logged == pytest.approx(actual, rel=0.01)


def test_mfu_of_an_unpacked_run_counts_the_attention_it_computed(small_config, tmp_path):
    corpus = write_short_docs(tmp_path / "short", 4000)
    logged, actual = logged_and_actual_flops_per_token(small_config, corpus, tmp_path / "plain", pack=False)
    assert logged == pytest.approx(actual, rel=0.01)
