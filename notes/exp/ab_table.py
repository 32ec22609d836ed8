"""Medians over rounds of notes/exp/run_ab.py's rows, one line per tree and shape: ab_table.py ab.jsonl"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

KEYS = ("exact_fwd", "acp_fwd", "bound_fwd", "exact_fwdbwd", "acp_fwdbwd", "bound_fwdbwd", "acp_host", "acp_gpu",
        "bound_gpu")  # fmt: skip
rows = defaultdict(list)
for line in Path(sys.argv[1]).read_text().splitlines():
    r = json.loads(line)
    rows[(r["H"], r["D"], r["T"], r["tree"])].append(r)
print("shape          tree " + " ".join(f"{k:>12s}" for k in KEYS))
for (H, D, T, tree), rs in sorted(rows.items()):
    cells = " ".join(f"{statistics.median(r[k] for r in rs):12.3f}" for k in KEYS)
    print(f"{H}x{D} {T:6d}  {tree:4s} {cells}")
