#!/usr/bin/env bash
# `npm run test:stress [runs]`: the whole suite N times in a row (default 5) while a CPU hog keeps one
# core busy, as on a loaded CI machine. Every run must be green; the hog is stopped by its PID.
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
node -e 'for(;;){}' &
hog=$!
trap 'kill "$hog" 2>/dev/null' EXIT
failed=0
for i in $(seq 1 "$runs"); do
  echo "== stress run $i/$runs (CPU hog pid $hog)"
  if ! CI="${CI:-true}" npx vitest run; then
    failed=$((failed + 1))
    echo "== stress run $i failed"
  fi
done
echo "== $((runs - failed)) of $runs runs green"
[ "$failed" -eq 0 ]
