#!/usr/bin/env bash
# Installs Slurm (slurmctld, slurmd, sbatch, ...) and MUNGE from Debian's packages, for `puzzle slurm` and its test
# (tests/Puzzle.Tests/Cluster/SlurmTests.cs). Idempotent: does nothing when they are already installed. Needs root
# and apt-get (Debian/Ubuntu); elsewhere it says so and exits 0, and the Slurm test skips. The packages' own
# services are not started here: the test runs its own munged/slurmctld/slurmd under a temp dir.
set -euo pipefail
need=()
command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || need+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
command -v munged >/dev/null 2>&1 || need+=(munge)
if [ ${#need[@]} -eq 0 ]; then
  echo "install-slurm: slurmctld, slurmd, sbatch and munged are installed (slurm $(dpkg-query -W -f '${Version}' slurmctld 2>/dev/null || echo "?"))"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-slurm: missing ${need[*]}; install Debian's slurm-wlm and munge as root (apt-get) to run the Slurm test" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# slurm-wlm is the metapackage of slurmctld + slurmd + slurm-client; policy-rc.d keeps the packages' own daemons
# from being started by the install where the image has an init system.
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
trap '[ "$created" = 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
echo "install-slurm: installed slurm $(dpkg-query -W -f '${Version}' slurmctld) and $(munged --version 2>&1 | head -1)"
