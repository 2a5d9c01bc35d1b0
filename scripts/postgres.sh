#!/usr/bin/env bash
# scripts/postgres.sh up|down|status|env|psql [ARGS...]: a private PostgreSQL for corral's
# tests and benchmarks, from Debian's `postgresql` package.
#
#   up      Installs postgresql when missing, makes a cluster (initdb, as the `postgres`
#           system user: initdb refuses root) in CORRAL_POSTGRES_HOME, starts it listening on
#           a unix socket in its own directory and on 127.0.0.1 only, and makes a `corral`
#           role with a password and a `corral` database it owns. Quick and changes nothing
#           when that cluster already answers.
#   down    Stops the cluster when `up` started it (a marker file says so), and nothing else.
#   status  Whether the cluster answers, where, and who started it.
#   env     Prints `export CORRAL_TEST_STORE_URL=postgres://corral:…@127.0.0.1:PORT/corral`
#           for `eval "$(scripts/postgres.sh env)"`; prints nothing while it is down.
#   psql    psql as the corral role on the socket, with any further arguments.
#
# Files (CORRAL_POSTGRES_HOME, default /var/lib/corral-postgres):
#   data/             the cluster (owned by postgres, 0700)
#   run/              its unix socket, .s.PGSQL.PORT
#   postgres.log      server output
#   password          the corral role's password (root only, 0600), made once
#   port              the TCP port chosen at initdb
#   started           present while a cluster started by `up` runs
# Environment: CORRAL_POSTGRES_HOME, CORRAL_POSTGRES_PORT (55432, used at initdb; a port
# taken by something else is refused), CORRAL_POSTGRES_START_TIMEOUT (seconds, 60).
set -euo pipefail

CORRAL_SCRIPT_NAME=postgres.sh
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PG_HOME=${CORRAL_POSTGRES_HOME:-/var/lib/corral-postgres}
DATA_DIR=$PG_HOME/data
RUN_DIR=$PG_HOME/run
LOG_FILE=$PG_HOME/postgres.log
PASSWORD_FILE=$PG_HOME/password
PORT_FILE=$PG_HOME/port
STARTED_FILE=$PG_HOME/started
START_TIMEOUT=${CORRAL_POSTGRES_START_TIMEOUT:-60}
ROLE=corral
DATABASE=corral
OWNER=postgres

usage() {
    echo "usage: scripts/postgres.sh up|down|status|env|psql [PSQL ARGS...]" >&2
    exit 2
}

# The newest PostgreSQL installed under Debian's layout, /usr/lib/postgresql/N/bin.
pg_bin() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] || return 1
    printf '%s' "$dir"
}

port() {
    if [ -s "$PORT_FILE" ]; then cat "$PORT_FILE"; else printf '%s' "${CORRAL_POSTGRES_PORT:-55432}"; fi
}

as_owner() { runuser -u "$OWNER" -- "$@"; }

answers() {
    local bin
    bin=$(pg_bin) || return 1
    [ -S "$RUN_DIR/.s.PGSQL.$(port)" ] || return 1
    "$bin/pg_isready" -q -h "$RUN_DIR" -p "$(port)" -t 3 >/dev/null 2>&1
}

