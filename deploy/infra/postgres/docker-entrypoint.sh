#!/usr/bin/env bash
# docker-entrypoint.sh of cloudmart/airgap-postgres — the initialisation contract of the
# official postgres image (docker-library/postgres), re-implemented for Debian's packages:
#
#   POSTGRES_PASSWORD      superuser password; required unless POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_USER          superuser name (default postgres)
#   POSTGRES_DB            database created at initialisation (default: POSTGRES_USER)
#   POSTGRES_INITDB_ARGS   extra initdb arguments; POSTGRES_INITDB_WALDIR: a separate WAL dir
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP connections (default: the server's
#                          password_encryption, scram-sha-256)
#   PGDATA                 data directory (default /var/lib/postgresql/data)
#   *_FILE                 POSTGRES_PASSWORD_FILE etc.: read the value from a file
#
# On an empty PGDATA (no PG_VERSION): initdb with the superuser and its password, `host all
# all all <method>` appended to pg_hba.conf, a temporary server on the unix socket only,
# POSTGRES_DB created, /docker-entrypoint-initdb.d/* run in order (*.sh executed when
# executable, else sourced; *.sql, *.sql.gz, *.sql.xz, *.sql.zst through psql), then the
# temporary server stopped. Finally exec the command (default `postgres`, which listens on
# all addresses). Started as root, it prepares the directories and re-runs itself as
# postgres (uid 70) with setpriv; any other uid must own or be able to write the mounts.
set -Eeo pipefail

# file_env VAR [DEFAULT]: VAR from $VAR or from the file named by $VAR_FILE (not both).
file_env() {
  local var=$1 file_var="${1}_FILE" def=${2:-} val
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    printf >&2 'error: both %s and %s are set (but are exclusive)\n' "$var" "$file_var"
    exit 1
  fi
  val=$def
  if [ -n "${!var:-}" ]; then
    val=${!var}
  elif [ -n "${!file_var:-}" ]; then
    val=$(<"${!file_var}")
  fi
  export "$var"="$val"
  unset "$file_var"
}

setup_env() {
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"
  : "${PGDATA:=/var/lib/postgresql/data}"
  export PGDATA
  DATABASE_ALREADY_EXISTS=
  if [ -s "$PGDATA/PG_VERSION" ]; then DATABASE_ALREADY_EXISTS=true; fi
}

create_directories() {
  local uid
  uid=$(id -u)
  mkdir -p "$PGDATA"
  # may fail on some mounts; PostgreSQL then says what it wants
  chmod 00700 "$PGDATA" || :
  mkdir -p /var/run/postgresql || :
  chmod 03775 /var/run/postgresql || :
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    if [ "$uid" = 0 ]; then find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +; fi
    chmod 700 "$POSTGRES_INITDB_WALDIR"
  fi
  if [ "$uid" = 0 ]; then
    find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
    find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
  fi
}

verify_minimum_env() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    cat >&2 <<'EOE'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.
EOE
    exit 1
  fi
  if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
    echo >&2 'WARNING: POSTGRES_HOST_AUTH_METHOD=trust: anyone reaching the port gets in without a password.'
  fi
}

init_database_dir() {
  if ! getent passwd "$(id -u)" >/dev/null 2>&1; then
    echo >&2 "warning: uid $(id -u) has no passwd entry; initdb may refuse to run (this image's postgres user is uid 70)"
  fi
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    set -- --waldir "$POSTGRES_INITDB_WALDIR" "$@"
  fi
  # --pwfile rejects an empty file, hence the newline. POSTGRES_INITDB_ARGS is word-split
  # (and may quote), as in the official image.
  eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"' "$@"'
}

# host connections use POSTGRES_HOST_AUTH_METHOD, by default the password_encryption the
# server is configured with (scram-sha-256)
setup_hba_conf() {
  if [ "${1:-}" = postgres ]; then shift; fi
  local auth
  auth=$(postgres -C password_encryption "$@")
  : "${POSTGRES_HOST_AUTH_METHOD:=$auth}"
  {
    printf '\n'
    if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
      printf '# warning trust is enabled for all connections\n'
    fi
    printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
  } >>"$PGDATA/pg_hba.conf"
}

# psql as the superuser over the unix socket, into POSTGRES_DB unless told otherwise
process_sql() {
  local runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
  if [ -n "$POSTGRES_DB" ]; then runner+=(--dbname "$POSTGRES_DB"); fi
  PGHOST='' PGHOSTADDR='' "${runner[@]}" "$@"
}

temp_server_start() {
  if [ "${1:-}" = postgres ]; then shift; fi
  set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
  NOTIFY_SOCKET='' PGUSER="${PGUSER:-$POSTGRES_USER}" \
    pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

temp_server_stop() {
  PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

setup_db() {
  local db=$POSTGRES_DB exists
  # POSTGRES_DB='' for these two: connect to "postgres", not to the database being created
  exists=$(POSTGRES_DB='' process_sql --dbname postgres --set db="$db" --tuples-only \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'db' ;")
  if [ -z "$exists" ]; then
    POSTGRES_DB='' process_sql --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db" ;'
    printf '\n'
  fi
}

process_init_files() {
  # "${psql[@]}" stays available to sourced scripts, as in the official image
  # shellcheck disable=SC2034
  psql=(process_sql)
  printf '\n'
  local f
  for f; do
    case $f in
      *.sh)
        if [ -x "$f" ]; then
          printf '%s: running %s\n' "$0" "$f"
          "$f"
        else
          printf '%s: sourcing %s\n' "$0" "$f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql) printf '%s: running %s\n' "$0" "$f"; process_sql -f "$f"; printf '\n' ;;
      *.sql.gz) printf '%s: running %s\n' "$0" "$f"; gunzip -c "$f" | process_sql; printf '\n' ;;
      *.sql.xz) printf '%s: running %s\n' "$0" "$f"; xzcat "$f" | process_sql; printf '\n' ;;
      *.sql.zst) printf '%s: running %s\n' "$0" "$f"; zstd -dc "$f" | process_sql; printf '\n' ;;
      *) printf '%s: ignoring %s\n' "$0" "$f" ;;
    esac
    printf '\n'
  done
}

want_help() {
  local arg
  for arg; do
    case $arg in
      -'?' | --help | --describe-config | -V | --version) return 0 ;;
    esac
  done
  return 1
}

main() {
  if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi

  if [ "$1" = postgres ] && ! want_help "$@"; then
    setup_env
    create_directories
    if [ "$(id -u)" = 0 ]; then
      exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
    fi

    if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
      verify_minimum_env
      # unreadable init scripts should fail now, not half-way through
      ls /docker-entrypoint-initdb.d/ >/dev/null
      init_database_dir
      setup_hba_conf "$@"
      # psql needs it when local connections require a password (e.g. --auth-local=scram-sha-256)
      export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
      temp_server_start "$@"
      setup_db
      process_init_files /docker-entrypoint-initdb.d/*
      temp_server_stop
      unset PGPASSWORD
      printf '\nPostgreSQL init process complete; ready for start up.\n\n'
    else
      printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
    fi
  fi

  exec "$@"
}

main "$@"
