from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from foxacp.data import ByteTokenizer, build_tokenizer, load_corpus

SAMPLES = ["", "hello world", "naïve café — 東京 🙂", "tabs\tand\nnewlines\r\n"]


def test_byte_tokenizer_round_trips():
    tok = build_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer)
    assert (tok.vocab_size, tok.eos_id, tok.name) == (257, 256, "byte")
    for text in SAMPLES:
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8"))
        assert tok.decode(ids) == text
        assert tok.decode([*ids, tok.eos_id]) == text
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]


def test_bpe_trains_caches_and_reloads(text_folder: Path, tmp_path: Path):
    corpus = load_corpus(str(text_folder))
    cache = tmp_path / "cache"
    tok = build_tokenizer("bpe:300", corpus=corpus, cache_dir=cache)
    saved = cache / "tokenizers" / f"{tok.name}.json"
    assert saved.is_file() and tok.name.startswith("bpe300-")
    assert 257 < tok.vocab_size <= 300
    assert tok.eos_id == tok.tokenizer.token_to_id("<|endoftext|>")
    text = next(corpus.documents("train"))
    ids = tok.encode(text)
    assert len(ids) < len(text.encode()) / 2  # the merges were learned from this corpus
    assert tok.decode(ids) == text
    for sample in SAMPLES:
        assert tok.decode(tok.encode(sample)) == sample

    mtime = saved.stat().st_mtime_ns
    again = build_tokenizer("bpe:300", corpus=corpus, cache_dir=cache)
    assert saved.stat().st_mtime_ns == mtime  # loaded, not retrained
    assert again.name == tok.name and again.vocab_size == tok.vocab_size
    assert again.encode_batch(SAMPLES + [text]) == tok.encode_batch(SAMPLES + [text])
    other = build_tokenizer("bpe:280", corpus=corpus, cache_dir=cache)
    assert other.name != tok.name
    retrained = build_tokenizer("bpe:300", corpus=corpus, cache_dir=tmp_path / "elsewhere")
    assert retrained.tokenizer.to_str() == tok.tokenizer.to_str()  # training is deterministic


def test_hf_tokenizer_from_local_file(tmp_path: Path):
    vocab = {"<unk>": 0, "</s>": 1, "hello": 2, "world": 3}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.add_special_tokens(["</s>"])
    (tmp_path / "tok").mkdir()
    hf.save(str(tmp_path / "tok" / "tokenizer.json"))
    from_dir = build_tokenizer(f"hf:{tmp_path / 'tok'}")
    from_file = build_tokenizer(f"hf:{tmp_path / 'tok' / 'tokenizer.json'}")
    assert from_dir.name == from_file.name and from_dir.name.startswith("hf-")
    assert (from_dir.vocab_size, from_dir.eos_id) == (4, 1)
    assert from_dir.encode("hello world oops") == [2, 3, 0]
    assert from_file.decode([2, 3, 1]) == "hello world"

    no_eos = HFTokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    no_eos.save(str(tmp_path / "no_eos.json"))
    with pytest.raises(ValueError, match="EOS"):
        build_tokenizer(f"hf:{tmp_path / 'no_eos.json'}")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("bytes", "unknown tokenizer spec"),
        ("hf:", "unknown tokenizer spec"),
        ("bpe:abc", "must be an integer"),
        ("bpe:200", "must be an integer > 257"),
        ("bpe:1000", "needs a corpus"),
        ("hf:/no/such/tokenizer.json", "no tokenizer.json"),
    ],
)
def test_bad_tokenizer_specs(spec: str, match: str):
    with pytest.raises(ValueError, match=match):
        build_tokenizer(spec)


def test_an_hf_path_that_is_not_a_tokenizer_is_a_value_error(tmp_path: Path):
    not_tokenizer = tmp_path / "tokenizer.json"
    not_tokenizer.write_text('{"hello": "world"}')
    with pytest.raises(ValueError, match="is not a tokenizers tokenizer.json"):
        build_tokenizer(f"hf:{not_tokenizer}")
    with pytest.raises(ValueError, match="is not a tokenizers tokenizer.json"):
        build_tokenizer(f"hf:{tmp_path}")  # a folder whose tokenizer.json is not one


def test_vocab_size_covers_every_id_of_a_tokenizer_with_id_gaps(tmp_path: Path):
    """vocab_size is the largest id + 1, not the number of tokens: a model sized by it must embed the EOS."""
    import json

    t = HFTokenizer(models.WordLevel({"a": 0, "b": 1, "c": 2}, unk_token="a"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(["<|endoftext|>"])
    data = json.loads(t.to_str())
    data["added_tokens"][0]["id"] = 300
    data["model"]["vocab"]["<|endoftext|>"] = 300
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    tok = build_tokenizer(f"hf:{tmp_path / 'tokenizer.json'}")
    assert (tok.eos_id, tok.vocab_size) == (300, 301)


def test_eos_text_in_a_document_stays_text_when_the_eos_token_is_not_marked_special(tmp_path: Path):
    """An EOS added with add_tokens (not special): its text inside a document must still be ordinary text."""
    from tokenizers import decoders, trainers

    t = HFTokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    t.train_from_iterator(["hello world, some text here"] * 10, trainer)
    t.add_tokens(["<|endoftext|>"])
    (tmp_path / "tokenizer.json").write_text(t.to_str(), encoding="utf-8")
    tok = build_tokenizer(f"hf:{tmp_path / 'tokenizer.json'}")
    ids = tok.encode("a<|endoftext|>b")
    assert tok.eos_id not in ids
    assert tok.decode(ids) == "a<|endoftext|>b"
