#!/usr/bin/env bash
# The real llama-server tier (tests/real_llama.rs), called by .ci/run.
#
# 1. tests/real/setup-llama-server.sh builds (first time on a machine: ~18 min,
#    the compile) or reuses (~1 s) a real llama-server and a tiny model in
#    ${SLUICE_CACHE:-$HOME/.cache/sluice};
# 2. a venv beside it gets the pinned OpenAI Python client (for
#    tests/real/openai_stream.py);
# 3. cargo test --test real_llama, one test at a time (each starts its own
#    llama-servers; the machine has 2 cores).
#
# Under CI=true a missing binary, model or python makes the tests fail, never
# skip. Loopback only; every server is killed by the test that started it.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
OPENAI_VERSION=3.51.0

echo "== real llama-server: tests/real/setup-llama-server.sh (cache $CACHE)"
t0=$(date +%s)
bash tests/real/setup-llama-server.sh
echo "   setup took $(( $(date +%s) - t0 )) s"
set -a
# shellcheck disable=SC1091
. "$CACHE/llama-server.env"
set +a
[[ -x "$LLAMA_SERVER_BIN" && -s "$LLAMA_MODEL" ]] \
  || { echo "real.sh: setup did not produce LLAMA_SERVER_BIN / LLAMA_MODEL" >&2; exit 1; }

# A venv of its own, so the model generator's numpy pin and the client's
# dependencies never meet.
VENV="$CACHE/venv-openai"
PY="$VENV/bin/python"
STAMP="$VENV/.sluice-openai-$OPENAI_VERSION"
if [[ -f "$STAMP" ]] && "$PY" -c "import openai" 2>/dev/null; then
  echo "== openai==$OPENAI_VERSION already in $VENV"
else
  echo "== pip install openai==$OPENAI_VERSION into $VENV"
  [[ -x "$PY" ]] || python3 -m venv "$VENV" \
    || { echo "real.sh: python3 -m venv failed (apt-get install python3-venv?)" >&2; exit 1; }
  rm -f "$VENV"/.sluice-openai-*
  "$PY" -m pip install --disable-pip-version-check -q --prefer-binary "openai==$OPENAI_VERSION"
  "$PY" -c "import openai; assert openai.__version__ == '$OPENAI_VERSION', openai.__version__"
  touch "$STAMP"
fi
export SLUICE_OPENAI_PYTHON="$PY"

echo "== cargo test --test real_llama (LLAMA_SERVER_BIN=$LLAMA_SERVER_BIN)"
t0=$(date +%s)
cargo test --test real_llama -- --test-threads=1
echo "   real llama-server tests took $(( $(date +%s) - t0 )) s"

echo "== cargo test --test openai_sdk (the real openai client through the gateway, simulated fleet)"
t0=$(date +%s)
cargo test --test openai_sdk -- --test-threads=1
echo "   openai SDK tests took $(( $(date +%s) - t0 )) s"
