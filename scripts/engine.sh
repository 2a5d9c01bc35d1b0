#!/usr/bin/env bash
# scripts/engine.sh up|down|status|env: the container engine corral's tests, image builds and
# demo run against.
#
#   up      Nothing to do when an engine already answers at CORRAL_ENGINE (default
#           unix:///var/run/docker.sock). Otherwise, as root: installs docker.io and runsc
#           when missing, writes corral's own dockerd config (runsc registered as DESIGN.md
#           says; /etc/docker/daemon.json is never touched), generates a CA plus server and
#           client certificates, and starts dockerd in the background on the unix socket and
#           on tcp://127.0.0.1:2376 with --tlsverify. Waits until /_ping answers.
#   down    Stops the dockerd that `up` started (pid file), and nothing else.
#   status  Whether an engine answers, its API version, runtimes, TLS endpoint, base image.
#   env     Prints `export` lines for the TLS endpoint when it answers (CORRAL_TEST_TLS_ENGINE,
#           CORRAL_TEST_TLS_CA, CORRAL_TEST_TLS_CERT, CORRAL_TEST_TLS_KEY), for
#           `eval "$(scripts/engine.sh env)"`; prints nothing otherwise.
#
# Files (CORRAL_ENGINE_HOME, default /var/lib/corral-engine):
#   dockerd.json      daemon config (runtimes only; hosts are flags, see below)
#   dockerd.log       daemon output
#   dockerd.pid       pid of the dockerd that `up` started
#   docker/           data root, separate from a distribution dockerd's /var/lib/docker
#   tls/ca.pem tls/cert.pem tls/key.pem
#                     client side of the TLS endpoint; the server's files sit beside them
# Environment: CORRAL_ENGINE, CORRAL_ENGINE_HOME, CORRAL_ENGINE_TLS_PORT (2376),
# CORRAL_ENGINE_START_TIMEOUT (seconds, 60), CORRAL_ENGINE_EXEC_ROOT (/run/corral-engine).
set -euo pipefail

CORRAL_SCRIPT_NAME=engine.sh
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ENGINE_HOME=${CORRAL_ENGINE_HOME:-/var/lib/corral-engine}
EXEC_ROOT=${CORRAL_ENGINE_EXEC_ROOT:-/run/corral-engine}
CONFIG_FILE=$ENGINE_HOME/dockerd.json
LOG_FILE=$ENGINE_HOME/dockerd.log
PID_FILE=$ENGINE_HOME/dockerd.pid
TLS_DIR=$ENGINE_HOME/tls
TLS_PORT=${CORRAL_ENGINE_TLS_PORT:-2376}
START_TIMEOUT=${CORRAL_ENGINE_START_TIMEOUT:-60}
BASE_IMAGE=corral/base:bookworm

usage() {
    echo "usage: scripts/engine.sh up|down|status|env" >&2
    exit 2
}

# The pid recorded by `up`, when that process is still a dockerd.
started_pid() {
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "dockerd" ] || return 1
    printf '%s' "$pid"
}

unix_socket_path() {
    local endpoint
    endpoint=$(engine_endpoint)
    case "$endpoint" in
        unix://*) printf '%s' "${endpoint#unix://}" ;;
        *) return 1 ;;
    esac
}

write_config() {
    local runsc
    mkdir -p "$ENGINE_HOME"
    chmod 0711 "$ENGINE_HOME"
    # dockerd 20.10 refuses to start when a "hosts" key and -H flags are both given, so the
    # listeners are flags and this file holds only what DESIGN.md asks for: the runtimes.
    if runsc=$(command -v runsc); then
        printf '{"runtimes":{"runsc":{"path":"%s","runtimeArgs":["--network=none","--host-uds=open"]}}}\n' \
            "$runsc" >"$CONFIG_FILE.tmp"
    else
        say "runsc is not installed: starting without the gVisor runtime"
        printf '{}\n' >"$CONFIG_FILE.tmp"
    fi
    mv "$CONFIG_FILE.tmp" "$CONFIG_FILE"
}

