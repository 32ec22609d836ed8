"""foxacp export-hf of a run trained with a tokenizers tokenizer: the directory should be usable by transformers
tools that need the tokenizer (AutoTokenizer, pipelines, lm-eval's hf model) and generate should stop at the run's
EOS without being told. Builds a 1-step BPE run like tests/hf/test_export.py's run_dir."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    import shutil
    import sysconfig
    from pathlib import Path

    from foxacp.train.config import parse_overrides, preset_config
    from foxacp.train.loop import train

    small = [
        "model.n_layers=2", "model.d_model=64", "model.n_heads=2", "model.attn_backend=torch", "seq_len=128",
        "micro_batch_size=4", "global_batch_tokens=1024", "warmup_tokens=2048", "log_every=1", "eval_every=0",
        "eval_batches=2", "ckpt_every=0", "progress=false", "tensorboard=false", "device=cpu",
    ]  # fmt: skip
    root = tmp_path_factory.mktemp("bpe")
    corpus = root / "corpus"
    corpus.mkdir()
    src = Path(sysconfig.get_paths()["stdlib"])
    for p in [p for p in sorted(src.glob("*.py")) if 8_000 < p.stat().st_size < 40_000][:30]:
        shutil.copy(p, corpus / p.name)
    out = root / "run"
    base = [f"corpus={corpus}", f"cache_dir={root / 'cache'}", f"out={out}", "steps=1", "tokenizer=bpe:400"]
    train(parse_overrides(preset_config("tiny"), [*small, *base]))
    return out


def test_export_hf_carries_the_runs_tokenizer_and_eos(bpe_run, tmp_path):
    from foxacp.eval.report import load_model_and_tokenizer
    from foxacp.hf.export import export_hf

    _, tok, _ = load_model_and_tokenizer(bpe_run, "cpu")
    out = export_hf(bpe_run, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text()).get("eos_token_id") == tok.eos_id
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "def f(x):\n    return x"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
