#!/usr/bin/env bash
# pg_* and rd_* variables are assigned by parse_url through printf -v:
# shellcheck disable=SC2154
# Make PostgreSQL (with PostGIS available) and Redis reachable for EduConnect.
#
# Idempotent: when both services already answer, it only checks PostGIS,
# creates the target database if missing and sets Redis' eviction policy.
# Decision order:
#   1. DATABASE_URL / REDIS_URL already answer            -> use them
#   2. a Docker engine answers                            -> docker compose up
#   3. Debian/Ubuntu as root                              -> apt install + start
#   4. otherwise                                          -> explain, exit 1
# Then, if a LOCAL server (127.0.0.1 / localhost / ::1) refuses the password-less
# DATABASE_URL user (fresh Debian clusters use scram-sha-256 on TCP), and we are
# root on Debian with a Debian cluster on that port, the user is trusted on
# 127.0.0.1/32 and ::1/128 at the top of that cluster's pg_hba.conf (marked with
# "# added by EduConnect infra/ensure-services.sh (dev/CI machine)") and the
# cluster is reloaded. Never done when a password is given (URL or PGPASSWORD).
#
# Environment:
#   DATABASE_URL   default postgresql://postgres@127.0.0.1:5432/educonnect
#                  (a SQLAlchemy "+driver" suffix such as +psycopg is stripped)
#   REDIS_URL      default redis://127.0.0.1:6379/0
#   ENSURE_SERVICES_ALLOW_INSTALL=0   never run apt-get nor edit pg_hba.conf;
#                  print what would be installed/added and exit 1 instead
#   ENSURE_SERVICES_DRY_RUN=1         print the decisions and the commands that
#                  would change the machine, without running them
#   ENSURE_SERVICES_WAIT_SECONDS      how long to wait for started services
#                  (default 30; 120 for docker, which may pull images)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/educonnect}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
ALLOW_INSTALL="${ENSURE_SERVICES_ALLOW_INSTALL:-1}"
WAIT_SECONDS="${ENSURE_SERVICES_WAIT_SECONDS:-30}"
DRY_RUN="${ENSURE_SERVICES_DRY_RUN:-0}"

export DEBIAN_FRONTEND=noninteractive
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-5}"

log() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
# act CMD... : run a command that changes the machine (only printed in dry-run mode)
act() {
    if [[ "$DRY_RUN" == "1" ]]; then
        log "dry-run: would run:$(printf ' %q' "$@")"
        return 0
    fi
    "$@"
}

# ---------------------------------------------------------------- URL parsing

