import json
from pathlib import Path

import numpy as np
import pytest
import torch

from foxacp.data import (
    IGNORE_INDEX,
    BatchLoader,
    TokenSplit,
    make_batch,
    make_datasets,
    num_windows,
    validation_batches,
)

EOS = 256


def random_split(n_docs: int, seed: int = 0, max_len: int = 40) -> TokenSplit:
    """Documents of random length (1..max_len tokens plus EOS) of random byte ids."""
    rng = np.random.default_rng(seed)
    docs = [[*rng.integers(0, 256, rng.integers(1, max_len + 1)), EOS] for _ in range(n_docs)]
    offsets = np.cumsum([0, *(len(d) for d in docs)])
    return TokenSplit(np.concatenate(docs).astype(np.uint16), offsets)


def doc_index(split: TokenSplit) -> np.ndarray:
    """The document of every token: the independent reference for packing."""
    return np.repeat(np.arange(split.num_documents), np.diff(split.offsets))


def test_windows_inputs_and_labels():
    split, T = random_split(50), 16
    windows = np.array([3, 0, num_windows(split, T) - 1])
    batch = make_batch(split, windows, T, packing=False)
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].shape == batch["labels"].shape == (3, T)
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int64
    tokens = torch.from_numpy(split.tokens.astype(np.int64))
    for row, w in enumerate(windows):
        assert torch.equal(batch["input_ids"][row], tokens[w * T : w * T + T])
        assert torch.equal(batch["labels"][row], tokens[w * T + 1 : w * T + T + 1])
    assert num_windows(split, T) == (split.num_tokens - 1) // T


def test_packing_matches_document_reference():
    split, T = random_split(60, seed=1), 24
    doc = doc_index(split)
    windows = np.arange(num_windows(split, T))
    batch = make_batch(split, windows, T, packing=True)
    plain = make_batch(split, windows, T, packing=False)
    assert torch.equal(batch["input_ids"], plain["input_ids"])
    expected_cuts = [0]
    for row, w in enumerate(windows):
        s = w * T
        crosses = doc[s + 1 : s + T + 1] != doc[s : s + T]
        labels = batch["labels"][row].numpy()
        np.testing.assert_array_equal(labels == IGNORE_INDEX, crosses)
        np.testing.assert_array_equal(labels[~crosses], plain["labels"][row].numpy()[~crosses])
        # Every masked position is a document's EOS: the EOS is the last token of its segment.
        assert (batch["input_ids"][row].numpy()[crosses] == EOS).all()
        starts = [p for p in range(1, T) if doc[s + p] != doc[s + p - 1]]
        expected_cuts += [row * T + p for p in starts] + [(row + 1) * T]
    cu = batch["cu_seqlens"]
    assert cu.dtype == torch.int32 and cu.tolist() == expected_cuts
    assert batch["max_seqlen"] == int(np.diff(expected_cuts).max())


def take(loader, n: int) -> list[dict]:
    return [next(loader) for _ in range(n)]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]) if torch.is_tensor(x[key]) else x[key] == y[key]


def test_loader_is_seeded_and_covers_each_epoch():
    split, T, B = random_split(40, seed=2), 8, 4
    loader = BatchLoader(split, T, B, seed=5)
    steps = loader.steps_per_epoch
    assert steps == num_windows(split, T) // B
    epoch = take(loader, steps)
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["step"] == 0
    assert_same(epoch, take(BatchLoader(split, T, B, seed=5), steps))
    rows = torch.cat([b["input_ids"] for b in epoch])
    assert len({tuple(r.tolist()) for r in rows}) == steps * B  # no window twice in an epoch
    other_seed = take(BatchLoader(split, T, B, seed=6), steps)
    assert not torch.equal(rows, torch.cat([b["input_ids"] for b in other_seed]))
    next_epoch = take(loader, steps)
    assert not torch.equal(rows, torch.cat([b["input_ids"] for b in next_epoch]))


