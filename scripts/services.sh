#!/usr/bin/env bash
# Makes sure the services the tests talk to are installed and running on this machine:
# PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth for loopback) and a nats-server
# binary (the tests start their own NATS instances; one on 127.0.0.1:4222 is started too,
# for manual runs). Safe to run again: it only starts what is not running.
set -euo pipefail

apt_updated=0
apt_install() {
    if [[ $apt_updated == 0 ]]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! pg_up; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        echo "== installing PostgreSQL"
        apt_install postgresql postgresql-client
    fi
    version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    # Tests connect over loopback as postgres without a password.
    if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
        sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    echo "== starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
    pg_up || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
command -v psql >/dev/null || apt_install postgresql-client

if ! command -v nats-server >/dev/null; then
    echo "== installing nats-server"
    apt_install nats-server
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    echo "== starting nats-server with JetStream on 127.0.0.1:4222"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi
echo "== services ready: PostgreSQL 127.0.0.1:5432, nats-server $(nats-server --version 2>/dev/null | head -n 1)"
