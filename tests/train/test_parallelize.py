"""``parallelize`` with activation checkpointing and compilation together (the 760M preset's setting): each block
is one compiled graph with no break, records its ACP statistics, and gives eager's gradients; ``uncompile``
undoes the compilation through the checkpoint wrapper."""

import pytest
import torch
from torch._dynamo.utils import counters

from foxacp.model import FoxLM, ModelConfig
from foxacp.train import distributed
from foxacp.train.distributed import Dist, parallelize, uncompile


def _model() -> FoxLM:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, acp=True, log_eps=-3.0,
        record_acp_stats=True, attn_backend="triton",
    )  # fmt: skip
    return FoxLM(cfg)


def _grads(model: FoxLM, ids: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """The loss and every parameter's gradient, in parameter order (the wrapper prefixes the names)."""
    model.zero_grad()
    loss = model(ids[:, :-1], labels=ids[:, 1:]).mean()
    loss.backward()
    return loss.detach(), [(n, p.grad.clone()) for n, p in model.named_parameters()]


@pytest.mark.parametrize("checkpointing", [True, False])
def test_compiled_checkpointed_blocks_are_whole_graphs_with_stats(monkeypatch, checkpointing):
    # aot_eager: Dynamo and AOT autograd as in training, without Inductor's C compiler.
    monkeypatch.setattr(distributed, "compile_block", lambda block, *_: block.compile(backend="aot_eager"))
    ids = torch.randint(64, (2, 71), generator=torch.Generator().manual_seed(1))
    eager = _model()
    want_loss, want = _grads(eager, ids)
    model = _model()
    torch.compiler.reset()
    counters.clear()
    one = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), distributed=False)
    parallelize(model, one, activation_checkpointing=checkpointing, compile=True, param_dtype=None)
    for _ in range(2):  # the second step replays the graphs
        loss, got = _grads(model, ids)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 1
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-6)
    assert len(got) == len(want)
    for (_, g), (name, w) in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, msg=name)
    stats = model.acp_stats()
    assert all(s is not None for s in stats)
    for s, e in zip(stats, eager.acp_stats(), strict=True):
        assert torch.equal(s.tiles_visited, e.tiles_visited) and torch.equal(s.tiles_causal, e.tiles_causal)
    uncompile(model)
    inner = [getattr(b, "_checkpoint_wrapped_module", b) for b in model.blocks]
    assert all(b._compiled_call_impl is None for b in inner)


def test_compiled_checkpointed_training_equals_eager_and_saves_plain_keys(small_config, tmp_path, monkeypatch):
    """``foxacp train`` with compile (aot_eager) and activation checkpointing: the losses of the eager run, and a
    checkpoint whose keys and weights are the eager run's (no wrapper or compile prefix)."""
    import foxacp
    from foxacp.train.loop import train
    from foxacp.train.metrics import read_log

    monkeypatch.setattr(distributed, "compile_block", lambda block, *_: block.compile(backend="aot_eager"))
    runs = {}
    for compiled in (False, True):
        cfg = small_config("steps=2", "activation_checkpointing=true", f"compile={str(compiled).lower()}",
                           out=tmp_path / str(compiled))  # fmt: skip
        train(cfg)
        runs[compiled] = cfg.run_dir
    losses = {c: [r["loss"] for r in read_log(d) if r["kind"] == "train"] for c, d in runs.items()}
    assert len(losses[True]) == 2
    for a, b in zip(losses[True], losses[False], strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert not any(r["kind"] == "compile_fallback" for r in read_log(runs[True]))
    eager, compiled = foxacp.load(runs[False]).state_dict(), foxacp.load(runs[True]).state_dict()
    assert list(compiled) == list(eager)
    for name, w in eager.items():
        torch.testing.assert_close(compiled[name], w, rtol=1e-4, atol=1e-5, msg=name)


def test_failed_compilation_of_checkpointed_blocks_falls_back_to_eager(small_config, tmp_path, monkeypatch):
    """The first-step fallback finds the compiled blocks inside their checkpoint wrappers."""
    from foxacp.train.loop import train
    from foxacp.train.metrics import read_log

    def failing_backend(gm, example_inputs):
        raise RuntimeError("simulated compiler failure")

    monkeypatch.setattr(distributed, "compile_block", lambda block, *_: block.compile(backend=failing_backend))
    cfg = small_config("steps=2", "activation_checkpointing=true", "compile=true", out=tmp_path / "fallback")
    train(cfg)
    records = read_log(cfg.run_dir)
    assert [r["step"] for r in records if r["kind"] == "compile_fallback"] == [0]
    assert len([r for r in records if r["kind"] == "train"]) == 2