# parse_url URL PREFIX [LABEL] -> sets PREFIX_scheme, PREFIX_userinfo, PREFIX_user,
# PREFIX_password, PREFIX_host, PREFIX_port, PREFIX_path, PREFIX_query
URL_RE='^([A-Za-z][A-Za-z0-9+.-]*)://(([^@]*)@)?(\[[^]]*\]|[^:/?]*)(:([0-9]*))?(/([^?]*))?(\?(.*))?$'
parse_url() {
    local url="$1" p="$2"
    [[ "$url" =~ $URL_RE ]] || die "cannot parse ${3:-URL} (expected scheme://[user[:password]@]host[:port]/path)"
    local userinfo="${BASH_REMATCH[3]}" host="${BASH_REMATCH[4]}"
    host="${host#[}"
    host="${host%]}"
    printf -v "${p}_scheme" '%s' "${BASH_REMATCH[1]}"
    printf -v "${p}_userinfo" '%s' "$userinfo"
    printf -v "${p}_user" '%s' "$(urldecode "${userinfo%%:*}")"
    if [[ "$userinfo" == *:* ]]; then
        printf -v "${p}_password" '%s' "$(urldecode "${userinfo#*:}")"
    else
        printf -v "${p}_password" '%s' ""
    fi
    printf -v "${p}_host" '%s' "$host"
    printf -v "${p}_port" '%s' "${BASH_REMATCH[6]}"
    printf -v "${p}_path" '%s' "${BASH_REMATCH[8]}"
    printf -v "${p}_query" '%s' "${BASH_REMATCH[10]}"
}

urldecode() {
    local s="${1//+/ }"
    printf '%b' "${s//%/\\x}"
}

is_local_host() {
    case "$1" in
        "" | 127.* | localhost | ::1 | /*) return 0 ;;
        *) return 1 ;;
    esac
}

# libpq understands postgresql:// and postgres://, not SQLAlchemy's +driver.
PG_URL="$(printf '%s' "$DATABASE_URL" | sed -E 's#^(postgres(ql)?)\+[A-Za-z0-9_]+://#\1://#')"
parse_url "$PG_URL" pg DATABASE_URL
pg_port="${pg_port:-5432}"
pg_tcp_host="${pg_host:-127.0.0.1}"
PG_DB="$(urldecode "${pg_path%%/*}")"
[[ -n "$PG_DB" ]] || die "DATABASE_URL has no database name (expected .../<dbname>)"
pg_host_in_url="$pg_host"
[[ "$pg_host" == *:* ]] && pg_host_in_url="[${pg_host}]"
PG_MAINT_URL="${pg_scheme}://${pg_userinfo:+${pg_userinfo}@}${pg_host_in_url}${pg_port:+:${pg_port}}/postgres${pg_query:+?${pg_query}}"
PG_LABEL="${pg_host_in_url:-localhost}:${pg_port}/${PG_DB}"
PG_LOCAL=0
# a libpq "?host=..." parameter overrides the URL's host
pg_effective_host="$pg_host"
if [[ "$pg_query" =~ (^|&)host=([^&]*) ]]; then pg_effective_host="$(urldecode "${BASH_REMATCH[2]}")"; fi
is_local_host "$pg_effective_host" && PG_LOCAL=1

parse_url "$REDIS_URL" rd REDIS_URL
rd_port="${rd_port:-6379}"
rd_tcp_host="${rd_host:-127.0.0.1}"
RD_LABEL="${rd_host:-localhost}:${rd_port}"
[[ "$rd_host" == *:* ]] && RD_LABEL="[${rd_host}]:${rd_port}"
RD_LOCAL=0
is_local_host "$rd_host" && RD_LOCAL=1

IS_DEBIAN_ROOT=0
if [[ "$(id -u)" == "0" && -f /etc/debian_version ]] && have apt-get; then
    IS_DEBIAN_ROOT=1
fi
SYSTEMD=0
[[ -d /run/systemd/system ]] && have systemctl && SYSTEMD=1

with_timeout() {
    local secs="$1"
    shift
    if have timeout; then timeout "$secs" "$@"; else "$@"; fi
}

# ---------------------------------------------------------------- probes

tcp_connect() { # host port
    have python3 || return 1
    python3 - "$1" "$2" <<'PY' >/dev/null 2>&1
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
with socket.create_connection((host, port), timeout=3):
    pass
PY
}

pg_answers() {
    if have pg_isready; then
        pg_isready -q -t 3 -d "$PG_URL" >/dev/null 2>&1
    else
        tcp_connect "$pg_tcp_host" "$pg_port"
    fi
}

# redis_cmd ARGS... : run one Redis command, print the reply (one value per line)
redis_cmd() {
    if have redis-cli; then
        with_timeout 5 redis-cli -u "$REDIS_URL" "$@" 2>/dev/null
        return
    fi
    have python3 || return 1
    python3 - "$rd_tcp_host" "$rd_port" "$rd_user" "$rd_password" "$@" <<'PY' 2>/dev/null
import socket, sys
host, port, user, password, *cmd = sys.argv[1:]

def enc(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out

s = socket.create_connection((host, int(port)), timeout=3)
f = s.makefile("rb")

def read():
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b":"):
        return [rest.decode()]
    if kind == b"-":
        raise SystemExit("ERR " + rest.decode())
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return [""]
        data = f.read(n + 2)[:-2]
        return [data.decode()]
    if kind == b"*":
        out = []
        for _ in range(max(int(rest), 0)):
            out += read()
        return out
    raise SystemExit("bad reply")

if password:
    s.sendall(enc(["AUTH", user, password] if user else ["AUTH", password]))
    read()
s.sendall(enc(cmd))
print("\n".join(read()))
PY
}

redis_answers() {
    local reply
    reply="$(redis_cmd PING || true)"
    [[ "$reply" == *PONG* ]]
}

wait_for() { # probe seconds
    local probe="$1" secs="$2" i
    for ((i = 0; i < secs; i++)); do
        if "$probe"; then return 0; fi
        sleep 1
    done
    "$probe"
}

# ---------------------------------------------------------------- apt

APT_UPDATED=0
apt_install() { # why pkg... : one line on what is installed, apt's output in a log file
    local why="$1"
    shift
    if [[ "$ALLOW_INSTALL" == "0" ]]; then
        die "would install: $* (apt-get install -y $*), but ENSURE_SERVICES_ALLOW_INSTALL=0 forbids installs"
    fi
    [[ "$IS_DEBIAN_ROOT" == "1" ]] || die "need to install: $* — run as root on Debian/Ubuntu, or install them yourself"
    if [[ "$DRY_RUN" == "1" ]]; then
        log "dry-run: would install $* (${why}) with apt-get"
        return 0
    fi
    APT_SKIP_UPDATE="$APT_UPDATED" bash "${REPO_ROOT}/infra/apt-install.sh" "$why" \
        --no-install-recommends "$@" || die "could not install $*"
    APT_UPDATED=1
}

pg_latest_version() {
    [[ -d /etc/postgresql ]] || return 0
    find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n1
}

pg_server_installed() {
    [[ -n "$(pg_latest_version)" ]] && have pg_ctlcluster
}

# ---------------------------------------------------------------- step 1

PG_UP=0
RD_UP=0
if pg_answers; then PG_UP=1; fi
if redis_answers; then RD_UP=1; fi

if [[ "$PG_UP" == "1" && "$RD_UP" == "1" ]]; then
    log "postgres answers at ${PG_LABEL}; redis answers at ${RD_LABEL}: using them"
else
    missing=()
    if [[ "$PG_UP" == "1" ]]; then
        log "postgres answers at ${PG_LABEL}"
    else
        log "postgres does not answer at ${PG_LABEL}"
        missing+=(postgres)
    fi
    if [[ "$RD_UP" == "1" ]]; then
        log "redis answers at ${RD_LABEL}"
    else
        log "redis does not answer at ${RD_LABEL}"
        missing+=(redis)
    fi
    if [[ "$PG_UP" == "0" && "$PG_LOCAL" == "0" ]]; then
        die "DATABASE_URL points at a remote host (${pg_host}); start that server or point DATABASE_URL at a local one"
    fi
    if [[ "$RD_UP" == "0" && "$RD_LOCAL" == "0" ]]; then
        die "REDIS_URL points at a remote host (${rd_host}); start that server or point REDIS_URL at a local one"
    fi

    started=0
    # ------------------------------------------------------------ step 2: docker
    if have docker && with_timeout 15 docker info >/dev/null 2>&1; then
        compose=()
        if docker compose version >/dev/null 2>&1; then
            compose=(docker compose)
        elif have docker-compose; then
            compose=(docker-compose)
        fi
        if [[ ${#compose[@]} -eq 0 ]]; then
            log "docker engine answers but neither 'docker compose' nor 'docker-compose' is installed: not using docker"
        else
            log "docker engine answers: ${compose[*]} up -d --wait ${missing[*]}"
            (cd "$REPO_ROOT" && act "${compose[@]}" up -d --wait "${missing[@]}") ||
                die "'${compose[*]} up -d --wait ${missing[*]}' failed (port 5432/6379 already taken?)"
            started=1
            WAIT_SECONDS="${ENSURE_SERVICES_WAIT_SECONDS:-120}"
        fi
    else
        log "no docker engine answers"
    fi

    # ------------------------------------------------------------ step 3: apt
    if [[ "$started" == "0" ]]; then
        if [[ "$IS_DEBIAN_ROOT" != "1" ]]; then
            die "cannot start ${missing[*]}: not root on Debian/Ubuntu (with apt-get) and no usable docker engine.
  Install PostgreSQL (15+) with PostGIS 3 and Redis (6.2+) and start them, or start Docker and run
  'docker compose up -d postgres redis' in ${REPO_ROOT}, or point DATABASE_URL / REDIS_URL at running servers."
        fi
        pkgs=()
        if [[ "$PG_UP" == "0" ]] && ! pg_server_installed; then
            pkgs+=(postgresql postgresql-client)
        fi
        if [[ "$RD_UP" == "0" ]] && ! have redis-server; then
            pkgs+=(redis-server)
        fi
        if [[ ${#pkgs[@]} -gt 0 ]]; then
            apt_install "the local services" "${pkgs[@]}"
        else
            log "servers are installed, only need starting"
        fi

        if [[ "$PG_UP" == "0" ]]; then
            ver="$(pg_latest_version)"
            [[ -n "$ver" ]] || die "no PostgreSQL cluster configuration under /etc/postgresql after install"
            if [[ -d "/etc/postgresql/${ver}/main" ]] && have pg_lsclusters; then
                cl_port="" cl_status=""
                read -r _ _ cl_port cl_status _ < <(pg_lsclusters -h "$ver" main 2>/dev/null) || true
                if [[ -n "${cl_port:-}" && "$cl_port" != "$pg_port" ]]; then
                    die "cluster ${ver}/main is configured for port ${cl_port} (${cl_status:-unknown}), DATABASE_URL uses port ${pg_port}; fix one of them"
                fi
                if [[ "${cl_status:-}" == online ]]; then
                    die "cluster ${ver}/main is online on port ${cl_port} but does not answer at ${PG_LABEL} (check listen_addresses / the host in DATABASE_URL)"
                fi
            fi
            if [[ ! -d "/etc/postgresql/${ver}/main" ]]; then
                log "postgres: creating cluster ${ver}/main on port ${pg_port}"
                act pg_createcluster --port "$pg_port" "$ver" main
            fi
            tune_conf="$(dirname "${BASH_SOURCE[0]}")/postgres/educonnect-search.conf"
            if [[ -d "/etc/postgresql/${ver}/main/conf.d" && -f "$tune_conf" &&
                ! -e "/etc/postgresql/${ver}/main/conf.d/educonnect-search.conf" ]]; then
                log "postgres: installing ${tune_conf} into conf.d (search sizing)"
                act cp "$tune_conf" "/etc/postgresql/${ver}/main/conf.d/educonnect-search.conf"
            fi
            if [[ "$SYSTEMD" == "1" ]]; then
                log "postgres: systemctl start postgresql@${ver}-main"
                act systemctl start "postgresql@${ver}-main" || warn "systemctl start postgresql@${ver}-main failed"
            else
                log "postgres: pg_ctlcluster --skip-systemctl-redirect ${ver} main start"
                act pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
                    warn "pg_ctlcluster start returned non-zero (already running on another port?)"
            fi
        fi

        if [[ "$RD_UP" == "0" ]]; then
            if [[ "$SYSTEMD" == "1" ]] && systemctl cat redis-server >/dev/null 2>&1 && [[ "$rd_port" == "6379" ]]; then
                log "redis: systemctl start redis-server"
                act systemctl start redis-server || warn "systemctl start redis-server failed"
            else
                act mkdir -p /var/lib/redis /var/log/redis
                log "redis: redis-server --daemonize yes --port ${rd_port} (noeviction, no persistence)"
                act redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$rd_port" \
                    --save "" --appendonly no --maxmemory-policy noeviction \
                    --dir /var/lib/redis --logfile /var/log/redis/ci.log ||
                    warn "redis-server failed to start, see /var/log/redis/ci.log"
            fi
        fi
    fi

    if [[ "$DRY_RUN" == "1" ]]; then
        log "dry-run: stopping here (the remaining checks need the services running)"
        exit 0
    fi
    if [[ "$PG_UP" == "0" ]]; then
        wait_for pg_answers "$WAIT_SECONDS" ||
            die "postgres still does not answer at ${PG_LABEL} after ${WAIT_SECONDS}s"
        log "postgres answers at ${PG_LABEL}"
    fi
    if [[ "$RD_UP" == "0" ]]; then
        wait_for redis_answers "$WAIT_SECONDS" ||
            die "redis still does not answer at ${RD_LABEL} after ${WAIT_SECONDS}s"
        log "redis answers at ${RD_LABEL}"
    fi
fi

# ---------------------------------------------------------------- psql

if ! have psql; then
    apt_install "psql, which this script runs" postgresql-client
fi

PSQL_ERR_FILE="$(mktemp)"
trap 'rm -f "$PSQL_ERR_FILE"' EXIT
# psql_q URL [psql -v args...] < SQL : run SQL from stdin, print tuples only;
# stderr goes to PSQL_ERR_FILE (callers run it in $(...), so no variables survive);
# -w: never prompt for a password (it would hang on a tty, or eat the SQL from stdin)
psql_q() {
    local url="$1"
    shift
    psql "$url" -X -q -w -A -t -v ON_ERROR_STOP=1 "$@" 2>"$PSQL_ERR_FILE"
}

pg_fail() {
    local hint="" err
    err="$(cat "$PSQL_ERR_FILE" 2>/dev/null || true)"
    case "$err" in
        *authentication* | *password* | *"no pg_hba.conf entry"*)
            hint="
  The server answers but refuses the credentials in DATABASE_URL. Put a password in DATABASE_URL
  or allow the user in pg_hba.conf (e.g. 'host all postgres 127.0.0.1/32 trust' on a dev/CI box;
  this script adds that itself for a password-less URL to a local Debian cluster when run as root)."
            ;;
    esac
    die "$1: ${err:-psql failed}${hint}"
}

# ---------------------------------------------------------------- local auth (dev/CI)

PG_HBA_MARK='# added by EduConnect infra/ensure-services.sh (dev/CI machine)'

# pg_auth_error : did the last psql_q fail because the server refused the credentials?
pg_auth_error() {
    case "$(cat "$PSQL_ERR_FILE" 2>/dev/null || true)" in
        *"authentication failed"* | *"no password supplied"* | *"no pg_hba.conf entry"*) return 0 ;;
    esac
    return 1
}

# pg_hba_user_token USER : print USER as a pg_hba.conf user field (quoted when it
# is a keyword or not a plain name); fails for names that cannot be written safely
pg_hba_user_token() {
    local u="$1"
    [[ -n "$u" && "$u" != *[\"[:cntrl:]]* ]] || return 1
    case "$u" in
        all | sameuser | samerole | samegroup | replication) printf '"%s"' "$u" ;;
        *)
            if [[ "$u" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]]; then
                printf '%s' "$u"
            else
                printf '"%s"' "$u"
            fi
            ;;
    esac
}

# pg_hba_trust_missing FILE TOKEN : print the trust lines for TOKEN that FILE lacks
pg_hba_trust_missing() {
    local l
    for l in "host all $2 127.0.0.1/32 trust" "host all $2 ::1/128 trust"; do
        EC_HBA_LINE="$l" awk '{ $1 = $1 } $0 == ENVIRON["EC_HBA_LINE"] { found = 1; exit }
            END { exit !found }' "$1" || printf '%s\n' "$l"
    done
}

# pg_hba_add_trust FILE USER : add "host all USER 127.0.0.1/32 trust" and its ::1
# twin, under PG_HBA_MARK, above the first rule of FILE (pg_hba.conf is first-match:
# above the comment paragraph that introduces that rule). Lines already present are
# not added again; FILE keeps its inode, owner and mode.
# Returns 0 when FILE changed, 1 when nothing was missing, 2 on error.
pg_hba_add_trust() {
    local file="$1" tok missing tmp
    tok="$(pg_hba_user_token "$2")" || return 2
    [[ -f "$file" && -r "$file" ]] || return 2
    missing="$(pg_hba_trust_missing "$file" "$tok")"
    [[ -n "$missing" ]] || return 1
    tmp="$(mktemp)" || return 2
    if EC_HBA_BLOCK="${PG_HBA_MARK}"$'\n'"${missing}" awk '
        { line[NR] = $0 }
        END {
            first = 0
            for (i = 1; i <= NR; i++) if (line[i] !~ /^[ \t]*(#|$)/) { first = i; break }
            if (first == 0) {
                at = NR + 1
            } else {
                at = first
                while (at > 1 && line[at - 1] ~ /^[ \t]*#/) at--
            }
            for (i = 1; i < at; i++) print line[i]
            if (first == 0 && NR > 0 && line[NR] !~ /^[ \t]*$/) print ""
            print ENVIRON["EC_HBA_BLOCK"]
            if (first) print ""
            for (i = at; i <= NR; i++) print line[i]
        }' "$file" >"$tmp" && [[ -s "$tmp" ]] && cat "$tmp" >"$file"; then
        rm -f "$tmp"
        return 0
    fi
    rm -f "$tmp"
    return 2
}

# pg_debian_cluster_for_port PORT : print the version of the Debian "main" cluster
# configured for PORT (newest first), if its pg_hba.conf is where Debian puts it
pg_debian_cluster_for_port() {
    local ver conf port
    [[ -d /etc/postgresql ]] || return 1
    while read -r ver; do
        [[ -f "/etc/postgresql/${ver}/main/pg_hba.conf" ]] || continue
        port=""
        if have pg_lsclusters; then
            read -r _ _ port _ < <(pg_lsclusters -h "$ver" main 2>/dev/null) || true
        fi
        if [[ -z "$port" ]]; then
            conf="/etc/postgresql/${ver}/main/postgresql.conf"
            port="$(sed -nE 's/^[[:space:]]*port[[:space:]]*=?[[:space:]]*([0-9]+).*/\1/p' "$conf" 2>/dev/null | tail -n1)"
            port="${port:-5432}"
        fi
        if [[ "$port" == "$1" ]]; then
            printf '%s\n' "$ver"
            return 0
        fi
    done < <(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -rV)
    return 1
}

pg_reload_cluster() { # ver
    if [[ "$SYSTEMD" == "1" ]]; then
        log "postgres: systemctl reload postgresql@${1}-main"
        act systemctl reload "postgresql@${1}-main"
    else
        log "postgres: pg_ctlcluster --skip-systemctl-redirect ${1} main reload"
        act pg_ctlcluster --skip-systemctl-redirect "$1" main reload
    fi
}

# pg_trust_local_user : called when the server refused the DATABASE_URL credentials.
# On a dev/CI machine (local server over TCP, no password given, root on Debian, a
# Debian cluster on that port) trust the user on 127.0.0.1/::1 in pg_hba.conf,
# reload and retry. Returns 0 when connecting works now, 1 when not applicable
# (the caller then reports the original error); dies when the fix did not help.
pg_trust_local_user() {
    local user ver hba tok missing rc i
    case "$pg_effective_host" in
        127.0.0.1 | localhost | ::1) ;;
        *) return 1 ;;
    esac
    if [[ -n "$pg_password" || "$pg_query" =~ (^|&)password= || -n "${PGPASSWORD:-}" ]]; then
        log "postgres: refuses the given password (DATABASE_URL or PGPASSWORD); a pg_hba.conf trust rule is never added when a password is given"
        return 1
    fi
    user="$pg_user"
    if [[ "$pg_query" =~ (^|&)user=([^&]*) ]]; then user="$(urldecode "${BASH_REMATCH[2]}")"; fi
    user="${user:-${PGUSER:-$(id -un)}}"
    if [[ "$IS_DEBIAN_ROOT" != "1" ]]; then
        log "postgres: refuses password-less user ${user}; not root on Debian, so not touching pg_hba.conf"
        return 1
    fi
    if ! ver="$(pg_debian_cluster_for_port "$pg_port")"; then
        log "postgres: refuses password-less user ${user}; no Debian cluster (/etc/postgresql/<ver>/main/pg_hba.conf) on port ${pg_port}, so not touching pg_hba.conf"
        return 1
    fi
    hba="/etc/postgresql/${ver}/main/pg_hba.conf"
    if ! tok="$(pg_hba_user_token "$user")"; then
        log "postgres: refuses user ${user}, whose name cannot be written into pg_hba.conf safely; not touching it"
        return 1
    fi
    missing="$(pg_hba_trust_missing "$hba" "$tok")"
    log "postgres: the local cluster ${ver}/main refuses password-less user ${user} over TCP (Debian's default scram-sha-256 in pg_hba.conf)"
    if [[ "$ALLOW_INSTALL" == "0" ]]; then
        if [[ -n "$missing" ]]; then
            die "would add to the top of ${hba}: $(printf '%s' "$missing" | paste -sd';' -) (and reload the cluster), but ENSURE_SERVICES_ALLOW_INSTALL=0 forbids changing the machine"
        fi
        die "${hba} already trusts ${user} but the server still refuses it; would reload cluster ${ver}/main, but ENSURE_SERVICES_ALLOW_INSTALL=0 forbids changing the machine"
    fi
    if [[ "$DRY_RUN" == "1" ]]; then
        if [[ -n "$missing" ]]; then
            log "dry-run: would add to the top of ${hba} (dev/CI convenience; never done when DATABASE_URL carries a password):"
            printf '%s\n' "$PG_HBA_MARK" "$missing" | sed 's/^/[services]     /'
        fi
        pg_reload_cluster "$ver"
        log "dry-run: stopping here (the remaining checks need the server to accept ${user})"
        exit 0
    fi
    rc=0
    pg_hba_add_trust "$hba" "$user" || rc=$?
    case "$rc" in
        0)
            log "postgres: DEV/CI MACHINE CONVENIENCE: added to the top of ${hba}:"
            printf '%s\n' "$PG_HBA_MARK" "$missing" | sed 's/^/[services]     /'
            log "postgres: user ${user} may now connect to this machine's cluster ${ver}/main over 127.0.0.1/::1 without a password. This is never done when DATABASE_URL carries a password; delete the marked lines to undo."
            ;;
        1) log "postgres: ${hba} already trusts ${user} on 127.0.0.1/::1; reloading in case it was edited without a reload" ;;
        *) die "could not edit ${hba}" ;;
    esac
    pg_reload_cluster "$ver" || warn "reloading cluster ${ver}/main failed"
    for ((i = 0; i < 10; i++)); do
        if psql_q "$PG_MAINT_URL" <<<'SELECT 1' >/dev/null; then
            log "postgres: accepts password-less user ${user} now"
            return 0
        fi
        pg_auth_error || break
        sleep 1
    done
    pg_fail "postgres still refuses ${user} after trusting it in ${hba} (is an earlier pg_hba.conf line, an 'include', or a non-default hba_file in effect?)"
}

