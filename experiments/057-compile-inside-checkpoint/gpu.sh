# One device call (~9 min): the 760M preset's throughput (exact and ACP, init gates, 4k and 16k), first with
# activation checkpointing on and its blocks compiled inside the checkpoint (057; against
# results/2026-12-04-20966ce-throughput-h200), then with activation_checkpointing=auto, the default now (058: off
# where the step fits; each row records the estimate next to the measured peak). Results in $OUT/c.
# 050's probe of a 360M step runs in experiment 054's gpu.sh.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/c
for ckpt in true auto; do
  timeout 270 python3 -m foxacp.bench.throughput --presets 760M --contexts 4096 16384 --modes exact acp \
    --gates-regimes init --activation-checkpointing $ckpt --deadline-s 200 --out $OUT/c/ckpt-$ckpt 2>&1 \
    | grep -v -i warn | tail -12
done
python3 - <<'PY'
import json, os
for ckpt in ("true", "auto"):
    path = os.path.join(os.environ["OUT"], "c", f"ckpt-{ckpt}", "throughput.json")
    if not os.path.exists(path):
        print(ckpt, "no result")
        continue
    for r in json.load(open(path))["rows"]:
        if "error" in r:
            print(ckpt, r["key"], r["error"])
            continue
        print(f"{ckpt:5s} {r['key']:28s} ckpt={r['activation_checkpointing']!s:5s} {r['tokens_per_s'] / 1e3:6.1f}k tok/s "
              f"peak {r['peak_mem_gib']:.1f} GiB estimate {r['memory_estimate_gib'] or float('nan'):.1f} GiB "
              f"mfu {r['mfu']:.1%}")
PY
