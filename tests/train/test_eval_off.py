"""eval_every=0 means no evaluation: the run needs no held-out data (it used to refuse a corpus whose held-out split
was shorter than one evaluation batch)."""

from __future__ import annotations

from foxacp.train.loop import train

from .run_helpers import losses, write_short_docs


def test_a_run_without_evaluation_does_not_need_a_held_out_batch(small_config, tmp_path):
    # 300 short documents: 5 held out (~450 tokens), fewer than one evaluation batch of 4 x 129 tokens; the
    # ~27k training tokens hold many steps of 8 rows.
    corpus = write_short_docs(tmp_path / "short", 300)
    cfg = small_config(f"corpus={corpus}", "eval_every=0", "steps=2")
    summary = train(cfg)
    assert summary["steps"] == 2 and sorted(losses(cfg.run_dir)) == [1, 2]
