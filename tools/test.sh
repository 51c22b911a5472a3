#!/usr/bin/env bash
# The Sunbox test command: installs what the tests need, then runs pytest with the lint gates beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
stamp() { date +%T; }

# A whole run (no pytest arguments) as root on Linux also runs the two virtual Pis. On a
# cold machine (fresh CI) what they need is built while the rest is set up, and the
# appliance's VM, the critical path (about 25 min), starts as soon as the play's
# environment exists, in a pytest of its own, while the test stack is provisioned and
# everything else runs in a second pytest beside it (docs/virtual-pi.md, "Time").
whole=false
if [ $# -eq 0 ] && [ "$(id -u)" = 0 ] && [ "$(uname -s)" = Linux ]; then
  whole=true
fi

# influxd is built from source on a cold machine (about 5 min, sunbox_stack.provision,
# standard library only): first of all, in the background. Whoever needs it (the stack,
# the appliance's APT repository) waits on its build lock.
if $whole; then
  influxd_log=${TMPDIR:-/tmp}/sunbox-influxd-build.log
  echo "== $(stamp) influxd, in the background (log: $influxd_log)"
  PYTHONPATH=tools/stack/src python3 -c 'from sunbox_stack import provision; print(provision.influxd())' \
    >"$influxd_log" 2>&1 &
fi

missing=()
{ command -v mosquitto_passwd >/dev/null 2>&1 && [ -x /usr/sbin/mosquitto ]; } || missing+=(mosquitto)
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus-daemon)  # the pairing-agent test's private bus
# the display's browser tests: Debian's Chromium driven through Debian's chromedriver
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# the backup to a LAN host over SSH: a real OpenSSH server and Debian's sshfs
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v sshfs >/dev/null 2>&1 || missing+=(sshfs)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "tools/test.sh: installing ${missing[*]}"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  else
    echo "tools/test.sh: missing ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}'" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
# The virtual Pis' disk images (debootstrap; about 7 min on a cold machine) and the
# guest's wheelhouse, in the background; the virtual-Pi tests wait for them through the
# cache's file locks (tools/vpi/vpi.py cache_lock) and find them cached.
if $whole; then
  prebuild_log=${TMPDIR:-/tmp}/sunbox-vpi-prebuild.log
  echo "== $(stamp) the virtual Pi's images, in the background (log: $prebuild_log)"
  .venv/bin/python tools/vpi/appliance.py prebuild >"$prebuild_log" 2>&1 &
fi
.venv/bin/pip install -q -c collector/constraints.txt -e 'collector[test]' -e tools/stack
# ... and the real Home Assistant's chroot (about 2 min cold), which its test waits for
# through the same kind of file lock (tools/stack/src/sunbox_stack/homeassistant.py)
if $whole; then
  ha_log=${TMPDIR:-/tmp}/sunbox-homeassistant-build.log
  echo "== $(stamp) Home Assistant's chroot, in the background (log: $ha_log)"
  .venv/bin/python -m sunbox_stack.homeassistant build >"$ha_log" 2>&1 &
fi

echo "== $(stamp) the play's environment"
./play.sh prepare

pytest=(.venv/bin/pytest -c collector/pyproject.toml --rootdir "$root")
appliance_rc=0
if $whole; then
  appliance_log=$(mktemp)
  echo "== $(stamp) the appliance's virtual Pi, in its own pytest in the background (its output follows)"
  "${pytest[@]}" -p no:cacheprovider --basetemp "${TMPDIR:-/tmp}/sunbox-appliance-pytest" \
    tools/vpi/tests/test_appliance_play.py >"$appliance_log" 2>&1 &
  appliance=$!
fi

echo "== $(stamp) provisioning the test stack"
.venv/bin/sunbox-stack

# The lint gates run beside the tests (they take about 40 s warm); their output follows
# the tests'.
lint_log=$(mktemp)
(
  set -e
  .venv/bin/ruff check collector tools/stack tools/vpi tools/play grafana roles molecule playbooks
  .venv/bin/mypy --config-file collector/pyproject.toml collector/src/sunbox
  .venv/bin/yamllint -s .
  ./play.sh lint
) >"$lint_log" 2>&1 &
lint=$!

echo "== $(stamp) tests (the lint gates run beside them)"
tests_rc=0
if $whole; then
  # One worker (pytest-xdist) beside the appliance's pytest. The BLE VM test comes last:
  # its image is built after the appliance's (prebuild), so nothing waits for it.
  "${pytest[@]}" -n 1 --dist loadgroup --no-loadscope-reorder \
    collector/tests grafana/tests tools/stack/tests tools/play/tests tools/vpi/tests/test_virtual_pi.py || tests_rc=$?
  echo "== $(stamp) the appliance's virtual Pi (pytest of its own)"
  wait "$appliance" || appliance_rc=$?
  cat "$appliance_log"
  rm -f "$appliance_log"
else
  # Two workers (pytest-xdist); modules with module-scoped servers or a browser keep to
  # one worker each (their xdist_group).
  "${pytest[@]}" -n 2 --dist loadgroup --no-loadscope-reorder \
    tools/vpi/tests collector/tests grafana/tests tools/stack/tests tools/play/tests "$@" || tests_rc=$?
fi
lint_rc=0
wait "$lint" || lint_rc=$?
echo "== $(stamp) lint (ruff, mypy, yamllint, ansible-lint): exit $lint_rc"
cat "$lint_log"
rm -f "$lint_log"
if [ "$lint_rc" -ne 0 ]; then
  echo "tools/test.sh: the lint gates failed (above)" >&2
  exit 1
fi
if [ "$appliance_rc" -ne 0 ]; then
  echo "tools/test.sh: the appliance's virtual Pi test failed (above)" >&2
  exit "$appliance_rc"
fi
exit "$tests_rc"
