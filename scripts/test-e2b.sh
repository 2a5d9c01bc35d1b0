#!/usr/bin/env bash
# scripts/test-e2b.sh: E2B's own Python SDK (from PyPI, pinned) against a corrald of its own.
#
# Builds the `e2b` template's image (Tests/e2b/image: corral/base with /home/user) when it is
# missing and the code interpreter's on top of it (Tests/e2b/code-interpreter), starts corrald on
# a fresh state directory and a free loopback port with both templates and warm pools of them,
# makes two tenants, then runs Tests/e2b/test_*.py with
# E2B_API_URL and E2B_SANDBOX_URL naming corrald and E2B_API_KEY a tenant token; and removes
# everything it made whatever happened: the tenants with their sandboxes, the pool's members,
# corrald, the workspaces' mounts and the state directory.
#
# With --bench, the drop-in's benchmark instead (Tests/e2b/bench_e2b.py): create to first run,
# and commands.run("true") through the SDK beside corral's own API, to E2B_BENCH_JSON.
#
#   CORRAL_REQUIRE_ENGINE=1   a missing engine, venv or SDK fails instead of skipping
#   CORRAL_BIN, CORRALD_BIN   the binaries (default .build/debug/...)
#   E2B_TEST_ARGS             extra pytest arguments (such as -k NAME)
#   E2B_BENCH_JSON            where --bench writes its figures (default .build/e2b-bench.json)
#
# The SDK and pytest come from PyPI into .build/e2b-venv, made when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CORRAL_SCRIPT_NAME=test-e2b
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. scripts/lib/common.sh

mode="test"
case "${1:-}" in
    "") ;;
    --bench) mode=bench ;;
    *) die "unknown argument '$1'" "scripts/test-e2b.sh [--bench]" ;;
esac

E2B_IMAGE=corral/e2b:bookworm
INTERPRETER_IMAGE=corral/e2b-code-interpreter:bookworm
venv=$E2B_VENV
corral=${CORRAL_BIN:-.build/debug/corral}
corrald=${CORRALD_BIN:-.build/debug/corrald}

unavailable() {
    if [ "${CORRAL_REQUIRE_ENGINE:-0}" = 1 ]; then
        die "$1 (CORRAL_REQUIRE_ENGINE=1: the E2B tests must run)" "$2"
    fi
    say "skipped: $1; fix: $2"
    exit 0
}

engine_answers || unavailable "no container engine answers at $(engine_endpoint)" "make engine"
if [ ! -x "$corral" ] || [ ! -x "$corrald" ]; then
    die "no corral binaries at $corral and $corrald" "swift build (or set CORRAL_BIN and CORRALD_BIN)"
fi

python=$venv/bin/python
python_venv "$venv" "$E2B_PINS" "$E2B_IMPORTS"

# The e2b template's image, from the base image already on the engine.
if [ "$(engine_curl "/images/$E2B_IMAGE/json" -o /dev/null -w '%{http_code}')" != 200 ]; then
    [ "$(engine_curl "/images/corral/base:bookworm/json" -o /dev/null -w '%{http_code}')" = 200 ] ||
        unavailable "corral/base:bookworm is not on the engine" "make image"
    say "building $E2B_IMAGE"
    build_log=$(tar -C Tests/e2b/image -c Dockerfile |
        engine_curl "/build?t=$E2B_IMAGE&rm=1&forcerm=1" -X POST -H 'Content-Type: application/x-tar' --data-binary @-)
    [ "$(engine_curl "/images/$E2B_IMAGE/json" -o /dev/null -w '%{http_code}')" = 200 ] ||
        die "building $E2B_IMAGE failed: $build_log" "read Tests/e2b/image/Dockerfile"
fi

# The code interpreter's image, on top: always rebuilt (a copy of one file, cached by the engine),
# so that it holds the kernel server of this tree.
build_log=$(tar -C Tests/e2b/code-interpreter -c Dockerfile kernel.py |
    engine_curl "/build?t=$INTERPRETER_IMAGE&rm=1&forcerm=1" -X POST -H 'Content-Type: application/x-tar' --data-binary @-)
case "$build_log" in
    *'"error"'*) die "building $INTERPRETER_IMAGE failed: $build_log" "read Tests/e2b/code-interpreter/Dockerfile" ;;
