#!/usr/bin/env bash
# k6/run.sh PROFILE [k6 run flags...]: one k6 profile (smoke, steady,
# overload, spike, soak) against $BASE_URL or, when BASE_URL is unset, a local
# Sluice in front of 3 `sluice sim` (4 slots) started on free loopback ports
# and stopped on exit (oha/common.sh's ensure_target; binary $SLUICE_BIN).
# k6: $K6_BIN, else `k6` on PATH, else the pinned k6 cached by
# .ci/loadgen-tools.sh (installed when missing). The end-of-test summary is
# kept in $OUT/k6-PROFILE.json. Exit status is k6's: 0, or 99 when a
# threshold failed (lib.js: the gateway misbehaved; or a speed target,
# unless -e SPEED=0).
#   bash loadtest/k6/run.sh overload -e DURATION=20s
#   BASE_URL=http://127.0.0.1:8080 bash loadtest/k6/run.sh smoke
[ $# -ge 1 ] || { echo "usage: $0 PROFILE [k6 run flags...]" >&2; exit 2; }
profile=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$here/$profile.js" ] || { echo "no profile $here/$profile.js" >&2; exit 2; }
OUT=${OUT:-$here/../out/k6/$(date -u +%Y%m%dT%H%M%SZ)}
TARGET=${BASE_URL:-}
source "$here/../oha/common.sh"
if [ -z "${K6_BIN:-}" ]; then
  K6_BIN=$(command -v k6 || true)
  if [ -z "$K6_BIN" ]; then
    source "$ROOT/.ci/loadgen-tools.sh"
    ensure_k6_bin || exit 1
  fi
fi
ensure_target
echo "k6 $profile: $*" >&2
set +e
"$K6_BIN" run --quiet --no-color --summary-export "$OUT/k6-$profile.json" \
  -e BASE_URL="$TARGET" "$@" "$here/$profile.js"
rc=$?
set -e
exit $rc
