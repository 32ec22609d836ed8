"""Data: corpora, tokenizers, the token cache and training batches.

    tokenizer, train, val = make_datasets("stdlib", "byte", cache_dir, seq_len=512, batch_size=16)
    batch = next(train)  # {"input_ids": (B, T) int64, "labels": (B, T) int64, ...}

See pipeline.make_datasets for the arguments and each module's docstring for its part.
"""

from foxacp.data.batches import (
    IGNORE_INDEX,
    Batch,
    BatchLoader,
    make_batch,
    num_windows,
    validation_batches,
)
from foxacp.data.cache import TokenCache, TokenSplit, prepare_tokens
from foxacp.data.corpus import Corpus, load_corpus
from foxacp.data.pipeline import Datasets, make_datasets, prepare_data
from foxacp.data.tokenizer import ByteTokenizer, Tokenizer, TokenizersTokenizer, build_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "BatchLoader",
    "ByteTokenizer",
    "Corpus",
    "Datasets",
    "TokenCache",
    "TokenSplit",
    "Tokenizer",
    "TokenizersTokenizer",
    "build_tokenizer",
    "load_corpus",
    "make_batch",
    "make_datasets",
    "num_windows",
    "prepare_data",
    "prepare_tokens",
    "validation_batches",
]