esac

state=$(mktemp -d /tmp/corral-e2b.XXXXXX)
log=$state/corrald.log
export CORRAL_STATE_DIR=$state
unset CORRAL_SERVER CORRAL_TOKEN CORRAL_CONFIG
export PYTHONDONTWRITEBYTECODE=1
corrald_pid=""
tenants=()

cat >"$state/corral.toml" <<TOML
[[templates]]
name = "e2b"
image = "$E2B_IMAGE"

[templates.pool]
min_idle = 2

[[templates]]
name = "code-interpreter-v1"
image = "$INTERPRETER_IMAGE"
# The server is detached on purpose (setsid), then waited for in the same command: a member is
# idle with it up. (As two commands, the first ended at once and corral-init stopped what was
# left of its process group, which could catch the server before setsid moved it out.)
setup = ["setsid python3 /opt/corral/kernel.py </dev/null >/dev/null 2>&1 & exec python3 /opt/corral/kernel.py --wait"]

[templates.pool]
min_idle = 1
TOML

clean_up() {
    local status=$? tenant
    trap - EXIT
    if [ -n "$corrald_pid" ] && kill -0 "$corrald_pid" 2>/dev/null; then
        for tenant in "${tenants[@]}"; do
            "$corral" tenant rm "$tenant" --purge >/dev/null 2>&1 || say "warning: could not purge tenant $tenant"
        done
    fi
    stop_process "$corrald_pid" corrald
    "$corral" pool drain >/dev/null 2>&1 || true
    remove_instance_containers "$state" >/dev/null
    if [ "$status" -ne 0 ] && [ -f "$log" ]; then
        mkdir -p .build
        cp "$log" .build/e2b-corrald.log 2>/dev/null || true
        say "corrald's log is in .build/e2b-corrald.log"
    fi
    unmount_workspaces "$state"
    rm -rf "$state"
    exit "$status"
}
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CORRAL_LOG="${CORRAL_LOG:-info}" "$corrald" --listen 127.0.0.1:0 >"$log" 2>&1 &
corrald_pid=$!
url=$(wait_for_service "$corrald_pid" "$log")

for tenant in acme globex; do
    token=$("$corral" tenant add "$tenant") || die "corral tenant add $tenant failed"
    tenants+=("$tenant")
    export "E2B_TOKEN_${tenant^^}=$token"
done
# The pool's members first: sandboxes made through E2B's API come from it (a test checks so).
# A machine still busy with the suites before this one can take a while; 3 minutes at most.
pools() { curl -sS --max-time 5 --unix-socket "$state/corral.sock" http://corral/v1/pools 2>/dev/null; }
fill_started=$SECONDS
while :; do
    idle=$(pools | python3 -c 'import json, sys; print(sum(p.get("idle", 0) for p in json.load(sys.stdin)))' 2>/dev/null || echo 0)
    [ "${idle:-0}" -ge 3 ] && break
    if [ $((SECONDS - fill_started)) -ge 180 ]; then
        say "the pools: $(pools || echo 'no answer')"
        say "the last lines of corrald's log:"
        tail -n 40 "$log" >&2 || true
        die "the templates' pools did not fill within 180 s" "read $log"
    fi
    sleep 0.25
done
say "the pools filled in $((SECONDS - fill_started)) s"
export E2B_API_URL=$url E2B_SANDBOX_URL=$url E2B_API_KEY=$E2B_TOKEN_ACME E2B_OTHER_API_KEY=$E2B_TOKEN_GLOBEX
say "corrald answers at $url (state $state); $("$python" -m pip show e2b 2>/dev/null | sed -n 's/^Version: /e2b /p')"

if [ "$mode" = bench ]; then
    E2B_BENCH_SOCKET=$state/corral.sock E2B_BENCH_JSON=${E2B_BENCH_JSON:-$PWD/.build/e2b-bench.json} \
        "$python" Tests/e2b/bench_e2b.py
    exit 0
fi
# shellcheck disable=SC2086 # E2B_TEST_ARGS is split on purpose
"$python" -m pytest -q -p no:cacheprovider Tests/e2b ${E2B_TEST_ARGS:-}
