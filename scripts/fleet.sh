#!/usr/bin/env bash
# scripts/fleet.sh up|down|status|check|env: engine hosts that can only dial out, on this one
# machine, for the tests and benchmarks of corral's workers (issue 12).
#
# Each node N (1..CORRAL_FLEET_NODES, default 3) is:
#   - a network namespace `corral-fleet-N`, joined to the root namespace by a veth pair
#     (cflNh in the root namespace, 10.231.N.1/30; cflNn inside, 10.231.N.2/30). No default
#     route and no forwarding: from inside, the only address reachable is the host side of its
#     own link, where corrald listens;
#   - a firewall inside the namespace (iptables, table filter) that drops every new inbound
#     connection, so a worker there can only dial out, as in a customer's network;
#   - a dockerd of its own, started in that network namespace only (nsenter --net: `ip netns
#     exec` would remount /sys and hide the cgroup file system), with its own data root, exec
#     root and socket (unix:///run/corral-fleet/N/docker.sock), --bridge=none --iptables=false,
#     runsc registered as scripts/engine.sh does, and corral/base:bookworm loaded from the main
#     engine (`docker save | docker load`, once: the data root is kept between runs).
#
#   up      makes what is missing and starts the engines; idempotent
#   down    stops the engines it started and removes the namespaces and links it made;
#           keeps the data roots (CORRAL_FLEET_PURGE=1 removes them too)
#   status  one line per node
#   check   proves the topology: each engine runs a container; from inside, a connection to
#           the host side succeeds; from the root namespace, a connection into the namespace
#           fails
#   env     `export` lines: CORRAL_FLEET_ENGINES (space-separated endpoints),
#           CORRAL_FLEET_NAMESPACES, CORRAL_FLEET_HOST_ADDRESSES
#
# Files: CORRAL_FLEET_HOME (/var/lib/corral-fleet)/N/{docker,dockerd.log,dockerd.pid,
# dockerd.json}; sockets and exec roots under /run/corral-fleet/N. Everything it makes is named
# corral-fleet-* or cfl*; `down` touches nothing else.
set -euo pipefail

CORRAL_SCRIPT_NAME=fleet.sh
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

NODES=${CORRAL_FLEET_NODES:-3}
FLEET_HOME=${CORRAL_FLEET_HOME:-/var/lib/corral-fleet}
RUN_DIR=/run/corral-fleet
NET_PREFIX=${CORRAL_FLEET_NET:-10.231}
START_TIMEOUT=${CORRAL_ENGINE_START_TIMEOUT:-60}
BASE_IMAGE=corral/base:bookworm

usage() {
    echo "usage: scripts/fleet.sh up|down|status|check|env" >&2
    exit 2
}

[[ "$NODES" =~ ^[1-9]$ ]] || die "CORRAL_FLEET_NODES must be 1 to 9, not '$NODES'"

namespace() { printf 'corral-fleet-%s' "$1"; }
host_link() { printf 'cfl%sh' "$1"; }
inner_link() { printf 'cfl%sn' "$1"; }
host_address() { printf '%s.%s.1' "$NET_PREFIX" "$1"; }
inner_address() { printf '%s.%s.2' "$NET_PREFIX" "$1"; }
node_home() { printf '%s/%s' "$FLEET_HOME" "$1"; }
node_run() { printf '%s/%s' "$RUN_DIR" "$1"; }
node_socket() { printf '%s/docker.sock' "$(node_run "$1")"; }
in_namespace() {
    local node=$1
    shift
    nsenter --net="/run/netns/$(namespace "$node")" "$@"
}

node_answers() {
    [ "$(curl -sS --max-time 3 --unix-socket "$(node_socket "$1")" http://engine/_ping 2>/dev/null)" = OK ]
}

