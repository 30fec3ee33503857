#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on 127.0.0.1 only, in a folder of its own.
#   pg_throwaway.sh ensure          install Debian's postgresql when missing (needs root + apt)
#   pg_throwaway.sh start DIR PORT  initdb DIR/data and start it; prints the server's base URL
#   pg_throwaway.sh stop DIR        stop it (fast shutdown); DIR is then free to delete
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user (or
# `nobody`), which then owns DIR. Trust authentication, so never point it at a shared folder.
set -euo pipefail

bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return 0; }
  return 1
}

owner() {
  if [ "$(id -u)" != "0" ]; then id -un
  elif id postgres >/dev/null 2>&1; then echo postgres
  else echo nobody; fi
}

as_owner() {
  local who; who=$(owner)
  if [ "$who" = "$(id -un)" ]; then "$@"
  elif command -v runuser >/dev/null; then runuser -u "$who" -- "$@"
  else su -s /bin/sh "$who" -c "$(printf '%q ' "$@")"; fi
}

case "${1:-}" in
  ensure)
    if bindir >/dev/null; then exit 0; fi
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      echo "installing postgresql for the feedback-store tests (apt-get)..."
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
        || echo "warning: postgresql could not be installed; its tests will say so"
    else
      echo "note: PostgreSQL is missing and apt-get is not usable; its tests will say so"
    fi
    exit 0 ;;
  start)
    dir=${2:?DIR}; port=${3:?PORT}
    bin=$(bindir) || { echo "PostgreSQL server binaries (pg_ctl) are not installed" >&2; exit 3; }
    mkdir -p "$dir"
    [ "$(id -u)" = "0" ] && chown -R "$(owner)" "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U cxr --auth=trust --encoding=UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 4; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
      "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      >/dev/null || { cat "$dir/server.log" >&2; exit 5; }
    echo "postgresql+psycopg://cxr@127.0.0.1:$port" ;;
  stop)
    dir=${2:?DIR}
    bin=$(bindir) || exit 0
    [ -f "$dir/data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    exit 0 ;;
  *)
    echo "usage: $0 ensure | start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
