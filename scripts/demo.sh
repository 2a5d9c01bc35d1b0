#!/usr/bin/env bash
# scripts/demo.sh: what `make run` shows once the machine is prepared (packages, engine,
# image, build).
#
# 1. corrald starts on embedded defaults: sessions under ./var, the local engine, template
#    `base` with a small warm pool, the API on 127.0.0.1:8420 (CORRAL_LISTEN to change).
#    It prints the URL, the console's URL with an operator console token to log in with, a
#    token for a local tenant and a line to try.
# 2. One sandbox goes through the tools an agent gets (bash, the editor), through corrald.
# 3. One agent session runs through corrald: the scripted brain, or the real one when
#    ANTHROPIC_API_KEY is set.
# 4. corrald keeps serving until Ctrl-C (DEMO_EXIT=1 stops it after the demo instead).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
corral=${CORRAL_BIN:-.build/debug/corral}
corrald=${CORRALD_BIN:-.build/debug/corrald}
export CORRAL_STATE_DIR=${CORRAL_STATE_DIR:-$PWD/var}
listen=${CORRAL_LISTEN:-127.0.0.1:8420}
mkdir -p "$CORRAL_STATE_DIR"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# tool NAME JSON: show the call, then what execute(name, input) returned. An error output is
# part of the demo (the read-only root), so a non-zero status does not stop it.
tool() {
    printf '$ corral tool %s %s %s\n' "$id" "$1" "$2"
    "$corral" tool "$id" "$1" "$2" | sed 's/^/  /' || printf '  (the tool reported an error, as expected)\n'
}

step "corral doctor"
"$corral" doctor

step "corrald: the service, on embedded defaults"
log="$CORRAL_STATE_DIR/corrald.log"
"$corrald" --listen "$listen" >"$log" 2>&1 &
corrald_pid=$!
stop_corrald() {
    if kill -0 "$corrald_pid" 2>/dev/null; then
        kill -TERM "$corrald_pid" 2>/dev/null || true
        wait "$corrald_pid" 2>/dev/null || true
    fi
}
trap stop_corrald EXIT
for _ in $(seq 1 600); do
    grep -q "listening on http" "$log" 2>/dev/null && break
    kill -0 "$corrald_pid" 2>/dev/null || { cat "$log" >&2; echo "demo: corrald did not start (log above)" >&2; exit 1; }
    sleep 0.1
