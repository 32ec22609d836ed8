"""The end-to-end decoding benchmark runs on CPU with the tiny preset and writes its results."""

import json

import pytest
import torch

from foxacp.bench.decode import build_model, gate_table, gates_from_table, main, parse_args, step_bytes
from foxacp.model import FoxLM, ModelConfig
from foxacp.testing import counting_block_step
from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)


def test_tiny_run_writes_rows(tmp_path, capsys):
    out = tmp_path / "res"
    args = ["--preset", "tiny", "--batch", "1,2", "--contexts", "70", "--steps", "3", "--bandwidth", "10"]
    args += ["--attn-backend", "torch"]
    assert main([*args, "--out", str(out)]) == 0
    rows = json.loads((out / "decode-e2e.json").read_text())["rows"]
    assert [(r["batch"], r["mode"], r["decode"]) for r in rows] == [
        (b, m, "eager") for b in (1, 2) for m in ("exact", "acp")
    ]
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["prefill_s"] > 0 and 0 < r["kept_kv"] <= 1
        assert r["gates"] == "synthetic" and r["context"] == 70
    assert "| tokens/s |" in (out / "decode-e2e.md").read_text()
    assert "tokens/s" in capsys.readouterr().out.splitlines()[-len(rows) - 2]


def test_schedule_holds_during_the_run_and_reaches_the_record(tmp_path, monkeypatch):
    # Which kernel a schedule runs is tested in tests/ops/test_kvcache.py; here, that the flag sets it for the
    # run only.
    from foxacp.bench import decode
    from foxacp.ops import triton_decode

    seen = []
    real = decode.run_case
    monkeypatch.setattr(decode, "run_case", lambda *a: seen.append(triton_decode.SCHEDULE) or real(*a))
    args = ["--preset", "tiny", "--batch", "1", "--contexts", "70", "--steps", "2", "--bandwidth", "10"]
    assert main([*args, "--attn-backend", "torch", "--schedule", "balanced", "--out", str(tmp_path)]) == 0
    assert seen == ["balanced"] and triton_decode.SCHEDULE == "auto"
    assert json.loads((tmp_path / "decode-e2e.json").read_text())["meta"]["decode_schedule"] == "balanced"


def test_step_bytes_counts_weights_and_kept_cache():
    model = FoxLM(ModelConfig.from_preset("tiny"))
    weights = sum(p.numel() * 4 for n, p in model.named_parameters() if n != "embed.weight")
    cfg = model.config
    per_token = 2 * cfg.kv_heads * cfg.head_dim * 2 + 4 * cfg.n_heads
    kept = [1.0, 0.5, 0.25, 0.0]
    assert step_bytes(model, 3, 100, kept, 2) == weights + 3 * 100 * per_token * sum(kept)
    assert step_bytes(model, 3, 100, [0.0] * 4, 2) == weights


# Recorded gates of 2 layers x 2 rows, one constant per (layer, row): GATES[l][r].
GATES = [[-5.0, -2.0], [-0.01, -0.5]]


def gates_file(path):
    """A (2, 2, 8, 2) gates file holding GATES (time and heads are tiled to the benchmark's shape)."""
    torch.save(torch.tensor(GATES)[:, :, None, None].expand(2, 2, 8, 2).clone(), path)
    return str(path)


def cached_gate_steps(cache, n):
    """Per layer, the gate of each row between its first n cached positions: (layers, B, n - 1, Hq)."""
    return torch.stack([layer.c[:, :n].diff(dim=1) for layer in cache.layers])


def expected_steps(layers, batch, file_layer=None):
    """(layers, batch) the gate model layer l, row b must see: GATES[l mod 2 or file_layer][b mod 2]."""
    return torch.tensor([[GATES[l % 2 if file_layer is None else file_layer][b % 2] for b in range(batch)]
                         for l in range(layers)])  # fmt: skip


def run_prefill_and_step(args, batch=3, context=20):
    """A tiny model's prefill of ``context`` tokens and one decode step under the file's gate table."""
    model = build_model("tiny", torch.float32, torch.device("cpu"), "torch")
    cfg = model.config
    table = gate_table(args, batch, context, context + 4, cfg.n_heads, torch.device("cpu"))
    cache = model.new_cache(batch, context + 4)
    prompts = torch.randint(cfg.vocab_size, (batch, context), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), gates_from_table(model, table, cache):
        model(prompts, cache=cache)
        model(prompts[:, -1:], cache=cache)
    return table, cached_gate_steps(cache, context + 1)


