#!/usr/bin/env bash
# Build a real llama.cpp `llama-server` and a tiny random-weight llama model,
# with no internet beyond the package registries (PyPI only, here).
#
#   tests/real/setup-llama-server.sh              # build what is missing, print env
#   tests/real/setup-llama-server.sh --print-env  # only print env; fail if not built
#   set -a; . "${SLUICE_CACHE:-$HOME/.cache/sluice}/llama-server.env"; set +a
#
# Source: the llama.cpp that `llama-cpp-python==0.3.36` vendors (commit
# 0c1e570, `--version` 0.5.0-dev), taken from its PyPI source distribution and
# checked against a pinned sha256. Everything goes to a cache outside the repo
# (see tests/real/README.md for the layout); every step is skipped when its
# output is already there, so a second run costs a second.
#
# Environment:
#   SLUICE_CACHE   cache root (default $HOME/.cache/sluice)
#   BUILD_JOBS     parallel compile jobs (default 2)
#   NICE           niceness of the compile (default 15: the machine is shared)
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
# sha256 of llama_cpp_python-0.3.36.tar.gz as served by PyPI (computed once,
# 2026-11; the sdist is immutable for a given version on PyPI).
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SDIST_NAME="llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz"
# Python packages for the model generator; gguf-py 0.19.0 (vendored) needs
# numpy >= 2.2.6 and imports yaml at module load.
NUMPY_VERSION=2.2.6
PYYAML_VERSION=6.0.2

# GGML_NATIVE=ON: compile ggml for *this* CPU (-march=native: AVX2/AVX-512/
# VNNI where present). Why native rather than portable:
#  - A portable static build (GGML_NATIVE=OFF without GGML_CPU_ALL_VARIANTS,
#    which needs BUILD_SHARED_LIBS=ON + GGML_BACKEND_DL) gets only baseline
#    x86-64 kernels and is several times slower, so the tiny model would no
#    longer behave like the reference captures (~100 tok/s per request).
#  - The binary is never shipped: it lives in a per-machine cache whose key
#    includes the CPU model and flag list, so it can never run on a CPU that
#    lacks an instruction it uses (no SIGILL); another CPU just rebuilds.
# Flags checked against this tree: LLAMA_CURL is deprecated and ignored when
# OFF; LLAMA_BUILD_UI / LLAMA_USE_PREBUILT_UI exist (tools/ui) and OFF keeps
# the build from fetching the web UI; LLAMA_OPENSSL=OFF avoids the libssl dep.
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DGGML_NATIVE=ON
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_UI=OFF
  -DBUILD_SHARED_LIBS=OFF
)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
BUILD_JOBS="${BUILD_JOBS:-2}"
NICE="${NICE:-15}"

PRINT_ENV_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --print-env) PRINT_ENV_ONLY=1 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-llama-server: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die()  { printf 'setup-llama-server: ERROR: %s\n' "$*" >&2; exit 1; }

# Cache key: anything that changes the binary. The CPU part matters because
# of GGML_NATIVE; the compiler because it picks the instructions.
cpu_model="$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
cpu_flags="$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- || true)"
cxx_version="$( (c++ --version 2>/dev/null || true) | head -n1)"
KEY="$(printf '%s\n' "$SDIST_SHA256" "${CMAKE_FLAGS[*]}" "$(uname -m)" "$cpu_model" "$cpu_flags" "$cxx_version" \
  | sha256sum | cut -c1-12)"

OUT_DIR="$CACHE/llama-server-${LLAMA_CPP_PYTHON_VERSION}-${KEY}"
BIN="$OUT_DIR/llama-server"
MODEL="$OUT_DIR/tiny.gguf"
ENV_FILE="$CACHE/llama-server.env"

print_env() {
  printf 'LLAMA_SERVER_BIN=%s\nLLAMA_MODEL=%s\n' "$BIN" "$MODEL"
}

