#!/usr/bin/env bash
# Stops what `make up` started (webconf stops its nginx and php-fpm on the way out). The
# databases, broker and site data stay.
set -euo pipefail
source "$(dirname "$0")/env.sh"
for svc in $SERVICES; do
  pidfile="$STACK/pids/$svc.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
    echo "$svc: stopped"
  fi
  rm -f "$pidfile"
done
