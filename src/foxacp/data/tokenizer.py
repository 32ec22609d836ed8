"""Tokenizers, chosen by one spec string:

    "byte"             256 byte ids plus EOS (id 256); needs no files
    "bpe:N"            a byte-level BPE with at most N ids (EOS included) trained on the training
                       split of the corpus with `tokenizers`, cached at CACHE_DIR/tokenizers/NAME.json
    "hf:NAME_OR_PATH"  a `tokenizers` tokenizer: a local tokenizer.json, a folder holding one, or a
                       hub name (Tokenizer.from_pretrained, needs the network)

Every tokenizer has encode, encode_batch, decode, vocab_size, eos_id and a stable `name` that
identifies its vocabulary (used in token cache keys).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from foxacp.data.corpus import Corpus
from foxacp.io import atomic_write, remove_stale_temps

EOS_TOKEN = "<|endoftext|>"
# Tried in order when a tokenizer.json is loaded; the first one in the vocabulary is the EOS.
EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "<|im_end|>", "[SEP]")


class Tokenizer(Protocol):
    """What the data pipeline needs from a tokenizer."""

    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255 and EOS as 256 (vocab_size 257)."""

    name = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of `text` (no EOS)."""
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` of each text."""
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        """Bytes back to text; EOS ids are dropped, invalid UTF-8 becomes U+FFFD."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class TokenizersTokenizer:
    """A `tokenizers.Tokenizer` with an EOS token. Documents are text: encoding adds no special tokens, reads the
    text of one (such as "<|endoftext|>" in source code) as ordinary text, and neither truncates nor pads (a
    tokenizer.json may carry either setting from another use)."""

    def __init__(self, tokenizer: HFTokenizer, name: str) -> None:
        """Raises ValueError when none of EOS_CANDIDATES is in the vocabulary."""
        tokenizer.encode_special_tokens = True  # else the EOS text inside a document becomes the EOS id
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.name = name
        eos = [t for t in EOS_CANDIDATES if tokenizer.token_to_id(t) is not None]
        if not eos:
            raise ValueError(f"tokenizer {name!r} has none of the EOS tokens {EOS_CANDIDATES}")
        # encode_special_tokens protects only tokens marked special: one added with add_tokens would still turn
        # its text inside a document into the EOS id.
        tokenizer.add_special_tokens([AddedToken(eos[0], special=True)])
        self.eos_id = tokenizer.token_to_id(eos[0])
        # The largest id + 1, not the count: ids may have gaps, and a model sized by it must embed every id.
        self.vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` of each text, run in parallel by the `tokenizers` library."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        """Ids back to text, special tokens skipped."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def build_tokenizer(spec: str, *, corpus: Corpus | None = None, cache_dir: Path | None = None) -> Tokenizer:
    """Build the tokenizer named by `spec` (see the module docstring).

    Args:
        spec: "byte", "bpe:N" or "hf:NAME_OR_PATH".
        corpus: training corpus; required for "bpe:N".
        cache_dir: where trained BPE tokenizers are cached; required for "bpe:N".

    Raises:
        ValueError: an unknown spec, a bad N (must be an integer > 257), "bpe:N" without corpus or
            cache_dir, an "hf:" path or name that holds no loadable tokenizer.json, or a tokenizer without
            an EOS token.
    """
    if spec == "byte":
        return ByteTokenizer()
    if spec.startswith("bpe:"):
        size = spec[len("bpe:") :]
        if not size.isdigit() or int(size) <= ByteTokenizer.vocab_size:
            raise ValueError(f"bad tokenizer spec {spec!r}: N in 'bpe:N' must be an integer > 257")
        if corpus is None or cache_dir is None:
            raise ValueError(f"tokenizer {spec!r} needs a corpus and a cache_dir to train on")
        return _bpe(int(size), corpus, Path(cache_dir))
    if spec.startswith("hf:") and len(spec) > len("hf:"):
        name = spec[len("hf:") :]
        path = Path(name).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if path.is_file():
            digest = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
            return TokenizersTokenizer(_from_file(path), f"hf-{digest}")
        if Path(name).expanduser().exists() or name.endswith(".json"):
            raise ValueError(f"no tokenizer.json at {name!r}")
        try:
            hub = HFTokenizer.from_pretrained(name)
        except Exception as e:  # the tokenizers library raises a bare Exception for every failure
            raise ValueError(f"tokenizer {spec!r}: cannot load {name!r} from the Hugging Face hub ({e})") from None
        # Named by its content too: a new revision of the repo must not reuse the old token cache.
        digest = hashlib.sha1(hub.to_str().encode()).hexdigest()[:12]
        return TokenizersTokenizer(hub, f"hf-{name.replace('/', '--')}-{digest}")
    raise ValueError(f"unknown tokenizer spec {spec!r}; use 'byte', 'bpe:N' or 'hf:NAME_OR_PATH'")


RUN_TOKENIZER = "tokenizer.json"  # a run's own copy of its tokenizer, next to its checkpoints


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    """Write a `tokenizers`-based tokenizer to ``path`` (atomically), so that what a run trained with can be
    loaded back ("hf:PATH") without its training corpus; the byte tokenizer needs no file."""
    if isinstance(tokenizer, TokenizersTokenizer):
        atomic_write(Path(path), tokenizer.tokenizer.to_str())


def _from_file(path: Path) -> HFTokenizer:
    """A `tokenizers` tokenizer from its JSON file. Raises ValueError when the file is not one."""
    try:
        return HFTokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises a bare Exception for every failure
        raise ValueError(f"{path} is not a tokenizers tokenizer.json ({e})") from None


def _bpe(vocab_size: int, corpus: Corpus, cache_dir: Path) -> TokenizersTokenizer:
    """Train (or load the cached) byte-level BPE for (corpus, vocab_size)."""
    digest = hashlib.sha1(corpus.key.encode("utf-8")).hexdigest()[:12]
    name = f"bpe{vocab_size}-{digest}"
    path = cache_dir / "tokenizers" / f"{name}.json"
    if path.is_file():
        return TokenizersTokenizer(_from_file(path), name)
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus.documents("train"), trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    atomic_write(path, tokenizer.to_str())
    # Reload from disk so a fresh and a cached tokenizer are the same object state.
    return TokenizersTokenizer(_from_file(path), name)
