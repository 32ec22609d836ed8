"""The throughput table on CPU with the tiny preset: records, resuming, recorded gates, ACP gains."""

from __future__ import annotations

import json

import pytest
import torch

from foxacp.bench import throughput
from foxacp.bench.throughput import Config, gains, micro_batch_size, use_recorded_gates
from foxacp.model import FoxLM, ModelConfig

ARGS = ["--presets", "tiny", "--contexts", "48", "--micro-batch", "1", "--vocab", "80", "--warmup", "1", "--steps", "1"]


def test_micro_batch_keeps_the_presets_tokens():
    assert micro_batch_size("125M", 4096) == 8 and micro_batch_size("125M", 16384) == 2
    assert micro_batch_size("760M", 16384) == 1 and micro_batch_size("760M", 65536) == 1


def test_runs_resumes_and_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the PyTorch paths: the interpreter is slow here
    gates = torch.nn.functional.logsigmoid(torch.randn(2, 1, 40, 3) + 3.0)
    torch.save(gates, tmp_path / "gates.pt")
    args = [*ARGS, "--gates", str(tmp_path / "gates.pt"), "--out", str(tmp_path / "out")]
    assert throughput.main(args) == 0
    lines = (tmp_path / "out" / "throughput.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert sorted(r["key"] for r in recs) == sorted(
        f"tiny/48/{m}/{g}" for m in ("exact", "acp") for g in ("init", "recorded")
    )
    for r in recs:
        assert r["tokens_per_step"] == 48 and r["tokens_per_s"] > 0 and r["compile"] is False
        assert r["gates"] == ("init" if r["regime"] == "init" else "recorded:gates.pt")
        assert 0.0 <= r["acp_saving"] <= 1.0 and (r["mode"] == "acp" or r["acp_saving"] == 0.0)
    summary = json.loads((tmp_path / "out" / "throughput.json").read_text())
    assert len(summary["rows"]) == 4 and len(summary["gains"]) == 2
    assert "| tiny | 48 | acp | recorded:gates.pt |" in (tmp_path / "out" / "throughput.md").read_text()

    def must_not_run(*a, **k):
        raise AssertionError("a configuration already measured ran again")

    monkeypatch.setattr(throughput, "measure", must_not_run)
    assert throughput.main(args) == 0
    assert (tmp_path / "out" / "throughput.jsonl").read_text().splitlines() == lines


def test_recorded_gates_replace_the_values_and_keep_the_gradient():
    torch.manual_seed(0)
    model = FoxLM(ModelConfig(vocab_size=40, n_layers=3, d_model=32, n_heads=2, attn_backend="torch"))
    gates = -torch.rand(2, 1, 5, 1)  # 2 layers, 5 steps, 1 head: tiled to 3 layers, 12 steps, 2 heads
    use_recorded_gates(model, gates, batch=2, context=12)
    ids = torch.randint(0, 40, (2, 12))
    seen = model.forget_gates(ids)
    for layer in range(3):
        want = gates[layer % 2, 0, :, 0].repeat(3)[:12]
        assert torch.equal(seen[layer], want[None, :, None].expand(2, 12, 2))
    model(ids).sum().backward()
    assert all(block.attn.fgate.weight.grad.abs().sum() > 0 for block in model.blocks)


def test_gains_pair_acp_with_exact_and_the_paper():
    rows = [
        {"key": Config("125M", 16384, "exact", "init").key, "preset": "125M", "context": 16384, "mode": "exact",
         "regime": "init", "tokens_per_s": 100.0},
        {"key": Config("125M", 16384, "acp", "init").key, "preset": "125M", "context": 16384, "mode": "acp",
         "regime": "init", "tokens_per_s": 150.0},
        {"key": Config("125M", 4096, "acp", "init").key, "preset": "125M", "context": 4096, "mode": "acp",
         "regime": "init", "tokens_per_s": 150.0},
    ]  # fmt: skip
    (g,) = gains(rows)
    assert g["gain"] == pytest.approx(0.5) and g["paper_gain"] == 0.45 and g["context"] == 16384