# A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made once and
# remade when the CA is missing or any of them expires within a day.
ensure_tls() {
    local file fresh=1
    for file in ca.pem ca-key.pem server-cert.pem server-key.pem cert.pem key.pem; do
        [ -s "$TLS_DIR/$file" ] || fresh=0
    done
    if [ $fresh = 1 ]; then
        for file in ca.pem server-cert.pem cert.pem; do
            openssl x509 -checkend 86400 -noout -in "$TLS_DIR/$file" >/dev/null 2>&1 || fresh=0
        done
    fi
    [ $fresh = 1 ] && return 0

    say "generating TLS material in $TLS_DIR"
    rm -rf "$TLS_DIR.tmp"
    mkdir -p "$TLS_DIR.tmp"
    chmod 0700 "$TLS_DIR.tmp"
    (
        cd "$TLS_DIR.tmp"
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
            -keyout ca-key.pem -out ca.pem -subj "/CN=corral engine CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout server-key.pem -out server.csr -subj "/CN=localhost"
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" \
            "keyUsage=critical,digitalSignature,keyEncipherment" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
            -extfile server.ext -out server-cert.pem
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout key.pem -out client.csr -subj "/CN=corral client"
        printf '%s\n' "extendedKeyUsage=clientAuth" "keyUsage=critical,digitalSignature" >client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
            -extfile client.ext -out cert.pem
        rm -f server.csr client.csr server.ext client.ext ca.srl
        chmod 0644 ca.pem server-cert.pem cert.pem
    ) >/dev/null 2>"$ENGINE_HOME/openssl.log" ||
        die "generating certificates failed (see $ENGINE_HOME/openssl.log)" "apt-get install -y openssl, then retry"
    rm -rf "$TLS_DIR" "$ENGINE_HOME/openssl.log"
    mv "$TLS_DIR.tmp" "$TLS_DIR"
}

tls_answers() {
    [ -s "$TLS_DIR/cert.pem" ] || return 1
    [ "$(curl -sS --max-time 3 --cacert "$TLS_DIR/ca.pem" --cert "$TLS_DIR/cert.pem" --key "$TLS_DIR/key.pem" \
        "https://127.0.0.1:$TLS_PORT/_ping" 2>/dev/null)" = "OK" ]
}

# dockerd bind-mounts its data root onto itself and undoes that when it stops cleanly; after a
# failed start or a SIGKILL the mount stays and the directory cannot be removed.
release_data_root() {
    if grep -q " $ENGINE_HOME/docker " /proc/mounts 2>/dev/null; then
        umount "$ENGINE_HOME/docker" 2>/dev/null || say "warning: $ENGINE_HOME/docker is still mounted"
    fi
}

log_tail() {
    [ -f "$LOG_FILE" ] || return 0
    echo "--- last lines of $LOG_FILE ---" >&2
    tail -n 25 "$LOG_FILE" >&2
    echo "---" >&2
}

cmd_up() {
    local socket pid waited=0 start
    start=$(now_seconds)
    if engine_answers; then
        say "an engine already answers at $(engine_endpoint); leaving it as it is"
        warn_without_runsc
        return 0
    fi
    socket=$(unix_socket_path) ||
        die "no engine answers at $(engine_endpoint), and engine.sh can only start a local one" \
            "start the remote engine, or unset CORRAL_ENGINE to use a local one"
    if pid=$(started_pid); then
        die "the dockerd started earlier (pid $pid) does not answer at $socket" \
            "scripts/engine.sh down, then scripts/engine.sh up (log: $LOG_FILE)"
    fi
    is_root || die "no engine answers at $socket, and starting one needs root" "sudo scripts/engine.sh up"

    command -v curl >/dev/null 2>&1 || apt_install_missing curl ca-certificates
    apt_install_missing docker.io openssl
    if ! command -v runsc >/dev/null 2>&1; then
        apt_install_missing runsc
    fi
    # Installing docker.io may have started the distribution's own dockerd (on machines with
    # systemd). Use it rather than start a second daemon on the same socket.
    if engine_answers; then
        say "an engine answers at $(engine_endpoint) since docker.io was installed; using it"
        warn_without_runsc
        return 0
    fi

    write_config
    ensure_tls
    mkdir -p "$(dirname "$socket")" "$EXEC_ROOT" "$ENGINE_HOME/docker"
    say "starting dockerd (log: $LOG_FILE)"
    # setsid: the daemon must outlive this script and not get the terminal's signals; `down`
    # stops it by the pid recorded here.
    setsid dockerd \
        --config-file "$CONFIG_FILE" \
        --data-root "$ENGINE_HOME/docker" \
        --exec-root "$EXEC_ROOT" \
        --pidfile "$EXEC_ROOT/dockerd.pid" \
        --bridge=none --iptables=false \
        -H "unix://$socket" \
        -H "tcp://127.0.0.1:$TLS_PORT" \
        --tlsverify --tlscacert "$TLS_DIR/ca.pem" \
        --tlscert "$TLS_DIR/server-cert.pem" --tlskey "$TLS_DIR/server-key.pem" \
        </dev/null >>"$LOG_FILE" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"

    until engine_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            release_data_root
            log_tail
            die "dockerd exited during startup" "read $LOG_FILE; scripts/engine.sh status shows what answers"
        fi
        if [ "$waited" -ge $((START_TIMEOUT * 5)) ]; then
            log_tail
            die "dockerd did not answer at $socket within ${START_TIMEOUT}s" \
                "read $LOG_FILE, then scripts/engine.sh down && scripts/engine.sh up"
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    tls_answers || say "warning: the TLS endpoint tcp://127.0.0.1:$TLS_PORT does not answer (see $LOG_FILE)"
    say "dockerd (pid $pid) answers at unix://$socket and tcp://127.0.0.1:$TLS_PORT (TLS)" \
        "after $(elapsed_since "$start")s"
    warn_without_runsc
}

warn_without_runsc() {
    if ! engine_curl /info --max-time 10 2>/dev/null | grep -q '"runsc":{'; then
        say "note: the engine has no runsc runtime; runsc sandboxes and their tests need it" \
            "(register it as in DESIGN.md, or stop this engine and run scripts/engine.sh up)"
    fi
}

cmd_down() {
    local pid waited=0
    if ! pid=$(started_pid); then
        rm -f "$PID_FILE"
        say "no dockerd started by engine.sh is running; nothing to stop"
        return 0
    fi
    is_root || die "stopping dockerd (pid $pid) needs root" "sudo scripts/engine.sh down"
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    # dockerd stops its containers first (up to its 15 s shutdown timeout), then containerd.
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge 300 ]; then
            say "dockerd did not stop within 30s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
    release_data_root
    say "stopped"
}

