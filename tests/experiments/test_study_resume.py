"""experiments/048-acp-quality-study/run.sh resumes (its README: a stopped run continues with --resume, finished
stages are skipped, the evaluations of a run that was cut are redone), checked with a stand-in for python that
records each stage it is asked to run."""

import os
import subprocess
from pathlib import Path

from tests.experiments import EXPERIMENTS

EXPERIMENT = EXPERIMENTS / "048-acp-quality-study"

FAKE_PY = r"""#!/usr/bin/env bash
echo "$CALL $*" >> "$FAKE_LOG"
out=""
prev=""
for a in "$@"; do [ "$prev" = "--out" ] && out=$a; prev=$a; done
case "$*" in
  *"foxacp.cli train"*) mkdir -p "$out/checkpoints"; echo step_000001 > "$out/checkpoints/latest"; exit "$TRAIN_RC" ;;
  *"foxacp.cli eval"*) mkdir -p "$out"; echo "{\"call\": $CALL}" > "$out/eval.json" ;;
  *"foxacp.cli analyze"*) mkdir -p "$out"; echo "{\"call\": $CALL}" > "$out/analyze.json" ;;
  *"foxacp.cli export-gates"*) echo "call $CALL" > "$out" ;;
  *"foxacp.eval.zeroshot"*) mkdir -p "$out"; echo "{\"call\": $CALL}" > "$out/zeroshot.json" ;;
esac
exit 0
"""


def _run(tmp_path: Path, call: int, train_rc: int) -> str:
    env = dict(
        os.environ,
        PY=str(tmp_path / "fakepy"),
        FAKE_LOG=str(tmp_path / "calls.log"),
        CALL=str(call),
        TRAIN_RC=str(train_rc),
        DATA=str(tmp_path / "data"),
        RUNS=str(tmp_path / "runs"),
        OUT=str(tmp_path / "out"),
        DEVICE="cpu",
    )
    proc = subprocess.run(
        ["bash", str(EXPERIMENT / "run.sh")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    return proc.stdout + proc.stderr


def test_second_call_redoes_the_evaluations_of_a_run_that_was_cut(tmp_path):
    fake = tmp_path / "fakepy"
    fake.write_text(FAKE_PY)
    fake.chmod(0o755)
    # Call 1: both training runs are cut by their time limit (SIGTERM: exit 143, a checkpoint written), so the
    # evaluations run on the cut checkpoints.
    _run(tmp_path, 1, 143)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert any(c.startswith("1 ") and "foxacp.cli eval" in c for c in calls)
    # Call 2: both runs continue and finish. Their evaluations must be redone on the finished models.
    log = _run(tmp_path, 2, 0)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert any(c.startswith("2 ") and "foxacp.cli train" in c and "--resume" in c for c in calls), log
    second_evals = [c for c in calls if c.startswith("2 ") and "foxacp.cli eval" in c]
    assert len(second_evals) == 2, log  # none: "eval acp ...: done before" keeps the cut model's eval.json
    assert '"call": 2' in (tmp_path / "runs" / "results" / "eval-acp" / "eval.json").read_text()
    # Call 3: nothing left to do; every stage is skipped (only the summary is written again).
    log = _run(tmp_path, 3, 0)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c.split()[1:3] for c in calls if c.startswith("3 ")] == [
        ["experiments/048-acp-quality-study/report.py", "summary"]
    ], log
