#!/usr/bin/env bash
# Console tier, called by tests/run.sh (and .ci/run): the operator console
# page (/ui) in a real headless browser, as a person would use it.
#
# Needs Debian's `chromium` and `chromium-driver` (installed with apt-get when
# missing) and selenium from PyPI in a venv of its own under
# ${SLUICE_CACHE:-$HOME/.cache/sluice}/venv-console. Builds target/debug/sluice,
# then runs tests/console/check_page.py: three `sluice sim` backends, the
# gateway under 3x overload, the page in chromium (see the script's header for
# every check). Saves target/console/console-overload.png and
# target/console/cost.json (the page's own cost, see loadtest/RESULTS.md).
#
# Prints "console: N passed, M failed" and exits non-zero if anything failed.
# Missing parts that cannot be installed are a failure under CI=true and a
# failure (never a silent skip) otherwise too: the count says what ran.
set -euo pipefail
cd "$(dirname "$0")/.."

SELENIUM_VERSION=4.50.0
CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
VENV=$CACHE/venv-console

missing() {
  echo "console: $1"
  echo "console: 0 passed, 1 failed"
  exit 1
}

# --- chromium and its driver ---------------------------------------------------
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "console: installing chromium chromium-driver with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
    missing "cannot install chromium and chromium-driver with apt-get"
  fi
fi
command -v chromium >/dev/null || missing "chromium is not installed"
command -v chromedriver >/dev/null || missing "chromedriver (chromium-driver) is not installed"
echo "== $(chromium --version 2>/dev/null | head -1); $(chromedriver --version | head -1)"

# --- selenium ------------------------------------------------------------------
if ! "$VENV/bin/python" -c "import selenium, sys; sys.exit(selenium.__version__ != '$SELENIUM_VERSION')" 2>/dev/null; then
  echo "console: setting up $VENV with selenium==$SELENIUM_VERSION" >&2
  mkdir -p "$CACHE"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    echo "console: installing python3-venv with apt-get" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $SUDO apt-get install -y -qq python3-venv >/dev/null || true
    python3 -m venv "$VENV" || missing "cannot create the venv $VENV (python3-venv)"
  fi
  "$VENV/bin/pip" install -q "selenium==$SELENIUM_VERSION" || missing "cannot install selenium==$SELENIUM_VERSION"
fi

# --- the gateway ---------------------------------------------------------------
echo "== cargo build --bin sluice"
cargo build --quiet --bin sluice || missing "cargo build --bin sluice failed"

echo "== tests/console/check_page.py"
CHROMIUM=$(command -v chromium) CHROMEDRIVER=$(command -v chromedriver) \
  timeout 300 "$VENV/bin/python" tests/console/check_page.py "$@"
