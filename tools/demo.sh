#!/usr/bin/env bash
# The Sunbox main job without a Pi. Simulated devices: a JBD BMS, a LiTime MPPT and a
# Victron SmartSolar over BLE (bumble), plus a Victron BMV on a VE.Direct
# pseudo-terminal. The collector reads them and publishes to a local authenticated
# Mosquitto. `sunbox store` writes every reading into InfluxDB 2, where the
# downsampling tasks run. `sunbox web` serves the display at http://127.0.0.1:18080/
# (open it in a browser). The terminal shows each device's newest reading as one line
# with units, and how many points InfluxDB holds per bucket (the raw one and the tiers,
# filling as their tasks run). Ctrl-C stops everything. Logs: /tmp/sunbox-demo-logs.
# Needs Python 3.11 with venv, Mosquitto (installed with apt when run as root) and Go
# the first time: InfluxDB is built from source into ~/.cache/sunbox once (README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto_passwd >/dev/null 2>&1 || [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "tools/demo.sh: installing mosquitto with apt-get" >&2
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null
  else
    echo "tools/demo.sh: Mosquitto is missing: run 'sudo apt-get install -y mosquitto'" >&2
    exit 1
  fi
fi
# the Python packages: installed again only when their pins or metadata change
stamp=$(cat collector/pyproject.toml collector/constraints.txt tools/stack/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f ".venv/.demo-$stamp" ] || [ ! -x .venv/bin/sunbox-stack-watch ]; then
  echo "tools/demo.sh: installing sunbox[sim] and the test stack into .venv (pip)" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q -c collector/constraints.txt -e 'collector[sim]' -e tools/stack
  rm -f .venv/.demo-* && touch ".venv/.demo-$stamp"
fi
.venv/bin/sunbox-stack >/dev/null  # InfluxDB: cached, or built once (it says so when it builds)
work=$(mktemp -d)
# the logs outlive the run (the data in $work does not)
logs=${SUNBOX_DEMO_LOGS:-${TMPDIR:-/tmp}/sunbox-demo-logs}
mkdir -p "$logs"
# On Ctrl-C or SIGTERM every job (they ignore SIGINT, as background jobs of a script do)
# gets SIGTERM here, and the wait lets InfluxDB and Mosquitto close their files.
# stop_within SECONDS PID...: SIGTERM, then SIGKILL whatever still runs after SECONDS
stop_within() {
  local seconds=$1; shift
  kill "$@" 2>/dev/null || true
  for _ in $(seq $((seconds * 10))); do
    kill -0 "$@" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$@" 2>/dev/null; then
    echo "tools/demo.sh: still running after ${seconds} s, killed: $(ps -o args= -p "$(echo "$@" | tr ' ' ,)" | cut -c1-60 | paste -sd ';')" >&2
    kill -9 "$@" 2>/dev/null || true
  fi
  wait "$@" 2>/dev/null || true
}
# seconds since $1 (an $EPOCHREALTIME), to 0.01 s
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
cleanup() {
  trap - EXIT INT TERM
  local began=$EPOCHREALTIME took_collector=-
  # the collector first, while the simulated devices still answer its disconnects
  if [ -n "${collector:-}" ]; then stop_within 5 "$collector"; took_collector=$(since "$began"); fi
  # shellcheck disable=SC2046  # one PID per word
  stop_within 10 $(jobs -p)
  rm -rf "$work"
  echo "tools/demo.sh: stopped in $(since "$began") s (the collector in $took_collector s); logs in $logs" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM
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
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$logs/mosquitto.log" 2>&1 &
.venv/bin/sunbox-stack-influxd "$work/influx" "$influx_port" >"$logs/influxd.log" 2>&1 &
.venv/bin/sunbox sim --hci "tcp-server:127.0.0.1:$hci" --jbd-password 123456 \
  --smartsolar-address F9:3E:4C:00:00:09 >"$logs/sim.log" 2>&1 &
.venv/bin/sunbox sim-vedirect collector/tests/fixtures/vedirect_bvm702.dump --link "$work/ttyVE" >"$logs/vedirect.log" 2>&1 &
for _ in $(seq 120); do [ -s "$work/influx/operator-token" ] && [ -e "$work/ttyVE" ] && break; sleep 0.5; done
INFLUX_TOKEN=$(cat "$work/influx/operator-token") .venv/bin/sunbox influx apply \
  --url "http://127.0.0.1:$influx_port" --tokens-out "$work/tokens.json" >"$logs/apply.log"
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
.venv/bin/sunbox store -c "$work/store.yaml" >"$logs/store.log" 2>&1 &
.venv/bin/sunbox web -c "$work/web.yaml" >"$logs/web.log" 2>&1 &
sleep 1
.venv/bin/sunbox run -c "$work/sunbox.yaml" >"$logs/collector.log" 2>&1 &
collector=$!
echo "the display: http://127.0.0.1:$web_port/ (Now, History, Cells, Health); logs in $logs; Ctrl-C stops"
printf '%s' "$password" >"$work/mqtt-password"
.venv/bin/sunbox-stack-watch --mqtt-port "$port" --username sunbox --password-file "$work/mqtt-password" \
  --influx-url "http://127.0.0.1:$influx_port" --token-file "$work/influx/operator-token" \
  ${SUNBOX_DEMO_COUNT:+--count "$SUNBOX_DEMO_COUNT"} ${SUNBOX_DEMO_EVERY:+--every "$SUNBOX_DEMO_EVERY"} &
# waiting (rather than running it in the foreground) lets Ctrl-C or a kill of this
# script reach the traps at once
wait $!
