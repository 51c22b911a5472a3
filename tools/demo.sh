#!/usr/bin/env bash
# The Sunbox main job without a Pi: simulated JBD and LiTime devices (bumble), the
# collector reading them over BLE, publishing to a local authenticated Mosquitto, and a
# subscriber printing what arrives. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if ! command -v mosquitto_passwd >/dev/null 2>&1 || [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto mosquitto-clients >/dev/null
  else
    echo "tools/demo.sh: Mosquitto is missing: run 'sudo apt-get install -y mosquitto mosquitto-clients'" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -c collector/constraints.txt -e 'collector[sim]' -e tools/stack
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=${SUNBOX_DEMO_MQTT_PORT:-18830}
hci=${SUNBOX_DEMO_HCI_PORT:-19001}
password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
mosquitto_passwd -c -b "$work/passwd" sunbox "$password"
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous false
password_file $work/passwd
user $(id -un)
CONF
cat > "$work/sunbox.yaml" <<CONF
mqtt: {host: 127.0.0.1, port: $port, username: sunbox, password: "$password"}
queue: {path: $work/queue.sqlite3}
ble: {backend: bumble, bumble_transport: "tcp-client:127.0.0.1:$hci"}
devices:
  - {id: house-battery, driver: jbd, address: "A4:C1:37:00:00:01", password: "123456"}
  - {id: mppt, driver: litime, address: "C8:47:80:00:00:02"}
CONF
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
.venv/bin/sunbox sim --hci "tcp-server:127.0.0.1:$hci" --jbd-password 123456 >"$work/sim.log" 2>&1 &
sleep 2
.venv/bin/sunbox run -c "$work/sunbox.yaml" >"$work/collector.log" 2>&1 &
echo "collector log: $work/collector.log; readings from the broker (Ctrl-C to stop):"
if command -v mosquitto_sub >/dev/null 2>&1; then
  mosquitto_sub -h 127.0.0.1 -p "$port" -u sunbox -P "$password" -t 'sunbox/+/state' -v ${SUNBOX_DEMO_COUNT:+-C "$SUNBOX_DEMO_COUNT"}
else
  tail -f "$work/collector.log"
fi