# The pid recorded by `up` for NODE, when that process is still a dockerd.
node_pid() {
    local file pid
    file="$(node_home "$1")/dockerd.pid"
    [ -f "$file" ] || return 1
    pid=$(cat "$file" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
    printf '%s' "$pid"
}

make_network() {
    local node=$1 ns link inner
    ns=$(namespace "$node")
    link=$(host_link "$node")
    inner=$(inner_link "$node")
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$link" >/dev/null 2>&1; then
        ip link add "$link" type veth peer name "$inner"
        ip link set "$inner" netns "$ns"
        ip addr add "$(host_address "$node")/30" dev "$link"
        ip link set "$link" up
        ip -n "$ns" addr add "$(inner_address "$node")/30" dev "$inner"
        ip -n "$ns" link set "$inner" up
        ip -n "$ns" link set lo up
    fi
    # New inbound connections are dropped; replies to what the namespace dialled, and
    # loopback, pass. Rebuilt every time so that a half-made chain never stays.
    in_namespace "$node" iptables -F INPUT
    in_namespace "$node" iptables -P INPUT DROP
    in_namespace "$node" iptables -A INPUT -i lo -j ACCEPT
    in_namespace "$node" iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
}

start_engine() {
    local node=$1 home run pid waited=0 runsc
    home=$(node_home "$node")
    run=$(node_run "$node")
    node_answers "$node" && return 0
    if pid=$(node_pid "$node"); then
        die "node $node's dockerd (pid $pid) does not answer at $(node_socket "$node")" \
            "scripts/fleet.sh down, then scripts/fleet.sh up (log: $home/dockerd.log)"
    fi
    mkdir -p "$home/docker" "$run"
    chmod 0711 "$home"
    if runsc=$(command -v runsc); then
        printf '{"runtimes":{"runsc":{"path":"%s","runtimeArgs":["--network=none","--host-uds=open"]}}}\n' \
            "$runsc" >"$home/dockerd.json"
    else
        printf '{}\n' >"$home/dockerd.json"
    fi
    say "starting node $node's dockerd in $(namespace "$node") (log: $home/dockerd.log)"
    setsid nsenter --net="/run/netns/$(namespace "$node")" dockerd \
        --config-file "$home/dockerd.json" \
        --data-root "$home/docker" \
        --exec-root "$run/exec" \
        --pidfile "$run/dockerd.pid" \
        --bridge=none --iptables=false --ip-masq=false \
        -H "unix://$(node_socket "$node")" \
        </dev/null >>"$home/dockerd.log" 2>&1 &
    pid=$!
    echo "$pid" >"$home/dockerd.pid"
    until node_answers "$node"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$home/dockerd.log" >&2 || true
            die "node $node's dockerd exited during startup" "read $home/dockerd.log"
        fi
        [ "$waited" -lt $((START_TIMEOUT * 5)) ] ||
            die "node $node's dockerd did not answer within ${START_TIMEOUT}s" "read $home/dockerd.log"
        sleep 0.2
        waited=$((waited + 1))
    done
}

load_image() {
    local node=$1 status
    status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --unix-socket "$(node_socket "$node")" \
        "http://engine/images/$BASE_IMAGE/json")
    [ "$status" = 200 ] && return 0
    engine_answers || die "the main engine does not answer, and node $node needs $BASE_IMAGE from it" \
        "scripts/engine.sh up && make image"
    say "loading $BASE_IMAGE into node $node"
    docker -H "$(engine_endpoint)" save "$BASE_IMAGE" | docker -H "unix://$(node_socket "$node")" load -q >&2 ||
        die "loading $BASE_IMAGE into node $node failed" "make image, then scripts/fleet.sh up"
}

cmd_up() {
    local node start
    start=$(now_seconds)
    is_root || die "making network namespaces needs root" "sudo scripts/fleet.sh up"
    command -v iptables >/dev/null 2>&1 || apt_install_missing iptables
    command -v dockerd >/dev/null 2>&1 || apt_install_missing docker.io
    mkdir -p "$FLEET_HOME" "$RUN_DIR"
    for node in $(seq 1 "$NODES"); do
        make_network "$node"
        start_engine "$node"
        load_image "$node"
    done
    say "$NODES node(s) up after $(elapsed_since "$start")s"
}

cmd_down() {
    local node pid waited ns
    is_root || die "removing network namespaces needs root" "sudo scripts/fleet.sh down"
    for node in $(seq 1 9); do
        if pid=$(node_pid "$node"); then
            say "stopping node $node's dockerd (pid $pid)"
            kill -TERM "$pid"
            waited=0
            while kill -0 "$pid" 2>/dev/null; do
                if [ "$waited" -ge 300 ]; then
                    kill -KILL "$pid" 2>/dev/null || true
                    break
                fi
                sleep 0.1
                waited=$((waited + 1))
            done
        fi
        rm -f "$(node_home "$node")/dockerd.pid"
        if grep -q " $(node_home "$node")/docker " /proc/mounts 2>/dev/null; then
            umount "$(node_home "$node")/docker" 2>/dev/null || say "warning: $(node_home "$node")/docker stays mounted"
        fi
        ns=$(namespace "$node")
        ip link show "$(host_link "$node")" >/dev/null 2>&1 && ip link del "$(host_link "$node")"
        [ -e "/run/netns/$ns" ] && ip netns del "$ns"
        rm -rf "$(node_run "$node")"
        if [ "${CORRAL_FLEET_PURGE:-0}" = 1 ] && [ -d "$(node_home "$node")" ]; then
            rm -rf "$(node_home "$node")"
        fi
    done
    rmdir "$RUN_DIR" 2>/dev/null || true
    say "fleet down"
}

