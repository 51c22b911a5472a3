#!/usr/bin/env bash
# Sunbox: configure a Raspberry Pi (or several) with Ansible. Run ./play.sh --help.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
venv=${SUNBOX_PLAY_VENV:-$root/.play-venv}

usage() {
  cat <<'HELP'
Usage:
  ./play.sh -i inventories/<site>/hosts.yml [ansible-playbook options]
  ./play.sh discover -i inventories/<site>/hosts.yml   (list the devices each Pi hears)
  ./play.sh restore -i inventories/<site>/hosts.yml [-e sunbox_restore_from=NAME]
                                   (a new card back from the newest backup, docs/backup.md)
  ./play.sh virtual-pi [--release trixie|bookworm] [--soak S] [--cuts N] [--writes S] [molecule command]
                                   (default: trixie, test; soak 120 s, 1 power cut)
  ./play.sh virtual-pi --restore [--release-from bookworm]
                                   (a VM backed up, a fresh trixie VM restored from its stick)
  ./play.sh lint
  ./play.sh prepare                              (only make the PC's environment, .play-venv)
  ./play.sh vault create|edit|view FILE          (ansible-vault from the pinned environment)

The first run on a PC (needs only Python 3 with venv, and ssh):
  1. Flash Raspberry Pi OS (64-bit, desktop) to the SD card: Raspberry Pi Imager's default
     today is trixie (Debian 13); "Legacy" bookworm works too. In Imager's settings set
     the user name and enable SSH with your public key (on trixie Imager hands these to
     the Pi through cloud-init; the play then turns SSH passwords off either way).
  2. cp -r inventories/example inventories/mysite
     Edit inventories/mysite/hosts.yml (the Pi's address and user), then find the devices:
       ./play.sh discover -i inventories/mysite/hosts.yml
     It installs the sunbox package on the Pi, listens 15 s and writes a host_vars snippet
     (devices, drivers, vault names for their secrets) to inventories/mysite/discovered-*.yml.
     Close the phone apps first: the devices accept one connection at a time.
     Paste it into inventories/mysite/host_vars/target.yml (poll intervals, tiers there too).
  3. Put the secrets into an ansible-vault file:
       ./play.sh vault create inventories/mysite/group_vars/all/vault.yml
     with the keys listed in inventories/example/group_vars/all/vault.yml.example.
  4. ./play.sh -i inventories/mysite/hosts.yml
     (asks for the vault password; run it again at any time: a second run changes nothing)

Options are passed to ansible-playbook, e.g. --check --diff, --tags collector,
-l field-pi-2, --vault-password-file FILE.

./play.sh virtual-pi runs the molecule scenario molecule/virtual-pi: a Debian trixie VM
(--release bookworm: bookworm) standing in for a fresh Raspberry Pi OS, under qemu with
simulated devices on the guest's real BlueZ, the whole play against it,
a second run that must change nothing, and the checks. Needs Linux and root (debootstrap,
qemu); the image is cached in ~/.cache/sunbox/vpi. Other molecule commands work too:
./play.sh virtual-pi converge | verify | login | destroy. --soak S sets how long the
services run before the restart check and the memory report (default 120 s; the memory
benchmark uses --soak 600); --writes S runs the disk-write benchmark, S seconds per
measured window (docs/storage.md).

./play.sh lint runs ansible-lint (production profile) over the roles and playbooks.
HELP
}

# The controller's virtual environment: pinned ansible (with its collections) and, for
# the virtual Pi, molecule and testinfra. Rebuilt when a requirements file changes.
ensure_venv() {
  local files=("$root/requirements-ansible.txt")
  [ "${1:-}" = virtual-pi ] && files+=("$root/requirements-virtual-pi.txt")
  local stamp
  stamp=$(cat "${files[@]}" | sha256sum | cut -c1-16)
  if [ ! -f "$venv/.sunbox-$stamp" ]; then
    echo "play.sh: preparing $venv (pinned ansible; a minute or two on the first run)" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || {
      echo "play.sh: python3 -m venv failed: install python3-venv (Debian/Ubuntu) first" >&2; exit 1; }
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    local reqs=()
    for f in "${files[@]}"; do reqs+=(-r "$f"); done
    "$venv/bin/pip" install -q "${reqs[@]}"
    rm -f "$venv"/.sunbox-*
    touch "$venv/.sunbox-$stamp"
  fi
  export PATH="$venv/bin:$PATH"
  "$venv/bin/python" "$root/tools/play/check_collections.py" "$root/requirements.yml" || \
    "$venv/bin/ansible-galaxy" collection install -r "$root/requirements.yml" -p "$root/.ansible/collections"
}

case "${1:-}" in
  -h|--help|help)
    usage
    exit 0
    ;;
  vault)
    # ansible-vault from the pinned environment (made on first use), e.g. `vault create FILE`
    shift
    ensure_venv
    exec ansible-vault "$@"
    ;;
  lint)
    ensure_venv virtual-pi
    cd "$root"
    exec ansible-lint
    ;;
  prepare)
    # only the PC's environment (tools/test.sh makes it before the lint and the tests
    # that use it start side by side)
    ensure_venv virtual-pi
    exit 0
    ;;
  virtual-pi)
    shift
    if [ "${1:-}" = --restore ]; then
      # the owner's way back on a new card, two VMs end to end (tools/vpi/restore_check.py,
      # docs/backup.md); --release-from bookworm: the upgrade path from a bookworm card
      shift
      ensure_venv virtual-pi
      cd "$root"
      exec "$venv/bin/python" tools/vpi/restore_check.py "$@"
    fi
    while [ "${1:-}" = --soak ] || [ "${1:-}" = --cuts ] || [ "${1:-}" = --release ] || [ "${1:-}" = --writes ]; do
      # --soak: the memory benchmark: services run this many seconds before the restart
      # check and the RSS report (the test command's default is 120); --cuts: how many
      # power cuts (default 2: as played, then every reading synced); --release: the
      # Debian release under the VM (trixie, as today's Raspberry Pi OS, or bookworm, its
      # Legacy), docs/virtual-pi.md; --writes:
      # the disk-write benchmark, seconds per measured window (docs/storage.md)
      if [ "$1" = --release ]; then
        [[ "${2:-}" =~ ^(trixie|bookworm)$ ]] || { echo "play.sh: --release takes trixie or bookworm" >&2; exit 2; }
        export SUNBOX_VPI_RELEASE=$2
        shift 2
        continue
      fi
      [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "play.sh: $1 takes a number" >&2; exit 2; }
      case $1 in
        --soak) export SUNBOX_VPI_SOAK_S=$2 ;;
        --writes) export SUNBOX_VPI_WRITES_S=$2 ;;
        *) export SUNBOX_VPI_CUTS=$2 ;;
      esac
      shift 2
    done
    ensure_venv virtual-pi
    cd "$root"
    if [ $# -eq 0 ]; then set -- test; fi
    command=$1
    shift
    exec molecule "$command" -s virtual-pi "$@"
    ;;
esac

playbook=playbooks/site.yml
if [ "${1:-}" = discover ]; then
  shift
  playbook=playbooks/discover.yml
elif [ "${1:-}" = restore ]; then
  shift
  playbook=playbooks/restore.yml
fi
inventory=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    -i|--inventory) inventory=${args[i + 1]:-} ;;
    -i*) inventory=${args[i]#-i} ;;
    --inventory=*) inventory=${args[i]#--inventory=} ;;
  esac
done
if [ -z "$inventory" ]; then
  echo "play.sh: which Pi? Give the inventory with -i (see ./play.sh --help for the first run)." >&2
  exit 2
fi
ensure_venv
cd "$root"

# An encrypted vault in the inventory and no way to open it given: ask for the password.
inventory_dir=$(dirname "$inventory")
[ -d "$inventory" ] && inventory_dir=$inventory
ask=()
if [ -z "${ANSIBLE_VAULT_PASSWORD_FILE:-}" ] && ! printf '%s\n' "$@" | grep -q -- '^--vault\|^--ask-vault\|^-J$'; then
  if grep -rlqs '^\$ANSIBLE_VAULT' "$inventory_dir/group_vars" "$inventory_dir/host_vars"; then
    ask=(--ask-vault-pass)
  fi
fi
exec ansible-playbook "${ask[@]}" "$playbook" "$@"