if [[ "$PRINT_ENV_ONLY" == 1 ]]; then
  [[ -x "$BIN" ]]   || die "no llama-server at $BIN (key $KEY); run $0 without --print-env first"
  [[ -s "$MODEL" ]] || die "no model at $MODEL; run $0 without --print-env first"
  print_env
  exit 0
fi

step "cache: $CACHE (key $KEY: sdist + cmake flags + CPU '$cpu_model' + compiler)"
mkdir -p "$CACHE/dl" "$CACHE/src" "$OUT_DIR"
# One setup at a time per cache (CI and a developer, or two test runners).
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.setup.lock"
  flock -n 9 || { note "another setup holds $CACHE/.setup.lock; waiting"; flock 9; }
fi

# ---------------------------------------------------------------- 1. sdist
SDIST="$CACHE/dl/$SDIST_NAME"
check_sha() {
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  [[ "$got" == "$SDIST_SHA256" ]] || {
    rm -f "$1"
    die "sha256 mismatch for $SDIST_NAME: got $got, pinned $SDIST_SHA256 (file removed)"
  }
}
if [[ -f "$SDIST" ]]; then
  step "sdist: $SDIST already downloaded"
else
  step "sdist: pip download llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION (source only, hash-pinned; ~75 MB, ~2 min)"
  command -v python3 >/dev/null || die "python3 not found"
  tmpdl="$(mktemp -d "$CACHE/dl/tmp.XXXXXX")"
  req="$tmpdl/requirements.txt"
  printf 'llama-cpp-python==%s --hash=sha256:%s\n' "$LLAMA_CPP_PYTHON_VERSION" "$SDIST_SHA256" > "$req"
  # --require-hashes makes pip itself refuse a different archive; the check
  # below repeats it for a file that was already in the cache.
  python3 -m pip download --no-deps --no-binary :all: --require-hashes -r "$req" -d "$tmpdl" \
    || { rm -rf "$tmpdl"; die "pip download of llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION failed (is PyPI reachable?)"; }
  [[ -f "$tmpdl/$SDIST_NAME" ]] || { rm -rf "$tmpdl"; die "pip did not produce $SDIST_NAME"; }
  mv "$tmpdl/$SDIST_NAME" "$SDIST"
  rm -rf "$tmpdl"
fi
step "sdist: checking sha256"
check_sha "$SDIST"
note "ok $SDIST_SHA256"

SRC="$CACHE/src/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}"
LLAMA_SRC="$SRC/vendor/llama.cpp"
if [[ -f "$SRC/.unpacked-$SDIST_SHA256" ]]; then
  step "unpack: $SRC already there"
else
  step "unpack: $SDIST -> $SRC"
  rm -rf "$SRC" "$SRC.tmp"
  mkdir -p "$SRC.tmp"
  tar -xzf "$SDIST" -C "$SRC.tmp" || die "cannot unpack $SDIST"
  mv "$SRC.tmp/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}" "$SRC"
  rmdir "$SRC.tmp"
  touch "$SRC/.unpacked-$SDIST_SHA256"
fi
[[ -f "$LLAMA_SRC/CMakeLists.txt" ]] || die "no vendor/llama.cpp in the sdist ($LLAMA_SRC)"
[[ -d "$LLAMA_SRC/gguf-py/gguf" ]] || die "no vendor/llama.cpp/gguf-py in the sdist"
VOCAB="$LLAMA_SRC/models/ggml-vocab-llama-spm.gguf"
[[ -f "$VOCAB" ]] || die "no $VOCAB in the sdist"

# ---------------------------------------------------------------- 2. build
if [[ -x "$BIN" ]]; then
  step "build: $BIN already built (delete it to rebuild)"
