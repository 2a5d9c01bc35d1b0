#!/usr/bin/env bash
# scripts/test-console.sh: the console's tests in a real browser (headless Chromium driven by
# selenium), against a corrald of their own; with --bench, the console's benchmark instead.
#
# It starts a stand-in for Anthropic's API on loopback (Tests/console/brain_double.py, which
# checks every request against the documented shape), then corrald on a fresh state directory
# and a free loopback port, with two tenants, an operator console token and a `corral worker`
# that dials its worker port (a state directory of its own, on the same engine); runs
# Tests/console/test_console.py (or bench_console.py) against it; and removes everything it
# made whatever happened: the tenants with what they own, the operator's sandboxes, the pools'
# members, the processes, the workspaces' mounts and the state directory.
#
#   CORRAL_REQUIRE_ENGINE=1   a missing Chromium, driver or engine fails instead of skipping
#   CORRAL_BIN, CORRALD_BIN   the binaries (default .build/debug/...; --bench: .build/release/...)
#   CONSOLE_SCREENSHOTS       where screenshots go (default .build/console-screenshots)
#   CONSOLE_BENCH_JSON        where --bench writes its figures (default .build/console-bench.json)
#
# Selenium comes from PyPI, pinned, into a venv under .build/ made when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CORRAL_SCRIPT_NAME=test-console
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. scripts/lib/common.sh

mode="test"
case "${1:-}" in
    "") ;;
    --bench) mode=bench ;;
    *) die "unknown argument '$1'" "scripts/test-console.sh [--bench]" ;;
esac

SELENIUM_PIN="selenium==4.51.0"
venv=.build/console-venv
if [ "$mode" = bench ]; then
    corral=${CORRAL_BIN:-.build/release/corral}
    corrald=${CORRALD_BIN:-.build/release/corrald}
else
    corral=${CORRAL_BIN:-.build/debug/corral}
    corrald=${CORRALD_BIN:-.build/debug/corrald}
fi
export CONSOLE_SCREENSHOTS=${CONSOLE_SCREENSHOTS:-$PWD/.build/console-screenshots}
export CONSOLE_BENCH_JSON=${CONSOLE_BENCH_JSON:-$PWD/.build/console-bench.json}

# Without what a browser test needs: skipped with the reason, or failed under
# CORRAL_REQUIRE_ENGINE=1 (CI), where a skipped test would pass unseen.
unavailable() {
    if [ "${CORRAL_REQUIRE_ENGINE:-0}" = 1 ]; then
        die "$1 (CORRAL_REQUIRE_ENGINE=1: the browser tests must run)" "$2"
    fi
    say "skipped: $1; fix: $2"
    exit 0
}

chromium=$(command -v chromium || true)
chromedriver=$(command -v chromedriver || true)
[ -n "$chromium" ] || unavailable "Chromium is not installed" "scripts/deps.sh (apt-get install chromium chromium-driver)"
[ -n "$chromedriver" ] || unavailable "chromedriver is not installed" "scripts/deps.sh (apt-get install chromium-driver)"
engine_answers || unavailable "no container engine answers at $(engine_endpoint)" "make engine"
if [ ! -x "$corral" ] || [ ! -x "$corrald" ]; then
    build="swift build"
    [ "$mode" = bench ] && build="swift build -c release"
    die "no corral binaries at $corral and $corrald" "$build (or set CORRAL_BIN and CORRALD_BIN)"
fi
export CONSOLE_CHROMIUM=$chromium CONSOLE_CHROMEDRIVER=$chromedriver

python=$venv/bin/python
python_venv "$venv" "$SELENIUM_PIN" 'import selenium'

# Screenshots of this run only: CI keeps the directory as an artifact.
if [ "$mode" = test ]; then rm -rf "$CONSOLE_SCREENSHOTS"; fi
mkdir -p "$CONSOLE_SCREENSHOTS"
state=$(mktemp -d /tmp/corral-console.XXXXXX)
log=$state/corrald.log
export CORRAL_STATE_DIR=$state
unset CORRAL_SERVER CORRAL_TOKEN
# No __pycache__ in the source tree.
export PYTHONDONTWRITEBYTECODE=1
brain_pid=""
corrald_pid=""
worker_pid=""
tenants=()

