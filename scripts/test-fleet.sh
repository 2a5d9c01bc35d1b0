#!/usr/bin/env bash
# scripts/test-fleet.sh: corral's workers on the fleet (scripts/fleet.sh): one control plane in
# the root namespace, one `corral worker` in each node's network namespace, where nothing can
# connect in and the only address a worker reaches is the host side of its own link. Each
# worker dials the control plane over TLS (a CA made here, verified with --ca; the worker shows
# a client certificate the same CA signed) and drives its node's own dockerd.
#
# Checks, each with a message on failure:
#   - every worker connects, and `corral worker ls` names its group and capacity;
#   - the control plane's pool target for group g1 (`[[workers.pools]]`, 1 member of `base`)
#     replaces node 1's own `min_idle` (2): its surplus member goes from its engine, and the
#     other nodes keep their own;
#   - a tenant bound to group gN gets its sandboxes on node N's engine, and exec, files and rm
#     work through the control plane; an unbound tenant's land on the control plane's own host;
#   - E2B's own SDK (Tests/e2b/on_worker.py, from the venv test-e2b.sh uses), with tenant1's
#     key, makes its sandbox on node 1's engine, runs a command and moves a file through the
#     control plane, and its kill removes it there;
#   - the control plane restarted under load (execs running against every node's sandbox): the
#     workers dial it again, it learns their sandboxes from their heartbeats, and every one of
#     them answers through it again;
#   - a worker killed with SIGKILL is reported lost past the grace, calls for its sandbox say
#     so, and when it comes back the sandbox the control plane gave up on is removed from its
#     engine;
#   - a worker with another group's token is refused and exits non-zero, saying why; one that
#     cannot verify the control plane's certificate (another CA) never connects, and says so
#     in its log (it keeps retrying: a certificate may be renewed); the control plane asks for
#     client certificates ([workers] client_ca), and a worker with a valid token but none never
#     connects, with a line in both logs.
#
# Needs root, scripts/fleet.sh up, the engine (scripts/engine.sh) and a build
# (CORRAL_BIN, default .build/debug/corral). Removes everything it made, whatever happened.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CORRAL_SCRIPT_NAME=test-fleet
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. scripts/lib/common.sh

corral=$(pwd)/${CORRAL_BIN:-.build/debug/corral}
NODES=${CORRAL_FLEET_NODES:-3}
NET_PREFIX=${CORRAL_FLEET_NET:-10.231}
[ -x "$corral" ] || die "no $corral" "swift build first"
eval "$(scripts/fleet.sh env)"
for node in $(seq 1 "$NODES"); do
    [ -S "/run/corral-fleet/$node/docker.sock" ] || die "fleet node $node is not up" "scripts/fleet.sh up"
done

work=$(mktemp -d /tmp/corral-fleet-test.XXXXXX)
control_pid=""
declare -A worker_pids=()
failures=0

load_pid=""
cleanup() {
    local node
    if [ -n "$load_pid" ]; then kill "$load_pid" 2>/dev/null || true; fi
    for node in "${!worker_pids[@]}"; do stop_process "${worker_pids[$node]}" "worker $node"; done
    stop_process "$control_pid" "the control plane"
    # Every state directory's containers, on every engine: the workers' own, and those of the
    # refused workers (bad1, bad2), whose pools start filling on node 1 before they stop.
    local state
    for state in "$work"/*/; do
        state=${state%/}
        for node in $(seq 1 "$NODES"); do
            CORRAL_ENGINE="unix:///run/corral-fleet/$node/docker.sock" remove_instance_containers "$state" >/dev/null
        done
        remove_instance_containers "$state" >/dev/null
    done
    for state in "$work"/*/; do unmount_workspaces "${state%/}"; done
    rm -rf "$work"
}
trap cleanup EXIT

check() {
    local what=$1
    shift
    if "$@"; then
        say "ok: $what"
    else
        say "FAILED: $what"
        failures=$((failures + 1))
    fi
}

# A CA, and the control plane's certificate for every node's host-side address.
sans=$(for node in $(seq 1 "$NODES"); do printf 'IP:%s.%s.1,' "$NET_PREFIX" "$node"; done)
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=corral fleet test CA" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=corral control plane" \
    -keyout "$work/cp.key" -out "$work/cp.csr" 2>/dev/null
printf 'subjectAltName=%s\n' "${sans%,}" >"$work/san.ext"
openssl x509 -req -in "$work/cp.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
    -extfile "$work/san.ext" -out "$work/cp.pem" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=another CA" \
    -keyout "$work/other.key" -out "$work/other.pem" 2>/dev/null
