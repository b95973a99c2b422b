#!/usr/bin/env bash
# Starts the six services in the background (logs in .stack/logs/), bootstraps the local
# servers, the example platform, a WordPress platform (from Debian's packages) and an admin
# token. Running it again is harmless: running
# services are kept, and bootstrap only adds what is missing.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$STACK/logs" "$STACK/pids" "$STACK/platforms"

# The example platform is deployed as a copy: a platform is a codebase on a web server, and
# its sites' directories are made inside it. Existing sites are kept.
mkdir -p "$STACK/platforms/example"
cp -r "$ROOT/platforms/example/." "$STACK/platforms/example/"
# WordPress from Debian's packages, with the control plane's wp-config.php (sites are kept).
"$ROOT/platforms/wordpress/build.sh" "$STACK/platforms/wordpress" >/dev/null

running() { [ -f "$STACK/pids/$1.pid" ] && kill -0 "$(cat "$STACK/pids/$1.pid")" 2>/dev/null; }
for svc in $SERVICES; do
  if running "$svc"; then
    echo "$svc: already running (pid $(cat "$STACK/pids/$svc.pid"))"
  else
    HOSTING_METRICS_LISTEN=$(metrics_listen "$svc") nohup "$BIN/$svc" >>"$STACK/logs/$svc.log" 2>&1 &
    echo $! >"$STACK/pids/$svc.pid"
    echo "$svc: started (pid $!), log $STACK/logs/$svc.log"
  fi
done

for _ in $(seq 1 120); do
  curl -fsS "http://$HOSTING_LISTEN/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://$HOSTING_LISTEN/healthz" >/dev/null || { echo "error: the gateway did not come up; see $STACK/logs/gateway.log" >&2; exit 1; }

"$BIN/gateway" bootstrap --token-file "$STACK/admin.token" --platform-root "$STACK/platforms/example" \
  --web-port "${HOSTING_HTTP_LISTEN##*:}"
TOKEN=$(cat "$STACK/admin.token")

API="http://$HOSTING_LISTEN/api/v1"
AUTH="Authorization: Bearer $TOKEN"
if ! curl -fsS -H "$AUTH" "$API/platforms" | grep -q '"name":"wordpress"'; then
  curl -fsS -H "$AUTH" -X POST "$API/platforms" -d "{\"name\": \"wordpress\", \"server\": \"local\",
    \"root\": \"$STACK/platforms/wordpress\", \"driver\": \"wordpress\"}" >/dev/null
fi

printf 'waiting for the example and wordpress platforms to be verified'
for _ in $(seq 1 120); do
  if [ "$(curl -fsS -H "$AUTH" "$API/platforms" | grep -o '"status":"enabled"' | wc -l)" -ge 2 ]; then
    echo " ok"; break
  fi
  printf '.'; sleep 0.5
done

cat <<MSG

The control plane is up.
  Dashboard:  http://$HOSTING_LISTEN/   (sign in with the token in $STACK/admin.token)
  API:        http://$HOSTING_LISTEN/api/v1   (token in $STACK/admin.token)
  Sites:      http://$HOSTING_HTTP_LISTEN/    (chosen by the Host header)
  Logs:       $STACK/logs/
  Metrics:    http://127.0.0.1:9470/metrics (gateway) to :9475 (one port per service)
              (deploy/prometheus/prometheus.yml scrapes them; deploy/grafana/ has a dashboard)

The command line, hostctl, is $BIN/hostctl. First commands:
  export PATH="$BIN:\$PATH" HOSTCTL_URL=http://$HOSTING_LISTEN HOSTCTL_TOKEN_FILE=$STACK/admin.token
  hostctl platform list
Or with curl:
  curl -s -H "Authorization: Bearer \$(cat $STACK/admin.token)" http://$HOSTING_LISTEN/api/v1/platforms
MSG