# The postmaster's pid from its pid file, when that process is alive.
postmaster_pid() {
    local pid
    [ -f "$DATA_DIR/postmaster.pid" ] || return 1
    pid=$(head -n 1 "$DATA_DIR/postmaster.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    printf '%s' "$pid"
}

log_tail() {
    [ -f "$LOG_FILE" ] || return 0
    echo "--- last lines of $LOG_FILE ---" >&2
    tail -n 20 "$LOG_FILE" >&2
    echo "---" >&2
}

port_taken() {
    ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

init_cluster() {
    local bin=$1 chosen
    chosen=${CORRAL_POSTGRES_PORT:-55432}
    if ! [[ "$chosen" =~ ^[0-9]+$ ]] || ((chosen < 1024 || chosen > 65535)); then
        die "CORRAL_POSTGRES_PORT=$chosen is not a port from 1024 to 65535" "export CORRAL_POSTGRES_PORT=55432"
    fi
    if port_taken "$chosen"; then
        die "port $chosen on 127.0.0.1 is taken by something else" \
            "choose a free one: CORRAL_POSTGRES_PORT=55433 scripts/postgres.sh up"
    fi
    say "initdb in $DATA_DIR (port $chosen)"
    rm -rf "$DATA_DIR"
    mkdir -p "$DATA_DIR" "$RUN_DIR"
    chown "$OWNER:" "$DATA_DIR" "$RUN_DIR"
    chmod 0700 "$DATA_DIR"
    chmod 0755 "$RUN_DIR"
    # Peer authentication for the postgres user on the socket (this script's own way in);
    # passwords (SCRAM) for everyone else, on the socket and on loopback.
    as_owner "$bin/initdb" -D "$DATA_DIR" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >>"$LOG_FILE" 2>&1 ||
        die "initdb failed" "read $LOG_FILE; remove $DATA_DIR and retry"
    cat >"$DATA_DIR/pg_hba.conf" <<EOF
# Written by scripts/postgres.sh.
local   all   postgres                  peer
local   all   all                       scram-sha-256
host    all   all        127.0.0.1/32   scram-sha-256
EOF
    cat >>"$DATA_DIR/postgresql.conf" <<EOF

# scripts/postgres.sh: a private cluster on loopback and its own socket directory.
listen_addresses = '127.0.0.1'
port = $chosen
unix_socket_directories = '$RUN_DIR'
# Durable on the answer: a commit returns once its WAL is flushed.
fsync = on
synchronous_commit = on
# Commits that asked for no flush (corral's group-commit and no-fsync appends) reach the disk
# within this.
wal_writer_delay = 10ms
password_encryption = scram-sha-256
max_connections = 200
EOF
    chown "$OWNER:" "$DATA_DIR/pg_hba.conf"
    printf '%s\n' "$chosen" >"$PORT_FILE"
}

ensure_password() {
    if [ ! -s "$PASSWORD_FILE" ]; then
        (
            umask 077
            openssl rand -hex 16 >"$PASSWORD_FILE.tmp"
        )
        mv "$PASSWORD_FILE.tmp" "$PASSWORD_FILE"
    fi
    chmod 0600 "$PASSWORD_FILE"
}

# The role with its password and the database it owns; both made only when missing.
ensure_role() {
    local bin=$1 password
    password=$(cat "$PASSWORD_FILE")
    as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN_DIR" -p "$(port)" -U postgres -d postgres \
        -v role="$ROLE" -v password="$password" >>"$LOG_FILE" 2>&1 <<'EOF' ||
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
EOF
        die "making the $ROLE role failed" "read $LOG_FILE"
    as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN_DIR" -p "$(port)" -U postgres -d postgres \
        -v role="$ROLE" -v db="$DATABASE" >>"$LOG_FILE" 2>&1 <<'EOF' ||
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
EOF
        die "making the $DATABASE database failed" "read $LOG_FILE"
}

# True when the corral role gets in with the recorded password, over TCP as the tests will.
role_answers() {
    local bin=$1
    [ -s "$PASSWORD_FILE" ] || return 1
    PGPASSWORD=$(cat "$PASSWORD_FILE") PGCONNECT_TIMEOUT=3 "$bin/psql" -X -q -w -h 127.0.0.1 -p "$(port)" \
        -U "$ROLE" -d "$DATABASE" -c 'SELECT 1' >/dev/null 2>&1
}

cmd_up() {
    local bin start pid waited=0
    start=$(now_seconds)
    if answers; then
        bin=$(pg_bin)
        if role_answers "$bin"; then
            say "PostgreSQL already answers on $RUN_DIR and 127.0.0.1:$(port); leaving it as it is"
            return 0
        fi
    fi
    is_root || die "starting the private PostgreSQL needs root (it runs the cluster as $OWNER)" \
        "sudo scripts/postgres.sh up"
    if ! bin=$(pg_bin); then
        apt_install_missing postgresql
        bin=$(pg_bin) || die "postgresql is installed but no /usr/lib/postgresql/*/bin/initdb was found" \
            "apt-get install --reinstall postgresql-15"
    fi
    command -v openssl >/dev/null 2>&1 || apt_install_missing openssl
    id "$OWNER" >/dev/null 2>&1 || die "there is no $OWNER system user" "apt-get install -y postgresql"
    mkdir -p "$PG_HOME"
    chmod 0711 "$PG_HOME"
    as_owner test -x "$PG_HOME" ||
        die "the $OWNER user cannot reach $PG_HOME: a directory above it is not searchable" \
            "choose a CORRAL_POSTGRES_HOME under /var/lib (or chmod o+x its parents)"
    touch "$LOG_FILE"
    chown "$OWNER:" "$LOG_FILE"
    chmod 0640 "$LOG_FILE"
    ensure_password

    if ! answers; then
        [ -f "$DATA_DIR/PG_VERSION" ] || init_cluster "$bin"
        if pid=$(postmaster_pid); then
            die "a postmaster (pid $pid) runs on $DATA_DIR but does not answer on $RUN_DIR" \
                "read $LOG_FILE; scripts/postgres.sh down, then up"
        fi
        if port_taken "$(port)"; then
            die "port $(port) on 127.0.0.1 is taken by something else" \
                "stop it, or remove $PG_HOME and run up again with CORRAL_POSTGRES_PORT=<free port>"
        fi
        mkdir -p "$RUN_DIR"
        chown "$OWNER:" "$RUN_DIR"
        say "starting PostgreSQL (log: $LOG_FILE)"
        # pg_ctl detaches the postmaster in a session of its own (no terminal signals reach
        # it); -w waits until it accepts connections.
        as_owner "$bin/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$START_TIMEOUT" start \
            </dev/null >/dev/null 2>&1 || {
            log_tail
            die "PostgreSQL did not start" "read $LOG_FILE; scripts/postgres.sh status shows what answers"
        }
        touch "$STARTED_FILE"
        until answers; do
            [ "$waited" -lt $((START_TIMEOUT * 5)) ] ||
                die "PostgreSQL does not answer on $RUN_DIR" "read $LOG_FILE"
            sleep 0.2
            waited=$((waited + 1))
        done
    fi
    ensure_role "$bin"
    role_answers "$bin" ||
        die "the $ROLE role cannot log in on 127.0.0.1:$(port)" "read $LOG_FILE; remove $PG_HOME and run up again"
    say "PostgreSQL answers on $RUN_DIR and 127.0.0.1:$(port) after $(elapsed_since "$start")s;" \
        "eval \"\$(scripts/postgres.sh env)\" for the tests"
}

cmd_down() {
    local bin
    if [ ! -f "$STARTED_FILE" ]; then
        say "no PostgreSQL started by postgres.sh up is running in $PG_HOME; nothing to stop"
        return 0
    fi
    if ! postmaster_pid >/dev/null; then
        rm -f "$STARTED_FILE"
        say "the PostgreSQL started by postgres.sh up is not running; nothing to stop"
        return 0
    fi
    is_root || die "stopping the private PostgreSQL needs root" "sudo scripts/postgres.sh down"
    bin=$(pg_bin) || die "no /usr/lib/postgresql/*/bin/pg_ctl to stop it with" "apt-get install -y postgresql"
    say "stopping PostgreSQL in $DATA_DIR"
    as_owner "$bin/pg_ctl" -D "$DATA_DIR" -m fast -w -t 60 stop >/dev/null 2>&1 ||
        die "pg_ctl stop failed" "read $LOG_FILE"
    rm -f "$STARTED_FILE"
    say "stopped"
}

cmd_status() {
    local pid
    if ! answers; then
        echo "postgres:  none answers on $RUN_DIR (scripts/postgres.sh up starts one)"
        return 1
    fi
    pid=$(postmaster_pid || echo "?")
    echo "postgres:  answers on $RUN_DIR and 127.0.0.1:$(port) (pid $pid, data $DATA_DIR)"
    echo "version:   $("$(pg_bin)/postgres" --version)"
    if [ -f "$STARTED_FILE" ]; then
        echo "started:   by postgres.sh up (down stops it; log: $LOG_FILE)"
    else
        echo "started:   not by postgres.sh up (down leaves it alone)"
    fi
    if [ -r "$PASSWORD_FILE" ] && role_answers "$(pg_bin)"; then
        echo "role:      $ROLE can log in to database $DATABASE"
    else
        echo "role:      $ROLE cannot log in (run scripts/postgres.sh up as root)"
    fi
}

cmd_env() {
    answers || return 0
    [ -r "$PASSWORD_FILE" ] || die "cannot read $PASSWORD_FILE" "run as root: sudo scripts/postgres.sh env"
    printf 'export CORRAL_TEST_STORE_URL=%q\n' \
        "postgres://$ROLE:$(cat "$PASSWORD_FILE")@127.0.0.1:$(port)/$DATABASE"
}

cmd_psql() {
    local bin
    answers || die "no PostgreSQL answers on $RUN_DIR" "scripts/postgres.sh up"
    bin=$(pg_bin) || die "psql is not installed" "apt-get install -y postgresql-client"
    [ -r "$PASSWORD_FILE" ] || die "cannot read $PASSWORD_FILE" "run as root: sudo scripts/postgres.sh psql"
    PGPASSWORD=$(cat "$PASSWORD_FILE") exec "$bin/psql" -X -h "$RUN_DIR" -p "$(port)" -U "$ROLE" -d "$DATABASE" "$@"
}

[ $# -ge 1 ] || usage
command=$1
shift
if [ "$command" != psql ] && [ $# -ne 0 ]; then usage; fi
case "$command" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    psql) cmd_psql "$@" ;;
    *) usage ;;
esac
