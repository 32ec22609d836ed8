"""``foxacp eval``: loss by position against a per-document computation, the exact twin, and the command's
outputs (eval.json keys and values, PNGs, errors) on a tiny run trained for two steps."""

from __future__ import annotations

import json
import math

import pytest
import torch

from foxacp.cli import main
from foxacp.eval.long_loss import loss_by_position, prefix_average, read_documents
from foxacp.eval.report import exact_twin
from foxacp.model import FoxLM, ModelConfig
from tests.train.conftest import SMALL, cache_dir, corpus_dir, one_thread  # noqa: F401  (fixtures)

TINY = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=2, attn_backend="torch")


def test_loss_by_position_averages_each_position_over_the_documents_reaching_it():
    torch.manual_seed(0)
    model = FoxLM(TINY).eval()
    docs = [torch.randint(0, 64, (n,)).tolist() for n in (40, 25, 1, 70)]  # the 1-token document is skipped
    rec = loss_by_position(model, docs, max_len=50, buckets=5, progress=False)
    per_doc = []
    with torch.no_grad():
        for d in (docs[0], docs[1], docs[3][:51]):
            ids = torch.tensor(d)
            logp = model(ids[None, :-1])[0].double().log_softmax(-1)
            per_doc.append(-logp[torch.arange(len(d) - 1), ids[1:]])
    assert rec["documents"] == 3 and rec["tokens"] == 39 + 24 + 50
    assert rec["documents_by_position"][:24] == [3] * 24 and rec["documents_by_position"][39:] == [1] * 11
    for t in (0, 23, 30, 49):
        want = torch.stack([p[t] for p in per_doc if len(p) > t]).mean().item()
        assert rec["loss_by_position"][t] == pytest.approx(want, rel=1e-5)
    assert rec["loss"] == pytest.approx(torch.cat(per_doc).mean().item(), rel=1e-5)
    assert rec["prefix_loss"][-1] == pytest.approx(rec["loss"], rel=1e-9)
    assert len(rec["position_loss"]) == 5 and rec["bucket_size"] == 10
    with pytest.raises(ValueError, match="max_len"):
        loss_by_position(model, docs, max_len=0)
    with pytest.raises(ValueError, match="2 or more tokens"):
        loss_by_position(model, [[1]], max_len=8)


def test_prefix_average_weights_positions_by_their_document_counts():
    assert prefix_average([1.0, None, 4.0], [2, 0, 1]) == [1.0, 1.0, 2.0]
    assert prefix_average([None, 3.0], [0, 1]) == [None, 3.0]


def test_exact_twin_has_the_weights_and_no_pruning():
    torch.manual_seed(0)
    model = FoxLM(TINY).eval()
    twin = exact_twin(model)
    assert model.config.acp and twin.config.attn_log_eps is None
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True))
    assert all(b.attn.cfg.attn_log_eps is None for b in twin.blocks)


def test_read_documents_file_folder_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second")
    (tmp_path / "c.bin").write_text("not text")
    (tmp_path / "empty.txt").write_text("  \n")
    assert read_documents(tmp_path) == ["first", "second"]
    assert read_documents(tmp_path / "a.txt") == ["first"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_documents(tmp_path / "missing")
    with pytest.raises(ValueError, match="no non-empty"):
        read_documents(tmp_path / "empty.txt")


@pytest.fixture(scope="module")
def tiny_run(corpus_dir, cache_dir, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("eval") / "run"
    torch.set_num_threads(1)
    args = ["--data", str(corpus_dir), "--set", *SMALL, f"cache_dir={cache_dir}", "steps=2"]
    assert main(["train", "--out", str(out), *args]) == 0
    return out


def test_eval_command_writes_the_record_and_plots(tiny_run, corpus_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "ev"
    data = sorted(corpus_dir.glob("*.py"))[0]
    cmd = ["eval", str(tiny_run), "--data", str(data), "--out", str(out), "--max-len", "300", "--device", "cpu"]
    pk = ["--passkey-lengths", "200", "260", "--depths", "0", "1", "--trials", "2", "--digits", "3"]
    assert main([*cmd, *pk, "--compare-exact", "--compare-evict"]) == 0
    printed = capsys.readouterr().out
    assert "eval.json" in printed and "evicting cache: same passkey answers in 100%" in printed
    rec = json.loads((out / "eval.json").read_text())
    assert {"meta", "per_position", "passkey", "exact", "comparison", "evict", "evict_comparison"} <= set(rec)
    meta = rec["meta"]
    assert meta["model"] == str(tiny_run.resolve()) and meta["data"] == str(data.resolve())
    assert meta["device"].startswith("cpu") and meta["commit"] and meta["training_context"] == 128
    pos = rec["per_position"]
    assert pos["max_len"] == 300 and len(pos["loss_by_position"]) == 300 and pos["documents"] == 1
    assert 0 < pos["loss"] < 2 * math.log(320)  # two steps: about the uniform loss, not more
    grid = rec["passkey"]
    assert grid["lengths"] == [200, 260] and grid["depths"] == [0.0, 1.0] and len(grid["trials"]) == 8
    assert all(0 <= a <= 1 for row in grid["accuracy"] for a in row)
    cmp = rec["comparison"]
    assert len(cmp["loss_difference"]) == 300 and cmp["max_abs_loss_difference"] < 1e-3
    exact = rec["exact"]["per_position"]["loss_by_position"]
    for t in (0, 150, 299):
        assert cmp["loss_difference"][t] == pytest.approx(pos["loss_by_position"][t] - exact[t], abs=1e-12)
    assert rec["meta"]["acp"] and rec["meta"]["log_eps"] == -10.0 and len(rec["exact"]["passkey"]["trials"]) == 8
    assert cmp["passkey_same_answer"] == pytest.approx(1.0)
    # Eviction frees only what ACP already skips: the same answer on every trial.
    evicted = rec["evict"]["passkey"]["trials"]
    assert [t["key"] for t in evicted] == [t["key"] for t in grid["trials"]]
    assert rec["evict_comparison"]["passkey_same_answer"] == pytest.approx(1.0)
    memory = rec["evict"]["passkey"]["memory"]
    assert sum(b["prompts"] for b in memory["batches"]) == 8 and {200, 260} == {
        n for b in memory["batches"] for n in b["lengths"]
    }
    assert 0 < memory["fraction_held_mean"] <= 1
    pngs = ("loss_by_position.png", "prefix_loss.png", "passkey.png", "passkey_exact.png", "loss_difference.png")
    for png in (*pngs, "passkey_evict.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_command_errors_are_one_line(tiny_run, tmp_path, capsys):
    text = tmp_path / "doc.txt"
    text.write_text("hello world " * 40)
    base = ["eval", str(tiny_run), "--out", str(tmp_path / "ev"), "--device", "cpu"]
    assert main([*base, "--data", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--data", str(text), "--trials", "0"]) == 2
    assert "trials" in capsys.readouterr().err
    assert main([*base, "--data", str(text), "--depths", "2"]) == 2
    assert "depths" in capsys.readouterr().err
    assert main([*base, "--data", str(text), "--passkey-lengths", "10"]) == 2
    assert "too short" in capsys.readouterr().err
    assert main([*base, "--data", str(text), "--filler", str(tmp_path / "nofiller.txt")]) == 2
    assert "filler" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "norun"), "--data", str(text), "--out", str(tmp_path / "ev")]) == 2
