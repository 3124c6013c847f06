#!/usr/bin/env bash
# PostgreSQL (shared Optuna studies, MLflow's backend store) and an `mlflow server` for sweeps and runs that
# span processes and nodes. Real servers, loopback only unless told otherwise; see docs/scale-out.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/servers.sh install|start|stop|status|env|destroy

  install  PostgreSQL server binaries (apt-get when missing) and an unprivileged user to run them as
  start    start PostgreSQL and `mlflow server` (creating them on first use); prints the env lines to export
  stop     stop both servers; studies, runs and artifacts stay in the state folder
  status   say what is running (exit 0 only when both are up)
  env      print the export lines: eval "$(scripts/servers.sh env)"
  destroy  stop both servers and delete the state folder with every study, run and artifact in it

settings (environment; the host and ports of the latest `start` are remembered for the other commands):
  FACETRAITS_SERVERS_DIR          state folder                       (default: <repo>/.servers)
  FACETRAITS_SERVERS_HOST         address both servers bind to       (default: 127.0.0.1)
  FACETRAITS_PG_PORT              PostgreSQL port                    (default: 55432)
  FACETRAITS_MLFLOW_PORT          MLflow port                        (default: 5000)
  FACETRAITS_MLFLOW_WORKERS       MLflow server worker processes     (default: 2)
  FACETRAITS_MLFLOW_ALLOWED_HOSTS Host headers MLflow accepts        (default: MLflow's own on loopback, else
                                  localhost and this machine's names and IPv4 addresses, any port)
  FACETRAITS_PG_ALLOW             pg_hba address clients may come from when not on loopback (default: samenet)
  FACETRAITS_PG_BINDIR            folder with initdb, pg_ctl, postgres (default: found on PATH or /usr/lib/postgresql)
  FACETRAITS_PG_OS_USER           user PostgreSQL runs as when this script runs as root (default: postgres)
  FACETRAITS_SERVERS_TIMEOUT      seconds to wait for each server to come up (default: 120)
  FACETRAITS_PG_DISPOSABLE        1: a throw-away cluster (tests, CI) that skips every fsync; a crash may lose it
  PYTHON                          interpreter with mlflow and psycopg2 (default: <repo>/.venv/bin/python)

exit status 3: PostgreSQL is not available here (not installed and cannot be installed, or no user to run it as).
EOF
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${FACETRAITS_SERVERS_DIR:-$REPO/.servers}"
PYTHON="${PYTHON:-$([[ -x $REPO/.venv/bin/python ]] && echo "$REPO/.venv/bin/python" || echo python3)}"
TIMEOUT="${FACETRAITS_SERVERS_TIMEOUT:-120}"
WORKERS="${FACETRAITS_MLFLOW_WORKERS:-2}"
DB_USER=facetraits
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; name the driver this project installs
DB_SCHEME=postgresql+psycopg2
UNAVAILABLE=3

log() { echo "servers: $*" >&2; }
die() { log "error: $*"; exit 1; }
unavailable() { log "PostgreSQL unavailable: $*"; exit "$UNAVAILABLE"; }
is_root() { [[ $(id -u) -eq 0 ]]; }

require_python_packages() {
    "$PYTHON" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))' \
        mlflow psycopg2 2>/dev/null || die "$PYTHON lacks mlflow or psycopg2 (pip install psycopg2-binary); or set PYTHON"
}

pg_bindir() {
    local candidates=() dir
    [[ -n ${FACETRAITS_PG_BINDIR:-} ]] && candidates+=("$FACETRAITS_PG_BINDIR")
    command -v pg_ctl >/dev/null && candidates+=("$(dirname "$(readlink -f "$(command -v pg_ctl)")")")
    candidates+=($(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r))
    for dir in "${candidates[@]}"; do
        if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres && -x $dir/psql ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

# PostgreSQL refuses to run as root: as root, run it as an unprivileged user.
pg_os_user() { if is_root; then echo "${FACETRAITS_PG_OS_USER:-postgres}"; else id -un; fi; }

as_pg_user() {
    if is_root; then
        (cd / && runuser -u "$(pg_os_user)" -- "$@")
    else
        "$@"
    fi
}

install_postgres() {
    local sudo=()
    if ! is_root; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            unavailable "PostgreSQL server binaries not found and installing them needs root; install PostgreSQL (>= 12) or set FACETRAITS_PG_BINDIR"
        fi
    fi
    command -v apt-get >/dev/null ||
        unavailable "PostgreSQL server binaries not found and there is no apt-get; install PostgreSQL (>= 12) or set FACETRAITS_PG_BINDIR"
    log "installing PostgreSQL with apt-get"
    local install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql)
    if ! "${install[@]}" >&2; then
        "${sudo[@]}" apt-get update -q >&2 && "${install[@]}" >&2 || unavailable "apt-get install postgresql failed (see above)"
    fi
}

