#!/usr/bin/env bash
# The test command (README "Run the tests"; CI runs exactly this): installs the external programs the tests check
# against, then runs the whole suite. Each install is idempotent and says so when it cannot run here (not root, no
# apt-get, no npm), in which case the tests that need it skip with a message:
#   scripts/install-slurm.sh      Debian's slurm-wlm + munge: a one-node Slurm cluster for the cluster test;
#   scripts/install-llama-cpp.sh  llama.cpp from npm (node-llama-cpp): GGUF export checked by a real engine.
# PUZZLE_PACK_TEST=1 also packs the CLI as a .NET tool and installs it into a temporary tool path (1–2 min).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install-slurm.sh"
"$root/scripts/install-llama-cpp.sh" || echo "test: llama.cpp could not be installed; the GGUF engine checks will skip" >&2
export PUZZLE_PACK_TEST="${PUZZLE_PACK_TEST:-1}"
exec dotnet test "$root/tests/Puzzle.Tests" -c Release "$@"
