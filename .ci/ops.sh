#!/usr/bin/env bash
# Operations tier, called by tests/run.sh (and .ci/run): the systemd unit.
#
#   1. `systemd-analyze verify systemd/sluice.service` prints nothing at all
#      (it exits 0 on unknown keys and typos, so any output is a failure).
#      The real unit text is verified: its ExecStart binary,
#      /usr/local/bin/sluice, is the freshly built one, symlinked there for the
#      check and removed afterwards when it was not there before. The drop-in
#      directory beside the unit (sluice.service.d/) is verified with it.
#   2. `systemd-analyze security --offline=yes` scores the unit at 2.0 or
#      better (lower is better).
#   3. The same two checks on the unit with every commented line of
#      sluice.service.d/example.conf switched on (port < 1024 capability,
#      IP allow list, JSON logs...), so the documented options stay valid,
#      and on the unit with the optional upgrade-on-reload drop-in
#      (sluice.service.d/upgrade-on-reload.conf.example).
#   4. The unit carries the resource and liveness directives: MemoryHigh=,
#      MemoryMax=, TasksMax=, LimitCORE=0, Type=notify, NotifyAccess=main,
#      WatchdogSec= (non-zero), RuntimeDirectory=sluice; the upgrade drop-in
#      turns sd_notify and the watchdog off (NotifyAccess=none, WatchdogSec=0).
#
# The process-level tests (tests/ops_process.rs: graceful upgrade under load,
# graceful shutdown) run under plain `cargo test`; pass --with-process-tests to
# run them here as well.
#
# Prints "ops: N passed, M failed" and exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXPOSURE=2.0
UNIT=systemd/sluice.service
DROPIN=systemd/sluice.service.d/example.conf
UPGRADE_DROPIN=systemd/sluice.service.d/upgrade-on-reload.conf.example
passed=0
failed=0
pass() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

# --- prerequisites: systemd-analyze, /bin/kill (ExecReload), cargo build ----
need_apt=()
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
[ -x /bin/kill ] || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "ops: installing ${need_apt[*]} with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
echo "== $(systemd-analyze --version | head -1)"

echo "== cargo build --bin sluice"
BIN="$PWD/target/debug/sluice"
if cargo build --quiet --bin sluice; then
  pass "cargo build --bin sluice"
else
  fail "cargo build --bin sluice (verify will name the binary missing)"
fi

# --- the unit's binary path -------------------------------------------------
TARGET=/usr/local/bin/sluice
created_link=""
work=$(mktemp -d)
cleanup() {
  if [ -n "$created_link" ]; then rm -f "$TARGET"; fi
  rm -rf "$work"
}
trap cleanup EXIT
if [ -e "$TARGET" ]; then
  echo "   $TARGET exists; verifying against it"
elif mkdir -p "$(dirname "$TARGET")" 2>/dev/null && ln -s "$BIN" "$TARGET" 2>/dev/null; then
  created_link=yes
  echo "   $TARGET -> $BIN for the duration of the checks"
else
  echo "   cannot create $TARGET (not root?): verify will name it missing" >&2
fi

# verify NAME UNIT_PATH: passes when systemd-analyze prints nothing.
verify() {
  local out
  out=$(systemd-analyze verify "$2" 2>&1) || true
  if [ -z "$out" ]; then
    pass "$1: systemd-analyze verify printed nothing"
  else
    printf '%s\n' "$out" | sed 's/^/     /'
    fail "$1: systemd-analyze verify printed the lines above"
  fi
}

# security NAME UNIT_PATH: passes when the exposure is at most MAX_EXPOSURE.
security() {
  local out line score
  out=$(systemd-analyze security --offline=yes "$2" 2>&1) || true
  line=$(printf '%s\n' "$out" | grep 'Overall exposure level' || true)
  score=$(printf '%s\n' "$line" | grep -Eo '[0-9]+\.[0-9]+' | head -1 || true)
  echo "     $line"
  if [ -z "$score" ]; then
    printf '%s\n' "$out" | tail -20 | sed 's/^/     /'
    fail "$1: no exposure score"
  elif awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
    pass "$1: exposure $score <= $MAX_EXPOSURE"
  else
    printf '%s\n' "$out" | grep '✗' | sed 's/^/     /'
    fail "$1: exposure $score > $MAX_EXPOSURE"
  fi
}

echo "== $UNIT (with $DROPIN)"
verify "unit" "$UNIT"
security "unit" "$UNIT"

echo "== $UNIT with every option of $DROPIN switched on"
mkdir -p "$work/all/sluice.service.d"
cp "$UNIT" "$work/all/sluice.service"
sed -E 's/^#([A-Z][A-Za-z]*=)/\1/' "$DROPIN" >"$work/all/sluice.service.d/example.conf"
verify "unit + all drop-in options" "$work/all/sluice.service"
security "unit + all drop-in options" "$work/all/sluice.service"

echo "== $UNIT with $UPGRADE_DROPIN"
mkdir -p "$work/upgrade/sluice.service.d"
cp "$UNIT" "$work/upgrade/sluice.service"
cp "$DROPIN" "$work/upgrade/sluice.service.d/example.conf"
cp "$UPGRADE_DROPIN" "$work/upgrade/sluice.service.d/upgrade-on-reload.conf"
verify "unit + upgrade-on-reload" "$work/upgrade/sluice.service"
security "unit + upgrade-on-reload" "$work/upgrade/sluice.service"

# has NAME FILE REGEX: the file has a line matching REGEX (a directive).
has() {
  if grep -Eq "$3" "$2"; then
    pass "$1: $(basename "$2") has $3"
  else
    fail "$1: $(basename "$2") lacks a line matching $3"
  fi
}

echo "== directives"
has "resources" "$UNIT" '^MemoryHigh=[0-9]+[KMGT]?$'
has "resources" "$UNIT" '^MemoryMax=[0-9]+[KMGT]?$'
has "resources" "$UNIT" '^TasksMax=[0-9]+$'
has "resources" "$UNIT" '^LimitCORE=0$'
has "watchdog" "$UNIT" '^Type=notify$'
has "watchdog" "$UNIT" '^NotifyAccess=main$'
has "watchdog" "$UNIT" '^WatchdogSec=[1-9][0-9]*s?$'
has "run dir" "$UNIT" '^RuntimeDirectory=sluice$'
has "run dir" "$UNIT" '^RuntimeDirectoryMode=0700$'
has "upgrade" "$UPGRADE_DROPIN" '^NotifyAccess=none$'
has "upgrade" "$UPGRADE_DROPIN" '^WatchdogSec=0$'

if [ "${1:-}" = "--with-process-tests" ]; then
  echo "== cargo test --test ops_process"
  if cargo test --quiet --test ops_process -- --nocapture; then
    pass "tests/ops_process.rs"
  else
    fail "tests/ops_process.rs"
  fi
fi

echo "ops: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
