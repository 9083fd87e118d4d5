#!/bin/bash
# PostgreSQL for the hwnas stack. On an empty $PGDATA: initdb (the superuser `postgres` may
# only log in over the container's own socket), then roles:
#   hwnas            LOGIN, owns database hwnas; NOSUPERUSER NOCREATEDB NOCREATEROLE
#   hwnas_dashboard  LOGIN, SELECT on hwnas's tables (present and future), nothing else
# Passwords come from HWNAS_PG_PASSWORD and HWNAS_DASHBOARD_PG_PASSWORD (required); they are
# read with psql's \getenv, so they never appear on a command line. Remote logins need
# scram-sha-256. A restart with data already there changes nothing.
set -euo pipefail
: "${HWNAS_PG_PASSWORD:?set HWNAS_PG_PASSWORD}"
: "${HWNAS_DASHBOARD_PG_PASSWORD:?set HWNAS_DASHBOARD_PG_PASSWORD}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --username=postgres --auth-local=peer --auth-host=reject --encoding=UTF8 \
    --locale=C.UTF-8 -D "$PGDATA" >/dev/null
  cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
password_encryption = 'scram-sha-256'
max_connections = 200
CONF
  cat > "$PGDATA/pg_hba.conf" <<HBA
local all postgres peer
host hwnas hwnas all scram-sha-256
host hwnas hwnas_dashboard all scram-sha-256
HBA
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  psql -v ON_ERROR_STOP=1 --no-psqlrc -q -d postgres <<'SQL'
\getenv pw HWNAS_PG_PASSWORD
\getenv dpw HWNAS_DASHBOARD_PG_PASSWORD
CREATE ROLE hwnas LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
CREATE ROLE hwnas_dashboard LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'dpw';
CREATE DATABASE hwnas OWNER hwnas;
REVOKE ALL ON DATABASE hwnas FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE hwnas TO hwnas;
GRANT CONNECT ON DATABASE hwnas TO hwnas_dashboard;
\c hwnas
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO hwnas_dashboard;
ALTER DEFAULT PRIVILEGES FOR ROLE hwnas IN SCHEMA public GRANT SELECT ON TABLES TO hwnas_dashboard;
SQL
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "hwnas-postgres: initialised $PGDATA (roles hwnas, hwnas_dashboard)"
fi
exec postgres -D "$PGDATA"