def test_modes_share_a_model_and_alternate_round_by_round(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    seen, configs = [], set()
    real = throughput.use_config

    def spy(model, cfg):
        seen.append("acp" if cfg.acp else "exact")
        configs.add(id(cfg))
        real(model, cfg)

    monkeypatch.setattr(throughput, "use_config", spy)
    args = [*ARGS, "--rounds", "2", "--steps", "2", "--gates-regimes", "init", "--out", str(tmp_path)]
    assert throughput.main(args) == 0
    # warm-up of each mode, then two rounds of both in turn (the profiled step runs on CUDA only)
    assert seen == ["exact", "acp"] * 3
    assert len(configs) == 2  # the same two config objects every round (no recompiles on a new object)
    recs = [json.loads(x) for x in (tmp_path / "throughput.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in recs] == ["exact", "acp"]
    for r in recs:
        assert r["rounds"] == 2 and len(r["step_ms_all"]) == 4
    assert "| tiny | 48 | exact | init | 48 |" in (tmp_path / "throughput.md").read_text()


def test_pairs_group_modes_by_preset_context_and_regime():
    cs = [Config("125M", t, m, g) for g in ("init", "recorded") for t in (4096, 8192) for m in ("exact", "acp")]
    groups = throughput.pairs(cs)
    assert [[c.mode for c in g] for g in groups] == [["exact", "acp"]] * 4
    assert [(g[0].context, g[0].regime) for g in groups] == [(4096, "init"), (8192, "init"), (4096, "recorded"),
                                                             (8192, "recorded")]  # fmt: skip


def test_rows_with_cuda_graphs_show_the_reserved_peak_too():
    # After recording, the graphs' pool holds the activations outside the allocated count (068: 9.0 GiB allocated,
    # 28.9 reserved at 360M 4k), so a graph row that showed only the allocated peak would understate its memory.
    graphs = {"peak_mem_gib": 9.04, "peak_reserved_gib": 28.93, "cuda_graphs": True}
    assert throughput._peak(graphs) == "9.0 (28.9 reserved)"
    assert throughput._peak(graphs | {"cuda_graphs": False}) == "9.0"
    assert throughput._peak({"peak_mem_gib": None, "cuda_graphs": False}) == throughput._f(None, ".1f")


@pytest.mark.parametrize("flag", [None, "auto", "false"])
def test_cuda_graphs_settings_run_and_resume_as_one(tmp_path, monkeypatch, flag):
    # "--cuda-graphs auto" once raised KeyError; leaving the flag out means auto, so a resume with either spelling
    # takes the rows already measured.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    out = tmp_path / "out"
    args = [*ARGS, "--gates-regimes", "init", "--modes", "exact", "--out", str(out)]
    assert throughput.main([*args, *(["--cuda-graphs", flag] if flag else [])]) == 0
    rec = json.loads((out / "throughput.jsonl").read_text().splitlines()[0])
    assert rec["cuda_graphs"] is False  # the CPU: never graphs
    if flag != "false":
        monkeypatch.setattr(throughput, "measure", lambda *a, **k: pytest.fail("measured again"))
        assert throughput.main([*args, "--cuda-graphs", "auto"]) == 0
        assert throughput.main(args) == 0


def test_cuda_graphs_true_without_cuda_is_refused_at_the_command_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit) as e:
        throughput.main([*ARGS, "--cuda-graphs", "true", "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "--cuda-graphs true needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_cpu_run_says_fp32_not_bf16(tmp_path, monkeypatch):
    # bf16 autocast is on only on CUDA: the CPU's table said "bf16" while its steps ran in float32.
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    out = tmp_path / "out"
    assert throughput.main([*ARGS, "--gates-regimes", "init", "--modes", "exact", "--out", str(out)]) == 0
    assert json.loads((out / "throughput.jsonl").read_text().splitlines()[0])["dtype"] == "fp32"
    text = (out / "throughput.md").read_text()
    assert "compile auto, fp32," in text and "bf16" not in text


def test_the_table_header_names_the_rows_dtype_and_bf16_for_rows_written_before_it_was_recorded():
    # Rows of a run resumed from before the dtype was recorded ran as the header said then (bf16); mixed rows
    # name both.
    meta = {"device": "cpu", "torch": "t", "triton": "t", "commit": "c", "date": "d", "vocab": 80}
    meta |= {"steps": 1, "warmup": 1}
    row = {"preset": "tiny", "context": 48, "mode": "exact", "regime": "init", "error": "x"}
    for dtypes, header in (([None], "bf16"), (["fp32"], "fp32"), (["bf16", "fp32", None], "bf16/fp32")):
        rows = [row if d is None else row | {"dtype": d} for d in dtypes]
        assert f"(compile auto, {header}, activation" in throughput.markdown(rows, meta)


def test_flag_maps_the_command_lines_words_and_keeps_a_presets_bool():
    # --activation-checkpointing falls back to the preset's setting, a bool or "auto": a bool must pass unchanged.
    assert throughput._flag("true") is True and throughput._flag("false") is False
    assert throughput._flag("auto") == "auto"
    assert throughput._flag(True) is True and throughput._flag(False) is False