cmd_status() {
    local node state
    for node in $(seq 1 "$NODES"); do
        if [ ! -e "/run/netns/$(namespace "$node")" ]; then
            state="no namespace"
        elif node_answers "$node"; then
            state="engine answers at unix://$(node_socket "$node")"
        else
            state="namespace, no engine"
        fi
        echo "node $node: $(namespace "$node") $(inner_address "$node") -> $(host_address "$node"): $state"
    done
}

# A listener that accepts one connection, in the root namespace or a node's; it creates READY
# once it listens, so that a refused or dropped dial means what it says.
listen_once() {
    local address=$1 port=$2 ready=$3
    /usr/bin/python3 -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(10)
open(sys.argv[3], "w").close()
try:
    c,_=s.accept(); c.sendall(b"ok\n"); c.close()
except OSError:
    pass' "$address" "$port" "$ready"
}

wait_for_file() {
    local waited=0
    until [ -e "$1" ]; do
        [ "$waited" -lt 100 ] || die "a test listener did not start within 10s"
        sleep 0.1
        waited=$((waited + 1))
    done
}

dial() {
    local address=$1 port=$2
    # shellcheck disable=SC2016 # expanded by the inner shell, from its arguments
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && read -r line <&3 && [ "$line" = ok ]' _ "$address" "$port"
}

cmd_check() {
    local node port=18431 listener failed=0 ready
    ready=$(mktemp -u /tmp/corral-fleet-ready.XXXXXX)
    for node in $(seq 1 "$NODES"); do
        node_answers "$node" || die "node $node's engine does not answer" "scripts/fleet.sh up"
        docker -H "unix://$(node_socket "$node")" run --rm --network none "$BASE_IMAGE" true ||
            { say "node $node: a container did not run"; failed=1; }
        rm -f "$ready"
        listen_once "$(host_address "$node")" "$port" "$ready" &
        listener=$!
        wait_for_file "$ready"
        if in_namespace "$node" bash -c "$(declare -f dial); dial $(host_address "$node") $port"; then
            say "node $node: dials out to $(host_address "$node"):$port"
        else
            say "node $node: cannot dial out to $(host_address "$node"):$port"
            failed=1
        fi
        wait "$listener" || true
        rm -f "$ready"
        in_namespace "$node" bash -c "$(declare -f listen_once); listen_once $(inner_address "$node") $port $ready" &
        listener=$!
        wait_for_file "$ready"
        if dial "$(inner_address "$node")" "$port" 2>/dev/null; then
            say "node $node: an inbound connection got through the firewall"
            failed=1
        else
            say "node $node: inbound connections are dropped"
        fi
        kill "$listener" 2>/dev/null || true
        wait "$listener" 2>/dev/null || true
    done
    rm -f "$ready"
    [ "$failed" = 0 ] || die "the fleet's topology is not as it should be" "scripts/fleet.sh down && scripts/fleet.sh up"
    say "fleet checked: $NODES node(s)"
}

cmd_env() {
    local node engines=() namespaces=() addresses=()
    for node in $(seq 1 "$NODES"); do
        engines+=("unix://$(node_socket "$node")")
        namespaces+=("$(namespace "$node")")
        addresses+=("$(host_address "$node")")
    done
    printf 'export CORRAL_FLEET_ENGINES=%q\n' "${engines[*]}"
    printf 'export CORRAL_FLEET_NAMESPACES=%q\n' "${namespaces[*]}"
    printf 'export CORRAL_FLEET_HOST_ADDRESSES=%q\n' "${addresses[*]}"
}

[ $# -eq 1 ] || usage
case "$1" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    check) cmd_check ;;
    env) cmd_env ;;
    *) usage ;;
esac
