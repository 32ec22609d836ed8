"""Run under torchrun by test_signal_one_rank: rank 1 alone gets SIGTERM during step 2; each rank writes the
summary train() returns to OUT/summary-RANK.json."""

import json
import os
import signal
import sys
from pathlib import Path

from foxacp.train import loop
from foxacp.train.config import parse_overrides, preset_config

out, items = Path(sys.argv[1]), sys.argv[2:]
rank = int(os.environ["RANK"])
real_step = loop._step


def step(s, meter, first_step):
    if rank == 1 and s.step == 1:  # during step 2, before its reduction: rank 1's own signal
        os.kill(os.getpid(), signal.SIGTERM)
    return real_step(s, meter, first_step)


loop._step = step
cfg = parse_overrides(preset_config("tiny"), [*items, f"out={out}"])
summary = loop.train(cfg)
(out / f"summary-{rank}.json").write_text(json.dumps(summary))