# ---------------------------------------------------------------- credentials

if ! psql_q "$PG_MAINT_URL" <<<'SELECT 1' >/dev/null && pg_auth_error; then
    pg_trust_local_user || true
fi

# ---------------------------------------------------------------- PostGIS

postgis_available() {
    local r
    r="$(psql_q "$PG_MAINT_URL" <<<"SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")" ||
        pg_fail "cannot query postgres at ${pg_host:-localhost}:${pg_port}/postgres"
    [[ "$r" == "1" ]]
}

if postgis_available; then
    log "postgis: available on the server"
else
    num="$(psql_q "$PG_MAINT_URL" <<<"SHOW server_version_num")" || pg_fail "cannot read server version"
    major=$((num / 10000))
    pkg="postgresql-${major}-postgis-3"
    if [[ "$PG_LOCAL" == "1" && "$IS_DEBIAN_ROOT" == "1" && -d "/usr/lib/postgresql/${major}" ]]; then
        apt_install "PostGIS for PostgreSQL ${major}" "$pkg"
        postgis_available || die "postgis is still not available after installing ${pkg}"
        log "postgis: available after installing ${pkg}"
    elif [[ "$ALLOW_INSTALL" == "0" ]]; then
        die "postgis is not available on the server (PostgreSQL ${major}); would need ${pkg}, installs forbidden"
    else
        die "postgis is not available on the server at ${pg_host:-localhost}:${pg_port} (PostgreSQL ${major}).
  Install PostGIS 3 for that server (Debian/Ubuntu: apt-get install ${pkg}) or use the postgis/postgis image."
    fi
