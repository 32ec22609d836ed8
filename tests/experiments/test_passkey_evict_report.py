"""experiments/053-passkey-evict-cpu/report.py on a small made-up eval record: the set's files and tables."""

import json

from tests.experiments import EXPERIMENTS, load_script

SCRIPT = EXPERIMENTS / "053-passkey-evict-cpu" / "report.py"


def _grid(answers):
    trials = [
        {"length": n, "depth": d, "key": "12345", "answer": a, "correct": a == " 12345."}
        for (n, d), a in zip([(256, 0.0), (256, 1.0), (512, 0.0), (512, 1.0)], answers, strict=True)
    ]
    return {"trials": trials, "depths": [0.0, 1.0], "trials_per_cell": 1, "digits": 5, "overall": 0.0}


def test_report_writes_the_set(tmp_path):
    report = load_script(SCRIPT)
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "train").mkdir()
    right, wrong = " 12345.", " 99999."
    acp, exact = _grid([right, wrong, right, wrong]), _grid([right, wrong, right, right])
    evict = _grid([right, wrong, right, wrong]) | {
        "memory": {
            "batches": [
                {"prompts": 2, "lengths": [256], "fraction_held": 0.9},
                {"prompts": 2, "lengths": [512], "fraction_held": 0.4},
            ]
        }
    }
    meta = dict(model="m", training_context=256, variant="fox_pro", log_eps=-10.0, data="d", commit="abcdef1",
                device="cpu", dtype="float32")  # fmt: skip
    per_position = {"loss": 5.0, "max_len": 1024}
    rec = {
        "meta": meta,
        "per_position": per_position,
        "passkey": acp,
        "exact": {"per_position": per_position, "passkey": exact},
        "evict": {"passkey": evict},
        "comparison": {"passkey_same_answer": 0.75, "max_abs_loss_difference": 1e-7},
        "evict_comparison": {"passkey_same_answer": 1.0},
    }
    (run / "eval" / "eval.json").write_text(json.dumps(rec))
    (run / "eval" / "passkey.png").write_bytes(b"png")
    (run / "train" / "log.jsonl").write_text('{"kind": "train", "step": 7}\n{"kind": "eval", "step": 7}\n')
    out = report.make(run, tmp_path / "results")
    assert out.name.endswith("-abcdef1-passkey-evict-cpu")
    assert {"eval.json", "passkey.png", "train_log.jsonl", "README.md"} <= {p.name for p in out.iterdir()}
    text = (out / "README.md").read_text()
    assert "(7 training steps" in text
    assert "| accuracy, exact | 0.50 | 1.00 |" in text
    assert "| same answer, exact vs ACP | 1.00 | 0.50 |" in text
    assert "| evicting cache: share of a full cache held | 0.90 | 0.40 |" in text
