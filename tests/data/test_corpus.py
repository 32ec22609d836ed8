import sys
import sysconfig
from pathlib import Path

import pytest

from foxacp.data import load_corpus
from foxacp.data.corpus import held_out_ids


def test_stdlib_corpus_is_found_and_split_deterministically():
    a, b = load_corpus("stdlib"), load_corpus("stdlib")
    assert a.ids == b.ids and a.val_ids == b.val_ids and a.key == b.key
    assert "os.py" in a.ids and all(i.endswith(".py") for i in a.ids)
    assert not any("site-packages" in i for i in a.ids)
    assert list(a.ids) == sorted(a.ids)
    assert 3 <= len(a.val_ids) <= 0.03 * len(a.ids)
    assert a.val_ids < set(a.ids)
    assert f"py{sys.version_info.major}.{sys.version_info.minor}" in a.key
    root = Path(sysconfig.get_paths()["stdlib"])
    first_val = a.split_ids("val")[0]
    assert next(a.documents("val")) == (root / first_val).read_text(errors="replace")


def test_max_bytes_caps_each_split():
    corpus = load_corpus("stdlib", max_bytes=50_000)
    docs = list(corpus.documents("train"))
    sizes = [len(d.encode()) for d in docs]
    assert sum(sizes[:-1]) < 50_000 <= sum(sizes)
    assert corpus.key != load_corpus("stdlib").key


def test_held_out_rule():
    ids = [f"doc{i}" for i in range(1000)]
    val = held_out_ids(ids)
    assert len(val) == 15
    assert val == held_out_ids(list(reversed(ids)))  # depends on the set of ids only
    assert len(held_out_ids(["a", "b"])) == 1
    assert len(held_out_ids([str(i) for i in range(10)])) == 3


def test_local_folder(text_folder: Path, make_text):
    corpus = load_corpus(str(text_folder))
    assert len(corpus.ids) == 15  # 12 files + 3 jsonl records; empty, hidden and .bin files skipped
    assert corpus.ids[:3] == ("doc00.txt", "doc02.py", "doc04.md")
    assert "records.jsonl:1" in corpus.ids and "records.jsonl:3" in corpus.ids
    texts = dict(zip(corpus.ids, corpus.read(corpus.ids), strict=True))
    assert texts["sub/doc01.md"] == make_text(1, 45)
    assert texts["records.jsonl:3"] == make_text(101, 30)
    train, val = list(corpus.documents("train")), list(corpus.documents("val"))
    assert len(train) + len(val) == 15 and len(val) == 3


def test_jsonl_field_and_single_file(text_folder: Path):
    corpus = load_corpus(f"{text_folder / 'records.jsonl'}#body")
    assert sorted(corpus.read(corpus.ids)) == ["body 0", "body 1", "body 2"]
    bad = load_corpus(f"{text_folder / 'records.jsonl'}#missing")
    with pytest.raises(ValueError, match="no text field"):
        list(bad.documents("train"))


def test_cache_key_follows_file_changes(text_folder: Path):
    before = load_corpus(str(text_folder)).key
    (text_folder / "doc00.txt").write_text("changed and longer than before " * 50)
    assert load_corpus(str(text_folder)).key != before


def test_hf_dataset_saved_to_disk(tmp_path: Path, make_text):
    datasets = pytest.importorskip("datasets")
    rows = {"text": [make_text(i, 20) for i in range(10)], "n": list(range(10))}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "flat"))
    corpus = load_corpus(f"hf:{tmp_path / 'flat'}")
    assert len(corpus.ids) == 10 and len(corpus.val_ids) == 3
    assert list(corpus.read(corpus.ids)) == rows["text"]
    assert load_corpus(f"hf:{tmp_path / 'flat'}").key == corpus.key

    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"body": ["a b", "c d", "e f"]}),
        validation=datasets.Dataset.from_dict({"body": ["x y", "z w"]}),
    )
    splits.save_to_disk(str(tmp_path / "dict"))
    corpus = load_corpus(f"hf:{tmp_path / 'dict'}:validation#body")
    assert list(corpus.read(corpus.ids)) == ["x y", "z w"]
    with pytest.raises(ValueError, match="no split 'test'"):
        load_corpus(f"hf:{tmp_path / 'dict'}:test#body")
    with pytest.raises(ValueError, match="no text field 'text'"):
        load_corpus(f"hf:{tmp_path / 'dict'}")


def test_hf_local_json_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text_folder: Path, make_text):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    corpus = load_corpus(f"hf:{text_folder / 'records.jsonl'}")
    assert list(corpus.read(corpus.ids)) == [make_text(100 + i, 30) for i in range(3)]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "empty corpus spec"),
        ("/no/such/folder", "does not exist"),
        ("hf:", "bad hf corpus spec"),
    ],
)
def test_bad_specs(spec: str, match: str):
    with pytest.raises(ValueError, match=match):
        load_corpus(spec)


def test_too_few_documents(tmp_path: Path):
    (tmp_path / "only.txt").write_text("one document")
    with pytest.raises(ValueError, match="at least 2 documents"):
        load_corpus(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no documents"):
        load_corpus(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="max_bytes"):
        load_corpus("stdlib", max_bytes=0)


def test_binary_files_in_a_folder_are_skipped_with_a_warning(text_folder: Path):
    clean = load_corpus(str(text_folder))
    (text_folder / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    (text_folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me, na\xefve text\n".encode("latin-1"))
    with pytest.warns(UserWarning, match=r"skipping .*photo\.txt, which looks binary"):
        corpus = load_corpus(str(text_folder))
    assert "photo.txt" not in corpus.ids and "latin1.txt" in corpus.ids  # another encoding is still text
    assert len(corpus.ids) == len(clean.ids) + 1


def test_a_malformed_jsonl_line_names_the_file_and_line(text_folder: Path):
    (text_folder / "records.jsonl").write_text('{"text": "one"}\n\n{"text": "two"\n')
    with pytest.raises(ValueError, match=r"records\.jsonl:3: malformed JSONL line"):
        load_corpus(str(text_folder))


def test_check_corpus_refuses_only_a_missing_path_and_reads_nothing(tmp_path, monkeypatch):
    # A training run calls it before claiming its run directory: the specs checked when loaded (stdlib, hf:,
    # tokens:, empty) pass untouched, a path (with #FIELD or ~) must exist.
    from foxacp.data.pipeline import check_corpus

    for spec in ("", "stdlib", "hf:no/such-dataset:train#text", f"tokens:{tmp_path / 'no-cache'}"):
        check_corpus(spec)
    (tmp_path / "docs.jsonl").write_text('{"body": "x"}\n')
    check_corpus(f"{tmp_path / 'docs.jsonl'}#body")
    with pytest.raises(ValueError, match="does not exist"):
        check_corpus(f"{tmp_path / 'missing.jsonl'}#body")
    monkeypatch.setenv("HOME", str(tmp_path))
    check_corpus("~/docs.jsonl#body")
    with pytest.raises(ValueError, match="does not exist"):
        check_corpus("~/missing.jsonl")
