#!/usr/bin/env bash
# scripts/demo-replicas.sh: two corrald replicas over one PostgreSQL (`make run-replicas`).
#
# 1. A private PostgreSQL (scripts/postgres.sh up) and two replicas, A on 127.0.0.1:8421 and
#    B on 127.0.0.1:8422, each with a state directory of its own under ./var, both naming the
#    same store (schema demo_replicas, emptied first), with a 3 s run lease. Their worker ports
#    are 8431 and 8432; they run no sandboxes themselves (`local_group = ""`).
# 2. A tenant added through A works on B; a session made through B is read through A; a
#    credential put into the vault through A is listed through B (one key file for both).
# 3. A worker (on this host's engine, a state directory of its own) dials A only; A tells it
#    of B, and it links to B too. A sandbox made through A is used through B at once.
# 4. An agent started through A sleeps in its first tool call, in a sandbox on the worker; A
#    is killed with SIGKILL; B takes the run over once the lease expires, records the call
#    unknown and finishes it, in the same sandbox, through its own link to the worker.
# 5. Everything is stopped and removed (the schema too).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
corral=${CORRAL_BIN:-.build/debug/corral}
root=$PWD/var/replicas
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

scripts/postgres.sh up
eval "$(scripts/postgres.sh env)"
store="$CORRAL_TEST_STORE_URL?schema=demo_replicas"
scripts/postgres.sh psql -q -c "DROP SCHEMA IF EXISTS demo_replicas CASCADE" >/dev/null

rm -rf "$root"
mkdir -p "$root/a" "$root/b" "$root/w1"
declare -A worker_ports=([a]=8431 [b]=8432)
for replica in a b; do
    cat >"$root/$replica/corral.toml" <<TOML
# no templates: sandboxes are made when asked for, on the worker
[store]
run_lease = "3s"

