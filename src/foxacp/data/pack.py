"""Pack a corpus for another machine: its BPE tokenizer, its tokenized splits and its held-out texts, in one folder.

    python -m foxacp.data.pack data/public --out data/study --vocab 16384

writes OUT/tokenizer.json, OUT/tokens/ (a token cache: train.bin, val.bin, their offsets and meta.json) and
OUT/heldout/ (a copy of CORPUS/heldout/). Train on it with ``--data tokens:OUT/tokens --tokenizer
hf:OUT/tokenizer.json``: the cache is read as it is (no texts needed) and the tokenizer's name is its file's digest,
so the same folder works on any machine. The BPE is trained on CORPUS/train only; the cache's "val" split is the
corpus rule's held-out share of CORPUS/train (validation loss while training), CORPUS/heldout is for `foxacp eval`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from foxacp.data.cache import prepare_tokens
from foxacp.data.corpus import load_corpus
from foxacp.data.tokenizer import build_tokenizer


def pack_corpus(corpus_dir: Path, out: Path, *, vocab_size: int, cache_dir: Path) -> dict:
    """Train (or reuse) the BPE on CORPUS/train, tokenize it, and copy tokenizer, cache and CORPUS/heldout into
    ``out``. Returns {"tokenizer", "vocab_size", "splits": {split: {"documents", "tokens"}}, "bytes"}.

    Raises ValueError when ``corpus_dir`` has no train/ folder with documents, or on a bad vocab_size."""
    corpus_dir, out = Path(corpus_dir), Path(out)
    if not (corpus_dir / "train").is_dir():
        raise ValueError(f"{corpus_dir} has no train/ folder (build it with foxacp.data.public_corpus)")
    corpus = load_corpus(str(corpus_dir / "train"))
    bpe = build_tokenizer(f"bpe:{vocab_size}", corpus=corpus, cache_dir=cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(bpe.tokenizer.to_str(), encoding="utf-8")
    tokenizer = build_tokenizer(f"hf:{out / 'tokenizer.json'}")
    cache = prepare_tokens(corpus, tokenizer, cache_dir)
    for name in ("tokens", "heldout"):
        shutil.rmtree(out / name, ignore_errors=True)
    shutil.copytree(cache.path, out / "tokens")
    if (corpus_dir / "heldout").is_dir():
        shutil.copytree(corpus_dir / "heldout", out / "heldout")
    meta = json.loads((cache.path / "meta.json").read_text())
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size, "splits": meta["splits"], "bytes": size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("corpus", type=Path, help="corpus folder with train/ (and heldout/)")
    p.add_argument("--out", type=Path, required=True, help="packed folder")
    p.add_argument("--vocab", type=int, default=16384, help="BPE vocabulary size (EOS included)")
    p.add_argument("--cache-dir", type=Path, default=Path("~/.cache/foxacp").expanduser())
    args = p.parse_args(argv)
    info = pack_corpus(args.corpus, args.out, vocab_size=args.vocab, cache_dir=args.cache_dir)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
