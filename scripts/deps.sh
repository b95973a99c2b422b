#!/usr/bin/env bash
# Installs (apt-get, Debian 12) and starts what the stack needs: RabbitMQ, PostgreSQL,
# MariaDB, nginx, php-fpm with the PHP CLI and its MySQL and XML extensions, zstd, curl, python3,
# and Debian's
# WordPress (with a theme and its translations) for the wordpress platform. Whatever is
# installed already is kept, and whatever answers on its port already is reused.
# Then makes sure the state database role exists (hosting/hosting, allowed to create the
# per-test databases).
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 120); do port_open "$port" && return 0; sleep 0.5; done
  echo "error: $what did not start listening on 127.0.0.1:$port within 60 s" >&2
  exit 1
}

need=()
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || need+=(rabbitmq-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
[ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
ls /usr/sbin/php-fpm* >/dev/null 2>&1 || need+=(php-fpm)
command -v php >/dev/null 2>&1 || need+=(php-cli)
php -m 2>/dev/null | grep -qi '^pdo_mysql$' || need+=(php-mysql)
# Drupal's requirements (dom, simplexml, xml): platform verify checks what a platform needs.
php -m 2>/dev/null | grep -qi '^dom$' || need+=(php-xml)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The test topology's hosts: network namespaces, veth links and a bridge.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
# The bench's raw transfer between those hosts, the floor of a move across them.
command -v socat >/dev/null 2>&1 || need+=(socat)
# The README's curl examples read JSON with it.
command -v python3 >/dev/null 2>&1 || need+=(python3)
[ -f /usr/share/wordpress/wp-includes/version.php ] || need+=(wordpress)
[ -d /usr/share/wordpress/wp-content/themes/twentytwentythree ] || need+=(wordpress-theme-twentytwentythree)
ls /usr/share/wordpress/wp-content/languages/fr_FR.mo >/dev/null 2>&1 || need+=(wordpress-l10n)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  as_root apt-get update -qq
  # Debian starts daemons on install where it can; we start what is still down below.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! port_open 5432; then
  echo "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  wait_port 5432 PostgreSQL
fi
if ! port_open 3306; then
  echo "starting MariaDB"
  as_root install -d -o mysql -g mysql /run/mysqld
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_port 3306 MariaDB
fi
if ! port_open 5672; then
  echo "starting RabbitMQ"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port 5672 RabbitMQ
fi
# RabbitMQ's management API, through which the gateway makes each registered host's broker
# user (HOSTING_BROKER_ADMIN_URL). Enabling an enabled plugin is a no-op.
if ! port_open 15672; then
  echo "enabling RabbitMQ's management plugin"
  as_root rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null
  wait_port 15672 "RabbitMQ management"
fi

# The state database's role. Peer authentication as the postgres user works on a fresh
# Debian; the role gets a password for TCP connections.
as_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hosting') THEN
    CREATE ROLE hosting LOGIN PASSWORD 'hosting' CREATEDB;
  END IF;
END $$;
SQL
if ! as_root runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'hosting'" | grep -q 1; then
  as_root runuser -u postgres -- createdb -O hosting hosting
fi
# Each control plane holds a few dozen connections (its services' pools), and the test suite
# runs several whole stacks at once: PostgreSQL's default of 100 is too few. Past it,
# connections are refused and tasks fail on "pool timed out" (a CI run failed so).
max_conn=$(as_root runuser -u postgres -- psql -tAc "SHOW max_connections" | tr -d ' ')
if [ "${max_conn:-0}" -lt 400 ]; then
  echo "raising PostgreSQL's max_connections from $max_conn to 400 (it restarts)"
  as_root runuser -u postgres -- psql -q -c "ALTER SYSTEM SET max_connections = 400"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main restart
  wait_port 5432 PostgreSQL
fi
echo "dependencies ready: PostgreSQL :5432, MariaDB :3306, RabbitMQ :5672 (management :15672), nginx, php-fpm"
