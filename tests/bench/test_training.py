"""Training-log report on small synthetic logs with the trainer's record schema (fake values)."""

import json

import pytest

from foxacp.bench.training import load_run, main, markdown, report, set_dir, summarize

N_LAYERS = 3


def _start(world_size=1, device="cuda:0"):
    return {
        "time": 1795325822.804,
        "kind": "start",
        "step": 0,
        "n_params": 1000,
        "world_size": world_size,
        "device": device,
        "grad_accum": 2,
        "peak": "NVIDIA H100 80GB HBM3: 989 TFLOP/s bf16",
        "resumed_from": None,
        "train_config": {"seq_len": 64, "global_batch_tokens": 256, "log_every": 1},
        "model_config": {"n_layers": N_LAYERS, "acp": True},
    }


def _train(step, loss, tokens_per_s, saving):
    return {
        "time": 1795325830.0 + step,
        "kind": "train",
        "step": step,
        "tokens": 256 * step,
        "loss": loss,
        "lr": 1e-3,
        "grad_norm": 1.0,
        "tokens_per_s": tokens_per_s,
        "acp_saving": saving,
        "attn_fraction": 1.0 - saving,
        "acp_layer": [saving] * N_LAYERS,
        "acp_head": [[saving, saving]] * N_LAYERS,
        "mfu": 0.1,
    }


def _eval(step, position_loss):
    return {
        "time": 1795325840.0,
        "kind": "eval",
        "step": step,
        "tokens": 256 * step,
        "loss": sum(position_loss) / len(position_loss),
        "eval_tokens": 512,
        "position_loss": position_loss,
        "bucket_size": 16,
    }


def _write(path, records, torn=False):
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + ('{"kind": "train", "st' if torn else ""))
    return path


@pytest.fixture
def logs(tmp_path):
    a = _write(
        tmp_path / "a.jsonl",
        [
            _start(world_size=1),
            _train(1, 5.0, 100.0, 0.5),  # warm-up: left out of the mean
            _train(2, 4.0, 1000.0, 0.6),
            _train(3, 3.0, 2000.0, 0.7),
            _eval(3, [3.5, 3.0, 2.5, 2.0]),
        ],
        torn=True,
    )
    b = _write(
        tmp_path / "b.jsonl",
        [
            _start(world_size=2),
            _train(1, 5.25, 10.0, 0.0),
            _train(2, 3.5, 3000.0, 0.0),
            _train(3, 3.125, 5000.0, 0.0),
            _eval(3, [3.5, 3.25, 2.5, 2.0]),
        ],
    )
    return a, b


