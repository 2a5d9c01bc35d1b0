#!/usr/bin/env bash
# scripts/check-init.sh: a smoke check of corral-init in real containers, under runc and (when
# the engine has it) runsc, through the Engine API only.
#
#   - the binary is statically linked and runs as PID 1 in an image holding nothing else;
#   - as PID 1 it reaps orphaned zombies (a control container with `sleep` as PID 1 keeps them);
#   - it exits 0 promptly when the engine stops the container (SIGTERM);
#   - `corral-init exec --timeout` kills a `sleep 100 & sleep 100` group and exits 124;
#   - the egress forwarder carries HTTP through 127.0.0.1:3128 to a host unix socket, and
#     echoes 8 MiB byte for byte with a half-close, in a container with NetworkMode none.
#
# Needs an engine with corral/base:bookworm (make image), and python3 on the host for the
# stand-in gateway. The behaviour tests proper live in the Swift test suite; this is for
# people changing corral-init by hand. Leaves nothing behind (containers are labelled
# corral.check=init and removed on exit).
set -euo pipefail

CORRAL_SCRIPT_NAME=check-init
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"

BASE_IMAGE=corral/base:bookworm
INIT_ONLY_IMAGE=corral/init-only:test
WORK=$(mktemp -d /tmp/corral-check-init.XXXXXX)
chmod 0755 "$WORK"
failures=0
server_pid=""

# By label, since containers are created in command substitutions (subshells) and the
# engine's labels are the source of truth anyway.
remove_check_containers() {
    local id
    for id in $(engine_curl '/containers/json?all=1&filters=%7B%22label%22%3A%5B%22corral.check%3Dinit%22%5D%7D' |
        grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4); do
        engine_curl "/containers/$id?force=1" -X DELETE -o /dev/null --max-time 20 || true
    done
}

