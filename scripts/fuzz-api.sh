#!/usr/bin/env bash
# scripts/fuzz-api.sh: schemathesis fuzzes docs/openapi.yaml against a live corrald on
# loopback. Fails on any 5xx, on a response that breaks the document, and on a crash.
#
# It starts `corral serve` with a state directory of its own and a tenant token, runs
# schemathesis (installed into a venv under ~/.cache/corral when missing) for at most
# CORRAL_FUZZ_SECONDS (default 150), then stops the service and removes every sandbox made
# under that state directory (the engine's corral.instance label names it) and the directory.
#
#   CORRAL_BIN            the corral binary (default .build/debug/corral; `make fuzz` builds it)
#   CORRAL_FUZZ_SECONDS   schemathesis's time budget
#   CORRAL_FUZZ_SEED      a seed, to replay a run
#   CORRAL_FUZZ_REPORT    directory for schemathesis's JUnit report (default .build/fuzz)
#
# Brains point at a closed loopback port with a dummy key, so that the agent routes run for
# real and every request stays on this machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CORRAL_SCRIPT_NAME=fuzz-api
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. scripts/lib/common.sh

# hypothesis is pinned too: later ones describe filter lambdas by parsing whole source files
# with ast, which trips CPython 3.11's "AST constructor recursion depth mismatch" SystemError
# (fixed in later CPythons; Debian 12 has 3.11) and ends operations with a runtime error.
PINS="schemathesis==4.32.5 hypothesis==6.130.12"
venv=${CORRAL_FUZZ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/corral/schemathesis-4.32.5}
corral=${CORRAL_BIN:-.build/debug/corral}
budget=${CORRAL_FUZZ_SECONDS:-150}
report=${CORRAL_FUZZ_REPORT:-.build/fuzz}

[ -x "$corral" ] || die "no corral binary at $corral" "swift build (or set CORRAL_BIN)"
engine_answers || die "no container engine answers at $(engine_endpoint)" "make engine"

# schemathesis, pinned, in a venv of its own so that it never touches the system's packages.
schemathesis="$venv/bin/schemathesis"
python_venv "$venv" "$PINS" 'import schemathesis'

mkdir -p "$report"
state=$(mktemp -d /tmp/corral-fuzz.XXXXXX)
log="$state/serve.log"
serve_pid=""

# Stops the service, then removes what it made: sandboxes and pool members carry the
# instance label of this state directory, and nothing else on the engine does.
clean_up() {
    local status=$?
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        stop_process "$serve_pid" corrald
        # Killed rather than stopped is a failure of its own.
        grep -q "corral serve: stopped" "$log" 2>/dev/null || status=1
    fi
    say "removed $(remove_instance_containers "$state") container(s) of the fuzzed service"
    if [ -f "$log" ]; then
        cp "$log" "$report/corrald.log" 2>/dev/null || true
        if [ "$status" -ne 0 ]; then
            say "the service's log, whole in $report/corrald.log; where it failed:"
            grep -n -m 5 -A 12 -E "Fatal error|Crash|error:" "$log" >&2 || tail -n 40 "$log" >&2 || true
        fi
    fi
    unmount_workspaces "$state"
    rm -rf "$state"
    exit "$status"
}
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export CORRAL_STATE_DIR=$state
token=$("$corral" tenant add fuzz)

ANTHROPIC_API_KEY=fuzz-not-a-key ANTHROPIC_BASE_URL=http://127.0.0.1:9 \
    OPENAI_API_KEY=fuzz-not-a-key OPENAI_BASE_URL=http://127.0.0.1:9/v1 \
    "$corral" serve --listen 127.0.0.1:0 >"$log" 2>&1 &
serve_pid=$!

url=$(wait_for_service "$serve_pid" "$log")
say "corrald answers at $url (state $state); fuzzing for at most ${budget}s"

# One sandbox, one session and one agent session made up front, so that the operations on an
# existing resource reach their handlers (random ids only get 404s). The stateful phase follows
# the document's links to the resources it makes itself, removals included.
api() {
    curl -sS --fail-with-body -m 120 -H "Authorization: Bearer $token" -H "Content-Type: application/json" "$@"
}
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
sandbox=$(api -X POST -d '{"template": "base", "labels": {"fuzz": "1"}}' "$url/v1/sandboxes" | json_field id) ||
    die "could not make the sandbox to fuzz"
session=$(api -X POST -d '{"metadata": {"fuzz": "1"}}' "$url/v1/sessions" | json_field id) ||
    die "could not make the session to fuzz"
agent=$(api -X POST -d '{"task": "fuzz", "brain": "anthropic"}' "$url/v1/agents" | json_field session) ||
    die "could not start the agent session to fuzz"
cat >"$report/schemathesis.toml" <<TOML
[[operations]]
include-operation-id-regex = "^(executeTool|execStream|putArchive|getArchive|statPath|putFile|getFile|listCommands|startCommand)$"
parameters = { "path.id" = "$sandbox" }

# schemathesis also tries configured values on the other operations of a path, so removeSandbox
# gets an id of its own, lest it remove the sandbox the others need early in the run.
[[operations]]
include-operation-id = "removeSandbox"
parameters = { "path.id" = "sb-not-a-sandbox" }

[[operations]]
include-operation-id-regex = "^(appendEvents|readEvents|forkSession|wakeSession)$"
parameters = { "path.id" = "$session" }

[[operations]]
include-operation-id-regex = "^(getHarness|runHarness|stopHarness)$"
parameters = { "path.id" = "$agent" }
TOML

seed_args=()
if [ -n "${CORRAL_FUZZ_SEED:-}" ]; then seed_args=(--seed "$CORRAL_FUZZ_SEED"); fi

# The live tail (tailEvents) is left out: it never ends by design, which a fuzzer reads as a
# hang. Its routes' tests cover it. A started command streams until it ends, also by design,
# so fuzz-hooks.py gives every started command a 5 s timeout.
fuzz_status=0
# From the report directory: schemathesis keeps its cache of failures where it runs.
document=$PWD/docs/openapi.yaml
hooks=$PWD/scripts/fuzz-hooks.py
(cd "$report" && SCHEMATHESIS_HOOKS=$hooks "$schemathesis" run "$document" \
    --url "$url" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --exclude-operation-id tailEvents \
    --max-time "$budget" \
    --request-timeout 60 \
    --workers 2 \
    --report junit --report-junit-path schemathesis.xml \
    "${seed_args[@]}") || fuzz_status=$?

if ! kill -0 "$serve_pid" 2>/dev/null; then
    serve_pid=""
    die "corrald is not running any more: it crashed under fuzzing"
fi
if grep -qE "Fatal error|Stack dump|Segmentation fault" "$log"; then
    die "corrald's log shows a crash"
fi
[ "$fuzz_status" -eq 0 ] || die "schemathesis found failures (exit $fuzz_status)" \
    "reproduce one with CORRAL_FUZZ_SEED and the curl line schemathesis printed"
say "no 5xx, no crash, every response as documented"
