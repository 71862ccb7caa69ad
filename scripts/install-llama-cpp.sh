#!/usr/bin/env bash
# Installs llama.cpp for the GGUF checks and the llama.cpp benchmark, project-locally under .tools/llama.cpp/:
#   npm/   node-llama-cpp@3.21.1 (pinned, `npm i -E`) with its prebuilt linux-x64 llama.cpp libraries
#          (libllama, libggml, libllama-common and the CPU back-ends; no CLI binaries are shipped);
#   src/   the headers and tool sources of the exact llama.cpp release it pins (its llama/gitRelease.bundle);
#   bin/   llama-batched-bench (llama.cpp's own tool, compiled from that release's source with a main() that flushes
#          its log before exit: scripts/llama-cpp/batched-bench-main.cpp) and puzzle-llama-check
#          (scripts/llama-cpp/puzzle-llama-check.cpp: NLL, greedy ids, tokenisation through llama.h), both linked
#          against the prebuilt libraries, which are linked beside them (ggml loads its CPU back-end from there).
# Compiling the two tools takes seconds; nothing of llama.cpp itself is built. Idempotent: reruns do nothing.
# Needs npm, git and g++ (C++17). Tests and benchmarks that use it skip with a message where it is absent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=3.21.1
dest="$root/.tools/llama.cpp"
bin="$dest/bin"
check_src="$root/scripts/llama-cpp/puzzle-llama-check.cpp"
stamp="$bin/.installed-$version"

if [[ -f "$stamp" && -x "$bin/puzzle-llama-check" && -x "$bin/llama-batched-bench" && "$bin/puzzle-llama-check" -nt "$check_src" &&
      "$bin/llama-batched-bench" -nt "$root/scripts/llama-cpp/batched-bench-main.cpp" ]]; then
    echo "llama.cpp (node-llama-cpp $version) already installed in $bin"
    exit 0
fi
for tool in npm git g++; do
    command -v "$tool" >/dev/null || { echo "install-llama-cpp: $tool is required but not installed" >&2; exit 1; }
done
[[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] || { echo "install-llama-cpp: prebuilt binaries are used for Linux x86_64 only, this is $(uname -s)-$(uname -m)" >&2; exit 1; }

mkdir -p "$dest/npm" "$bin"
if [[ ! -f "$dest/npm/node_modules/node-llama-cpp/package.json" ]] ||
   ! grep -q "\"version\": \"$version\"" "$dest/npm/node_modules/node-llama-cpp/package.json"; then
    echo "install-llama-cpp: npm i -E node-llama-cpp@$version (linux-x64 prebuilt only)"
    [[ -f "$dest/npm/package.json" ]] || echo '{"private": true}' > "$dest/npm/package.json"
    # --omit=optional skips the CUDA/Vulkan/ARM builds (~650 MB); the x64 CPU build is asked for by name.
    # --ignore-scripts: the postinstall would only look for GPU builds or try to compile.
    (cd "$dest/npm" && npm i -E --no-audit --no-fund --ignore-scripts --omit=optional \
        "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version")
fi
libs="$dest/npm/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
bundle="$dest/npm/node_modules/node-llama-cpp/llama/gitRelease.bundle"
[[ -f "$libs/libllama.v0.4.0.so" || -n "$(ls "$libs"/libllama*.so 2>/dev/null)" ]] || { echo "install-llama-cpp: no prebuilt libllama in $libs" >&2; exit 1; }

if [[ ! -f "$dest/src/include/llama.h" ]]; then
    echo "install-llama-cpp: headers and tool sources from $(basename "$bundle")"
    rm -rf "$dest/src"
    git clone --quiet --no-checkout "$bundle" "$dest/src"
    (cd "$dest/src" && git sparse-checkout set --no-cone /include /ggml/include /common /vendor /tools/batched-bench >/dev/null &&
        git -c advice.detachedHead=false checkout --quiet)
fi

for lib in "$libs"/*.so; do ln -sf "$lib" "$bin/$(basename "$lib")"; done
link=()
for name in libllama-common.so "libllama.v*.so" "libggml.v*.so" libggml-base.so; do
    file=$(cd "$libs" && ls $name | head -1)
    link+=("-l:$file")
done
flags=(-O2 -std=c++17 -I"$dest/src/include" -I"$dest/src/ggml/include" -I"$dest/src/common" -I"$dest/src/vendor"
       -L"$bin" -Wl,-rpath,'$ORIGIN')
echo "install-llama-cpp: compiling llama-batched-bench and puzzle-llama-check against the prebuilt libraries"
g++ "${flags[@]}" -I"$dest/src/tools/batched-bench" "$dest/src/tools/batched-bench/batched-bench.cpp" \
    "$root/scripts/llama-cpp/batched-bench-main.cpp" -o "$bin/llama-batched-bench" "${link[@]}"
g++ "${flags[@]}" "$check_src" -o "$bin/puzzle-llama-check" "${link[@]}"
touch "$stamp"
echo "llama.cpp (node-llama-cpp $version) installed: $bin/llama-batched-bench, $bin/puzzle-llama-check"