cleanup() {
    remove_check_containers
    engine_status_of DELETE "/images/$INIT_ONLY_IMAGE" >/dev/null
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

pass() { printf '  ok    %s\n' "$*"; }
fail() {
    printf '  FAIL  %s\n' "$*"
    failures=$((failures + 1))
}

json_string() {
    local text=${1//\\/\\\\}
    text=${text//\"/\\\"}
    text=${text//$'\n'/\\n}
    text=${text//$'\t'/\\t}
    printf '"%s"' "$text"
}
json_array() {
    local first=1 item
    printf '['
    for item in "$@"; do
        [ $first = 1 ] || printf ','
        first=0
        json_string "$item"
    done
    printf ']'
}

# create_container RUNTIME IMAGE ENTRYPOINT_JSON BINDS_JSON ENV_JSON: prints the id.
create_container() {
    local body id
    body=$(
        cat <<JSON
{"Image":"$2","Entrypoint":$3,"Cmd":[],"User":"1000:1000","Env":$5,
 "Labels":{"corral.check":"init"},
 "HostConfig":{"Runtime":"$1","NetworkMode":"none","Binds":$4,"CapDrop":["ALL"],
   "SecurityOpt":["no-new-privileges"],"ReadonlyRootfs":true,"Tmpfs":{"/tmp":""},"PidsLimit":256}}
JSON
    )
    id=$(engine_curl /containers/create -X POST -H 'Content-Type: application/json' -d "$body" |
        grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4) || true
    [ -n "$id" ] || die "could not create a $1 container from $2" "scripts/engine.sh status"
    [ "$(engine_curl "/containers/$id/start" -X POST -o /dev/null -w '%{http_code}')" = 204 ] ||
        die "could not start container $id ($1)" "docker logs $id"
    printf '%s' "$id"
}

# exec_in ID CMD...: runs CMD, prints its output (a TTY, so no stream framing), and sets
# EXEC_STATUS and EXEC_SECONDS.
EXEC_STATUS=""
EXEC_SECONDS=""
exec_in() {
    local id=$1 exec_id start
    shift
    exec_id=$(engine_curl "/containers/$id/exec" -X POST -H 'Content-Type: application/json' \
        -d "{\"AttachStdout\":true,\"AttachStderr\":true,\"Tty\":true,\"Cmd\":$(json_array "$@")}" |
        grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4)
    start=$(now_seconds)
    engine_curl "/exec/$exec_id/start" -X POST -H 'Content-Type: application/json' \
        -d '{"Detach":false,"Tty":true}' --max-time 60 | tr -d '\r'
    EXEC_SECONDS=$(elapsed_since "$start")
    EXEC_STATUS=null
    for _ in $(seq 50); do
        EXEC_STATUS=$(engine_curl "/exec/$exec_id/json" | grep -o '"ExitCode":[0-9a-z]*' | cut -d: -f2)
        [ "$EXEC_STATUS" != null ] && break
        sleep 0.05
    done
}

zombie_count() {
    exec_in "$1" ps -eo stat= | grep -c '^Z' || true
}

engine_answers || die "no engine answers at $(engine_endpoint)" "make engine"
[ "$(engine_status "/images/$BASE_IMAGE/json")" = 200 ] || die "$BASE_IMAGE is missing" "make image"
command -v python3 >/dev/null || die "python3 is needed for the stand-in gateway" "apt-get install -y python3"

echo "building corral-init (release)"
(cd "$ROOT" && swift build -c release --product corral-init >/dev/null)
BINARY=$ROOT/.build/release/corral-init
if command -v file >/dev/null; then
    if file "$BINARY" | grep -q 'statically linked'; then
        pass "statically linked, $(du -h "$BINARY" | cut -f1)"
    else
        fail "not static: $(file "$BINARY")"
    fi
fi
cp "$BINARY" "$WORK/corral-init"

echo "importing $INIT_ONLY_IMAGE (a rootfs with nothing but corral-init)"
mkdir -p "$WORK/rootfs"
cp "$BINARY" "$WORK/rootfs/corral-init"
tar --owner=0 --group=0 -C "$WORK/rootfs" -cf "$WORK/init-only.tar" corral-init
engine_curl "/images/create?fromSrc=-&repo=corral/init-only&tag=test" -X POST \
    -H 'Content-Type: application/x-tar' -T "$WORK/init-only.tar" -o /dev/null

# The stand-in gateway: HTTP answers for proxy requests, raw echo for anything else.
mkdir -p "$WORK/gateway"
cat >"$WORK/gateway.py" <<'PY'
import os, socket, sys, threading
path = sys.argv[1]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen(64)
def serve(conn):
    with conn:
        first = conn.recv(65536)
        if first.startswith(b"GET "):
            line = first.split(b"\r\n", 1)[0].decode()
            body = ("gateway saw: " + line + "\n").encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            return
        data = first
        while data:  # echo until the client half-closes, then close our side
            conn.sendall(data)
            data = conn.recv(65536)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
PY
python3 "$WORK/gateway.py" "$WORK/gateway/gateway.sock" &
server_pid=$!
for _ in $(seq 50); do [ -S "$WORK/gateway/gateway.sock" ] && break; sleep 0.1; done

runtimes=(runc)
if engine_curl /info | grep -q '"runsc":{'; then
    runtimes+=(runsc)
else
    echo "runsc is not registered: checking runc only"
fi

for runtime in "${runtimes[@]}"; do
    echo "== $runtime"

    id=$(create_container "$runtime" "$INIT_ONLY_IMAGE" '["/corral-init"]' '[]' '[]')
    output=$(exec_in "$id" /corral-init version)
    if [[ "$output" == "corral-init "* ]]; then
        pass "PID 1 in an image holding only the binary ($output)"
    else
        fail "init-only image: version printed '$output'"
    fi
    exec_in "$id" /corral-init exec --timeout 0.3 -- /corral-init >/dev/null
    if [ "$EXEC_STATUS" = 124 ]; then
        pass "exec --timeout in the init-only image exits 124"
    else
        fail "exec --timeout in the init-only image exited $EXEC_STATUS"
    fi

    binds=$(json_array "$WORK/corral-init:/.corral/init:ro" "$WORK/gateway:/.corral/gateway")
    env=$(json_array "CORRAL_GATEWAY_SOCKET=/.corral/gateway/gateway.sock" "HTTP_PROXY=http://127.0.0.1:3128")
    id=$(create_container "$runtime" "$BASE_IMAGE" '["/.corral/init"]' "$binds" "$env")

    exec_in "$id" sh -c '(sleep 0.2 &)' >/dev/null
    sleep 1
    zombies=$(zombie_count "$id")
    if [ "$zombies" = 0 ]; then
        pass "orphans are reaped (0 zombies)"
    else
        fail "$zombies zombies left"
    fi
    if [ "$runtime" = runc ]; then
        control=$(create_container runc "$BASE_IMAGE" '["sleep","infinity"]' '[]' '[]')
        exec_in "$control" sh -c '(sleep 0.2 &)' >/dev/null
        sleep 1
        zombies=$(zombie_count "$control")
        if [ "$zombies" -gt 0 ]; then
            pass "control: with sleep as PID 1 the same leaves $zombies zombie"
        else
            fail "control container shows no zombie; the reaping check proves nothing"
        fi
    fi

    exec_in "$id" /.corral/init exec --timeout 1 -- sh -c 'sleep 100 & sleep 100' >/dev/null
    left=$(exec_in "$id" sh -c 'ps -eo comm= | grep -c "^sleep$" || true')
    if [ "$EXEC_STATUS" = 124 ] && [ "$left" = 0 ]; then
        pass "exec --timeout 1: exit 124 after ${EXEC_SECONDS}s, no sleep left"
    else
        fail "exec --timeout: status $EXEC_STATUS after ${EXEC_SECONDS}s, $left sleeps left"
    fi
    exec_in "$id" /.corral/init exec -- sh -c 'exit 7' >/dev/null
    if [ "$EXEC_STATUS" = 7 ]; then
        pass "exec passes the exit status through"
    else
        fail "exec exited $EXEC_STATUS, not 7"
    fi

    output=$(exec_in "$id" python3 -c '
import urllib.request
print(urllib.request.urlopen("http://git.corral/owner/repo.git/info/refs", timeout=10).read().decode().strip())')
    if [[ "$output" == "gateway saw: GET http://git.corral/owner/repo.git/info/refs HTTP/1.1" ]]; then
        pass "HTTP through 127.0.0.1:3128 reaches the gateway socket"
    else
        fail "proxy request: '$output'"
    fi
    output=$(exec_in "$id" python3 -c '
import hashlib, os, socket, threading
data = os.urandom(8 << 20)
s = socket.create_connection(("127.0.0.1", 3128))
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=send).start()
got = bytearray()
while chunk := s.recv(1 << 16):
    got += chunk
print("same" if hashlib.sha256(got).digest() == hashlib.sha256(data).digest() else "differs %d" % len(got))')
    if [ "$output" = same ]; then
        pass "8 MiB echoed byte for byte, half-close honoured"
    else
        fail "echo: $output"
    fi
    output=$(exec_in "$id" python3 -c 'import socket; print(" ".join(n for _, n in socket.if_nameindex()))')
    if [ "$output" = lo ]; then
        pass "network interfaces: lo only"
    else
        fail "network interfaces: $output"
    fi

    start=$(now_seconds)
    engine_curl "/containers/$id/stop?t=10" -X POST -o /dev/null
    stopped=$(elapsed_since "$start")
    code=$(engine_curl "/containers/$id/json" | grep -o '"ExitCode":[0-9]*' | cut -d: -f2)
    if [ "$code" = 0 ]; then
        pass "stop: exit code 0 after ${stopped}s"
    else
        fail "stop: exit code $code after ${stopped}s"
    fi
done

if [ "$failures" -gt 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