done
grep -q "listening on http" "$log" || { cat "$log" >&2; echo "demo: corrald did not start in 60 s" >&2; exit 1; }
cat "$log"
url="http://$listen"
"$corral" tenant rm demo >/dev/null 2>&1 || true
token=$("$corral" tenant add demo)
# The operator's console token is made on the unix socket, the operator's own door.
console_token=$(curl -sS --fail --unix-socket "$CORRAL_STATE_DIR/corral.sock" -X POST \
    http://corral/console/operator-token) || { echo "demo: could not make a console token" >&2; exit 1; }
cat <<TEXT
corrald answers on $url (and on $CORRAL_STATE_DIR/corral.sock for this machine's corral).
The console: $url/console
  log in as the operator with:  $console_token
  (or as tenant 'demo' with its token below; a new operator token replaces this one:
   curl --unix-socket $CORRAL_STATE_DIR/corral.sock -X POST http://corral/console/operator-token)
A token for tenant 'demo' (printed once; only its hash is kept):
  export CORRAL_TOKEN=$token
Try:
  curl -s -H "Authorization: Bearer \$CORRAL_TOKEN" -d '{"template":"base"}' $url/v1/sandboxes
or: CORRAL_SERVER=$url corral sandbox create --template base
TEXT
# Give the pool a moment to make its first members, so that the claim below is warm (a
# claim never waits for the pool: with no idle member it simply takes the cold path).
for _ in $(seq 1 300); do
    "$corral" pool ls --json 2>/dev/null | grep -q '"idle" : [1-9]' && break
    sleep 0.1
done
step "corral sandbox create --template base --json: a warm pool member, claimed through corrald"
created=$("$corral" sandbox create --template base --ttl 15m --label demo=make-run --json)
echo "$created"
id=$(printf '%s' "$created" | sed -n 's/.*"id" : "\([^"]*\)".*/\1/p')
[ -n "$id" ] || { echo "demo: could not read the sandbox id" >&2; exit 1; }
trap '"$corral" sandbox rm "$id" >/dev/null 2>&1 || true; stop_corrald' EXIT

step "who and where: uid 1000, no capabilities, loopback only"
tool bash '{"command":"id; grep -E \"^(CapEff|NoNewPrivs)\" /proc/self/status; python3 -c \"import socket; print([n for _, n in socket.if_nameindex()])\""}'

step "the editor tool writes a file; bash runs it"
tool str_replace_based_edit_tool '{"command":"create","path":"/workspace/hello.py","file_text":"import sys\nprint(\"hello from a corral sandbox on\", sys.platform)\n"}'
tool bash '{"command":"python3 hello.py"}'
tool str_replace_based_edit_tool '{"command":"str_replace","path":"/workspace/hello.py","old_str":"hello from","new_str":"edited in"}'
tool bash '{"command":"python3 hello.py"}'
tool str_replace_based_edit_tool '{"command":"view","path":"/workspace/hello.py"}'

step "limits hold: a read-only root, a timeout that kills, capped output"
tool bash '{"command":"touch /usr/bin/evil"}'
tool bash '{"command":"sleep 30 & sleep 30","timeout":1}'
printf '$ corral tool %s bash {"command":"seq 1 1000000"}   (6.9 MB of output; first, marker and last lines shown)\n' "$id"
"$corral" tool "$id" bash '{"command":"seq 1 1000000"}' | sed -n '1p; /corral:/p; $p' | sed 's/^/  /'

step "corral exec streams and passes the exit status through"
set +e
# shellcheck disable=SC2016 # the loop runs in the sandbox's shell, not this one
"$corral" exec "$id" -- bash -c 'for i in 1 2 3; do echo "line $i"; done; exit 3'
echo "exit status: $?"
set -e

step "corral sandbox rm $id"
"$corral" sandbox rm "$id"
trap stop_corrald EXIT
if "$corral" sandbox ls | grep -q "$id"; then
    echo "demo: the sandbox is still listed" >&2
    exit 1
fi
echo "removed; nothing left behind"

step "corral agent run: a brain, a stateless harness, sandboxes made on the first tool call"
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
    brain=(--brain anthropic)
    echo "(ANTHROPIC_API_KEY is set: the real brain plays the model)"
else
    brain=(--brain scripted:examples/demo-agent.jsonl)
    echo "(no ANTHROPIC_API_KEY: the scripted brain in examples/demo-agent.jsonl plays the model)"
fi
transcript=$(mktemp)
agent_cleanup() {
    # Every sandbox the session recorded, whatever happened to the run.
    local session sandbox
    session=$(head -n 1 "$transcript" 2>/dev/null || true)
    if [ -n "$session" ]; then
        for sandbox in $("$corral" session show "$session" --json 2>/dev/null | grep '"type":"sandbox.provisioned"' |
            sed -n 's/.*"sandbox":"\(sb-[a-z0-9]*\)".*/\1/p'); do
            "$corral" sandbox rm "$sandbox" >/dev/null 2>&1 || true
        done
    fi
    rm -f "$transcript"
}
trap 'agent_cleanup; stop_corrald' EXIT
"$corral" agent run "${brain[@]}" --max-turns 12 \
    "Write fizzbuzz.py in /workspace for 1 to 15, run it, and fix it until it is right" | tee "$transcript"
session=$(head -n 1 "$transcript")

step "corral session show $session: every step is an event (first 14)"
"$corral" session show "$session" | head -n 14 | cut -c 1-160

trap - EXIT
agent_cleanup
if [ "${DEMO_EXIT:-0}" = 1 ]; then
    stop_corrald
    echo
    echo "demo done; corrald stopped (DEMO_EXIT=1)"
    exit 0
fi
step "corrald keeps serving on $url until Ctrl-C; the console is at $url/console"
trap 'echo; echo "stopping corrald"; stop_corrald; exit 0' INT TERM
wait "$corrald_pid"
