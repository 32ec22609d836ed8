"""The data sequence in one place: corpus -> tokenizer -> token cache (prepare_data), then batches (make_datasets)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from foxacp.data.batches import Batch, BatchLoader, validation_batches
from foxacp.data.cache import TokenCache, open_token_cache, prepare_tokens
from foxacp.data.corpus import corpus_path, load_corpus
from foxacp.data.tokenizer import Tokenizer, build_tokenizer

TOKENS_PREFIX = "tokens:"  # corpus spec of a ready token cache folder (cache.open_token_cache)


class Datasets(NamedTuple):
    """What make_datasets returns; unpacks as `tokenizer, train, val = make_datasets(...)`."""

    tokenizer: Tokenizer
    train: BatchLoader
    val: list[Batch]


def check_corpus(corpus: str) -> None:
    """Raise ValueError when a "PATH[#FIELD]" corpus names a path that does not exist, reading nothing: a training
    run checks it before it claims its run directory. Other specs are checked when loaded."""
    if corpus and corpus != "stdlib" and not corpus.startswith(("hf:", TOKENS_PREFIX)):
        corpus_path(corpus)


def prepare_data(
    corpus: str, tokenizer: str, cache_dir: Path, *, max_bytes: int | None = None, progress: bool = True
) -> tuple[Tokenizer, TokenCache]:
    """Load the corpus, build (or load the cached) tokenizer and tokenize both splits into the cache (once).

    Arguments as in :func:`make_datasets`; a "tokens:PATH" corpus is the token cache folder PATH (made by
    prepare_tokens, copied anywhere; ``max_bytes`` does not apply), read without its texts. Raises ValueError
    for a bad corpus or tokenizer spec, an empty corpus, or a token cache of another tokenizer.
    """
    cache_dir = Path(cache_dir).expanduser()
    if corpus.startswith(TOKENS_PREFIX):
        # A cache made elsewhere (it travels without its texts); it must be of this very tokenizer.
        tok = build_tokenizer(tokenizer, cache_dir=cache_dir)
        return tok, open_token_cache(Path(corpus[len(TOKENS_PREFIX) :]).expanduser(), tok)
    docs = load_corpus(corpus, max_bytes=max_bytes)
    tok = build_tokenizer(tokenizer, corpus=docs, cache_dir=cache_dir)
    return tok, prepare_tokens(docs, tok, cache_dir, progress=progress)


def make_datasets(
    corpus: str,
    tokenizer: str,
    cache_dir: Path,
    seq_len: int,
    batch_size: int,
    *,
    val_batches: int = 8,
    val_batch_size: int | None = None,
    packing: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    max_bytes: int | None = None,
    progress: bool = True,
) -> Datasets:
    """Load the corpus, build the tokenizer, tokenize into the cache (once) and make the batches.

    Args:
        corpus: corpus spec ("stdlib", "PATH[#FIELD]", "hf:NAME_OR_PATH[@CONFIG][:SPLIT][#FIELD]"), or
            "tokens:PATH", a token cache folder (see prepare_data).
        tokenizer: tokenizer spec ("byte", "bpe:N", "hf:NAME_OR_PATH").
        cache_dir: root of the tokenizer and token caches.
        seq_len: T, tokens per row.
        batch_size: global rows per step (summed over ranks); a multiple of world_size.
        val_batches: number of global validation batches (fewer if the held-out split is short; 0: none).
        val_batch_size: global rows per validation batch (default: batch_size).
        packing: batches carry "cu_seqlens"/"max_seqlen" and mask cross-document labels.
        seed: shuffling seed of the training loader.
        rank, world_size: this process's data-parallel shard.
        max_bytes: cap on the UTF-8 bytes read per split (None: the whole corpus).
        progress: show tqdm bars while tokenizing.

    Returns:
        Datasets(tokenizer, train, val): `train` is an infinite BatchLoader yielding this rank's
        (batch_size // world_size, seq_len) batches; `val` a fixed list of such batches.

    Raises:
        ValueError: a bad corpus or tokenizer spec, an empty corpus, a context longer than a split
            allows, or a batch_size that is not a multiple of world_size.
    """
    tok, cache = prepare_data(corpus, tokenizer, cache_dir, max_bytes=max_bytes, progress=progress)
    train = BatchLoader(
        cache.train,
        seq_len,
        batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        packing=packing,
    )
    val = []  # no validation batches asked for (a run that evaluates nothing needs no held-out data)
    if val_batches > 0:
        val = validation_batches(
            cache.val,
            seq_len,
            val_batch_size or batch_size,
            val_batches,
            rank=rank,
            world_size=world_size,
            packing=packing,
        )
    return Datasets(tok, train, val)