@pytest.mark.parametrize("packing", [False, True])
def test_resume_gives_the_same_next_batches(packing: bool):
    split, T, B = random_split(40, seed=3), 8, 4
    reference = BatchLoader(split, T, B, seed=1, packing=packing)
    stop = reference.steps_per_epoch + 2  # resume inside the second epoch
    expected = take(reference, stop + 2 * reference.steps_per_epoch)[stop:]

    interrupted = BatchLoader(split, T, B, seed=1, packing=packing)
    take(interrupted, stop)
    state = json.loads(json.dumps(interrupted.state_dict()))  # survives a checkpoint round trip
    resumed = BatchLoader(split, T, B, seed=1, packing=packing)
    resumed.load_state_dict(state)
    assert_same(take(resumed, len(expected)), expected)

    with pytest.raises(ValueError, match="seed"):
        BatchLoader(split, T, B, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(split, T, 2 * B, seed=1).load_state_dict(state)


def concat_ranks(batches: list[dict], T: int) -> dict:
    """One global batch from the ranks' local batches, cu_seqlens shifted by the rows before."""
    out = {k: torch.cat([b[k] for b in batches]) for k in ("input_ids", "labels")}
    if "cu_seqlens" in batches[0]:
        cuts, base = [0], 0
        for b in batches:
            cuts += (b["cu_seqlens"][1:] + base).tolist()
            base += b["input_ids"].numel()
        out["cu_seqlens"] = torch.tensor(cuts, dtype=torch.int32)
        out["max_seqlen"] = max(b["max_seqlen"] for b in batches)
    return out


@pytest.mark.parametrize("packing", [False, True])
def test_global_batch_does_not_depend_on_world_size(packing: bool):
    split, T, G = random_split(60, seed=4), 8, 4
    single = BatchLoader(split, T, G, seed=3, packing=packing)
    steps = single.steps_per_epoch + 3
    expected = take(single, steps)
    for world in (2, 4):
        ranks = [BatchLoader(split, T, G, seed=3, rank=r, world_size=world, packing=packing) for r in range(world)]
        for step in range(steps):
            local = [next(loader) for loader in ranks]
            assert local[0]["input_ids"].shape == (G // world, T)
            assert_same([concat_ranks(local, T)], [expected[step]])
    state = single.state_dict()
    shard = BatchLoader(split, T, G, seed=3, rank=1, world_size=2, packing=packing)
    shard.load_state_dict(state)  # a 1-GPU checkpoint resumes on 2 GPUs
    assert torch.equal(next(shard)["input_ids"], next(single)["input_ids"][G // 2 :])


def test_validation_batches_are_fixed_and_sharded():
    split, T, B = random_split(30, seed=5), 8, 4
    val = validation_batches(split, T, B, num_batches=2)
    assert len(val) == 2
    tokens = torch.from_numpy(split.tokens.astype(np.int64))
    assert torch.equal(val[1]["input_ids"][0], tokens[4 * T : 5 * T])
    assert_same(val, validation_batches(split, T, B, num_batches=2))
    shards = [validation_batches(split, T, B, 2, rank=r, world_size=2) for r in range(2)]
    for i in range(2):
        assert_same([concat_ranks([s[i] for s in shards], T)], [val[i]])
    # A short split: every window once, the last batch filled up with rows that score nothing.
    n = num_windows(split, T)
    whole = validation_batches(split, T, B, num_batches=1000)
    assert len(whole) == -(-n // B)
    labels = torch.cat([b["labels"] for b in whole])
    scored = (labels != IGNORE_INDEX).any(dim=1)
    assert scored.tolist() == [True] * n + [False] * (len(whole) * B - n)
    assert torch.equal(torch.cat([b["input_ids"] for b in whole])[:n], tokens[: n * T].view(n, T))


def test_bad_loader_arguments():
    split = random_split(10, seed=6)
    with pytest.raises(ValueError, match="multiple of world_size"):
        BatchLoader(split, 8, 3, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(split, 8, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        BatchLoader(split, 8, 1000)
    with pytest.raises(ValueError, match="held-out split"):
        validation_batches(split, 10_000, 1, 1)
    with pytest.raises(ValueError, match="seq_len"):
        BatchLoader(split, 0, 1)


def test_make_datasets_on_the_stdlib(tmp_path: Path):
    tok, train, val = make_datasets(
        "stdlib",
        "byte",
        tmp_path,
        seq_len=64,
        batch_size=4,
        val_batches=3,
        packing=True,
        max_bytes=100_000,
        progress=False,
    )
    assert tok.vocab_size == 257
    batch = next(train)
    assert batch["input_ids"].shape == (4, 64) and batch["cu_seqlens"][-1] == 4 * 64
    assert len(val) == 3 and val[0]["labels"].shape == (4, 64)
    assert tok.decode(val[0]["input_ids"][0].tolist())  # real text
    with pytest.raises(ValueError, match="tokens: fewer than one"):
        make_datasets("stdlib", "byte", tmp_path, 10**7, 4, max_bytes=100_000, progress=False)


def test_a_loader_refuses_the_state_of_other_data_with_the_same_shape():
    """Same seed, batch, length and window count, other tokens (an edited corpus): refused as another stream;
    a state without the data's identity (older checkpoints) is taken on its shape alone."""
    import dataclasses

    split = random_split(60)
    a = BatchLoader(dataclasses.replace(split, sha1="a" * 40), 8, 2)
    b = BatchLoader(dataclasses.replace(split, sha1="b" * 40), 8, 2)
    next(a)
    with pytest.raises(ValueError, match="loader state is of data aaaaaaaaaaaa"):
        b.load_state_dict(a.state_dict())
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "data_sha1"})
