# shellcheck shell=bash
# Helpers shared by corral's scripts: messages, root checks, apt, and the engine API.
# Sourced, never run. Callers set `set -euo pipefail` themselves.

CORRAL_SCRIPT_NAME=${CORRAL_SCRIPT_NAME:-$(basename "$0")}

say() { printf '%s: %s\n' "$CORRAL_SCRIPT_NAME" "$*" >&2; }

# die MESSAGE [HINT]: one line saying what is wrong, then how to fix it.
die() {
    printf '%s: error: %s\n' "$CORRAL_SCRIPT_NAME" "$1" >&2
    if [ $# -gt 1 ]; then printf '%s: fix: %s\n' "$CORRAL_SCRIPT_NAME" "$2" >&2; fi
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Seconds since the epoch with milliseconds, for phase timings.
now_seconds() { date +%s.%3N; }
elapsed_since() { awk -v start="$1" -v end="$(now_seconds)" 'BEGIN { printf "%.1f", end - start }'; }

package_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# apt_install_missing PACKAGE...: installs the packages that are not installed yet, running
# `apt-get update` at most once per script run. Needs root; without it, names the command.
CORRAL_APT_UPDATED=${CORRAL_APT_UPDATED:-0}
apt_install_missing() {
    local missing=() package
    for package in "$@"; do
        package_installed "$package" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages: ${missing[*]}, and apt-get is not available" "install them with your package manager"
    is_root || die "missing packages: ${missing[*]}" "sudo apt-get install -y ${missing[*]}"
    if [ "$CORRAL_APT_UPDATED" != 1 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
            die "apt-get update failed" "check the machine's apt sources and network, then retry"
        CORRAL_APT_UPDATED=1
        export CORRAL_APT_UPDATED
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed" "run: apt-get install -y ${missing[*]} and read its output"
}

# The engine endpoint, as corral itself reads it (DESIGN.md, "Contracts").
engine_endpoint() { printf '%s' "${CORRAL_ENGINE:-unix:///var/run/docker.sock}"; }

# engine_curl PATH [CURL ARGS...]: one request to the Engine API, unversioned so that it works
# against dockerd 20.10 and current Docker alike. For tcp:// endpoints, CORRAL_TLS_CA,
# CORRAL_TLS_CERT and CORRAL_TLS_KEY switch to mutual TLS. Prints the body; fails on
# transport errors only (callers look at the status with -w when they care).
engine_curl() {
    local path=$1 endpoint
    shift
    endpoint=$(engine_endpoint)
    case "$endpoint" in
        unix://*)
            curl -sS --unix-socket "${endpoint#unix://}" "$@" "http://localhost$path"
            ;;
        tcp://*)
            if [ -n "${CORRAL_TLS_CERT:-}" ]; then
                if [ -z "${CORRAL_TLS_CA:-}" ] || [ -z "${CORRAL_TLS_KEY:-}" ]; then
                    die "CORRAL_TLS_CERT is set without CORRAL_TLS_CA and CORRAL_TLS_KEY" \
                        "set all three (scripts/engine.sh writes them to /var/lib/corral-engine/tls)"
                fi
                curl -sS --cacert "$CORRAL_TLS_CA" --cert "$CORRAL_TLS_CERT" --key "$CORRAL_TLS_KEY" \
                    "$@" "https://${endpoint#tcp://}$path"
            else
                curl -sS "$@" "http://${endpoint#tcp://}$path"
            fi
            ;;
        *)
            die "CORRAL_ENGINE=$endpoint is not unix:///path or tcp://host:port" \
                "export CORRAL_ENGINE=unix:///var/run/docker.sock"
            ;;
    esac
}

# True when the engine answers /_ping with OK. A malformed endpoint ends the script here,
# where the message is not swallowed by a command substitution.
engine_answers() {
    case "$(engine_endpoint)" in
        unix://?* | tcp://?*) ;;
        *) die "CORRAL_ENGINE=$(engine_endpoint) is not unix:///path or tcp://host:port" \
            "export CORRAL_ENGINE=unix:///var/run/docker.sock" ;;
    esac
    command -v curl >/dev/null 2>&1 || return 1
    [ "$(engine_curl /_ping --max-time 3 2>/dev/null)" = "OK" ]
}

# engine_status PATH: the HTTP status of a GET, or 000 when nothing answered.
engine_status() {
    engine_status_of GET "$1"
}

# engine_status_of METHOD PATH: the HTTP status of a request without a body.
engine_status_of() {
    engine_curl "$2" -X "$1" --max-time 30 -o /dev/null -w '%{http_code}' 2>/dev/null || true
}

# The repository root, from any script inside it.
repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# unmount_workspaces STATE: lazily unmounts every sandbox workspace (a file system of its own,
# see docs/architecture.md) under the state directory STATE, so that it can be removed once
# its containers are gone. corral does this itself when it removes a sandbox; this is for a
# script that removed the containers through the engine.
unmount_workspaces() {
    local state=$1 mount_point
    [ -d "$state/sandboxes" ] || return 0
    for mount_point in "$state"/sandboxes/sb-*/workspace; do
        [ -d "$mount_point" ] || continue
        while umount -l "$mount_point" 2>/dev/null; do :; done
    done
}

# E2B's SDK as the E2B tests pin it, in the venv they share (scripts/test-e2b.sh, test-fleet.sh).
# shellcheck disable=SC2034 # used by the scripts that source this file
E2B_PINS="e2b==2.63.0 e2b-code-interpreter==2.11.5 pytest==9.2.0"
# shellcheck disable=SC2034
E2B_VENV=.build/e2b-venv
# shellcheck disable=SC2034
E2B_IMPORTS='import e2b, e2b_code_interpreter, pytest'

# python_venv DIR PINS IMPORTS: a venv in DIR with PINS (pip requirements, space-separated)
# installed, made again when its pins changed or IMPORTS (a python statement) fails in it.
# Dies when python3 -m venv or pip fails; callers that may skip check for python3 first.
python_venv() {
    local venv=$1 pins=$2 imports=$3 system_python=/usr/bin/python3
    if [ "$(cat "$venv/corral-pins" 2>/dev/null)" = "$pins" ] && "$venv/bin/python" -c "$imports" 2>/dev/null; then
        return 0
    fi
    say "installing $pins into $venv"
    [ -x "$system_python" ] || system_python=python3
    command -v "$system_python" >/dev/null 2>&1 || apt_install_missing python3 python3-venv
    rm -rf "$venv"
    if ! "$system_python" -m venv "$venv" >/dev/null 2>&1; then
        # Debian's own python3 keeps venv in a package of its own.
        apt_install_missing python3-venv
        rm -rf "$venv"
        "$system_python" -m venv "$venv" || die "python3 -m venv failed" "apt-get install -y python3-venv"
    fi
    # shellcheck disable=SC2086 # the pins are separate words
    "$venv/bin/pip" install --quiet --disable-pip-version-check $pins ||
        die "pip install $pins failed" "check that PyPI is reachable, then retry"
    printf '%s\n' "$pins" >"$venv/corral-pins"
}

# stop_process PID WHAT: SIGTERM, up to 30 s for it to end, then SIGKILL; reaps it.
stop_process() {
    local pid=$1 what=$2
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$what did not stop within 30 s of SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Braced: bash's own "no record of process" note, when the child was reaped already, goes
    # to the shell's stderr, not the builtin's.
    { wait "$pid"; } 2>/dev/null || true
}

# wait_for_service PID LOG: waits (up to 60 s) until the service PID logs both its loopback
# URL and its unix socket, and prints the URL. Dies, with the log, when it exits or stays mute.
wait_for_service() {
    local pid=$1 log=$2 url=""
    for _ in $(seq 1 240); do
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the service exited while starting"; }
        url=$(sed -n 's/.*listening on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -n 1)
        [ -n "$url" ] && grep -q "listening on unix" "$log" && break
        url=""
        sleep 0.25
    done
    [ -n "$url" ] || { cat "$log" >&2; die "the service did not listen within 60 s"; }
    printf '%s\n' "$url"
}

# remove_instance_containers STATE [NOTE]: removes every container of the corral instance
# whose state directory is STATE (the corral.instance label names it), saying NOTE for each
# when given; prints how many there were.
remove_instance_containers() {
    local state=$1 note=${2:-} instance ids id count=0
    instance=$(cat "$state/sandboxes/.instance" 2>/dev/null || true)
    [ -n "$instance" ] || { echo 0; return 0; }
    ids=$(engine_curl "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22corral.instance%3D$instance%22%5D%7D" |
        python3 -c 'import json, sys; print("\n".join(c["Id"] for c in json.load(sys.stdin)))' 2>/dev/null || true)
    for id in $ids; do
        [ -n "$note" ] && say "$note: $id"
        engine_curl "/containers/$id?force=1&v=1" -X DELETE -o /dev/null || say "warning: could not remove container $id"
        count=$((count + 1))
    done
    echo "$count"
}