cmd_install() {
    pg_bindir >/dev/null || install_postgres
    local bindir
    bindir="$(pg_bindir)" || unavailable "apt-get installed postgresql but initdb/pg_ctl/postgres/psql are still not found"
    if is_root && ! id -u "$(pg_os_user)" >/dev/null 2>&1; then
        log "creating system user $(pg_os_user) to run PostgreSQL"
        useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin "$(pg_os_user)" ||
            unavailable "cannot create user $(pg_os_user) to run PostgreSQL as"
    fi
    require_python_packages
    log "$("$bindir/postgres" --version) in $bindir, run as user $(pg_os_user)"
}

# `start` takes the environment's values over the remembered ones; every other command, the servers' own.
load_settings() {
    HOST="${FACETRAITS_SERVERS_HOST:-127.0.0.1}"
    PG_PORT="${FACETRAITS_PG_PORT:-55432}"
    MLFLOW_PORT="${FACETRAITS_MLFLOW_PORT:-5000}"
    if [[ -f $STATE/settings.env ]]; then
        # shellcheck disable=SC1091
        source "$STATE/settings.env"
        if [[ $1 == start ]]; then
            HOST="${FACETRAITS_SERVERS_HOST:-$HOST}"
            PG_PORT="${FACETRAITS_PG_PORT:-$PG_PORT}"
            MLFLOW_PORT="${FACETRAITS_MLFLOW_PORT:-$MLFLOW_PORT}"
        fi
    fi
    case "$HOST" in
    0.0.0.0 | '*' | :: | '')
        LOCAL_HOST=127.0.0.1
        PUBLIC_HOST="$(hostname -f 2>/dev/null || hostname)"
        ;;
    *)
        LOCAL_HOST="$HOST"
        PUBLIC_HOST="$HOST"
        ;;
    esac
    PGDATA="$STATE/postgres/data"
    PGPASSFILE="$STATE/pgpass"
    STORAGE_URL="$DB_SCHEME://$DB_USER@$PUBLIC_HOST:$PG_PORT/optuna"
    TRACKING_URI="http://$PUBLIC_HOST:$MLFLOW_PORT"
}

save_settings() {
    printf 'HOST=%q\nPG_PORT=%q\nMLFLOW_PORT=%q\n' "$HOST" "$PG_PORT" "$MLFLOW_PORT" >"$STATE/settings.env.tmp"
    mv "$STATE/settings.env.tmp" "$STATE/settings.env"
}

is_loopback() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }

