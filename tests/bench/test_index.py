"""The generated results index: every set listed, the newest of each (benchmark, device) marked current."""

import json

import pytest

from foxacp.bench.index import collect, main, read_set, render


def _attention_set(root, name, date):
    folder = root / name
    folder.mkdir()
    rows = [{"heads": h, "head_dim": 64, "seqlen": t} for h in (12, 24) for t in (4096, 16384)]
    meta = {"device": "NVIDIA H100 80GB HBM3", "date": date, "settings": {"do_bench": "warmup 1000 ms"}}
    (folder / "attention.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    (folder / "attention.md").write_text("# table\n")
    return folder


@pytest.fixture
def root(tmp_path):
    _attention_set(tmp_path, "2026-11-22-aaaaaaa-attention-h100", "2026-11-22T10:00:00Z")
    _attention_set(tmp_path, "2026-11-22-bbbbbbb-attention-h100", "2026-11-22T16:00:00Z")
    _attention_set(tmp_path, "2026-11-23-ccccccc-attention-quick-h100", "2026-11-23T09:00:00Z")
    train = tmp_path / "2026-11-21-ddddddd-training-125m-fsdp2-h200x2"
    train.mkdir()
    (train / "training.json").write_text(json.dumps({"title": "1 vs 2 GPUs", "meta": {"date": "2026-11-21T05:00:00Z"}}))
    correctness = tmp_path / "2026-11-20-eeeeeee-correctness-h100"
    correctness.mkdir()
    (correctness / "correctness.json").write_text(json.dumps([{"dtype": "bfloat16"}] * 3))
    return tmp_path


def test_current_is_newest_per_benchmark_and_device(root):
    sets = {s.path.name: s for s in collect(root)}
    assert len(sets) == 5
    assert not sets["2026-11-22-aaaaaaa-attention-h100"].current
    assert sets["2026-11-22-bbbbbbb-attention-h100"].current  # same day: the run's timestamp decides
    assert sets["2026-11-23-ccccccc-attention-quick-h100"].current  # a tagged run never replaces a full one
    train = sets["2026-11-21-ddddddd-training-125m-fsdp2-h200x2"]
    assert (train.benchmark, train.device, train.summary, train.current) == (
        "training-125m-fsdp2",
        "h200x2",
        "1 vs 2 GPUs",
        True,
    )
    assert sets["2026-11-20-eeeeeee-correctness-h100"].summary == "3 cases against float64"
    text = render(collect(root))
    assert all(name in text for name in sets) and text.count("**current**") == 4
    assert "12x64, 24x64; T 4096-16384" in text


def test_bad_folder_name_is_an_error(tmp_path):
    (tmp_path / "attention-h100-20261122").mkdir()
    with pytest.raises(ValueError, match="not a result set name"):
        read_set(tmp_path / "attention-h100-20261122")


def test_main_writes_and_checks(root, capsys):
    assert main(["--root", str(root), "--check"]) == 1
    assert main(["--root", str(root)]) == 0
    assert main(["--root", str(root), "--check"]) == 0
    (root / "README.md").write_text("hand edited\n")
    assert main(["--root", str(root), "--check"]) == 1


def test_repository_index_is_up_to_date():
    """results/README.md is what the result folders give (run python -m foxacp.bench.index after a run)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "results"
    assert main(["--root", str(root), "--check"]) == 0


def test_decode_result_sets_are_summarised(tmp_path):
    import json

    from foxacp.bench.index import read_set

    folder = tmp_path / "2026-12-04-abcdef1-decode-attention-quick-h200"
    folder.mkdir()
    rows = [dict(heads_q=32, heads_kv=8, head_dim=128, context=c, batch=b) for c in (16384, 65536) for b in (1, 8)]
    (folder / "decode_attention.json").write_text(json.dumps({"meta": {"device": "NVIDIA H200"}, "rows": rows}))
    s = read_set(folder)
    assert s.benchmark == "decode-attention-quick" and "32/8x128" in s.summary and "T 16384-65536" in s.summary


def test_eval_result_sets_are_summarised(tmp_path):
    import json

    from foxacp.bench.index import read_set

    folder = tmp_path / "2026-12-04-abcdef1-passkey-evict-cpu"
    folder.mkdir()
    record = {"meta": {"device": "cpu"}, "per_position": {}, "passkey": {"overall": 0.75}}
    record |= {"exact": {"passkey": {"overall": 0.5}}, "evict": {"passkey": {"overall": 0.75}}}
    (folder / "eval.json").write_text(json.dumps(record))
    assert read_set(folder).summary == "cpu: foxacp eval, passkey 75%, exact 50%, evict 75%"
