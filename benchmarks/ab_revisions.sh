#!/usr/bin/env bash
# Run one benchmark against two revisions of the package, alternating, in one sitting:
# on this noisy VM a before/after claim needs both sides measured side by side.
#
#   benchmarks/ab_revisions.sh OLD_REV NEW_REV ROUNDS -- load_text.py --levels 1 32
#
# Each revision is checked out (git worktree) under benchmarks/.cache/ab/ and put first on
# PYTHONPATH, so the served runtimes (and their engine processes) import that revision's
# package; the benchmark scripts, model-repo and venv are the current checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$(git rev-parse --short "$1") new=$(git rev-parse --short "$2") rounds=$3
shift 3
[[ ${1:-} == "--" ]] && shift
root=$PWD
cache=benchmarks/.cache/ab
mkdir -p "$cache"
for rev in "$old" "$new"; do  # resolved once: commits made meanwhile change nothing
  [[ -d $cache/$rev ]] || git worktree add --detach "$cache/$rev" "$rev" >/dev/null
done
for round in $(seq "$rounds"); do
  for rev in "$old" "$new"; do
    echo "=== round $round: $rev ==="
    (cd benchmarks && PYTHONPATH="$root/$cache/$rev" ../.venv/bin/python "$@")
  done
done
