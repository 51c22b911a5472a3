#!/usr/bin/env bash
# The Sunbox test command: installs what the tests need, then runs pytest with the lint gates beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

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
# A whole run (no pytest arguments) as root on Linux: the virtual Pi's disk images
# (debootstrap; about 4 min on a cold machine) and the guest's wheelhouse are built in the
# background while pip installs and influxd is built; the virtual-Pi tests wait for them
# through the cache's file locks (tools/vpi/vpi.py cache_lock) and find them cached.
if [ $# -eq 0 ] && [ "$(id -u)" = 0 ] && [ "$(uname -s)" = Linux ]; then
  prebuild_log=${TMPDIR:-/tmp}/sunbox-vpi-prebuild.log
  echo "== the virtual Pi's images, in the background (log: $prebuild_log)"
  .venv/bin/python tools/vpi/appliance.py prebuild >"$prebuild_log" 2>&1 &
fi
.venv/bin/pip install -q -c collector/constraints.txt -e 'collector[test]' -e tools/stack
# ... and the real Home Assistant's chroot (about 2 min cold), which its test waits for
# through the same kind of file lock (tools/stack/src/sunbox_stack/homeassistant.py)
if [ $# -eq 0 ] && [ "$(id -u)" = 0 ] && [ "$(uname -s)" = Linux ]; then
  ha_log=${TMPDIR:-/tmp}/sunbox-homeassistant-build.log
  echo "== Home Assistant's chroot, in the background (log: $ha_log)"
  .venv/bin/python -m sunbox_stack.homeassistant build >"$ha_log" 2>&1 &
fi

echo "== provisioning the test stack"
.venv/bin/sunbox-stack

echo "== the play's environment"
./play.sh prepare

# The lint gates run beside the tests (they take about 40 s warm, all of it otherwise on
# the critical path before the virtual Pi starts); their output follows the tests'.
lint_log=$(mktemp)
(
  set -e
  .venv/bin/ruff check collector tools/stack tools/vpi tools/play grafana roles molecule playbooks
  .venv/bin/mypy --config-file collector/pyproject.toml collector/src/sunbox
  .venv/bin/yamllint -s .
  ./play.sh lint
) >"$lint_log" 2>&1 &
lint=$!

echo "== tests (the lint gates run beside them)"
# Two workers (pytest-xdist). The virtual-Pi tests are collected first and scheduled in
# that order (--no-loadscope-reorder): the appliance's VM, the critical path, starts at
# once on one worker (xdist_group "virtual-pi"); the BLE VM test starts on the other and
# everything else follows it there. Modules with module-scoped servers or a browser keep
# to one worker each (their xdist_group).
tests_rc=0
.venv/bin/pytest -c collector/pyproject.toml --rootdir "$root" -n 2 --dist loadgroup --no-loadscope-reorder \
  tools/vpi/tests collector/tests grafana/tests tools/stack/tests tools/play/tests "$@" || tests_rc=$?
lint_rc=0
wait "$lint" || lint_rc=$?
echo "== lint (ruff, mypy, yamllint, ansible-lint): exit $lint_rc"
cat "$lint_log"
rm -f "$lint_log"
if [ "$lint_rc" -ne 0 ]; then
  echo "tools/test.sh: the lint gates failed (above)" >&2
  exit 1
fi
exit "$tests_rc"
