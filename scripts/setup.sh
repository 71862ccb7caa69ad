#!/usr/bin/env bash
# Sets up a fresh machine for Puzzle: restores NuGet packages and builds the `puzzle` command (Release).
# Needs only the .NET 10 SDK. On Debian 12 the build itself makes TorchSharp's native shim load
# (build/TorchSharpShim.targets); nothing in the NuGet cache is modified.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dotnet --version >/dev/null 2>&1 || { echo "error: the .NET 10 SDK is required (dotnet not found on PATH)" >&2; exit 1; }
# Plots draw text with DejaVu Sans (ScottPlot renders no text without a font file).
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq fonts-dejavu-core >/dev/null || echo "setup: could not install fonts-dejavu-core; plots will lack text" >&2
  else
    echo "setup: install fonts-dejavu-core (or any DejaVuSans.ttf) for text in plots" >&2
  fi
fi
dotnet build src/Puzzle.Cli -c Release --nologo -v quiet -clp:NoSummary
# The demo corpus (State of the Union addresses, public domain) into data/corpus/sotu, checksum-verified, reused.
"$root/scripts/fetch-sotu.sh"
# llama.cpp beside our engine in the bench stage (evaluation.bench_engine auto); without it the bench runs ours only.
if command -v npm >/dev/null 2>&1; then "$root/scripts/install-llama-cpp.sh" || echo "setup: llama.cpp not installed (see above); benches run in our engine only" >&2; fi
echo "setup: built $(ls "$root"/src/Puzzle.Cli/bin/Release/net10.0/Puzzle.Cli.dll)"
