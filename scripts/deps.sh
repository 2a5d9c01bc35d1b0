#!/usr/bin/env bash
# scripts/deps.sh: installs what building, testing and running corral need on Debian 12, when
# missing. Needs root only when something is missing. Swift itself is not installed here:
# it must be on PATH already (swift.org toolchain, 6.x).
set -euo pipefail

CORRAL_SCRIPT_NAME=deps.sh
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Build: the C libraries behind CCurl and CArchive (and SQLite for the benchmark's peer),
# pkg-config to find them. Run: the engine, gVisor, the image builder, mkfs.ext4 and mount
# for sandboxes' workspaces, and the tools the scripts and tests call (python3 and setpriv:
# the tests act as an unprivileged host user), shellcheck for `make check`, iproute2 and
# iptables for the worker fleet's network namespaces (scripts/fleet.sh), PostgreSQL for the
# PostgreSQL session store's tests and bench (scripts/postgres.sh; pgbench comes with it), and
# headless Chromium with its WebDriver and python3-venv for the console's browser tests and the
# E2B SDK's tests (selenium and E2B's SDK come from PyPI into venvs under .build/, see
# scripts/test-console.sh and scripts/test-e2b.sh), tmux for the terminal test of
# `corral exec -it`.
PACKAGES=(
    libcurl4-openssl-dev libarchive-dev libsqlite3-dev pkg-config
    docker.io runsc mmdebstrap e2fsprogs mount util-linux
    git openssl curl ca-certificates python3 shellcheck iproute2 iptables tmux
    chromium chromium-driver python3-venv postgresql
)

command -v swift >/dev/null 2>&1 ||
    die "swift is not on PATH" \
        "install a Swift 6 toolchain (https://www.swift.org/install/linux/) and put its usr/bin on PATH"
apt_install_missing "${PACKAGES[@]}"
say "dependencies present"
