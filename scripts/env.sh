# The environment of a stack started by `make up`; sourced by up.sh and down.sh.
# Every HOSTING_* variable can be overridden from the caller's environment.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${HOSTING_STACK_DIR:-$ROOT/.stack}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
export HOSTING_DATABASE_URL=${HOSTING_DATABASE_URL:-postgres://hosting:hosting@127.0.0.1:5432/hosting}
export HOSTING_AMQP_URL=${HOSTING_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export HOSTING_PREFIX=${HOSTING_PREFIX:-hosting}
# Each server registered later gets a broker user of its own for its agent, made through this.
export HOSTING_BROKER_ADMIN_URL=${HOSTING_BROKER_ADMIN_URL:-http://guest:guest@127.0.0.1:15672}
export HOSTING_LISTEN=${HOSTING_LISTEN:-127.0.0.1:8080}
export HOSTING_HTTP_LISTEN=${HOSTING_HTTP_LISTEN:-127.0.0.1:8088}
export HOSTING_WEBCONF_DIR=${HOSTING_WEBCONF_DIR:-$STACK/webconf}
export HOSTING_BACKUP_DIR=${HOSTING_BACKUP_DIR:-$STACK/backups}
export HOSTING_SERVER=${HOSTING_SERVER:-local}
export HOSTING_DBPROV_KEY_FILE=${HOSTING_DBPROV_KEY_FILE:-$STACK/dbprov.key}
SERVICES="dbprov webconf installer backupper migrator gateway"
# Where each service answers Prometheus's scrapes (/metrics): deploy/prometheus/prometheus.yml
# scrapes these.
metrics_listen() {
  case $1 in
    gateway) echo "${HOSTING_GATEWAY_METRICS_LISTEN:-127.0.0.1:9470}" ;;
    installer) echo "${HOSTING_INSTALLER_METRICS_LISTEN:-127.0.0.1:9471}" ;;
    backupper) echo "${HOSTING_BACKUPPER_METRICS_LISTEN:-127.0.0.1:9472}" ;;
    migrator) echo "${HOSTING_MIGRATOR_METRICS_LISTEN:-127.0.0.1:9473}" ;;
    webconf) echo "${HOSTING_WEBCONF_METRICS_LISTEN:-127.0.0.1:9474}" ;;
    dbprov) echo "${HOSTING_DBPROV_METRICS_LISTEN:-127.0.0.1:9475}" ;;
    *) echo "" ;;
  esac
}
