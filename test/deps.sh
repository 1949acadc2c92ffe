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

# --- test/fleet.test.ts: a real CrowdSec Local API ------------------------
# crowdsec is NOT installed here: its postinst registers with CrowdSec's
# central API over the internet. test/lib/crowdsec.ts runs `apt-get download
# crowdsec` + `dpkg-deb -x` into a cache directory instead (no maintainer
# script runs). It also needs iproute2 (ss, ip netns) and nftables, above.

# --- npm run bench: peak RSS of each run -------------------------------------
BENCH_PACKAGES="
time
"
# time            GNU time (/usr/bin/time -f %M): the peak RSS column
# The guesses and parse parts measure fail2ban and sshguard beside sentry.
# They are NOT installed here (installing would enable and start their
# services on this host): test/lib/peers.mjs runs `apt-get download fail2ban
# python3-pyinotify sshguard` + `dpkg-deb -x` into a cache directory when the
# benchmark first needs them. fail2ban then runs on python3 (NOTIFY_PACKAGES
# below) and bans with iptables, sshguard with nftables (FIREWALL_PACKAGES).

# --- test/ship.test.ts: the manual, the completion, the units ------------
SHIP_PACKAGES="
man-db
mandoc
bash
qemu-user-static
libc6-arm64-cross
libstdc++6-arm64-cross
libgcc-s1-arm64-cross
"
# man-db          man -l renders sentry --man the way an administrator reads it
# mandoc          mandoc -T lint checks the generated roff
# bash            runs the generated completion function
# (systemd-analyze, for the units, comes with systemd above)
# --- test/release.test.ts: the linux-arm64 binary of a release runs under qemu
# qemu-user-static        qemu-aarch64-static runs arm64 code on this host
# libc6-arm64-cross, libstdc++6-arm64-cross, libgcc-s1-arm64-cross
#                         arm64's libraries in /usr/aarch64-linux-gnu, which
#                         Node (dynamically linked) needs: qemu -L that folder

# --- test/notify.test.ts: syslog lines and mail where they land --------------
NOTIFY_PACKAGES="
exim4-daemon-light
python3
coreutils
"
# exim4-daemon-light  a real local MTA (Debian's default: local delivery only);
#                     the test runs it in a mount namespace with its own
#                     /var/mail and spool, so the machine's stay untouched
# python3             a small syslog receiver on a private /dev/log
# coreutils           timeout(1): every child sentry leaves behind is time-capped

# --- test/ceiling.test.ts, report.test.ts, ranges.test.ts: system calls -----
CEILING_PACKAGES="
strace
procps
"
# strace          counts the renames onto hosts.deny of one expiry pass, which
#                 thread stats seen/'s files, the probes of allow/'s ranges
# procps          pkill: report.test.ts leaves no process of its own uid behind

# --- test/memory.test.ts, test/progress.test.ts: peak RSS, a terminal ---------
MEMORY_PACKAGES="
time
bsdutils
"
# time            GNU time (/usr/bin/time -f %M): memory.test.ts's peak RSS
# bsdutils        script(1): progress.test.ts runs sentry on a terminal

PACKAGES="$E2E_PACKAGES $FIREWALL_PACKAGES $JOURNAL_PACKAGES $BENCH_PACKAGES $SHIP_PACKAGES $NOTIFY_PACKAGES $CEILING_PACKAGES $MEMORY_PACKAGES"

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