# The workers' client certificates ([workers] client_ca): signed by the same CA, each bound to
# its worker's group and name (corral-worker://GROUP/NAME).
for node in $(seq 1 "$NODES"); do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=node$node" \
        -keyout "$work/worker$node.key" -out "$work/worker$node.csr" 2>/dev/null
    printf 'subjectAltName=URI:corral-worker://g%s/node%s\n' "$node" "$node" >"$work/worker$node.ext"
    openssl x509 -req -in "$work/worker$node.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
        -days 1 -extfile "$work/worker$node.ext" -out "$work/worker$node.pem" 2>/dev/null
done

# The control plane: the API on loopback, the worker port on every address (the nodes reach
# only their own link's host side), TLS, a short grace so that a lost worker shows quickly.
mkdir -p "$work/cp"
cat >"$work/cp/corral.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[workers]
listen = "0.0.0.0:0"
tls_cert = "$work/cp.pem"
tls_key = "$work/cp.key"
client_ca = "$work/ca.pem"
heartbeat = "1s"
grace = "5s"
[[workers.pools]]
group = "g1"
template = "base"
min_idle = 1
TOML
CORRAL_AGENT=0 "$corral" --state-dir "$work/cp" serve --config "$work/cp/corral.toml" >"$work/cp.log" 2>&1 &
control_pid=$!
api=$(wait_for_service "$control_pid" "$work/cp.log")
workers_port=$(sed -n 's/.*listening on workers https:\/\/[^ ]*:\([0-9]*\).*/\1/p' "$work/cp.log" | head -n 1)
[ -n "$workers_port" ] || { cat "$work/cp.log" >&2; die "the control plane did not open its worker port"; }
say "control plane: API $api, workers on port $workers_port"

cp_corral() { CORRAL_AGENT=0 "$corral" --state-dir "$work/cp" "$@"; }
as_tenant() {
    local token=$1
    shift
    CORRAL_AGENT=0 CORRAL_SERVER=$api CORRAL_TOKEN=$token "$corral" --state-dir "$work/client" "$@"
}
node_docker() {
    local node=$1
    shift
    curl -sS --unix-socket "/run/corral-fleet/$node/docker.sock" "http://engine$*"
}
node_has() { node_docker "$1" "/containers/json?all=1" | grep -q "$2"; }

start_worker() {
    local node=$1 token=$2
    shift 2
    mkdir -p "$work/w$node"
    nsenter --net="/run/netns/corral-fleet-$node" env CORRAL_AGENT=0 "$corral" --state-dir "$work/w$node" \
        --engine "unix:///run/corral-fleet/$node/docker.sock" worker \
        --server "https://$NET_PREFIX.$node.1:$workers_port" --token "$token" --group "g$node" --name "node$node" \
        --ca "$work/ca.pem" --cert "$work/worker$node.pem" --key "$work/worker$node.key" "$@" >>"$work/w$node.log" 2>&1 &
    worker_pids[$node]=$!
}