fi

# ---------------------------------------------------------------- database

db_exists() {
    local r
    r="$(psql_q "$PG_MAINT_URL" -v db="$PG_DB" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")" ||
        pg_fail "cannot list databases"
    [[ "$r" == "1" ]]
}

if db_exists; then
    log "database ${PG_DB}: exists"
else
    if [[ "$DRY_RUN" == "1" ]]; then
        log "dry-run: would create database ${PG_DB}"
    elif psql_q "$PG_MAINT_URL" -v db="$PG_DB" <<<'CREATE DATABASE :"db"' >/dev/null; then
        log "database ${PG_DB}: created"
    elif db_exists; then
        log "database ${PG_DB}: created concurrently by someone else"
    else
        pg_fail "cannot create database ${PG_DB}"
    fi
fi

# ---------------------------------------------------------------- redis policy

policy="$(redis_cmd CONFIG GET maxmemory-policy | tail -n1 || true)"
if [[ "$policy" == "noeviction" ]]; then
    log "redis: maxmemory-policy is noeviction"
elif [[ "$RD_LOCAL" == "1" ]]; then
    if [[ "$DRY_RUN" == "1" ]]; then
        reply="OK (dry-run, not sent)"
    else
        reply="$(redis_cmd CONFIG SET maxmemory-policy noeviction || true)"
    fi
    if [[ "$reply" == *OK* ]]; then
        log "redis: maxmemory-policy set to noeviction (was ${policy:-unknown})"
    else
        warn "redis: could not set maxmemory-policy noeviction (${reply:-no reply}); Celery may lose tasks under memory pressure"
    fi
else
    warn "redis: maxmemory-policy is ${policy:-unknown} on remote ${RD_LABEL}; Celery needs noeviction"
fi

log "ready: postgres ${PG_LABEL}, redis ${RD_LABEL}"
