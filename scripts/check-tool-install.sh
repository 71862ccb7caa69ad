#!/usr/bin/env bash
# Checks the `dotnet tool` install end to end: builds, packs the `puzzle` tool (src/Puzzle.Cli), installs it into a
# temporary tool path, and checks that its TorchSharp shim is fixed and `puzzle --version` runs. Takes minutes
# (packing compresses ~570 MB), so it is not part of the regular test run. Idempotent; leaves nothing behind.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dotnet build tests/Puzzle.Tests -c Release --nologo -v quiet -clp:NoSummary
PUZZLE_PACK_TEST=1 dotnet test tests/Puzzle.Tests -c Release --no-build --filter "FullyQualifiedName~TorchSharpShimTests"
