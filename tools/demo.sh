#!/usr/bin/env bash
# The Sunbox main job without a Pi. Simulated devices: a JBD BMS, a LiTime MPPT and a
# Victron SmartSolar over BLE (bumble), plus a Victron BMV on a VE.Direct
# pseudo-terminal. The collector reads them and publishes to a local authenticated
# Mosquitto. `sunbox store` writes every reading into InfluxDB 2, where the
# downsampling tasks run. `sunbox web` serves the display at http://127.0.0.1:18080/
# (open it in a browser). A subscriber prints the readings, and every 15 s the demo
# prints how many points InfluxDB holds. Ctrl-C stops everything.
# The first run builds InfluxDB from source into ~/.cache/sunbox (a few minutes, once).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto_passwd >/dev/null 2>&1 || [ ! -x /usr/sbin/mosquitto ] || ! command -v mosquitto_sub >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto mosquitto-clients >/dev/null
  else
    echo "tools/demo.sh: Mosquitto is missing: run 'sudo apt-get install -y mosquitto mosquitto-clients'" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -c collector/constraints.txt -e 'collector[sim]' -e tools/stack
.venv/bin/sunbox-stack >/dev/null  # InfluxDB: cached, or built once
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=${SUNBOX_DEMO_MQTT_PORT:-18830}
hci=${SUNBOX_DEMO_HCI_PORT:-19001}
influx_port=${SUNBOX_DEMO_INFLUX_PORT:-18086}
web_port=${SUNBOX_DEMO_WEB_PORT:-18080}
password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
mosquitto_passwd -c -b "$work/passwd" sunbox "$password"
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous false
password_file $work/passwd
persistence true
persistence_location $work/
max_queued_messages 1000000
user $(id -un)
CONF
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
.venv/bin/sunbox-stack-influxd "$work/influx" "$influx_port" >"$work/influxd.log" 2>&1 &
.venv/bin/sunbox sim --hci "tcp-server:127.0.0.1:$hci" --jbd-password 123456 \
  --smartsolar-address F9:3E:4C:00:00:09 >"$work/sim.log" 2>&1 &
.venv/bin/sunbox sim-vedirect collector/tests/fixtures/vedirect_bvm702.dump --link "$work/ttyVE" >"$work/vedirect.log" 2>&1 &
for _ in $(seq 120); do [ -s "$work/influx/operator-token" ] && [ -e "$work/ttyVE" ] && break; sleep 0.5; done
INFLUX_TOKEN=$(cat "$work/influx/operator-token") .venv/bin/sunbox influx apply \
  --url "http://127.0.0.1:$influx_port" --tokens-out "$work/tokens.json" >"$work/apply.log"
writer=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["writer"])' "$work/tokens.json")
reader=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["dashboards"])' "$work/tokens.json")
cat > "$work/store.yaml" <<CONF
mqtt: {host: 127.0.0.1, port: $port, username: sunbox, password: "$password"}
influx: {url: "http://127.0.0.1:$influx_port", token: "$writer"}
CONF
cat > "$work/sunbox.yaml" <<CONF
mqtt: {host: 127.0.0.1, port: $port, username: sunbox, password: "$password"}
queue: {path: $work/queue.sqlite3}
ble: {backend: bumble, bumble_transport: "tcp-client:127.0.0.1:$hci"}
devices:
  - {id: house-battery, driver: jbd, address: "A4:C1:37:00:00:01", password: "123456"}
  - {id: mppt, driver: litime, address: "C8:47:80:00:00:02"}
  - {id: smartsolar, driver: smartsolar, address: "F9:3E:4C:00:00:09", passkey: 147258}
vedirect:
  - {id: shunt, port: $work/ttyVE}
CONF
cat > "$work/web.yaml" <<CONF
listen: 127.0.0.1
port: $web_port
mqtt: {host: 127.0.0.1, port: $port, username: sunbox, password: "$password", client_id: sunbox-web}
influx: {url: "http://127.0.0.1:$influx_port", token: "$reader"}
CONF
.venv/bin/sunbox store -c "$work/store.yaml" >"$work/store.log" 2>&1 &
.venv/bin/sunbox web -c "$work/web.yaml" >"$work/web.log" 2>&1 &
sleep 1
.venv/bin/sunbox run -c "$work/sunbox.yaml" >"$work/collector.log" 2>&1 &
(
  while sleep 15; do
    count=$(curl -s "http://127.0.0.1:$influx_port/api/v2/query?org=sunbox" \
      -H "Authorization: Token $(cat "$work/influx/operator-token")" -H 'Content-Type: application/vnd.flux' \
      --data 'from(bucket: "sunbox_raw") |> range(start: -1h) |> filter(fn: (r) => r._measurement != "health") |> group(columns: ["device"]) |> count() |> keep(columns: ["device", "_value"])' \
      | awk -F, 'NR>1 && $4 != "" {printf "%s=%s ", $4, $5}')
    echo "== InfluxDB sunbox_raw, field values in the last hour: ${count:-none yet}"
  done
) &
echo "the display: http://127.0.0.1:$web_port/ (Now, History, Cells, Health)"
echo "logs in $work; readings from the broker (Ctrl-C to stop):"
mosquitto_sub -h 127.0.0.1 -p "$port" -u sunbox -P "$password" -t 'sunbox/+/state' -v ${SUNBOX_DEMO_COUNT:+-C "$SUNBOX_DEMO_COUNT"}