[workers]
listen = "127.0.0.1:${worker_ports[$replica]}"
local_group = ""
heartbeat = "1s"
TOML
done
# The vault lives in the store too: every replica opens it with the same key.
(umask 077 && head -c 32 /dev/urandom | base64 >"$root/vault.key")
export CORRAL_VAULT_KEY_FILE="$root/vault.key"
# on REPLICA COMMAND...: corral on that replica's state directory (its unix socket).
on() {
    local replica=$1
    shift
    CORRAL_STATE_DIR="$root/$replica" CORRAL_CONFIG="$root/$replica/corral.toml" CORRAL_STORE_URL="$store" \
        CORRAL_SERVER="" CORRAL_TOKEN="" "$corral" "$@"
}
declare -A pids=()
start() {
    local replica=$1 port=$2
    CORRAL_STATE_DIR="$root/$replica" CORRAL_CONFIG="$root/$replica/corral.toml" CORRAL_STORE_URL="$store" \
        "$corral" serve --listen "127.0.0.1:$port" >"$root/$replica/serve.log" 2>&1 &
    pids[$replica]=$!
    for _ in $(seq 1 300); do
        grep -q "listening on unix" "$root/$replica/serve.log" 2>/dev/null && return 0
        kill -0 "${pids[$replica]}" 2>/dev/null || break
        sleep 0.1
    done
    cat "$root/$replica/serve.log" >&2
    echo "demo: replica $replica did not start" >&2
    exit 1
}
cleanup() {
    for replica in "${!pids[@]}"; do kill -TERM "${pids[$replica]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # What either replica or the worker made, the killed one's included: removed through the
    # engine.
    for replica in a b w1; do
        for sandbox in $(CORRAL_AGENT=0 on "$replica" sandbox ls --json 2>/dev/null |
            sed -n 's/.*"id" : "\(sb-[a-z0-9]*\)".*/\1/p'); do
            CORRAL_AGENT=0 on "$replica" sandbox rm "$sandbox" >/dev/null 2>&1 || true
        done
    done
    scripts/postgres.sh psql -q -c "DROP SCHEMA IF EXISTS demo_replicas CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "two replicas over one store"
start a 8421
start b 8422
echo "A: http://127.0.0.1:8421 (pid ${pids[a]})   B: http://127.0.0.1:8422 (pid ${pids[b]})   store: ${store/:*@/://…@}"

step "a tenant added through A works on B"
token=$(on a tenant add demo)
curl -sS --fail -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{}' \
    http://127.0.0.1:8422/v1/sessions | sed 's/^/B made: /'
echo
curl -sS --fail -H "Authorization: Bearer $token" http://127.0.0.1:8421/v1/sessions | cut -c 1-200 | sed 's/^/A lists: /'
echo

step "a credential put through A is in B's vault"
echo "demo-token" | on a vault put demo-gh --scope git.example.com/demo --tenant demo
on b vault ls --tenant demo | sed 's/^/B lists: /'

step "a worker dials A, and links to B too"
worker_token=$(on a worker token add --group default)
echo "# the worker's engine host: no templates" >"$root/w1/corral.toml"
CORRAL_STATE_DIR="$root/w1" CORRAL_CONFIG="$root/w1/corral.toml" CORRAL_AGENT=0 "$corral" worker \
    --server "http://127.0.0.1:${worker_ports[a]}" --token "$worker_token" --name w1 >"$root/w1/worker.log" 2>&1 &
pids[w1]=$!
connected() { on "$1" worker ls --json 2>/dev/null | grep -q '"state" : "connected"'; }
for _ in $(seq 1 300); do
    connected a && connected b && break
    sleep 0.1
done
connected b || { cat "$root/w1/worker.log" >&2; echo "demo: the worker did not link to B" >&2; exit 1; }
on a worker ls | sed 's/^/A: /'
on b worker ls | sed 's/^/B: /'

step "a sandbox made through A, used through B at once"
sandbox=$(curl -sS --fail -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{}' \
    http://127.0.0.1:8421/v1/sandboxes | sed -n 's/.*"id" *: *"\(sb-[a-z0-9]*\)".*/\1/p')
[ -n "$sandbox" ] || { echo "demo: A made no sandbox" >&2; exit 1; }
echo "A made $sandbox"
CORRAL_SERVER=http://127.0.0.1:8422 CORRAL_TOKEN=$token "$corral" exec "$sandbox" -- sh -c 'echo "B ran this in $(hostname)"'
CORRAL_SERVER=http://127.0.0.1:8422 CORRAL_TOKEN=$token "$corral" sandbox ls | sed 's/^/B lists: /'
CORRAL_SERVER=http://127.0.0.1:8422 CORRAL_TOKEN=$token "$corral" sandbox rm "$sandbox"

step "an agent through A, A killed mid tool call, B finishes it"
script="$root/agent.jsonl"
cat >"$script" <<'JSONL'
{"text": "Sleeping for a while first.", "tool_calls": [{"name": "bash", "input": {"command": "sleep 20; echo slept"}}]}
{"text": "Done, on whichever replica took me over."}
JSONL
session=$(curl -sS --fail --unix-socket "$root/a/corral.sock" -H 'Content-Type: application/json' \
    -d "{\"task\": \"sleep, then report\", \"brain\": \"scripted:$script\"}" http://corral/v1/agents |
    sed -n 's/.*"session" *: *"\([^"]*\)".*/\1/p')
[ -n "$session" ] || { echo "demo: the agent did not start" >&2; exit 1; }
echo "session $session runs on A"
for _ in $(seq 1 600); do
    on b session show "$session" 2>/dev/null | grep -q "sandbox.provisioned" && break
    sleep 0.1
done
on b session show "$session" | cut -c 1-150
{ kill -KILL "${pids[a]}" && wait "${pids[a]}"; } 2>/dev/null || true
unset 'pids[a]'
echo "A killed (SIGKILL) in the middle of the tool call; B's view:"
curl -sS --unix-socket "$root/b/corral.sock" "http://corral/v1/sessions/$session/harness"
echo
for _ in $(seq 1 600); do
    on b session show "$session" 2>/dev/null | grep -q "session.ended" && break
    sleep 0.1
done
on b session show "$session" | grep -q "session.ended" || { echo "demo: B did not finish the run" >&2; exit 1; }
step "the session, as B finished it"
on b session show "$session" | cut -c 1-150
curl -sS --unix-socket "$root/b/corral.sock" "http://corral/v1/sessions/$session/harness"
echo
echo
echo "demo done: the worker served both replicas; B took the run over from A and finished it; stopping B and the worker, removing what they made"
