#!/bin/bash
# Is a refactor behaviour-preserving? Runs the same fixed-seed `wmkit eval` and `wmkit verify --json`
# through the CLI of two revisions and diffs what they write (timing fields left out).
#
#   scripts/compare_cli_output.sh REV_BEFORE [REV_AFTER]      (default REV_AFTER: the working tree)
#
# Needs the repository's environment (python with wmkit's dependencies on PATH, or PYTHON=...).
set -euo pipefail
BEFORE=$1; AFTER=${2:-}
ROOT=$(git rev-parse --show-toplevel)
PYTHON=${PYTHON:-python}
WORK=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$WORK/tree-before" >/dev/null 2>&1 || true; [ -n "$AFTER" ] && git -C "$ROOT" worktree remove --force "$WORK/tree-after" >/dev/null 2>&1 || true' EXIT
git -C "$ROOT" worktree add -q "$WORK/tree-before" "$BEFORE"
if [ -n "$AFTER" ]; then git -C "$ROOT" worktree add -q "$WORK/tree-after" "$AFTER"; TREE_AFTER=$WORK/tree-after; else TREE_AFTER=$ROOT; fi

run() {  # TREE OUT
    local tree=$1 out=$2
    mkdir -p "$out/photos"
    local wm="env PYTHONPATH=$tree WMKIT_CACHE=$out/cache $PYTHON -m wmkit.cli"
    (cd "$out" && $wm eval -m dwtdct -m periodic -m hidden -m ssl_zero_bit --offline-photos 3 --attacks quick --seed 7 \
        -o "$out/report" --no-progress > "$out/eval.stdout" 2> /dev/null)
    PYTHONPATH=$tree $PYTHON - "$out" <<'PY'
import json, sys
out = sys.argv[1]
with open(f"{out}/results.jsonl", "w") as f:  # the records without the fields that measure time
    for line in open(f"{out}/report/results.jsonl"):
        record = json.loads(line)
        f.write(json.dumps({k: v for k, v in record.items() if "seconds" not in k and "time" not in k}, sort_keys=True) + "\n")
from wmkit import data
from wmkit.imageio import save_image
for i, crop in enumerate(data.crops(3, size=256, group="evaluation", seed=5)):
    save_image(crop, f"{out}/photos/p{i}.png")
PY
    for m in dwtdct periodic hidden; do
        (cd "$out" && $wm keygen -m $m --seed 11 -o $m.json > /dev/null 2>&1 \
            && $wm embed -m $m -k $m.json photos -o marked_$m --no-progress > /dev/null 2>&1 \
            && { $wm verify -m $m -k $m.json marked_$m photos --json --no-progress > verify_$m.json 2> /dev/null || true; })
    done
    sed "s#$out#OUT#g" "$out/eval.stdout" > "$out/eval.stdout.txt"
}
run "$WORK/tree-before" "$WORK/before"
run "$TREE_AFTER" "$WORK/after"
status=0
for f in results.jsonl verify_dwtdct.json verify_periodic.json verify_hidden.json eval.stdout.txt; do
    if cmp -s "$WORK/before/$f" "$WORK/after/$f"; then echo "identical: $f ($(wc -l < "$WORK/before/$f") lines)"
    else echo "DIFFERENT: $f"; diff "$WORK/before/$f" "$WORK/after/$f" | head -20; status=1; fi
done
exit $status
