#!/usr/bin/env bash
# Two queued experiments through `python -m steerpipe.cluster run` on a local Ray, against the
# same two run by `dvc exp run` one after the other, and their metrics in a fresh clone (issue 32).
#   bash benchmarks/cluster_local.sh        # after `bash scripts/pipeline.sh` (about 4 min)
# Works in a clone of this repository under a temporary folder, with a bare git remote and a
# local DVC remote there; the outputs come from this repository's DVC cache. Prints the seconds
# of each and whether the fresh clone's metrics equal the local runs'.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/.venv/bin/activate"
export HF_HUB_OFFLINE=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
git clone -q "$ROOT" "$TMP/repo" && cd "$TMP/repo"
git init -q --bare "$TMP/remote.git"
git remote set-url origin "$TMP/remote.git" && git push -q origin HEAD:refs/heads/main
dvc remote add --local -d here "$ROOT/.dvc/cache" && dvc pull -q
dvc remote add --local -f -d store "$TMP/store" && dvc push -q
for c in 1.0 2.0; do dvc exp run -q --queue -S steer.coefficient=$c -n ray-$c report; done
t=$(date +%s)
python -m steerpipe.cluster run 2>&1 | grep -E '^(\(run_experiment|start|done|failed|skip|[0-9]+ done)'
echo "cluster run of 2 experiments: $(( $(date +%s) - t )) s"
t=$(date +%s)
for c in 1.0 2.0; do
    dvc exp run -q -S steer.coefficient=$c -n local-$c report >/dev/null 2>&1
    git checkout -q params.yaml
done
echo "the same 2 by dvc exp run, one after the other: $(( $(date +%s) - t )) s"
dvc exp show --json > "$TMP/local.json"
git clone -q -b main "$TMP/remote.git" "$TMP/clone" && cd "$TMP/clone"
dvc remote add --local -d store "$TMP/store" && dvc exp pull -q origin ray-1.0 ray-2.0
dvc exp show --json > "$TMP/clone.json"
python - "$TMP" <<'PY'
import json, sys
def find(x, name):
    if isinstance(x, dict):
        if x.get("name") == name and isinstance(x.get("data"), dict):
            return x["data"]["metrics"]["data/report/metrics.json"]["data"]
        x = list(x.values())
    for item in x if isinstance(x, list) else []:
        if (found := find(item, name)) is not None:
            return found
tmp = sys.argv[1]
clone, local = (json.load(open(f"{tmp}/{n}.json")) for n in ("clone", "local"))
for c in ("1.0", "2.0"):
    r, l = find(clone, f"ray-{c}"), find(local, f"local-{c}")
    steered = r["clean"]["steered"]
    print(f"coefficient {c}: the fresh clone's metrics equal the local run's: {r == l}; "
          f"steered clean {steered['count']}/{steered['n']} at {r['cell']}")
PY