# Removes everything made here: through corral first (tenants with what they own, the
# operator's sandboxes, the pools' idle members), then whatever still carries this state
# directory's instance label on the engine, then the workspaces' mounts and the directory.
clean_up() {
    local status=$? tenant id
    trap - EXIT
    if [ -n "$corrald_pid" ] && kill -0 "$corrald_pid" 2>/dev/null; then
        for tenant in "${tenants[@]}"; do
            "$corral" tenant rm "$tenant" --purge >/dev/null 2>&1 || say "warning: could not purge tenant $tenant"
        done
        for id in $("$corral" sandbox ls --json 2>/dev/null | sed -n 's/.*"id" : "\(sb-[a-z0-9]*\)".*/\1/p'); do
            "$corral" sandbox rm "$id" >/dev/null 2>&1 || say "warning: could not remove sandbox $id"
        done
    fi
    stop_process "$worker_pid" "the worker"
    stop_process "$corrald_pid" corrald
    stop_process "$brain_pid" "the brain double"
    if [ -d "$state/worker" ]; then
        remove_instance_containers "$state/worker" "warning: removing a container the worker left behind" >/dev/null
        unmount_workspaces "$state/worker"
    fi
    "$corral" pool drain >/dev/null 2>&1 || true
    remove_instance_containers "$state" "warning: removing a container corral left behind" >/dev/null
    if [ "$status" -ne 0 ] && [ -f "$log" ]; then
        mkdir -p "$CONSOLE_SCREENSHOTS"
        cp "$log" "$CONSOLE_SCREENSHOTS/corrald.log" 2>/dev/null || true
        say "corrald's log is in $CONSOLE_SCREENSHOTS/corrald.log"
    fi
    unmount_workspaces "$state"
    rm -rf "$state"
    exit "$status"
}
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The brain double first: corrald reads ANTHROPIC_BASE_URL when it starts.
"$python" Tests/console/brain_double.py --port-file "$state/brain.port" --problems-file "$state/brain.problems" \
    --pace "${CONSOLE_BRAIN_PACE:-1.2}" >"$state/brain.log" 2>&1 &
brain_pid=$!
for _ in $(seq 1 100); do [ -s "$state/brain.port" ] && break; sleep 0.1; done
[ -s "$state/brain.port" ] || die "the brain double did not start" "read $state/brain.log"
export CONSOLE_BRAIN_PROBLEMS=$state/brain.problems

ANTHROPIC_BASE_URL="http://127.0.0.1:$(cat "$state/brain.port")" ANTHROPIC_API_KEY=sk-console-test-not-a-key \
    OPENAI_API_KEY="" OPENAI_BASE_URL="" CORRAL_LOG="${CORRAL_LOG:-trace}" "$corrald" --listen 127.0.0.1:0 --workers-listen 127.0.0.1:0 >"$log" 2>&1 &
corrald_pid=$!
url=$(wait_for_service "$corrald_pid" "$log")

# One worker dials in (on loopback, plain HTTP), with a template and no warm members, so that
# the operator's pages show a worker besides the service's own engine host. It is in a group of
# its own: acme's and globex's sandboxes stay on this host, whose sandbox pages the tests read;
# initech is bound to the worker's group, and its sandbox shows in the list with the worker.
workers_url=$(sed -n 's/.*listening on workers \(http:[^ ]*\).*/\1/p' "$log" | head -n 1)
[ -n "$workers_url" ] || die "corrald did not open its worker port" "read $log"
mkdir -p "$state/worker"
printf '[[templates]]\nname = "base"\n' >"$state/worker/corral.toml"
worker_token=$("$corral" worker token add --group console) || die "corral worker token add failed"
CORRAL_STATE_DIR=$state/worker "$corral" worker --server "$workers_url" --token "$worker_token" --name console-worker \
    --config "$state/worker/corral.toml" >"$state/worker.log" 2>&1 &
worker_pid=$!
export CONSOLE_WORKER=console-worker
export CONSOLE_URL=$url CONSOLE_STATE=$state CONSOLE_LOG=$log CONSOLE_CORRAL=$corral CONSOLE_CORRALD_PID=$corrald_pid CONSOLE_CORRALD_BIN=$corrald

for tenant in acme globex; do
    token=$("$corral" tenant add "$tenant") || die "corral tenant add $tenant failed"
    tenants+=("$tenant")
    export "CONSOLE_TOKEN_${tenant^^}=$token"
done
CONSOLE_TOKEN_INITECH=$("$corral" tenant add initech --group console) || die "corral tenant add initech failed"
tenants+=(initech)
export CONSOLE_TOKEN_INITECH
CONSOLE_OPERATOR_TOKEN=$(curl -sS --fail --unix-socket "$state/corral.sock" -X POST http://corral/console/operator-token) ||
    die "could not make an operator console token"
export CONSOLE_OPERATOR_TOKEN
say "corrald answers at $url (state $state); the browser is $("$chromium" --version 2>/dev/null || echo chromium)"

if [ "$mode" = bench ]; then
    "$python" Tests/console/bench_console.py
else
    "$python" Tests/console/test_console.py
fi