def test_report_numbers(tmp_path, logs):
    out = tmp_path / "results"
    paths = report(logs, ["ACP | on", "off"], out, "pair", title="Pair", note="test device, commit abc")
    assert [p.name for p in paths] == ["pair.png", "pair.md", "pair.json"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads((out / "pair.json").read_text())
    a, b = data["runs"]
    assert a["mean_tokens_per_s"] == pytest.approx(1500.0)
    assert a["tokens_per_s_per_gpu"] == pytest.approx(1500.0)
    assert b["mean_tokens_per_s"] == pytest.approx(4000.0)
    assert b["tokens_per_s_per_gpu"] == pytest.approx(2000.0)
    assert a["final_train_loss"] == 3.0 and b["final_train_loss"] == 3.125
    assert a["final_eval_loss"] == pytest.approx(2.75) and b["final_eval_loss"] == pytest.approx(2.8125)
    assert a["mean_acp_saving"] == pytest.approx(0.6) and b["mean_acp_saving"] == 0.0
    assert a["final_acp_layer"] == [0.7] * N_LAYERS
    assert a["device"] == "NVIDIA H100 80GB HBM3"
    assert [r["abs_diff"] for r in data["loss_by_step"]] == pytest.approx([0.25, 0.5, 0.125])

    c = data["comparison"]
    assert c["max_abs_train_loss_diff"] == pytest.approx(0.5)
    assert c["final_eval_loss_diff"] == pytest.approx(0.0625)
    assert c["max_abs_position_loss_diff"] == pytest.approx(0.25)
    assert c["tokens_per_s_ratio"] == pytest.approx(4000.0 / 1500.0)

    md = (out / "pair.md").read_text()
    assert md.startswith("# Pair\n\ntest device, commit abc\n")
    assert "| ACP / on | NVIDIA H100 80GB HBM3 | 1 | 3 | 3.0000 | 2.7500 | 1,500 | 1,500 | 60.0% |" in md
    assert "| off | NVIDIA H100 80GB HBM3 | 2 | 3 | 3.1250 | 2.8125 | 4,000 | 2,000 | 0.0% |" in md
    assert "| 2 | 4.0000 | 3.5000 | 5.00e-01 |" in md


def test_old_log_without_start_eval_or_acp(tmp_path, logs):
    old = [_train(s, loss, tps, 0.0) for s, loss, tps in ((1, 5.0, 1.0), (2, 4.5, 30.0), (4, 4.0, 50.0))]
    for r in old:
        for key in ("kind", "acp_saving", "acp_layer", "acp_head", "attn_fraction"):
            del r[key]
    path = _write(tmp_path / "old.jsonl", old)
    report([logs[0], path], None, tmp_path, "mixed")

    data = json.loads((tmp_path / "mixed.json").read_text())
    old_run = data["runs"][1]
    assert old_run["label"] == "old"
    assert old_run["mean_tokens_per_s"] == pytest.approx(40.0)
    assert old_run["world_size"] is None and old_run["tokens_per_s_per_gpu"] is None
    assert old_run["final_eval_loss"] is None and old_run["mean_acp_saving"] is None
    rows = {r["step"]: r for r in data["loss_by_step"]}
    assert rows[3]["losses"] == [3.0, None] and rows[3]["abs_diff"] is None
    assert rows[4]["losses"] == [None, 4.0]
    assert data["comparison"]["max_abs_train_loss_diff"] == pytest.approx(0.5)
    assert "| 3 | 3.0000 | - | - |" in (tmp_path / "mixed.md").read_text()


def test_resumed_log_keeps_latest_step_and_skips_warmup_after_restart(tmp_path):
    records = [
        _start(),
        _train(1, 5.0, 10.0, 0.5),
        _train(2, 4.0, 100.0, 0.5),
        _train(3, 9.9, 100.0, 0.5),  # lost with the crash; repeated after the resume
        _start(),
        _train(3, 3.0, 20.0, 0.5),  # first window after the resume: warm-up
        _train(4, 2.0, 300.0, 0.5),
    ]
    run = load_run(_write(tmp_path / "resumed.jsonl", records), "resumed")
    assert [r["loss"] for r in run.train] == [5.0, 4.0, 3.0, 2.0]
    assert run.warmup_steps == {1, 3}
    report([tmp_path / "resumed.jsonl"], ["resumed"], tmp_path, "one")
    data = json.loads((tmp_path / "one.json").read_text())
    assert data["runs"][0]["mean_tokens_per_s"] == pytest.approx(200.0)
    assert data["comparison"] is None


def test_bad_input(tmp_path, logs):
    with pytest.raises(ValueError, match="2 labels for 1 logs"):
        report([logs[0]], ["a", "b"], tmp_path, "x")
    with pytest.raises(ValueError, match="no train records"):
        report([_write(tmp_path / "empty.jsonl", [_start()])], None, tmp_path, "x")
    with pytest.raises(SystemExit):
        main([str(logs[0]), "--labels", "a", "b", "--stem", "x", "--results-dir", str(tmp_path)])


def test_cli(tmp_path, logs, capsys):
    args = [str(p) for p in logs] + ["--labels", "on", "off", "--stem", "cli", "--results-dir", str(tmp_path)]
    assert main(args + ["--note", "n"]) == 0
    (folder,) = tmp_path.glob("*-training-cli-*")
    assert capsys.readouterr().out.split() == [str(folder / f"training.{ext}") for ext in ("png", "md", "json")]


def test_a_set_is_named_by_the_commit_and_date_its_run_trained_at(tmp_path):
    """The folder names the run's own start date and commit (from its start record), not the report's tree."""
    from foxacp.bench.training import set_dir

    log = _write(tmp_path / "a.jsonl", [{**_start(), "commit": "0123abc" + "9" * 33}, _train(1, 2.0, 1e5, 0.5)])
    assert set_dir([log], "x", tmp_path).name == "2026-11-22-0123abc-training-x-h100"


def test_per_gpu_throughput_of_a_run_resumed_on_more_gpus(tmp_path):
    """1 GPU at 100 tokens/s, resumed on 4 at 400: every GPU did 100 all along (the first record after each start
    is warm-up and left out)."""
    import json

    def start(step, world):
        return {"kind": "start", "step": step, "world_size": world, "device": "cuda:0", "time": 1.0e9 + step}

    def train(step, tps):
        return {"kind": "train", "step": step, "loss": 3.0, "tokens_per_s": tps}

    records = [start(0, 1), train(1, 1.0), train(2, 100.0), start(2, 4), train(3, 1.0), train(4, 400.0)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    s = summarize(load_run(tmp_path / "log.jsonl", "run"))
    assert (s["mean_tokens_per_s"], s["tokens_per_s_per_gpu"], s["world_size"]) == (250.0, 100.0, "1/4")
    payload = {"title": "t", "note": "", "meta": {"date": "d", "commit": "c"}, "runs": [s], "comparison": None}
    assert "| 1/4 |" in markdown(payload | {"loss_by_step": []})


def test_the_index_dates_a_training_set_by_its_run_not_its_report(tmp_path):
    """Two runs of one comparison, January's report written after November's: November's stays current."""
    import json

    from foxacp.bench.index import collect

    root = tmp_path / "results"
    for name, when, commit in (("nov", 1794132000.0, "0" * 40), ("jan", 1767261600.0, "f" * 40)):
        start = {"kind": "start", "step": 0, "world_size": 1, "device": "cuda:0", "time": when, "commit": commit,
                 "peak": "NVIDIA H100 80GB HBM3: 989 TFLOP/s bf16"}  # fmt: skip
        log = tmp_path / f"{name}.jsonl"
        log.write_text(json.dumps(start) + "\n" + json.dumps({"kind": "train", "step": 1, "loss": 3.0}) + "\n")
        report([log], None, set_dir([log], "x", root), "training")
    sets = {s.path.name[:10]: s for s in collect(root)}
    assert sets["2026-01-01"].timestamp.startswith("2026-01-01") and not sets["2026-01-01"].current
    assert sets["2026-11-08"].current