def test_model_layer_reads_file_layer_l_mod_n_and_row_b_mod_batch(tmp_path):
    args = parse_args(["--preset", "tiny", "--gates", gates_file(tmp_path / "g.pt")])
    assert args.gates_label == "file:g.pt (layer l <- l mod 2)"
    table, steps = run_prefill_and_step(args, batch=3)
    assert table.shape == (2, 2, 24, 4)  # the file's layers and batch: no per-sequence copy
    want = expected_steps(4, 3)[:, :, None, None].expand_as(steps)
    assert torch.allclose(steps, want, atol=1e-5)  # prefill and the decode step alike
    assert gate_table(args, 560, 20, 24, 4, torch.device("cpu")).shape == (2, 2, 24, 4)
    assert gate_table(args, 1, 20, 24, 4, torch.device("cpu")).shape == (2, 1, 24, 4)  # batch cropped


def test_gates_layer_gives_every_model_layer_one_file_layer(tmp_path):
    path = gates_file(tmp_path / "g.pt")
    args = parse_args(["--preset", "tiny", "--gates", path, "--gates-layer", "1"])
    assert args.gates_label == "file:g.pt layer 1"
    assert parse_args(["--gates", path, "--gates-layer", "-2"]).gates_label == "file:g.pt layer 0"
    with pytest.raises(ValueError, match="out of range"):
        parse_args(["--gates", path, "--gates-layer", "2"])
    table, steps = run_prefill_and_step(args, batch=3)
    assert table.shape == (1, 2, 24, 4)
    want = expected_steps(4, 3, file_layer=1)[:, :, None, None].expand_as(steps)
    assert torch.allclose(steps, want, atol=1e-5)


def test_synthetic_table_is_one_layer_with_a_row_per_sequence():
    args = parse_args(["--preset", "tiny"])
    assert args.gates_label == "synthetic" and args.recorded is None
    table = gate_table(args, 3, 20, 24, 4, torch.device("cpu"))
    assert table.shape == (1, 3, 24, 4)
    assert not torch.equal(table[0, 0], table[0, 1])  # each row its own noise


def test_gates_from_table_restores_the_layers_own_gates(tmp_path):
    model = build_model("tiny", torch.float32, torch.device("cpu"), "torch")
    args = parse_args(["--gates", gates_file(tmp_path / "g.pt")])
    table = gate_table(args, 2, 8, 8, model.config.n_heads, torch.device("cpu"))
    cache = model.new_cache(2, 8)
    x = torch.randn(2, 3, model.config.d_model)
    own = [block.attn.log_fgate(x) for block in model.blocks]
    with pytest.raises(RuntimeError, match="inside"), gates_from_table(model, table, cache):
        inside = [block.attn.log_fgate(x) for block in model.blocks]
        raise RuntimeError("inside")
    assert torch.allclose(inside[3], torch.tensor(GATES[1])[:, None, None].expand(2, 3, 4))
    for block, gates in zip(model.blocks, own, strict=True):
        assert "log_fgate" not in vars(block.attn)
        assert torch.equal(block.attn.log_fgate(x), gates) and not torch.equal(gates, inside[0])


def test_file_gates_label_reaches_the_results(tmp_path):
    out = tmp_path / "res"
    args = ["--preset", "tiny", "--batch", "3", "--contexts", "40", "--steps", "2", "--bandwidth", "10"]
    args += ["--attn-backend", "torch", "--gates", gates_file(tmp_path / "g.pt")]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads((out / "decode-e2e.json").read_text())
    assert result["meta"]["gates"] == "file:g.pt (layer l <- l mod 2)"
    assert {r["gates"] for r in result["rows"]} == {"file:g.pt (layer l <- l mod 2)"}
    assert "file:g.pt (layer l <- l mod 2) gates" in (out / "decode-e2e.md").read_text()


def test_compiled_block_step_is_one_graph_for_every_layer_under_file_gates(tmp_path):
    """Each layer reads its own file layer, yet torch.compile traces one block graph for all of them."""
    model = build_model("tiny", torch.float32, torch.device("cpu"), "torch")
    args = parse_args(["--gates", gates_file(tmp_path / "g.pt")])
    table = gate_table(args, 3, 16, 20, model.config.n_heads, torch.device("cpu"))
    cache = model.new_cache(3, 20)
    run_block, graphs = counting_block_step()
    with torch.no_grad(), gates_from_table(model, table, cache):
        model(torch.zeros(3, 16, dtype=torch.long), cache=cache)
        for _ in range(2):
            model(torch.zeros(3, 1, dtype=torch.long), cache=cache, run_block=run_block)
    assert len(graphs) == 1
    steps = cached_gate_steps(cache, 18)
    assert torch.allclose(steps, expected_steps(4, 3)[:, :, None, None].expand_as(steps), atol=1e-5)