wait_connected() {
    local node=$1 state
    for _ in $(seq 1 120); do
        state=$(cp_corral worker ls --json | python3 -c "import json,sys
print(next((w['state'] for w in json.load(sys.stdin) if w['name']=='node$node' and w.get('capacity')), ''))")
        [ "$state" = connected ] && return 0
        sleep 0.25
    done
    cat "$work/w$node.log" >&2
    return 1
}

declare -A tokens=()
for node in $(seq 1 "$NODES"); do
    start_worker "$node" "$(cp_corral worker token add --group "g$node")"
    tokens[$node]=$(cp_corral tenant add "tenant$node" --group "g$node")
done
for node in $(seq 1 "$NODES"); do check "node $node's worker connects over TLS" wait_connected "$node"; done
cp_corral worker ls

# Pool targets from the control plane: g1's one member of `base` replaces node 1's own two.
pool_is() {
    local node=$1 target=$2 members=$3 seen instance
    instance=$(cat "$work/w$node/sandboxes/.instance")
    for _ in $(seq 1 240); do
        seen=$(cp_corral worker ls --json | python3 -c "import json,sys
w = next((w for w in json.load(sys.stdin) if w['name']=='node$node'), {})
p = next((p for p in w.get('pools', []) if p['template']=='base'), {})
print(p.get('target'), p.get('ready'))")
        if [ "$seen" = "$target $members" ] &&
            [ "$(node_docker "$node" "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22corral.instance%3D$instance%22%5D%7D" |
                grep -o '"/corral-pool\.base\.' | wc -l)" = "$members" ]; then
            return 0
        fi
        sleep 0.5
    done
    say "node $node's pool: target and ready $seen; wanted $target $members"
    return 1
}
check "node 1's pool takes g1's target from the control plane (1), and its surplus goes" pool_is 1 1 1
check "node 2's pool keeps its own min_idle (2)" pool_is 2 2 2

# Placement by group, and calls through the control plane.
declare -A sandboxes=()
for node in $(seq 1 "$NODES"); do
    id=$(as_tenant "${tokens[$node]}" sandbox create --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    sandboxes[$node]=$id
    check "tenant$node's sandbox $id runs on node $node's engine" node_has "$node" "$id"
    for other in $(seq 1 "$NODES"); do
        [ "$other" = "$node" ] && continue
        check "…and on no other node's ($other)" bash -c "! curl -sS --unix-socket /run/corral-fleet/$other/docker.sock 'http://engine/containers/json?all=1' | grep -q $id"
    done
    # shellcheck disable=SC2016 # expanded by the sandbox's shell, not this one
    out=$(as_tenant "${tokens[$node]}" exec "$id" -- sh -c 'echo from-$(hostname)')
    check "exec through the control plane reaches it" test "$out" = "from-sandbox"
    printf 'payload %s\n' "$node" >"$work/payload"
    as_tenant "${tokens[$node]}" cp "$work/payload" "$id:/tmp/payload"
    back=$(as_tenant "${tokens[$node]}" exec "$id" -- cat /tmp/payload)
    check "cp into it and back" test "$back" = "payload $node"
    check "sandbox ls names its worker" bash -c "CORRAL_AGENT=0 CORRAL_SERVER=$api CORRAL_TOKEN=${tokens[$node]} $corral --state-dir $work/client sandbox ls | grep -q node$node"
done
unbound=$(cp_corral tenant add unbound)
local_id=$(as_tenant "$unbound" sandbox create --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
check "an unbound tenant's sandbox runs on the control plane's host" \
    bash -c "curl -sS --unix-socket /var/run/docker.sock 'http://engine/containers/json' | grep -q $local_id"
as_tenant "$unbound" sandbox rm "$local_id"

# E2B's SDK, unmodified, against the control plane: tenant1's sandbox lands on node 1.
python_venv "$E2B_VENV" "$E2B_PINS" "$E2B_IMPORTS"
e2b_ok=yes
E2B_API_URL=$api E2B_SANDBOX_URL=$api E2B_API_KEY=${tokens[1]} "$E2B_VENV/bin/python" Tests/e2b/on_worker.py \
    >"$work/e2b.out" 2>"$work/e2b.log" || e2b_ok=no
sed 's/^/  e2b: /' "$work/e2b.out" >&2
check "E2B's SDK runs a command and moves a file in a sandbox on node 1's worker" test "$e2b_ok" = yes
e2b_id=$(head -n 1 "$work/e2b.out")
check "…which E2B's kill removed from node 1's engine" bash -c "[ -n '$e2b_id' ] && ! curl -sS --unix-socket /run/corral-fleet/1/docker.sock 'http://engine/containers/json?all=1' | grep -q '$e2b_id'"

# The control plane restarts under load, on the same worker port: the workers dial it again and
# it learns their sandboxes from their heartbeats.
# (The load reads the API's address from a file: the restarted control plane has a new one.)
printf '%s\n' "$api" >"$work/api"
load() {
    local node
    while :; do
        for node in $(seq 1 "$NODES"); do
            api=$(cat "$work/api") as_tenant "${tokens[$node]}" exec "${sandboxes[$node]}" -- true >/dev/null 2>&1 || true
        done
    done
}
load &
load_pid=$!
sleep 1
stop_process "$control_pid" "the control plane"
sed -i "s/^listen = \"0.0.0.0:0\"/listen = \"0.0.0.0:$workers_port\"/" "$work/cp/corral.toml"
CORRAL_AGENT=0 "$corral" --state-dir "$work/cp" serve --config "$work/cp/corral.toml" >"$work/cp.log" 2>&1 &
control_pid=$!
api=$(wait_for_service "$control_pid" "$work/cp.log")
printf '%s\n' "$api" >"$work/api"
for node in $(seq 1 "$NODES"); do check "node $node's worker dials the restarted control plane" wait_connected "$node"; done
answers_again() {
    local node=$1 out
    for _ in $(seq 1 60); do
        out=$(as_tenant "${tokens[$node]}" exec "${sandboxes[$node]}" -- echo again 2>/dev/null || true)
        [ "$out" = again ] && return 0
        sleep 0.5
    done
    return 1
}
for node in $(seq 1 "$NODES"); do
    check "node $node's sandbox answers through the restarted control plane" answers_again "$node"
done
kill "$load_pid" 2>/dev/null || true
{ wait "$load_pid"; } 2>/dev/null || true

# A worker killed outright: lost past the grace, then reconciled when it returns.
victim=2
[ "$NODES" -ge 2 ] || victim=1
kill -KILL "${worker_pids[$victim]}"
{ wait "${worker_pids[$victim]}"; } 2>/dev/null || true
unset "worker_pids[$victim]"
sleep 7
lost=$(as_tenant "${tokens[$victim]}" exec "${sandboxes[$victim]}" -- true 2>&1 || true)
check "a call for the lost worker's sandbox says it is lost" grep -q "which is lost" <<<"$lost"
check "worker ls reports it lost" bash -c "CORRAL_AGENT=0 $corral --state-dir $work/cp worker ls | grep node$victim | grep -q lost"
check "its sandbox is still on its engine while it is away" node_has "$victim" "${sandboxes[$victim]}"
start_worker "$victim" "$(cp_corral worker token add --group "g$victim")"
check "it connects again" wait_connected "$victim"
gone=no
for _ in $(seq 1 60); do
    node_has "$victim" "${sandboxes[$victim]}" || { gone=yes; break; }
    sleep 0.5
done
check "the sandbox given up on is removed from its engine" test "$gone" = yes

# Refusals that stop a worker: another group's token, a CA that does not sign the server.
set +e
nsenter --net="/run/netns/corral-fleet-1" env CORRAL_AGENT=0 timeout 60 "$corral" --state-dir "$work/bad1" \
    --engine unix:///run/corral-fleet/1/docker.sock worker --server "https://$NET_PREFIX.1.1:$workers_port" \
    --token "$(cp_corral worker token add --group g2)" --group g1 --name bad1 --ca "$work/ca.pem" \
    --cert "$work/worker1.pem" --key "$work/worker1.key" >"$work/bad1.log" 2>&1
status=$?
set -e
check "a worker with another group's token exits non-zero" test "$status" -ne 0 -a "$status" -ne 124
check "…saying why" grep -q "this worker token is for group 'g2', not 'g1'" "$work/bad1.log"
set +e
nsenter --net="/run/netns/corral-fleet-1" env CORRAL_AGENT=0 timeout 8 "$corral" --state-dir "$work/bad2" \
    --engine unix:///run/corral-fleet/1/docker.sock worker --server "https://$NET_PREFIX.1.1:$workers_port" \
    --token "${tokens[1]}" --name bad2 --ca "$work/other.pem" --cert "$work/worker1.pem" --key "$work/worker1.key" \
    >"$work/bad2.log" 2>&1
set -e
check "a worker that cannot verify the control plane never connects" \
    bash -c "! CORRAL_AGENT=0 $corral --state-dir $work/cp worker ls | grep -q bad2"
check "…and says so in its log" grep -qi "certificate\|handshake\|ssl" "$work/bad2.log"
# A valid token and a certificate the CA signed, but for another worker: refused, both sides say why.
set +e
nsenter --net="/run/netns/corral-fleet-1" env CORRAL_AGENT=0 timeout 60 "$corral" --state-dir "$work/bad4" \
    --engine unix:///run/corral-fleet/1/docker.sock worker --server "https://$NET_PREFIX.1.1:$workers_port" \
    --token "$(cp_corral worker token add --group g1)" --group g1 --name bad4 --ca "$work/ca.pem" --cert "$work/worker1.pem" \
    --key "$work/worker1.key" >"$work/bad4.log" 2>&1
status=$?
set -e
check "a worker with another worker's certificate exits non-zero" test "$status" -ne 0 -a "$status" -ne 124
check "…saying why" grep -q "client certificate is for corral-worker://g1/node1, not worker 'bad4'" "$work/bad4.log"
check "…and so does the control plane" grep -q "client certificate is for corral-worker://g1/node1" "$work/cp.log"
# A valid token but no client certificate: the control plane's TLS refuses it, both sides say so.
set +e
nsenter --net="/run/netns/corral-fleet-1" env CORRAL_AGENT=0 timeout 8 "$corral" --state-dir "$work/bad3" \
    --engine unix:///run/corral-fleet/1/docker.sock worker --server "https://$NET_PREFIX.1.1:$workers_port" \
    --token "${tokens[1]}" --name bad3 --ca "$work/ca.pem" >"$work/bad3.log" 2>&1
set -e
check "a worker without a client certificate never connects" \
    bash -c "! CORRAL_AGENT=0 $corral --state-dir $work/cp worker ls | grep -q bad3"
check "…and says so in its log" grep -q "TLS with the control plane failed" "$work/bad3.log"
check "…and so does the control plane" grep -q "refused a worker: TLS failed" "$work/cp.log"

for node in $(seq 1 "$NODES"); do
    [ "$node" = "$victim" ] && continue
    as_tenant "${tokens[$node]}" sandbox rm "${sandboxes[$node]}"
    check "rm through the control plane removes node $node's sandbox" bash -c "! curl -sS --unix-socket /run/corral-fleet/$node/docker.sock 'http://engine/containers/json?all=1' | grep -q ${sandboxes[$node]}"
done

if [ "$failures" -gt 0 ]; then
    say "$failures check(s) failed; logs follow"
    for log in "$work"/*.log; do
        echo "== $log" >&2
        tail -n 40 "$log" >&2
    done
    exit 1
fi
say "all checks passed"
