"""The throughput bench with CUDA graphs, on the CPU with graphs faked on (blocks eager): the setting reaches the
decision, the gradients are kept, each micro-batch is marked, the rows say so (kills mutants a mutation run of the
change found the first tests missed)."""

from __future__ import annotations

import json

import torch

from foxacp.bench import throughput

BENCH_ARGS = ["--presets", "tiny", "--contexts", "48", "--micro-batch", "1", "--vocab", "80", "--warmup", "1",
              "--steps", "1", "--gates-regimes", "init"]  # fmt: skip


# B1 (measured_with without cuda_graphs): rows measured with other CUDA-graph settings are not resumed into.
def test_measured_with_keeps_the_cuda_graphs_setting():
    a = throughput.measured_with(throughput.parse_args([*BENCH_ARGS, "--cuda-graphs", "false"]))
    b = throughput.measured_with(throughput.parse_args([*BENCH_ARGS, "--cuda-graphs", "auto"]))
    assert a["cuda_graphs"] == "false" and a != b


# B3 (set_to_none=True), B4 (no prepare_graph_grads), B5 (--cuda-graphs ignored), B6 (parallelize not told):
# the bench with graphs forced on the CPU (blocks eager; the flag says false, graphs_wanted is made to say yes)
# keeps its gradients, marks each micro-batch, hands the setting to parallelize and records it in its rows.
def test_bench_with_graphs_keeps_gradients_and_marks_micro_batches(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    settings, told, models, marks = [], [], [], []
    real_parallelize, real_opt = throughput.parallelize, throughput.build_optimizer

    def wanted(setting, *a, **k):
        settings.append(setting)
        return True

    def parallelize(model, d, **kw):
        told.append(kw.get("cuda_graphs"))
        return real_parallelize(model, d, **kw | {"cuda_graphs": False})

    def build_optimizer(model, tcfg):
        models.append(model)
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # B4
        opt = real_opt(model, tcfg)
        real_zero = opt.zero_grad
        opt.zero_grad = lambda set_to_none=True: (models.append(set_to_none), real_zero(set_to_none=set_to_none))
        return opt

    monkeypatch.setattr(throughput, "graphs_wanted", wanted)
    monkeypatch.setattr(throughput, "parallelize", parallelize)
    monkeypatch.setattr(throughput, "build_optimizer", build_optimizer)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    assert throughput.main([*BENCH_ARGS, "--cuda-graphs", "false", "--out", str(tmp_path)]) == 0
    assert settings == [False]  # B5: the flag reaches graphs_wanted (which is forced to say yes here)
    assert told == [True]  # B6
    assert marks and all(v is False for v in models[1:])  # B3: zero_grad(set_to_none=False) only
    recs = [json.loads(x) for x in (tmp_path / "throughput.jsonl").read_text().splitlines()]
    assert recs and all(r["cuda_graphs"] is True for r in recs)
    assert "(graphs)" in (tmp_path / "throughput.md").read_text()