else
  command -v cmake >/dev/null || die "cmake not found (apt-get install cmake)"
  command -v c++ >/dev/null   || die "no C++ compiler (apt-get install build-essential)"
  BUILD_DIR="$CACHE/build-${LLAMA_CPP_PYTHON_VERSION}-${KEY}"
  step "build: cmake configure ($BUILD_DIR)"
  note "cmake -S $LLAMA_SRC -B $BUILD_DIR ${CMAKE_FLAGS[*]}"
  cmake -S "$LLAMA_SRC" -B "$BUILD_DIR" "${CMAKE_FLAGS[@]}" > "$BUILD_DIR.configure.log" 2>&1 \
    || { tail -n 40 "$BUILD_DIR.configure.log" >&2; die "cmake configure failed (log: $BUILD_DIR.configure.log)"; }
  # An unknown -D is only a warning in cmake; treat it as an error here so a
  # flag that silently stopped meaning anything is noticed.
  if grep -A3 'Manually-specified variables were not used' "$BUILD_DIR.configure.log" >&2; then
    die "cmake did not use some of the flags above (log: $BUILD_DIR.configure.log)"
  fi
  step "build: cmake --build --target llama-server -j$BUILD_JOBS (nice $NICE; 6-20 min on 2 cores)"
  t0=$(date +%s)
  nice -n "$NICE" cmake --build "$BUILD_DIR" --target llama-server -j "$BUILD_JOBS" > "$BUILD_DIR.build.log" 2>&1 \
    || { tail -n 40 "$BUILD_DIR.build.log" >&2; die "build failed (log: $BUILD_DIR.build.log)"; }
  t1=$(date +%s)
  built="$BUILD_DIR/bin/llama-server"
  [[ -x "$built" ]] || die "build finished but $built is missing"
  "$built" --version >/dev/null 2>&1 || die "$built does not run (--version failed)"
  cp "$built" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  note "built in $((t1 - t0)) s: $BIN"
fi
note "$("$BIN" --version 2>&1 | grep -m1 -i version || true)"

# ---------------------------------------------------------------- 3. model
VENV="$CACHE/venv"
PY="$VENV/bin/python"
VENV_STAMP="$VENV/.sluice-numpy-$NUMPY_VERSION-pyyaml-$PYYAML_VERSION"
if [[ -f "$VENV_STAMP" ]]; then
  step "venv: $VENV already has numpy==$NUMPY_VERSION pyyaml==$PYYAML_VERSION"
else
  step "venv: $VENV with numpy==$NUMPY_VERSION pyyaml==$PYYAML_VERSION"
  [[ -x "$PY" ]] || python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv?)"
  "$PY" -m pip install --disable-pip-version-check -q --only-binary :all: \
      "numpy==$NUMPY_VERSION" "pyyaml==$PYYAML_VERSION" \
    || die "pip install numpy==$NUMPY_VERSION pyyaml==$PYYAML_VERSION into $VENV failed"
  touch "$VENV_STAMP"
fi

# The model is remade whenever the generator script, the vocab or numpy changes.
MODEL_KEY="$( (cat "$SCRIPT_DIR/make_tiny_model.py" "$VOCAB"; echo "numpy $NUMPY_VERSION") | sha256sum | cut -c1-12)"
MODEL_STAMP="$OUT_DIR/.tiny.gguf-$MODEL_KEY"
if [[ -s "$MODEL" && -f "$MODEL_STAMP" ]]; then
  step "model: $MODEL already made"
else
  step "model: make_tiny_model.py -> $MODEL"
  rm -f "$OUT_DIR"/.tiny.gguf-*
  PYTHONPATH="$LLAMA_SRC/gguf-py" "$PY" "$SCRIPT_DIR/make_tiny_model.py" \
      --vocab "$VOCAB" --out "$MODEL.tmp" \
    || { rm -f "$MODEL.tmp"; die "make_tiny_model.py failed"; }
  mv "$MODEL.tmp" "$MODEL"
  touch "$MODEL_STAMP"
fi
note "$(du -h "$MODEL" | cut -f1) $MODEL"

# ---------------------------------------------------------------- 4. env
step "env: $ENV_FILE"
print_env > "$ENV_FILE.tmp" && mv "$ENV_FILE.tmp" "$ENV_FILE"
print_env
