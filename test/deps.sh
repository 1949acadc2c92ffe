#!/bin/sh
# test/deps.sh — install the Debian packages the test suite needs.
#
# Idempotent and cheap when nothing is missing: every package is checked with
# `dpkg -s` first, and `apt-get update` + `apt-get install` run only for the
# missing ones. Called from `npm test`'s pretest and by CI (a fresh machine has
# none of these; a developer's machine usually has them all after one run).
#
# Each entry says which test needs it. Other test files append their packages
# to E2E_PACKAGES / FIREWALL_PACKAGES (or add their own variable to PACKAGES
# below): keep one package per line.
set -eu

# --- test/e2e.test.ts: a real sshd through real tcpwrappers ---------------
E2E_PACKAGES="
openssh-server
openssh-client
sshpass
libwrap0
tcpd
iproute2
util-linux
passwd
openssl
"
# openssh-server  Debian's sshd is linked with libwrap and honours hosts.allow
# openssh-client  ssh -b ADDR gives every simulated client its own address
# sshpass         feeds one password per connection (the common attacker case)
# libwrap0, tcpd  tcpwrappers itself (tcpd ships tcpdmatch, handy to debug)
# iproute2        ip netns / ip addr: the private network namespace
# util-linux      unshare -m: the private mount namespace (own /etc)
# passwd          useradd for the throw-away user (inside the private /etc)
# openssl         openssl passwd -6: the throw-away user's password hash

# --- firewall backends (appended by the firewall tests) -------------------
FIREWALL_PACKAGES="
nftables
iptables
ipset
iproute2
"

# --- test/journal.test.ts: real .journal files ---------------------------
JOURNAL_PACKAGES="
systemd
systemd-journal-remote
"
# systemd                 journalctl, which sentry runs for SSH_LOG=journal:FILE
# systemd-journal-remote  /lib/systemd/systemd-journal-remote -o FILE.journal -
#                         turns Journal Export Format into a real journal file

# --- npm run bench: peak RSS of each run -------------------------------------
BENCH_PACKAGES="
time
"
# time            GNU time (/usr/bin/time -f %M): the peak RSS column

# --- test/ceiling.test.ts: how often a file is rewritten ---------------------
CEILING_PACKAGES="
strace
"
# strace          counts the renames onto hosts.deny of one expiry pass

PACKAGES="$E2E_PACKAGES $FIREWALL_PACKAGES $JOURNAL_PACKAGES $BENCH_PACKAGES $CEILING_PACKAGES"

missing=""
for p in $PACKAGES; do
  # `dpkg -s` exits 0 also for a removed-but-configured package; require
  # "install ok installed" so a half-removed one is reinstalled.
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing="$missing $p"
  fi
done

if [ -z "$missing" ]; then
  exit 0
fi

echo "test/deps.sh: installing:$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "test/deps.sh: must run as root to install:$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Installing openssh-server starts the system's sshd on port 22 unless a
# policy-rc.d forbids it (container images ship one that does). The tests
# start their own sshd in a namespace; a machine without that policy gets one
# for the duration of this install only.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ] && [ ! -d /run/systemd/system ]; then
  printf '#!/bin/sh\n# test/deps.sh: no service starts during this install\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
  trap 'exit 130' INT TERM
fi
apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the list is intended
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "test/deps.sh: done" >&2