def test_compile_mode_reaches_torch_compile_and_the_record(monkeypatch):
    from foxacp.infer import graph

    seen = []
    monkeypatch.setattr(graph.torch, "compile", lambda fn, **kw: seen.append(kw) or fn)
    graph.compiled_block_step.cache_clear()
    try:
        assert graph.compiled_block_step("max-autotune-no-cudagraphs") is graph.block_step
        assert graph.compiled_block_step("max-autotune-no-cudagraphs") is graph.block_step  # cached per mode
        graph.compiled_block_step()
        graph.compiled_block_step(pdl=True)
    finally:
        graph.compiled_block_step.cache_clear()
    # Without a mode, Inductor's combo_kernels (experiment 063), and with pdl its kernels launched as ours are
    # (experiment 069); torch.compile takes a mode or options, not both.
    assert seen == [
        dict(dynamic=False, mode="max-autotune-no-cudagraphs"),
        dict(dynamic=False, options={"combo_kernels": True}),
        dict(dynamic=False, options={"combo_kernels": True, "triton.enable_pdl": True}),
    ]
    assert parse_args(["--compile", "--compile-mode", "max-autotune"]).compile_mode == "max-autotune"


def test_our_kernels_launch_dependent_inside_the_compiled_step_with_pdl_only(monkeypatch):
    # PDL pays only with Inductor's kernels and ours both on it (experiment 069): the step compiled with pdl runs
    # its blocks among_dependent_launches, the one without does not, and nothing outside either does.
    from foxacp.infer import graph
    from foxacp.ops import config

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(config, "_capability", lambda index: (9, 0))  # a Hopper GPU, as far as the check knows
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("FOXACP_PDL", raising=False)
    monkeypatch.setattr(graph.torch, "compile", lambda fn, **kw: fn)
    monkeypatch.setattr(graph, "block_step", lambda: config.dependent_launch(cuda))  # reports what ours would do
    graph.compiled_block_step.cache_clear()
    try:
        assert graph.compiled_block_step(pdl=True)() is True
        assert graph.compiled_block_step()() is False
        assert not config.dependent_launch(cuda)
    finally:
        graph.compiled_block_step.cache_clear()


def test_compiled_block_step_is_one_entry_however_its_arguments_are_spelt(monkeypatch):
    # generate passes pdl=..., the bench a mode of None, other callers nothing: each spelling compiled block_step
    # anew (functools.cache keys on the spelling), and every compiled wrapper counts toward Dynamo's recompile limit.
    from foxacp.infer import graph

    monkeypatch.setattr(graph.torch, "compile", lambda fn, **kw: object())  # a new object per compilation
    graph.compiled_block_step.cache_clear()
    try:
        plain = graph.compiled_block_step()
        assert graph.compiled_block_step(None) is plain and graph.compiled_block_step(pdl=False) is plain
        assert graph.compiled_block_step(None, pdl=False) is plain and graph.compiled_block_step(mode=None) is plain
        assert graph.compiled_block_step(pdl=True) is graph.compiled_block_step(None, pdl=True) is not plain
        mode = graph.compiled_block_step("max-autotune")
        assert graph.compiled_block_step("max-autotune", pdl=True) is mode  # a mode takes no options: no PDL
    finally:
        graph.compiled_block_step.cache_clear()


def test_the_compiled_rows_ask_for_pdl_where_the_device_has_it(tmp_path, monkeypatch):
    # As generate does (experiment 069): the bench's compiled rows must measure the step generate(compile=True) runs.
    from foxacp.bench import decode

    asked = []
    monkeypatch.setattr(decode, "dependent_launch_available", lambda device: device.type == "cpu")  # "here"
    monkeypatch.setattr(decode, "compiled_block_step", lambda mode=None, *, pdl: asked.append((mode, pdl)))  # eager
    args = ["--preset", "tiny", "--batch", "1", "--contexts", "70", "--steps", "2", "--bandwidth", "10"]
    assert main([*args, "--attn-backend", "torch", "--compile", "--out", str(tmp_path)]) == 0
    assert asked and set(asked) == {(None, True)}
