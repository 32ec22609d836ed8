"""train/memory.py (activation_checkpointing="auto"): saved_bytes' storage accounting,
step_memory's parts (the FSDP-gathered weights, the head's temporaries, the block input) and that the probe
leaves the recorded ACP statistics alone."""

from __future__ import annotations

import contextlib

import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.ops.linear_ce import CHUNK_ELEMENTS
from foxacp.train.memory import STATE_BYTES_PER_PARAM, saved_bytes, step_memory

V, D = 97, 32


def _model(**kw) -> FoxLM:
    torch.manual_seed(0)
    kw = dict(n_layers=3, d_model=D, n_heads=2, vocab_size=V, attn_backend="torch", acp=False) | kw
    return FoxLM(ModelConfig(**kw))


def test_a_saved_view_of_an_excluded_storage_at_an_offset_is_excluded():
    """Exclusion is by storage: a slice of a parameter that starts inside it (data_ptr != the storage's) is the
    parameter's memory, held anyway."""
    x = torch.randn(5, 10, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(13, 10))

    def fn() -> torch.Tensor:
        return (x * 2) @ w[3:].T  # saves x * 2 (200 bytes) and the view w[3:] (offset 3 rows, 120 bytes in)

    assert saved_bytes(fn, {w.untyped_storage().data_ptr()}) == 5 * 10 * 4


def test_a_saved_view_counts_its_whole_storage():
    """What is held is the storage a saved view keeps alive, not the view's own elements."""
    big = torch.randn(1000, requires_grad=True)

    def fn() -> torch.Tensor:
        s = big.exp()  # a (1000,) result (4000 bytes), saved by exp
        part = s[:10]
        return part * part  # saves the view part twice: s's storage, already counted

    assert saved_bytes(fn) == 4000

    def only_view() -> torch.Tensor:
        s = big * 3  # mul by a scalar saves nothing of s
        part = s[:10]
        return part * part  # the view keeps all of s (4000 bytes) alive

    assert saved_bytes(only_view) == 4000


def test_sharded_state_adds_two_gathered_blocks():
    """With FSDP each device holds its shard of the state plus two blocks' full weights gathered at a time."""
    model = _model()
    n_params = sum(p.numel() for p in model.parameters())
    block_bytes = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())
    one = step_memory(model, 1, 64, autocast=contextlib.nullcontext())
    four = step_memory(model, 1, 64, world_size=4, autocast=contextlib.nullcontext())
    assert one.state == STATE_BYTES_PER_PARAM * n_params
    assert four.state == STATE_BYTES_PER_PARAM * n_params // 4 + 2 * block_bytes


def test_head_temporaries_are_one_chunk_of_logits_and_its_gradient_and_the_weight_gradient():
    """A micro-batch smaller than the loss's chunk: the chunk is the whole micro-batch (B * T rows of float32
    logits and their gradient), plus the float32 gradient of the (V, d) head weight."""
    model = _model()
    B, T = 2, 70
    assert B * T < CHUNK_ELEMENTS // V  # one chunk holds every row
    mem = step_memory(model, B, T, autocast=contextlib.nullcontext())
    assert mem.head_temp == 2 * B * T * V * 4 + V * D * 4


def test_block_input_is_the_residual_stream_bytes():
    """A checkpointed block keeps its float32 input (B, T, d_model)."""
    model = _model()
    B, T = 2, 50
    mem = step_memory(model, B, T, autocast=contextlib.nullcontext())
    h = model.embed(torch.zeros(B, T, dtype=torch.int64))
    assert mem.block_input == B * T * D * h.element_size() == B * T * D * 4


def test_the_probe_leaves_recorded_acp_statistics_alone():
    """step_memory runs a block's forward; a model that records ACP statistics keeps those of its last real
    forward, not the probe's."""
    model = _model(record_acp_stats=True, acp=True, log_eps=-3.0)
    ids = torch.randint(0, V, (1, 40))
    model(ids)
    before = [b.attn.last_stats for b in model.blocks]
    assert before[0] is not None
    step_memory(model, 2, 64, autocast=contextlib.nullcontext())
    assert all(b.attn.last_stats is s for b, s in zip(model.blocks, before, strict=True))


def test_a_step_needing_exactly_the_memory_fraction_is_not_checkpointed():
    """Checkpointing turns on for MORE than MEMORY_FRACTION of the capacity; exactly that share keeps it off."""
    from foxacp.train.memory import MEMORY_FRACTION, StepMemory, checkpointing_wanted

    mem = StepMemory(state=100, block=10, block_input=1, head=40, head_temp=10, n_layers=1)  # 170 bytes
    assert mem.peak(False) == 170 and MEMORY_FRACTION * 200 == 170
    assert checkpointing_wanted("auto", lambda: mem, 200) == (False, mem)
    assert checkpointing_wanted("auto", lambda: mem, 199) == (True, mem)

    def never() -> StepMemory:
        raise AssertionError("the compiled block measured where the eager bound fits")

    assert checkpointing_wanted("auto", lambda: mem, 200, never) == (False, mem)  # exactly: it fits, no compiling