cmd_status() {
    local version info pid endpoint
    endpoint=$(engine_endpoint)
    if ! engine_answers; then
        echo "engine:    none answers at $endpoint (scripts/engine.sh up starts one)"
        return 1
    fi
    version=$(engine_curl /version --max-time 10)
    info=$(engine_curl /info --max-time 10)
    echo "engine:    $endpoint answers"
    echo "version:   $(json_field Version "$version"), API $(json_field ApiVersion "$version")" \
        "(min $(json_field MinAPIVersion "$version"))"
    echo "runtimes:  $(printf '%s' "$info" | grep -o '"Runtimes":{.*' | grep -oE '"[A-Za-z0-9_.-]+":\{"path"' |
        cut -d'"' -f2 | sort -u | tr '\n' ' ')"
    if pid=$(started_pid); then
        echo "started:   by engine.sh, pid $pid (log: $LOG_FILE)"
    else
        echo "started:   not by engine.sh (down leaves it alone)"
    fi
    if tls_answers; then
        echo "tls:       tcp://127.0.0.1:$TLS_PORT (ca, cert, key in $TLS_DIR)"
    else
        echo "tls:       no TLS endpoint on tcp://127.0.0.1:$TLS_PORT"
    fi
    if [ "$(engine_status "/images/$BASE_IMAGE/json")" = 200 ]; then
        echo "image:     $BASE_IMAGE present"
    else
        echo "image:     $BASE_IMAGE missing (make image)"
    fi
}

cmd_env() {
    tls_answers || return 0
    printf 'export CORRAL_TEST_TLS_ENGINE=%q\n' "tcp://127.0.0.1:$TLS_PORT"
    printf 'export CORRAL_TEST_TLS_CA=%q\n' "$TLS_DIR/ca.pem"
    printf 'export CORRAL_TEST_TLS_CERT=%q\n' "$TLS_DIR/cert.pem"
    printf 'export CORRAL_TEST_TLS_KEY=%q\n' "$TLS_DIR/key.pem"
}

# json_field NAME JSON: a top-level string field, without a JSON tool on the machine.
json_field() {
    printf '%s' "$2" | grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d'"' -f4
}

[ $# -eq 1 ] || usage
case "$1" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
esac