pg_running() { [[ -f $PGDATA/PG_VERSION ]] && as_pg_user "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

psql_local() { PGPASSFILE="$PGPASSFILE" "$PGBIN/psql" -X -q -h "$LOCAL_HOST" -p "$PG_PORT" -U "$DB_USER" "$@"; }

init_postgres() {
    log "creating a PostgreSQL cluster in $PGDATA"
    mkdir -p "$STATE/postgres"
    is_root && chown "$(pg_os_user):" "$STATE/postgres"
    chmod 700 "$STATE/postgres"
    as_pg_user test -w "$STATE/postgres" ||
        die "user $(pg_os_user) cannot reach $STATE (a parent folder is not searchable by others); set FACETRAITS_SERVERS_DIR to a folder it can reach"
    local password
    password="$(head -c 24 /dev/urandom | base64 | tr -d '+/=')"
    (umask 077 && echo "*:*:*:$DB_USER:$password" >"$PGPASSFILE")
    local pwfile="$STATE/postgres/initdb.pw"
    (umask 077 && echo "$password" >"$pwfile")
    is_root && chown "$(pg_os_user):" "$pwfile"
    local options=()
    if disposable; then
        options+=(--no-sync)
    fi
    as_pg_user "$PGBIN/initdb" -D "$PGDATA" -U "$DB_USER" --pwfile="$pwfile" --auth=scram-sha-256 \
        --encoding=UTF8 --no-locale "${options[@]}" >"$STATE/postgres/initdb.log" 2>&1 || {
        rm -f "$pwfile"
        tail -n 20 "$STATE/postgres/initdb.log" >&2
        die "initdb failed (log: $STATE/postgres/initdb.log)"
    }
    rm -f "$pwfile"
    echo "include 'facetraits.conf'" | as_pg_user tee -a "$PGDATA/postgresql.conf" >/dev/null
}

disposable() { [[ ${FACETRAITS_PG_DISPOSABLE:-0} == 1 ]]; }

# Written on every start, so a changed host or port takes effect at the next start.
write_postgres_config() {
    {
        echo "listen_addresses = '$HOST'"
        echo "port = $PG_PORT"
        echo "unix_socket_directories = ''"
        # every Optuna heartbeat and MLflow metric is a commit: on a slow disk each fsync costs tens of ms
        if disposable; then
            printf '%s\n' "fsync = off" "synchronous_commit = off" "full_page_writes = off"
        fi
    } | as_pg_user tee "$PGDATA/facetraits.conf" >/dev/null
    {
        echo "host all all 127.0.0.1/32 scram-sha-256"
        echo "host all all ::1/128 scram-sha-256"
        is_loopback "$HOST" || echo "host all all ${FACETRAITS_PG_ALLOW:-samenet} scram-sha-256"
    } | as_pg_user tee "$PGDATA/pg_hba.conf" >/dev/null
}

start_postgres() {
    [[ -f $PGDATA/PG_VERSION ]] || init_postgres
    if pg_running; then
        log "PostgreSQL already running"
        return
    fi
    write_postgres_config
    log "starting PostgreSQL on $HOST:$PG_PORT"
    as_pg_user "$PGBIN/pg_ctl" -D "$PGDATA" -l "$STATE/postgres/server.log" -w -t "$TIMEOUT" start >/dev/null 2>&1 || {
        tail -n 20 "$STATE/postgres/server.log" >&2 || true
        die "PostgreSQL did not start (log: $STATE/postgres/server.log)"
    }
    local db
    for db in optuna mlflow; do
        [[ $(psql_local -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") == 1 ]] ||
            psql_local -d postgres -c "CREATE DATABASE $db" || die "cannot create database $db"
    done
}

# mode: fast (a clean shutdown) or immediate (no checkpoint: for data about to be deleted)
stop_postgres() {
    pg_running || return 0
    log "stopping PostgreSQL"
    as_pg_user "$PGBIN/pg_ctl" -D "$PGDATA" -m "$1" -w -t "$TIMEOUT" stop >/dev/null
}

# The recorded pid, only while it is still our `mlflow server` (a stale pid may have been reused).
mlflow_pid() {
    local pid
    pid="$(cat "$STATE/mlflow.pid" 2>/dev/null)" || return 1
    [[ $(ps -o args= -p "$pid" 2>/dev/null) == *"mlflow server"*"--port $MLFLOW_PORT"* ]] && echo "$pid"
}

http_ok() {
    if command -v curl >/dev/null; then
        curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null
    else
        "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
    fi
}

# MLflow answers 403 to a Host header it does not know (DNS rebinding): off loopback, accept this
# machine's own names and addresses, those the printed URLs and other nodes use.
this_host_names() {
    local names=(localhost 127.0.0.1 "$PUBLIC_HOST" "$(hostname -s)") address
    for address in $(hostname -I 2>/dev/null); do
        [[ $address == *:* ]] || names+=("$address")
    done
    printf '%s:*,' "${names[@]}" | sed 's/,$//'
}

start_mlflow() {
    if mlflow_pid >/dev/null; then
        log "MLflow server already running"
        return
    fi
    local args=(server --backend-store-uri "$DB_SCHEME://$DB_USER@$LOCAL_HOST:$PG_PORT/mlflow"
        --artifacts-destination "$STATE/mlartifacts" --host "$HOST" --port "$MLFLOW_PORT" --workers "$WORKERS")
    local allowed="${FACETRAITS_MLFLOW_ALLOWED_HOSTS:-}"
    if [[ -z $allowed ]] && ! is_loopback "$HOST"; then
        allowed="$(this_host_names)"
    fi
    if [[ -n $allowed ]]; then
        args+=(--allowed-hosts "$allowed")
    fi
    mkdir -p "$STATE/mlartifacts"
    rm -f "$STATE/mlflow.pid"
    log "starting MLflow server on $HOST:$MLFLOW_PORT"
    (
        cd "$STATE"
        # job execution (GenAI scorers, trace roll-ups) is a pool of huey processes this project never uses
        export PGPASSFILE MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 \
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
        # its own session, so stop ends the server and its workers as one process group; exec everywhere, so
        # nothing holds on to this script's stdout (a caller reading it to the end would wait forever)
        exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/mlflow.pid" "$PYTHON" -m mlflow "${args[@]}"
    ) </dev/null >>"$STATE/mlflow.log" 2>&1 &
    local deadline=$((SECONDS + TIMEOUT))
    until http_ok "http://$LOCAL_HOST:$MLFLOW_PORT/health"; do
        if ((SECONDS > deadline)) || { [[ -f $STATE/mlflow.pid ]] && ! mlflow_pid >/dev/null; }; then
            stop_mlflow
            tail -n 30 "$STATE/mlflow.log" >&2 || true
            die "MLflow server did not answer /health within ${TIMEOUT}s (log: $STATE/mlflow.log)"
        fi
        sleep 0.5
    done
}

# Any process of the session still running (a zombie waiting for init to reap it has finished).
session_alive() { ps -o stat= -s "$1" 2>/dev/null | grep -qv '^Z'; }

stop_mlflow() {
    local pid
    pid="$(mlflow_pid)" || {
        rm -f "$STATE/mlflow.pid"
        return 0
    }
    log "stopping MLflow server"
    kill -TERM -- "-$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while session_alive "$pid"; do
        if ((SECONDS > deadline)); then
            kill -KILL -- "-$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$STATE/mlflow.pid"
}

cmd_env() {
    [[ -f $STATE/settings.env ]] || die "no servers in $STATE: run scripts/servers.sh start"
    cat <<EOF
export FACETRAITS_SWEEP_STORAGE=$(printf %q "$STORAGE_URL")
export FACETRAITS_TRACKING_URI=$(printf %q "$TRACKING_URI")
export MLFLOW_TRACKING_URI=$(printf %q "$TRACKING_URI")
export PGPASSFILE=$(printf %q "$PGPASSFILE")
EOF
}

cmd_start() {
    PGBIN="$(pg_bindir)" || unavailable "PostgreSQL server binaries not found: run scripts/servers.sh install"
    if is_root && ! id -u "$(pg_os_user)" >/dev/null 2>&1; then
        unavailable "no user $(pg_os_user) to run PostgreSQL as: run scripts/servers.sh install"
    fi
    require_python_packages
    mkdir -p "$STATE"
    STATE="$(cd "$STATE" && pwd -P)"
    is_root && chmod 711 "$STATE"
    load_settings start
    save_settings
    start_postgres
    start_mlflow
    log "up: PostgreSQL on $HOST:$PG_PORT, MLflow on $HOST:$MLFLOW_PORT (state in $STATE)"
    cmd_env
}

cmd_stop() {
    [[ -d $STATE ]] || return 0
    PGBIN="$(pg_bindir)" || PGBIN=""
    stop_mlflow
    [[ -z $PGBIN ]] || stop_postgres "$1"
}

cmd_status() {
    [[ -f $STATE/settings.env ]] || {
        log "no servers in $STATE"
        return 3
    }
    PGBIN="$(pg_bindir)" || PGBIN=""
    local up=0
    if [[ -n $PGBIN ]] && pg_running; then
        echo "postgres: running on $HOST:$PG_PORT (data: $PGDATA)"
    else
        echo "postgres: stopped"
        up=3
    fi
    if mlflow_pid >/dev/null && http_ok "http://$LOCAL_HOST:$MLFLOW_PORT/health"; then
        echo "mlflow:   running on $HOST:$MLFLOW_PORT (artifacts: $STATE/mlartifacts)"
    else
        echo "mlflow:   stopped"
        up=3
    fi
    return "$up"
}

main() {
    [[ $# -eq 1 ]] || {
        usage >&2
        exit 2
    }
    [[ -d $STATE ]] && STATE="$(cd "$STATE" && pwd -P)"
    [[ $1 == install || $1 == start ]] || load_settings "$1"
    case "$1" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop fast ;;
    status) cmd_status ;;
    env) cmd_env ;;
    destroy)
        [[ -d $STATE ]] || return 0
        cmd_stop immediate
        rm -rf "$STATE"
        log "removed $STATE"
        ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
