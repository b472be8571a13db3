#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama-cpp-python sdist the engine is built from,
# with the Makefile's LLAMA_CMAKE_ARGS (same CPU flags), into benchmarks/.cache/ (the sdist
# itself is shared with training/convert_gguf.py in training/.cache/).
#
#   benchmarks/build_llama_server.sh            # -> benchmarks/.cache/llama-server/bin/llama-server
#
# Env: LLAMA_CMAKE_ARGS overrides the flags (e.g. to measure an AVX512 build), BUILD_DIR the
# output folder. No network beyond pip fetching the sdist once: the web UI is not downloaded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SDIST=llama_cpp_python-0.3.36
CACHE="$HERE/.cache"
SDIST_CACHE="$ROOT/training/.cache"  # shared with training/convert_gguf.py
SRC="$SDIST_CACHE/$SDIST/vendor/llama.cpp"
BUILD_DIR="${BUILD_DIR:-$CACHE/llama-server}"
FLAGS="${LLAMA_CMAKE_ARGS:-$(sed -n 's/^LLAMA_CMAKE_ARGS ?= //p' "$ROOT/Makefile")}"

mkdir -p "$CACHE" "$SDIST_CACHE"
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
  if [[ ! -f "$SDIST_CACHE/$SDIST.tar.gz" ]]; then
    "$PYTHON" -m pip download --no-deps --no-binary :all: "llama-cpp-python==0.3.36" -d "$SDIST_CACHE"
  fi
  tar -xzf "$SDIST_CACHE/$SDIST.tar.gz" -C "$SDIST_CACHE"
fi

# LLAVA_BUILD is llama-cpp-python's option, not llama.cpp's: drop it to keep cmake quiet.
FLAGS="${FLAGS//-DLLAVA_BUILD=OFF/}"
# shellcheck disable=SC2086  # FLAGS is a list of -D options
cmake -S "$SRC" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release $FLAGS \
  -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
cmake --build "$BUILD_DIR" --target llama-server -j "$(nproc)"
echo "built $BUILD_DIR/bin/llama-server"
