#!/usr/bin/env node
/*
 * sentry — safe and effective protection against brute-force attacks on SSH,
 * FTP and mail logins.
 *
 * sentry is not a daemon. tcpwrappers spawns it for every new connection:
 *
 *     sshd : /var/db/sentry/hosts.deny : deny
 *     sshd : /var/db/sentry/hosts.allowed : allow
 *     sshd : ALL : spawn /var/db/sentry/sentry --connect --ip=%a : allow
 *
 * (the middle line lets tcpd admit allowed addresses without spawning
 * sentry at all, section 9.1.2) and it decides, in a few milliseconds of
 * work, whether that address is a legitimate user, an attacker, or not
 * known yet. This is the TypeScript
 * rewrite of sentry.pl (1.06) and sentry.sh (2.00); the command line and the
 * files under /var/db/sentry are a superset of both.
 *
 * HOW A CONNECTION FLOWS THROUGH IT (connect(), section 8)
 *
 *   1. tcpd hands over the client's socket address (%a; pam_exec: PAM_RHOST).
 *      It is parsed into one canonical spelling, or refused: the address
 *      becomes a file name.
 *   2. One line is appended to seen/IP (a single O_APPEND write, so a botnet
 *      connecting 40 times at once is counted 40 times), and one to
 *      connections.log, the feed that keeps --report's index current. The
 *      record line ("3 connections from IP and it is …") goes to stdout.
 *   3. Expiry, when it is due (expire.stamp's time: the earliest end of a
 *      block, at least every EXPIRE_CHECK_MINUTES): at most
 *      EXPIRE_PER_CONNECT ended blocks are lifted from block/, hosts.deny and
 *      every firewall. Expiry forgets the address like --delist does: it
 *      deletes seen/IP (the count starts again), sets its evidence aside
 *      (delisted/IP marks where each log stood, so older lines never count
 *      again, and sentry.db drops its tallies), and counts the block in
 *      history/IP, so that the next one lasts longer (section 8.5).
 *   4. An address already in allow/ or block/ is done (a blocked one that
 *      got here proves hosts.deny stale: it is rewritten). So is one seen
 *      fewer than STRONG_CONNECT_THRESHOLD (2) times: most clients never
 *      cost more than steps 1–4. So is one whose last look found nothing
 *      while no log has grown since (`looked`: one stat per log).
 *   5. Otherwise the logs of each protected service are read, only the bytes
 *      written since the last read, and tallied per address in sentry.db.
 *      If another process holds sentry.db past CONNECT_WAIT_MS (a burst:
 *      one reader at a time, no convoy), this one stops here: its count
 *      stands, and that reader, the next connect or --scan decides. Any
 *      successful login allows the address for good (a success also lifts
 *      a block the logs decided earlier); a naughty attempt (invalid user,
 *      root, an exceeded limit) or more than FAIL_THRESHOLD (10) failures
 *      blocks it, and so do more than GUESS_THRESHOLD (4) ssh password
 *      guesses (a short block) or more than CONNECTION_GUESSES (3) in one
 *      connection (a program's, decided at the second connection); the other addresses the read found past the threshold are
 *      decided too. Before CONNECT_THRESHOLD (3) connections only a bot's
 *      evidence decides. Logs that cannot be read decide nothing, and a
 *      block waits until every protected log has been read to its end
 *      (sentry.log says so, at most once per WITHHELD_LOG_MINUTES).
 *   6. A block is written to block/IP (with its end: longer for a repeat
 *      offender), to hosts.deny (which tcpd reads on the next connection),
 *      to any firewall table that is switched on, and to the fleet's outbox
 *      when CrowdSec is configured. A block decided early also ends the very
 *      connection that decided it (the sshd that spawned sentry, proven
 *      from /proc). Last, syslog and the notifiers are started, detached.
 *
 * ERROR POLICY
 *
 *   Expected outcomes (an address not known yet, a log that is missing, a
 *   firewall tool that is not installed) are values and warnings. Everything
 *   that stops a command is one error type, SentryError, carrying its exit
 *   code (1 bad usage or input, 2 could not do it), thrown where the problem
 *   is found and caught once, in main(). Nothing is swallowed silently.
 *
 * CONTENTS (the banners below carry these numbers, one style: `// ====` for
 * a section, `// ----` for a sub-section; keep the structure of this file
 * intact, in the order data flows)
 *
 *    1.      Configuration
 *    2.      Errors and the system
 *    3.      Addresses
 *      3.1     Ranges as file names: block/2001:db8:1:2::_64, allow/10.0.0.0_8
 *    4.      Command line
 *    5.      State files
 *      5.1     sentry.log rotates itself
 *      5.2     The lock
 *      5.3     Forgiven: a delist survives the loss of sentry.db
 *      5.4     Strict modes
 *    6.      Evidence: reading log lines safely
 *      6.1     The syslog prefix
 *      6.2     Which program, which service
 *      6.3     Small helpers
 *      6.4     sshd (OpenSSH 7.4 to 10)
 *      6.5     PAM's authentication-failure line (pam_unix)
 *      6.6     FTP
 *      6.7     Dovecot (imap-login, pop3-login, submission-login, managesieve-login)
 *      6.8     Postfix SASL (smtpd)
 *      6.9     vpopmail (vchkpw.c), through syslog as "vpopmail[pid]: vchkpw-pop3:…
 *      6.10    The entry points
 *      6.11    What the logs say of one address
 *    7.      Log sources
 *      7.1     The evidence index: sentry.db
 *        7.1.1   Names: typos of real accounts, and how many names an address tried
 *        7.1.2   Password guesses, and how many one connection made
 *      7.2     Reading a source
 *      7.3     --test-log: how sentry reads a log
 *    8.      Decision
 *      8.1     A look that found nothing, and logs that did not grow
 *      8.2     The deciding connection ends with its block
 *      8.3     How long a block lasts, and the success that lifts it
 *        8.3.1   The brute force that succeeded
 *        8.3.2   Withheld blocks: a trace where the admin looks
 *      8.4     Ranges: blocked or allowed as one entry
 *      8.5     Expiry
 *        8.5.1   Repeat offenders: a short history per address
 *      8.6     --scan: the logs decide, without a connect
 *    9.      Backends
 *      9.1     tcpwrappers: ROOT_DIR/hosts.deny
 *        9.1.1   hosts.deny heals
 *        9.1.2   hosts.allowed: tcpd admits the allowed without spawning sentry
 *      9.2     Firewalls: nftables, iptables+ipset, pf, ipfw
 *        9.2.1   Shared pieces
 *        9.2.2   nftables
 *        9.2.3   iptables + ipset
 *        9.2.4   pf (OpenBSD, FreeBSD, macOS)
 *        9.2.5   ipfw (FreeBSD 11 and later: named tables)
 *      9.3     --resync
 *      9.4     Telling the administrator: syslog and notifications
 *      9.5     Fleet: CrowdSec's Local API
 *    10.     Report
 *      10.1    The report's index
 *        10.1.1  A big seen/, walked with a second thread
 *      10.2    --list: who is blocked, why, since and until when
 *      10.3    --json: structured, versioned
 *    11.     Install, doctor, update
 *      11.1    --install, --uninstall
 *        11.1.1  Never widen who may connect: tcpd's answer before and after
 *        11.1.2  The installer's own address, also under sudo
 *        11.1.3  The manual, the completion and the scan timer
 *      11.2    --doctor
 *      11.3    --update, --rollback: a signed release replaces the binary
 *        11.3.1  Versions
 *        11.3.2  The signed manifest
 *        11.3.3  Transport
 *        11.3.4  The files beside the binary
 *        11.3.5  --update
 *        11.3.6  --rollback
 *    12.     main()
 *      12.1    The manual: usage() as roff, and the tab completion
 *      12.2    Manual actions say what they did
 */

import type * as Crypto from "node:crypto";
import type { Stats } from "node:fs";

// node:fs and node:path are taken as they are, not imported: bundled as
// CommonJS, `import * as fs` becomes a copy of the module made property by
// property at start-up, and listing node:fs's properties loads its
// internal/fs/dir too: every connect paid for both.
const fs = process.getBuiltinModule("node:fs");
const path = process.getBuiltinModule("node:path");

// ==== 1. Configuration ======================================================
//
// Every default lives here, one knob per line. A compiled binary cannot be
// edited and --update replaces it, so each knob can be overridden, in this
// order, by ROOT_DIR/sentry.conf (KEY=value lines, # comments) and then by an
// environment variable of the same name. A bad value is an error naming the
// key, never a silent default.

export const VERSION = "3.0.0";

// A release build bakes its update channel in: `npm run release` defines these
// two names (esbuild define, see build.mjs). Elsewhere they do not exist, and
// typeof reads them safely.
declare const SENTRY_BUILD_UPDATE_URL: string | undefined;
declare const SENTRY_BUILD_UPDATE_PUBLIC_KEY: string | undefined;
// Every build defines these (build.mjs): the comments of DEFAULTS below, for
// the manual (a comment is gone once bundled), the date of the commit built,
// and the SHA-256 of the bundle itself (see build.mjs, "verifiable releases").
declare const SENTRY_BUILD_SETTINGS_DOC: Record<string, string> | undefined;
declare const SENTRY_BUILD_DATE: string | undefined;
declare const SENTRY_BUILD_BUNDLE_SHA256: string | undefined;

export const DEFAULTS = {
  ROOT_DIR: "/var/db/sentry", // where every file of sentry lives
  ADD_TO_TCPWRAPPERS: true, // write blocked addresses to ROOT_DIR/hosts.deny
  ALLOWED_TO_TCPWRAPPERS: true, // write the allowed addresses your own tcpd policy admits to ROOT_DIR/hosts.allowed: tcpd admits them without spawning sentry (then not counted)
  ADD_TO_PF: false, // pfctl table FIREWALL_TABLE (BSD, macOS)
  ADD_TO_IPFW: false, // ipfw table FIREWALL_TABLE (FreeBSD)
  ADD_TO_IPTABLES: false, // ipset sets FIREWALL_TABLE-4/-6 for iptables rules
  ADD_TO_NFTABLES: false, // nft sets v4/v6 in table inet FIREWALL_TABLE
  NFT_TIMEOUT: false, // give each nft element its block's own timeout, so the kernel lifts it on time (the sets v4/v6 must have flags timeout: see --install's rule)
  FIREWALL_TABLE: "sentry_blocklist", // name of the table or set sentry fills
  EXPIRE_BLOCK_DAYS: 90, // days a block lasts; 0 = never expire
  BLOCK_THIN_MINUTES: 10, // minutes a block on thin evidence lasts (see blockLength); 0 = as long as EXPIRE_BLOCK_DAYS
  SUBNET_THRESHOLD: 3, // this many blocked addresses of one IPv6 /64 block the /64 as one entry (section 8.4); 0 = off
  SUBNET_V4: false, // aggregate IPv4 /24s too (off: a /24 is often one office, campus or carrier NAT pool)
  REPEAT_FACTOR_PERCENT: 200, // each earlier block of an address that ran out multiplies its next one by this (percent; 100 = no growth; see repeatLength)
  REPEAT_MAX_DAYS: 365, // longest a repeat offender's block grows to (days); 0 = no cap
  REPEAT_FOREVER_AFTER: 0, // the block after this many ran out is for good; 0 = never
  THIN_NAUGHTY_LINES: 3, // most naughty log lines a block may rest on and still be thin (one sshd connection with a wrong name writes 3)
  TYPO_DISTANCE: 1, // edits (insert, delete, change, swap two neighbours) that make an unknown user name a typo of a real one; 0 = off
  PASSWD_FILE: "/etc/passwd", // the local accounts, read (only when an unknown user name shows up) for the typo check
  PROTECT_FTP: true, // read FTP logs (vsftpd, ProFTPD, Pure-FTPd, ftpd)
  PROTECT_SMTP: false, // read Postfix SASL failures (mail submission)
  PROTECT_MUA: true, // read Dovecot and vpopmail (IMAP/POP3) logins
  SSH_LOG: "", // a file, or "journal"; empty = look in the usual places
  FTP_LOG: "", // a file, or "journal"; empty = look in the usual places
  MAIL_LOG: "", // a file, or "journal"; empty = look in the usual places
  JOURNAL_LOGIN_UID_MIN: 1000, // first uid of a login user: a journal entry of an FTP or mail daemon written from this uid or above is not trusted (sshd's must come from root)
  ALLOW_IPS: "", // addresses and CIDR ranges never blocked (space or comma)
  UPDATE_URL: typeof SENTRY_BUILD_UPDATE_URL === "string" ? SENTRY_BUILD_UPDATE_URL : "", // release manifest (https://…/manifest.json); empty = --update is off
  UPDATE_PUBLIC_KEY: typeof SENTRY_BUILD_UPDATE_PUBLIC_KEY === "string" ? SENTRY_BUILD_UPDATE_PUBLIC_KEY : "", // Ed25519 key releases are signed with (SPKI DER, base64)
  HOSTS_ALLOW: "/etc/hosts.allow", // the tcpwrappers file --install edits
  HOSTS_DENY: "/etc/hosts.deny", // the system's tcpwrappers deny file (read only: the policy --install must keep)
  POLICY_TCPDMATCH_MAX: 500, // most clients --install/--doctor ask tcpdmatch about; beyond, sentry's own reading of hosts_access(5) answers
  SSHD_PATH: "", // sshd binary --doctor inspects; empty = search PATH and sbin
  CONNECT_THRESHOLD: 3, // connections before the logs may decide (a bot's evidence: STRONG_CONNECT_THRESHOLD)
  CUT_DECIDING_CONNECTION: true, // a connect that blocks early (before CONNECT_THRESHOLD) ends the sshd connection that spawned it (section 8.2)
  STRONG_CONNECT_THRESHOLD: 2, // connections before a bot's evidence (see earlyEvidence) may block; the logs are read from this one on; above CONNECT_THRESHOLD = CONNECT_THRESHOLD
  EARLY_NAUGHTY_LINES: 6, // more naughty lines than this decide early (a person's one connection writes at most 5, a bot's that used MaxAuthTries 6 writes 8 or more)
  FAIL_THRESHOLD: 10, // more failed attempts than this blocks (no naughty needed)
  GUESS_THRESHOLD: 4, // more ssh password guesses than this (no success) block on thin evidence, for BLOCK_THIN_MINUTES (fail2ban's maxretry is 5); 0 = off
  CONNECTION_GUESSES: 3, // more ssh password guesses than this in ONE connection is a program, not a person (ssh asks 3): strong evidence, decided early; 0 = off
  SCAN_SECONDS: 2, // longest a --connect spends reading logs (sshd waits)
  SCAN_RUN_SECONDS: 120, // longest one --scan spends reading logs; the next run carries on
  FIRST_SCAN_MB: 50, // the first read of a log starts this far from its end
  JOURNAL_FIRST_ENTRIES: 100_000, // the first read of the journal takes this many of its latest entries (it has no bytes to count)
  EXPIRE_PER_CONNECT: 50, // most expired blocks one --connect lifts (sshd waits), the next connect or --scan the rest; 0 = only --scan
  EXPIRE_CHECK_MINUTES: 60, // longest a --connect waits between looks for expired blocks (a block's own end brings the look sooner)
  REPORT_REBUILD_HOURS: 24, // the report's index is rebuilt from seen/ at least this often
  COMMAND_TIMEOUT_SECONDS: 5, // longest a firewall tool or journalctl may run
  UPDATE_TIMEOUT_SECONDS: 30, // longest one network step of --update may take
  LOCK_TIMEOUT_SECONDS: 10, // longest a writer waits for the state lock
  CONNECT_WAIT_MS: 500, // longest a --connect waits for the state lock or sentry.db (ms); then its count stays, the next connect or --scan decides
  WITHHELD_LOG_MINUTES: 60, // sentry.log says blocks are held back at most once per this many minutes per cause; 0 = every time
  MAN_DIR: "/usr/local/share/man/man8", // where --install puts the manual sentry.8 (man finds it there); empty = not installed
  COMPLETION_DIR: "/usr/local/share/bash-completion/completions", // where --install puts the bash completion; empty = not installed
  UNIT_DIR: "/etc/systemd/system", // where --install --write puts sentry-scan.service and sentry-scan.timer
  CRON_FILE: "/etc/cron.d/sentry", // the cron line --install --write writes instead where systemd does not run
  SCAN_STALE_MINUTES: 15, // --doctor: a timer's last --scan older than this many minutes is CRITICAL
  SENTRY_LOG_ROTATE_KB: 10_240, // KiB at which sentry.log becomes sentry.log.1 (older ones shift up); 0 = never rotate
  SENTRY_LOG_KEEP: 5, // rotated generations of sentry.log kept (sentry.log.1 … .N)
  SYSLOG: true, // also send each decision to syslog (ident sentry, facility authpriv) through logger(1)
  ALLOW_AFTER_FAILURES_NOTE: 5, // failed or naughty attempts in an auto-allowed address's evidence that flag it "allowed after N failures"; 0 = never flag
  ALLOW_AFTER_FAILURES_HOLD: false, // hold such an address for review (neither allowed nor blocked) instead of allowing it
  NOTIFY_EMAIL: "", // addresses (space or comma) mailed through the local sendmail on block, allowed after failures, backend failure, withheld; empty = off
  NOTIFY_COMMAND: "", // a command and its arguments (split at blanks, never a shell) run with the event in SENTRY_* variables; empty = off
  SENDMAIL: "/usr/sbin/sendmail", // the local MTA's sendmail program NOTIFY_EMAIL goes through
  NOTIFY_TIMEOUT_SECONDS: 30, // longest logger, sendmail or NOTIFY_COMMAND may run before it is killed (none is waited for)
  CROWDSEC_URL: "", // the fleet's CrowdSec Local API (http://10.0.0.5:8080/); empty = no fleet (section 9.5)
  CROWDSEC_CREDENTIALS: "", // a CrowdSec local_api_credentials.yaml (login, password, cert paths), mode 0600; empty = the keys below
  CROWDSEC_LOGIN: "", // this server's machine name on the LAPI (cscli machines add)
  CROWDSEC_PASSWORD: "", // its password (a secret: never printed nor logged)
  CROWDSEC_API_KEY: "", // this server's own bouncer key (cscli bouncers add; a secret; one per server)
  CROWDSEC_CERT: "", // client certificate (PEM) instead of password and key; empty = none
  CROWDSEC_KEY: "", // the client certificate's private key (PEM), mode 0600
  CROWDSEC_CA: "", // the CA (PEM) the LAPI's https certificate is checked against; empty = the system's
  CROWDSEC_ORIGINS: "sentry,cscli", // decision origins pulled (comma separated); add CAPI for the community list
  CROWDSEC_PUSH: true, // push this server's blocks to the LAPI (needs a machine login or certificate)
  CROWDSEC_PULL: true, // pull the fleet's blocks (needs a bouncer key or certificate)
  CROWDSEC_SYNC_MINUTES: 1, // how often the timer runs --sync: --doctor warns past 3 intervals without success, critical past 30
  CROWDSEC_TIMEOUT_SECONDS: 10, // longest one request to the LAPI may take
  CROWDSEC_MAX_BLOCKS: 10_000, // most fleet blocks this server holds; a bigger stream is cut there, with a warning
  CROWDSEC_MAX_DAYS: 90, // longest a fleet block lasts here, whatever duration the LAPI sends
  CROWDSEC_FULL_PULL_MINUTES: 60, // minutes between full pulls (startup=true) that catch what an incremental pull missed; 0 = only the first
};

export type Config = { -readonly [K in keyof typeof DEFAULTS]: (typeof DEFAULTS)[K] };

/**
 * Settings that decide what code runs as root (an update channel and its
 * key, notification commands), where root sends secrets, and whom it
 * believes (the list below says which). A sentry.conf another user could
 * write, or the environment of an unprivileged caller, must not set them:
 * they are taken only from a sentry.conf owned by root or from the
 * environment of a process running as root.
 */
export const EXEC_SETTINGS: readonly string[] = [
  "UPDATE_URL",
  "UPDATE_PUBLIC_KEY",
  // What root runs, and where (units, cron, notifiers, the MTA).
  "UNIT_DIR",
  "CRON_FILE",
  "NOTIFY_COMMAND",
  "NOTIFY_EMAIL",
  "SENDMAIL",
  // Where root sends secrets and which files it reads as them: a sentry.conf
  // another user wrote could point them at /etc/shadow and their own server.
  "CROWDSEC_URL",
  "CROWDSEC_CREDENTIALS",
  "CROWDSEC_CERT",
  "CROWDSEC_KEY",
  "CROWDSEC_CA",
  // Whose journal entries root believes: raised by another user, it would
  // let that user's `logger -t dovecot` lines allow or block addresses.
  "JOURNAL_LOGIN_UID_MIN",
];

/** Settings that are secrets: an error about their value never shows it. */
export const SECRET_SETTINGS: readonly string[] = ["CROWDSEC_PASSWORD", "CROWDSEC_API_KEY"];
export type ConfigKey = keyof Config;
type NumberKey = { [K in ConfigKey]: Config[K] extends number ? K : never }[ConfigKey];

/**
 * The largest value each number setting may take, checked where the
 * configuration is loaded. Each bound is where the setting stops working,
 * or well below it: a timeout handed to setTimeout or SQLite's busy handler
 * above 2^31-1 ms wraps around (LOCK_TIMEOUT_SECONDS=2147484 made every
 * lock fail at once, so nothing was ever blocked; UPDATE_TIMEOUT_SECONDS=
 * 999999999 fired after 1 ms). Every number key must have one (the type
 * says so), so a new setting cannot forget it.
 */
export const CONFIG_MAX: Record<NumberKey, number> = {
  EXPIRE_BLOCK_DAYS: 36_500, // a century; 0 (never) is the way to say "for good"
  BLOCK_THIN_MINUTES: 525_600, // a year
  SUBNET_THRESHOLD: 1_000_000,
  REPEAT_FACTOR_PERCENT: 10_000, // 100 times per repeat; the cap (REPEAT_MAX_DAYS) bounds the product anyway
  REPEAT_MAX_DAYS: 36_500, // a century
  REPEAT_FOREVER_AFTER: 1_000,
  THIN_NAUGHTY_LINES: 1_000_000,
  TYPO_DISTANCE: 8, // further than that, every name is a "typo" of some account
  CONNECT_THRESHOLD: 1_000_000,
  STRONG_CONNECT_THRESHOLD: 1_000_000,
  EARLY_NAUGHTY_LINES: 1_000_000,
  FAIL_THRESHOLD: 1_000_000,
  GUESS_THRESHOLD: 1_000_000,
  CONNECTION_GUESSES: 1_000_000,
  SCAN_SECONDS: 600, // sshd waits for a connect; LoginGraceTime is 120 s by default
  SCAN_RUN_SECONDS: 86_400, // one day; the next --scan carries on
  FIRST_SCAN_MB: 1_048_576, // 1 TB
  JOURNAL_FIRST_ENTRIES: 100_000, // about what Sys.run's 64 MiB output buffer holds (some 500 bytes of JSON each): a lower value only
  EXPIRE_CHECK_MINUTES: 525_600, // a year
  REPORT_REBUILD_HOURS: 8_760, // a year
  COMMAND_TIMEOUT_SECONDS: 3_600,
  UPDATE_TIMEOUT_SECONDS: 3_600, // a download may last DOWNLOAD_TOTAL_FACTOR (20) times this: 20 h < 2^31-1 ms
  LOCK_TIMEOUT_SECONDS: 3_600, // SQLite's busy timeout is an int of milliseconds
  CONNECT_WAIT_MS: 60_000, // sshd waits for a connect
  JOURNAL_LOGIN_UID_MIN: 65_536, // above every system account: a larger value would trust what login users write
  EXPIRE_PER_CONNECT: 100_000,
  WITHHELD_LOG_MINUTES: 525_600, // a year
  POLICY_TCPDMATCH_MAX: 100_000, // each sampled client is one tcpdmatch process
  SCAN_STALE_MINUTES: 525_600, // a year
  SENTRY_LOG_ROTATE_KB: 1_048_576, // 1 GiB
  SENTRY_LOG_KEEP: 100,
  ALLOW_AFTER_FAILURES_NOTE: 1_000_000,
  NOTIFY_TIMEOUT_SECONDS: 3_600,
  CROWDSEC_SYNC_MINUTES: 10_080, // a week
  CROWDSEC_TIMEOUT_SECONDS: 3_600,
  CROWDSEC_MAX_BLOCKS: 1_000_000, // each is a file in block/ and a line of hosts.deny
  CROWDSEC_MAX_DAYS: 36_500,
  CROWDSEC_FULL_PULL_MINUTES: 525_600, // a year
};

/**
 * Reads one value for `key` from text, typed like its default.
 * Booleans are 0/1 (as in sentry.sh) or yes/no/true/false; numbers are
 * whole and not negative. Throws SentryError(1) naming the key and origin.
 */
export function parseConfigValue(key: ConfigKey, raw: string, origin: string): Config[ConfigKey] {
  const text = raw.trim();
  const def = DEFAULTS[key];
  const bad = (what: string) =>
    new SentryError(`${origin}: ${key}=${SECRET_SETTINGS.includes(key) ? "(secret, not shown)" : JSON.stringify(raw)} is not valid: expected ${what}`, 1);
  if (typeof def === "boolean") {
    if (/^(1|yes|true|on)$/i.test(text)) return true;
    if (/^(0|no|false|off)$/i.test(text)) return false;
    throw bad("1 or 0");
  }
  if (typeof def === "number") {
    const max = CONFIG_MAX[key as NumberKey];
    if (!/^\d{1,9}$/.test(text)) throw bad(`a whole number from 0 to ${max}`);
    if (Number(text) > max) throw bad(`a whole number from 0 to ${max} (${key}'s upper bound)`);
    return Number(text);
  }
  if (/[\0\n\r]/.test(text)) throw bad("one line of text");
  return text;
}

/** The keys that name something sentry can be told; anything else is a typo. */
export function isConfigKey(name: string): name is ConfigKey {
  return Object.prototype.hasOwnProperty.call(DEFAULTS, name);
}

/**
 * Defaults ← ROOT_DIR/sentry.conf ← environment. ROOT_DIR itself can only
 * come from the environment (the file lives inside it). Every value is
 * checked here, so the rest of the program trusts its Config.
 * Unknown keys in sentry.conf are errors (a misspelt PROTECT_FTP would
 * otherwise be silently ignored); unknown environment variables are not ours.
 */
export function loadConfig(env: Record<string, string | undefined>, fsys: FsTable = realFs, uid: number = process.geteuid ? process.geteuid() : 0): Config {
  const cfg: Config = { ...DEFAULTS };
  const set = (key: ConfigKey, raw: string, origin: string) => {
    (cfg as Record<ConfigKey, unknown>)[key] = parseConfigValue(key, raw, origin);
  };
  if (env.ROOT_DIR !== undefined) set("ROOT_DIR", env.ROOT_DIR, "environment");
  if (!path.isAbsolute(cfg.ROOT_DIR))
    throw new SentryError(`ROOT_DIR must be an absolute path, not ${JSON.stringify(cfg.ROOT_DIR)}`, 1);
  checkStrictModes(cfg.ROOT_DIR, fsys, uid);
  const confPath = path.join(cfg.ROOT_DIR, "sentry.conf");
  let text: string | null = null;
  let confOwner = 0;
  let fd: number | null = null;
  try {
    // Most servers have no sentry.conf: an lstat says so without the
    // exception a failed open is in Node (about a millisecond of a connect).
    // A file that appears just after is read by the next command.
    if (fsys.lstatSync(confPath, { throwIfNoEntry: false })) {
      // No symlink (O_NOFOLLOW), no FIFO that would hang every connect (O_NONBLOCK).
      fd = fsys.openSync(confPath, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
      const st = fsys.fstatSync(fd);
      if (!st.isFile()) throw new SentryError(`strict modes: ${confPath} is not a regular file: remove it`, 2);
      const bad = strictProblem(confPath, st, uid, false);
      if (bad) throw new SentryError(`strict modes: ${bad}`, 2);
      confOwner = st.uid;
      text = fsys.readFileSync(fd, "utf8");
    }
  } catch (e) {
    if (e instanceof SentryError) throw e;
    const code = errCode(e);
    // No file is the normal case; a ROOT_DIR that does not exist yet too.
    if (code === "ELOOP") throw new SentryError(`strict modes: ${confPath} is a symbolic link: sentry follows none inside ROOT_DIR; replace it with the file`, 2);
    if (code !== "ENOENT" && code !== "ENOTDIR")
      throw new SentryError(`cannot read ${confPath}: ${errText(e)}`, 2);
  } finally {
    if (fd !== null) fsys.closeSync(fd);
  }
  if (text !== null) {
    text.split("\n").forEach((line, i) => {
      const l = line.trim();
      if (l === "" || l.startsWith("#")) return;
      const m = /^([A-Z_][A-Z0-9_]*)\s*=\s*(.*)$/.exec(l);
      const where = `${confPath} line ${i + 1}`;
      if (!m) throw new SentryError(`${where}: expected KEY=value, got ${JSON.stringify(l)}`, 1);
      const key = m[1];
      if (!isConfigKey(key)) throw new SentryError(`${where}: unknown setting ${key}`, 1);
      if (key === "ROOT_DIR") throw new SentryError(`${where}: ROOT_DIR cannot be set inside ROOT_DIR`, 1);
      if (EXEC_SETTINGS.includes(key) && confOwner !== 0)
        throw new SentryError(`${where}: ${key} is taken only from a sentry.conf owned by root (this one is owned by uid ${confOwner}): run chown root ${confPath}, or set it in the environment of root`, 2);
      // Allow the value to be quoted, as in a shell file.
      set(key, m[2].replace(/^"(.*)"$|^'(.*)'$/, "$1$2"), where);
    });
  }
  // Only the names the environment holds are read: looking up a name that
  // process.env lacks is a slow path in Node, and the ~70 settings cost a
  // connect 2-10 ms that way; one listing of the environment costs 0.1 ms.
  const given = new Set(Object.keys(env));
  for (const key of Object.keys(DEFAULTS) as ConfigKey[]) {
    if (key === "ROOT_DIR" || !given.has(key)) continue;
    const v = env[key];
    if (v === undefined) continue;
    if (EXEC_SETTINGS.includes(key) && uid !== 0)
      throw new SentryError(`environment: ${key} is taken only from the environment of root (this process runs as uid ${uid}); put it in a sentry.conf owned by root`, 2);
    set(key, v, "environment");
  }
  // ALLOW_IPS is checked now, so a typo fails every command, not the first block.
  parseAllowList(cfg.ALLOW_IPS);
  parseNotifyEmail(cfg.NOTIFY_EMAIL); // and NOTIFY_EMAIL, for the same reason
  if (/[;&|`$<>()]/.test(cfg.NOTIFY_COMMAND))
    throw new SentryError(`NOTIFY_COMMAND=${JSON.stringify(cfg.NOTIFY_COMMAND)}: it is run as an argument vector, never through a shell; write a script and name it`, 1);
  return cfg;
}

// ==== 2. Errors and the system ==============================================
//
// Everything that touches the machine goes through the Sys object: the clock,
// the environment, stdout/stderr, the file system table and the command
// runner. Tests build their own Sys (another ROOT_DIR, a fixed clock, a
// failing fs call) instead of monkey-patching node.

/** The one error type. exitCode 1: bad usage or input; 2: could not do it. */
export class SentryError extends Error {
  readonly exitCode: 1 | 2;
  constructor(message: string, exitCode: 1 | 2 = 2) {
    super(message);
    this.name = "SentryError";
    this.exitCode = exitCode;
  }
}

/** The errno code of a caught value ("ENOENT"), or "" if it has none. */
export function errCode(e: unknown): string {
  return typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : "";
}

/** A short message for a caught value, for "cannot X: <this>". */
export function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Ends a SQLite transaction interrupted by `original` (ROLLBACK, or COMMIT
 * to keep what was done before it); returns the error to throw on:
 * `original`. An end that fails as well (the disk gone, the file replaced)
 * must neither replace the error that caused it nor vanish, so its message
 * is added to the original's.
 */
export function rollbackAfter(db: { exec(sql: string): void }, original: unknown, sql: "ROLLBACK" | "COMMIT" = "ROLLBACK"): unknown {
  try {
    db.exec(sql);
  } catch (r) {
    // Whatever SQLite says: the transaction ends when the handle closes anyway.
    const note = `; the ${sql} that followed failed too: ${errText(r)}`;
    if (!(original instanceof Error)) return new Error(`${String(original)}${note}`);
    original.message += note;
  }
  return original;
}

/** The file-system calls sentry makes. Tests swap single entries to inject faults. */
export type FsTable = Pick<
  typeof fs,
  | "readFileSync"
  | "writeFileSync"
  | "appendFileSync"
  | "openSync"
  | "closeSync"
  | "readSync"
  | "writeSync"
  | "fsyncSync"
  | "fstatSync"
  | "statSync"
  | "lstatSync"
  | "mkdirSync"
  | "readdirSync"
  | "opendirSync"
  | "renameSync"
  | "unlinkSync"
  | "rmSync"
  | "chmodSync"
  | "fchmodSync"
  | "copyFileSync"
  | "existsSync"
  | "accessSync"
  | "utimesSync"
  | "readlinkSync"
>;

export const realFs: FsTable = fs;

/** What a command run through Sys.run reports; never throws. */
export interface RunResult {
  status: number | null; // exit status, null if killed or not started
  stdout: string;
  stderr: string;
  error: string; // "" or why it did not run / finish (ENOENT, timeout)
}

export interface Sys {
  now(): number; // milliseconds since the epoch
  env: Record<string, string | undefined>;
  fs: FsTable;
  out(text: string): void; // one line or more to stdout
  warn(text: string): void; // one message to stderr, as "sentry: text"
  err(text: string): void; // text to stderr as it is (the usage)
  /** Runs cmd with an argument vector, never a shell, killed after timeoutMs. */
  run(cmd: string, args: string[], opts?: { timeoutMs?: number; input?: string; cwd?: string }): RunResult;
  execPath: string; // this program (the binary itself when compiled)
  outClosed?(): boolean; // true once stdout's reader has gone (`| head`): long output may stop early
  errTty?: boolean; // stderr is a terminal: long reads show how far they are (progress)
  outTty?: boolean; // stdout is a terminal (then --test-log's lines would break a progress line)
  uid?: number; // the effective uid (strict modes, section 5.4); absent: this process's own
  pid?: number; // this process (section 8.2 walks its ancestors); absent: nothing is ever cut
  kill?(pid: number): void; // SIGTERM to pid (section 8.2 alone uses it)
}

/**
 * node:child_process, loaded on first use: it costs about 5 ms of start-up
 * (a sixth of Node's own), and a plain connect never runs a command.
 */
function childProcess(): typeof import("node:child_process") {
  return process.getBuiltinModule("node:child_process") as typeof import("node:child_process");
}

/** Runs a command without a shell; a missing tool or a timeout is a value. */
export function runCommand(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string; cwd?: string } = {}): RunResult {
  const r = childProcess().spawnSync(cmd, args, {
    encoding: "utf8",
    cwd: opts.cwd, // tcpdmatch -d reads hosts.allow/hosts.deny from its working directory
    timeout: opts.timeoutMs ?? DEFAULTS.COMMAND_TIMEOUT_SECONDS * 1000,
    killSignal: "SIGKILL",
    input: opts.input,
    stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    maxBuffer: 64 * 1024 * 1024,
  });
  let error = "";
  if (r.error) {
    const code = errCode(r.error);
    error = code === "ETIMEDOUT" ? "timed out" : code === "ENOENT" ? "not found" : errText(r.error);
  } else if (r.signal) error = `killed by ${r.signal}`;
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "", error };
}

/**
 * Set when stdout or stderr failed for another reason than a reader that
 * went away (a full disk under `sentry --report > file`): the command then
 * exits 2 whatever it did, since what it printed was lost.
 */
let outputFailed = false;

/**
 * Writes to stdout (fd 1) or stderr (fd 2) with write(2) itself, not through
 * process.stdout/process.stderr. Why not Node's streams:
 *   - cost: the first touch of process.stdout loads Node's whole stream
 *     machinery (20 internal modules), about a tenth of a connect's own
 *     start-up, for the one line a connect prints into tcpd's /dev/null;
 *   - memory: into a pipe, Node queues writes until its event loop runs,
 *     and a long command never yields to it (`sentry --test-log auth.log |
 *     less` held its whole output: 174 MiB of RSS for a 20 MB log against
 *     108 into a file). Here each write is done at once, waiting (1 ms at a
 *     time) while a pipe's reader is behind (EAGAIN: the descriptor may be
 *     non-blocking, set so by whoever shares it).
 * A reader that went away (`sentry --doctor | head -1`: EPIPE; Node ignores
 * SIGPIPE) ends our output quietly: the command finishes its work and keeps
 * its own exit code (a CRITICAL must reach Nagios as CRITICAL). Any other
 * failure (ENOSPC) is said once on stderr and makes the exit code 2.
 */
function fdWriter(fd: 1 | 2): { write: (t: string) => void; closed: () => boolean } {
  let closed = false;
  let pause: Int32Array | null = null;
  return {
    write(t) {
      const buf = Buffer.from(t);
      for (let off = 0; off < buf.length && !closed; ) {
        try {
          off += fs.writeSync(fd, buf, off);
        } catch (e) {
          if (errCode(e) === "EAGAIN") {
            pause ??= new Int32Array(new SharedArrayBuffer(4));
            Atomics.wait(pause, 0, 0, 1);
            continue;
          }
          closed = true;
          if (errCode(e) === "EPIPE") return;
          outputFailed = true;
          process.exitCode = 2;
          if (fd === 1) stderrWriter.write(`sentry: cannot write to stdout: ${errText(e)}\n`);
        }
      }
    },
    closed: () => closed,
  };
}
// One of each per process, however many Sys are made: a closed reader stays closed.
const stdoutWriter = fdWriter(1);
const stderrWriter = fdWriter(2);

/** The Sys of a real run. */
export function realSys(): Sys {
  return {
    now: () => Date.now(),
    env: process.env,
    fs: realFs,
    out: (t) => stdoutWriter.write(t.endsWith("\n") ? t : t + "\n"),
    warn: (t) => stderrWriter.write(`sentry: ${t}\n`),
    err: (t) => stderrWriter.write(t),
    outClosed: stdoutWriter.closed,
    // Asked only where a long read may show progress (section 7.2), so a
    // connect never loads what isTTY needs (node:tty, the streams).
    get errTty() {
      return process.stderr.isTTY === true;
    },
    get outTty() {
      return process.stdout.isTTY === true;
    },
    run: runCommand,
    execPath: process.execPath,
    uid: process.geteuid ? process.geteuid() : 0,
    pid: process.pid,
    kill: (pid) => void process.kill(pid, "SIGTERM"),
  };
}

// ==== 3. Addresses ==========================================================
//
//   "::ffff:192.0.2.7"      → "192.0.2.7"        (tcpd may hand over either)
//   "2001:DB8:0:0::1%eth0"  → "2001:db8::1"      (RFC 5952, zone id dropped)
//   "../../etc/passwd"      → null               (never reaches a path)
//
// An address becomes a file name (seen/IP) and a command argument (nft add
// element ... { IP }), so this parser is a security boundary: it accepts
// only the characters of an address, builds its own canonical spelling from
// the numbers it parsed, and never passes the input through.

export type Family = 4 | 6;

/** Parses IPv4 dotted quad into 4 bytes, or null. No leading zeros (010 is octal to some tools). */
function parseV4Bytes(s: string): number[] | null {
  // By character codes, not split() and a regular expression per part: the
  // report index weighs a million names and --test-log every line with this
  // (issue 15; test/lib/ip-reference.ts keeps the plain version, and
  // test/ip.test.ts holds both to the same answer).
  const out = [0, 0, 0, 0];
  let part = 0;
  let n = 0;
  let digits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      // "."
      if (digits === 0 || part === 3) return null;
      out[part++] = n;
      n = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && n === 0) return null; // a leading zero
      n = n * 10 + (c - 48);
      if (++digits > 3 || n > 255) return null;
    } else return null;
  }
  if (part !== 3 || digits === 0) return null;
  out[3] = n;
  return out;
}

/** The value of one hexadecimal digit's character code, or -1. */
function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const l = c | 32; // A-F → a-f
  return l >= 97 && l <= 102 ? l - 87 : -1;
}

/**
 * Appends the groups of s[from, to) ("1:ab:0", 1 to 4 hex digits each, one
 * colon between) to `out`; false if that text is not such a list. Empty
 * text is an empty list.
 */
function v6Groups(s: string, from: number, to: number, out: number[]): boolean {
  if (from === to) return true;
  for (let i = from; ; i++) {
    let v = 0;
    const start = i;
    for (let d: number; i < to && (d = hexDigit(s.charCodeAt(i))) !== -1; i++) v = v * 16 + d;
    if (i === start || i - start > 4) return false;
    out.push(v);
    if (i === to) return true;
    if (s.charCodeAt(i) !== 58) return false; // not ":"
  }
}

/** Parses an IPv6 text form into 8 16-bit groups, or null. */
function parseV6Groups(s: string): number[] | null {
  let end = s.length;
  let tail: number[] | null = null;
  // An embedded IPv4 may end the address (::ffff:1.2.3.4, 64:ff9b::1.2.3.4).
  if (s.indexOf(".") !== -1) {
    const lastColon = s.lastIndexOf(":");
    const v4 = parseV4Bytes(s.slice(lastColon + 1));
    if (!v4) return null;
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]];
    end = lastColon + 1;
    // "::1.2.3.4" keeps its "::"; "ffff:1.2.3.4" ends its groups at "ffff".
    if (end >= 1 && !(end >= 2 && s.charCodeAt(end - 2) === 58)) end--;
  }
  const out: number[] = [];
  const gap = s.indexOf("::");
  if (gap === -1 || gap >= end) {
    if (!v6Groups(s, 0, end, out)) return null;
    if (tail) out.push(tail[0], tail[1]);
    return out.length === 8 ? out : null;
  }
  // "::" stands for at least one zero group; a second "::" fails in v6Groups (an empty group).
  if (!v6Groups(s, 0, gap, out)) return null;
  const head = out.length;
  if (!v6Groups(s, gap + 2, end, out)) return null;
  if (tail) out.push(tail[0], tail[1]);
  if (out.length > 7) return null;
  out.splice(head, 0, ...new Array<number>(8 - out.length).fill(0));
  return out;
}

/** RFC 5952 text of 8 groups: lower case, longest run of 2+ zero groups as "::". */
function formatV6(g: number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  let text = "";
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      text += "::";
      i += bestLen - 1;
      continue;
    }
    if (text !== "" && !text.endsWith(":")) text += ":";
    text += g[i].toString(16);
  }
  return text;
}

/**
 * The canonical spelling of an address, or null if `text` is not exactly
 * one. IPv4-mapped IPv6 becomes IPv4; a zone id (%eth0) is dropped; the
 * unspecified, broadcast and multicast addresses, which no client can have, are refused.
 */
export function parseIp(text: string): string | null {
  if (typeof text !== "string" || text.length === 0 || text.length > 64) return null;
  let s = text;
  const pct = s.indexOf("%");
  if (pct !== -1) {
    // A zone id names an interface: letters, digits and . _ - only.
    if (!/^[A-Za-z0-9._-]{1,32}$/.test(s.slice(pct + 1))) return null;
    s = s.slice(0, pct);
  }
  if (s.indexOf(":") === -1) {
    const b = parseV4Bytes(s);
    if (!b) return null;
    const ip = s; // parseV4Bytes takes no leading zero: what it read is already b.join(".")
    if (ip === "0.0.0.0" || ip === "255.255.255.255") return null;
    // 224.0.0.0/4 is multicast: no TCP client ever has such a source address,
    // so one can only come from a forged argument or a misread log.
    if (b[0] >= 224 && b[0] <= 239) return null;
    return ip;
  }
  const g = parseV6Groups(s);
  if (!g) return null;
  if (g.every((x) => x === 0)) return null; // "::" is no client
  if (g[0] >> 8 === 0xff) return null; // ff00::/8 is multicast: no client either
  // ::ffff:a.b.c.d is an IPv4 client on a dual-stack socket.
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return parseIp(`${g[6] >> 8}.${g[6] & 255}.${g[7] >> 8}.${g[7] & 255}`);
  }
  return formatV6(g);
}

/** 4 for a canonical IPv4, 6 for a canonical IPv6. */
export function ipFamily(ip: string): Family {
  return ip.indexOf(":") === -1 ? 4 : 6;
}

/** An address as a BigInt, for range checks. `ip` must be canonical. */
function ipToBigInt(ip: string): bigint {
  if (ipFamily(ip) === 4) {
    return (parseV4Bytes(ip) as number[]).reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
  }
  return (parseV6Groups(ip) as number[]).reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

export interface Cidr {
  family: Family;
  base: bigint;
  bits: number;
  text: string;
}

/**
 * The mask of a /bits prefix: the first `bits` of an address's 32 or 128 set
 * (/0 → 0n). Every range test and range base in this file goes through it.
 */
export function prefixMask(family: Family, bits: number): bigint {
  const max = family === 4 ? 32 : 128;
  return ((1n << BigInt(bits)) - 1n) << BigInt(max - bits);
}

/** Parses "192.0.2.0/24", "2001:db8::/32" or a bare address (a /32 or /128). */
export function parseCidr(text: string): Cidr | null {
  const [addr, len, extra] = text.split("/");
  if (extra !== undefined) return null;
  // 0.0.0.0/0 and ::/0 are legal ranges even though the address alone is not a client.
  const ip = addr === "0.0.0.0" || addr === "::" ? addr : parseIp(addr);
  if (!ip || addr.indexOf("%") !== -1) return null;
  const family: Family = ip.indexOf(":") === -1 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let bits = max;
  if (len !== undefined) {
    if (!/^(0|[1-9]\d{0,2})$/.test(len) || Number(len) > max) return null;
    bits = Number(len);
  }
  const value = ip === "0.0.0.0" || ip === "::" ? 0n : ipToBigInt(ip);
  return { family, base: value & prefixMask(family, bits), bits, text: `${ip}/${bits}` };
}

/**
 * Loopback is never blocked, whatever ALLOW_IPS says, in every spelling a
 * socket or a log can give it: 127/8 and ::1, IPv4-compatible ::127.x.y.z
 * (deprecated but still parsed by inet_pton), NAT64's well-known prefix
 * 64:ff9b::/96 holding 127/8 (RFC 6052), and SIIT's IPv4-translated
 * ::ffff:0:127.x.y.z (RFC 2765). IPv4-mapped ::ffff:127.x.y.z needs no entry:
 * parseIp turns it into 127.x.y.z.
 */
export const ALWAYS_ALLOWED = ["127.0.0.0/8", "::1/128", "::127.0.0.0/104", "64:ff9b::127.0.0.0/104", "::ffff:0:127.0.0.0/104"];
/**
 * ALWAYS_ALLOWED as parseCidr makes it, written out: parsing the four IPv6
 * ranges was a measurable part of every connect's start. test/ip.test.ts
 * checks that each is exactly what parseCidr makes of its text.
 */
export const ALWAYS_ALLOWED_CIDRS: readonly Cidr[] = [
  { family: 4, base: 0x7f000000n, bits: 8, text: "127.0.0.0/8" },
  { family: 6, base: 0x1n, bits: 128, text: "::1/128" },
  { family: 6, base: 0x7f000000n, bits: 104, text: "::7f00:0/104" },
  { family: 6, base: 0x64ff9b00000000000000007f000000n, bits: 104, text: "64:ff9b::7f00:0/104" },
  { family: 6, base: 0xffff00007f000000n, bits: 104, text: "::ffff:0:7f00:0/104" },
];

/** Parses ALLOW_IPS (space or comma separated) plus loopback; throws naming the bad entry. */
export function parseAllowList(text: string): Cidr[] {
  // loadConfig checks the list and makeCtx then uses it: every connect
  // parsed it twice. Cidrs are never changed.
  if (allowListParsed !== null && allowListParsed.text === text) return [...allowListParsed.ranges];
  const out: Cidr[] = [...ALWAYS_ALLOWED_CIDRS];
  for (const word of text.split(/[\s,]+/)) {
    if (word === "") continue;
    const c = parseCidr(word);
    if (!c) throw new SentryError(`ALLOW_IPS: ${JSON.stringify(word)} is not an address or CIDR range`, 1);
    out.push(c);
  }
  allowListParsed = { text, ranges: out };
  return [...out];
}
let allowListParsed: { text: string; ranges: Cidr[] } | null = null;

/** True if canonical `ip` lies in any of `ranges`. */
export function inRanges(ip: string, ranges: Cidr[]): boolean {
  const family = ipFamily(ip);
  const value = ipToBigInt(ip);
  for (const r of ranges) {
    if (r.family !== family) continue;
    if ((value & prefixMask(family, r.bits)) === r.base) return true;
  }
  return false;
}

// ---- 3.1 Ranges as file names: block/2001:db8:1:2::_64, allow/10.0.0.0_8 --------
//
//   "2001:DB8:1:2::/64"  → text "2001:db8:1:2::/64", file name "2001:db8:1:2::_64"
//   "10.0.0.0/8"         → "10.0.0.0/8", "10.0.0.0_8"
//   "10.1.2.3/8"         → null (host bits set: which range was meant?)
//   "0.0.0.0/0", "::/0", "1.2.3.4/33", "::/129", "10.0.0.0/8/../x" → null
//
// A range blocked or allowed by hand (--ip=10.0.0.0/8) or an IPv6 /64
// blocked as one entry (section 8.4) is a file of block/ or allow/ like an
// address. A "/" cannot be in a file name, so the file name spells the
// prefix length after "_", a character no address contains; the name is
// built from the numbers parsed, and a name read back from a folder counts
// only if it re-creates itself exactly, so nothing else ever reaches a path
// or a command. Ranges wider than NET_MIN_BITS are refused: 0.0.0.0/0 in
// block/ refuses every client, in allow/ switches protection off, and no
// administrator means either by one command.

/** The widest range sentry takes by hand or makes: a /8 of IPv4, a /16 of IPv6 (a whole RIR allocation is wider). */
export const NET_MIN_BITS: Record<Family, number> = { 4: 8, 6: 16 };

/** The canonical text of `v` as an address of `family` (any value: the base of a range may be no client, e.g. 10.0.0.0). */
export function netBaseText(v: bigint, family: Family): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((sh) => String((v >> sh) & 255n)).join(".");
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((v >> BigInt(i * 16)) & 0xffffn));
  return formatV6(g);
}

/** The /bits range of `family` that holds the address `value` (its host bits cleared). */
export function netAround(value: bigint, family: Family, bits: number): Cidr {
  const base = value & prefixMask(family, bits);
  return { family, base, bits, text: `${netBaseText(base, family)}/${bits}` };
}

/**
 * A range as an administrator writes it ("192.0.2.0/24", "2001:db8::/48"),
 * or null: not exactly one, wider than NET_MIN_BITS, a single address (/32,
 * /128: use the address), host bits set, IPv4-mapped, or any other character.
 */
export function parseNet(text: string): Cidr | null {
  if (typeof text !== "string" || text.length > 48 || !/^[0-9A-Fa-f:.]+\/(0|[1-9]\d{0,2})$/.test(text)) return null;
  const slash = text.indexOf("/");
  const addr = text.slice(0, slash);
  const bits = Number(text.slice(slash + 1));
  let family: Family;
  let value: bigint;
  if (addr.indexOf(":") === -1) {
    const b = parseV4Bytes(addr);
    if (!b) return null;
    family = 4;
    value = b.reduce((acc, x) => (acc << 8n) | BigInt(x), 0n);
  } else {
    const g = parseV6Groups(addr);
    if (!g) return null;
    // ::ffff:a.b.c.d/n is an IPv4 range in disguise: give it as IPv4.
    if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) return null;
    family = 6;
    value = g.reduce((acc, x) => (acc << 16n) | BigInt(x), 0n);
  }
  const max = family === 4 ? 32 : 128;
  if (bits < NET_MIN_BITS[family] || bits >= max) return null;
  if ((value & prefixMask(family, bits)) !== value) return null;
  return { family, base: value, bits, text: `${netBaseText(value, family)}/${bits}` };
}

/** "2001:db8:1:2::/64" → "2001:db8:1:2::_64": the name of its file in block/ or allow/. */
export function netFileName(net: Cidr): string {
  return net.text.replace("/", "_");
}

/** The range a file of block/ or allow/ names, or null if the name is not exactly one netFileName makes. */
export function netFromFileName(name: string): Cidr | null {
  if (name.indexOf("/") !== -1) return null;
  const net = parseNet(name.replace("_", "/"));
  return net !== null && netFileName(net) === name ? net : null;
}

/** Whether two ranges share any address (one holds the other: prefixes never partly overlap). */
export function rangesOverlap(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const mask = prefixMask(a.family, Math.min(a.bits, b.bits));
  return (a.base & mask) === (b.base & mask);
}

/** The /64 (IPv6) or /24 (IPv4) around canonical `ip`. */
export function subnetOf(ip: string): Cidr {
  const family = ipFamily(ip);
  return netAround(ipToBigInt(ip), family, family === 6 ? 64 : 24);
}

// ==== 4. Command line =======================================================
//
//   ["--ip", "::ffff:192.0.2.7", "-c"]  → { action: "connect", ip: "192.0.2.7", … }
//   ["--blacklist", "--ip=2001:DB8::1"] → { action: "block", ip: "2001:db8::1", … }
//   ["--frobnicate"]                    → SentryError(1): Unknown option: --frobnicate
//
// Flags come in any order, `--ip IP` and `--ip=IP` are the same, and the
// names of sentry.pl and sentry.sh (--whitelist, --blacklist) still work.

/** The address an --allow, --block or --delist acts on: one address, or a range (section 3.1). */
export type Target = { ip: string; net: null } | { ip: null; net: Cidr };

/**
 * A parsed command line: one shape per action, holding only the options
 * that action takes (parseArgs refuses the others), so run() needs no cast
 * and the compiler proves, say, that a --connect has its address.
 */
export type Action =
  | { action: "connect"; ip: string } // canonical: from --ip or PAM_RHOST
  | ({ action: "allow" | "delist"; reason: string | null } & Target) // reason: --reason TEXT, the administrator's words
  | ({ action: "block"; force: boolean; forMs: number | null; forText: string | null; reason: string | null } & Target) // force: the logs show logins from it; forMs: --for's length in ms (null = the configured one), forText as given ("4h")
  | { action: "report"; ip: string | null; net: Cidr | null; verbose: boolean; json: boolean } // --ip=IP or RANGE shows that one
  | { action: "list"; list: ListFilter; json: boolean } // --ip narrows it like --net
  | { action: "scan" | "sync"; verbose: boolean } // verbose: print the summary always
  | { action: "test-log"; file: string; missed: boolean } // FILE, or - for stdin
  | { action: "install"; write: boolean; force: boolean; timer: boolean } // force: --write without the installer's address
  | { action: "update"; check: boolean; force: boolean } // force: the same or an older version
  | { action: "version"; verbose: boolean } // verbose: the bundle's SHA-256 too
  | { action: "completion"; shell: string }
  | { action: "resync" | "uninstall" | "doctor" | "rollback" }
  | { action: "help" }
  | { action: "man" };

export type ActionName = Action["action"];

/**
 * "30m", "4h", "2d", "1w" → milliseconds; null if it is not one such length.
 * At most 36500 days, the bound of EXPIRE_BLOCK_DAYS: a longer one is a
 * typo, and a block meant for good is EXPIRE_BLOCK_DAYS=0's job.
 */
export function parseDuration(text: string): number | null {
  const m = /^([1-9]\d{0,6})([mhdw])$/.exec(text);
  if (!m) return null;
  const unit = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 }[m[2] as "m" | "h" | "d" | "w"];
  const ms = Number(m[1]) * unit;
  return ms <= CONFIG_MAX.EXPIRE_BLOCK_DAYS * 86_400_000 ? ms : null;
}

/** Longest --reason kept: it lands in block/IP and sentry.log, one line each. */
export const REASON_MAX = 300;

/** Option → the action it names. Several names for one action are aliases. */
const ACTION_FLAGS: Record<string, ActionName> = {
  "--connect": "connect",
  "-c": "connect",
  "--allow": "allow",
  "--whitelist": "allow",
  "--block": "block",
  "--blacklist": "block",
  "--delist": "delist",
  "--report": "report",
  "-r": "report",
  "--list": "list",
  "--scan": "scan",
  "--resync": "resync",
  "--sync": "sync",
  "--test-log": "test-log",
  "--install": "install",
  "--uninstall": "uninstall",
  "--doctor": "doctor",
  "--update": "update",
  "--rollback": "rollback",
  "--version": "version",
  "--help": "help",
  "-h": "help",
  "--man": "man",
  "--completion": "completion",
};

/** The options that modify an action (the completion offers these and ACTION_FLAGS). */
export const OPTION_FLAGS: readonly string[] = [
  "--ip", "--verbose", "-v", "--json", "--write", "--timer", "--check", "--force", "--missed",
  "--state", "--net", "--newer", "--older", "--sort", "--utc", // --list (section 10.2)
  "--for", "--reason", // --block, --allow, --delist (section 8.4)
];

/** Actions that work without an address; all others need a valid --ip. */
const NO_IP_NEEDED: ReadonlySet<ActionName> = new Set<ActionName>([
  "report",
  "list",
  "scan",
  "resync",
  "sync",
  "test-log",
  "install",
  "uninstall",
  "doctor",
  "update",
  "rollback",
  "version",
  "help",
  "man",
  "completion",
]);

/**
 * Parses argv into an Action. Throws SentryError(1) for an unknown option,
 * two actions, a missing value, an option the action does not take, or an
 * address that is not one. `env` is consulted for PAM_RHOST only:
 * pam_exec.so runs `sentry --connect` with the client's address there
 * instead of on the command line.
 */
export function parseArgs(argv: string[], env: Record<string, string | undefined> = {}): Action {
  // The flags as they come, in any order; the Action is built from them at the end.
  const f = {
    rawIp: null as string | null, // as given, for messages
    verbose: false,
    json: false,
    write: false,
    check: false,
    force: false,
    file: "", // --test-log FILE and --completion SHELL: set where the action is chosen, so never "" for it
    missed: false,
    timer: false,
    shell: "",
    list: { states: null, net: null, newerMs: null, olderMs: null, sort: "time", utc: false } as ListFilter,
    forMs: null as number | null,
    forText: null as string | null,
    reason: null as string | null,
    chosen: null as ActionName | null,
  };
  let listOption = "";
  const choose = (name: ActionName, flag: string) => {
    if (f.chosen !== null && f.chosen !== name)
      throw new SentryError(`${flag} cannot be combined with --${f.chosen}: choose one action`, 1);
    f.chosen = name;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const flag = eq === -1 ? arg : arg.slice(0, eq);
    const inline = eq === -1 ? null : arg.slice(eq + 1);
    const value = (): string => {
      if (inline !== null) return inline;
      if (i + 1 >= argv.length) throw new SentryError(`${flag} needs a value`, 1);
      return argv[++i];
    };
    if (flag === "--ip") {
      f.rawIp = value();
    } else if (flag === "--test-log") {
      choose("test-log", flag);
      f.file = value();
    } else if (flag === "--completion") {
      choose("completion", flag);
      f.shell = value();
    } else if (flag in ACTION_FLAGS && inline === null) {
      choose(ACTION_FLAGS[flag], flag);
    } else if ((flag === "--verbose" || flag === "-v") && inline === null) {
      f.verbose = true;
    } else if (flag === "--json" && inline === null) {
      f.json = true;
    } else if (flag === "--write" && inline === null) {
      f.write = true;
    } else if (flag === "--check" && inline === null) {
      f.check = true;
    } else if (flag === "--force" && inline === null) {
      f.force = true;
    } else if (flag === "--missed" && inline === null) {
      f.missed = true;
    } else if (flag === "--timer" && inline === null) {
      f.timer = true;
    } else if (flag === "--state" || flag === "--net" || flag === "--newer" || flag === "--older" || flag === "--sort" || (flag === "--utc" && inline === null)) {
      listOption = flag;
      parseListOption(f.list, flag, flag === "--utc" ? "" : value());
    } else if (flag === "--for") {
      const text = value();
      f.forMs = parseDuration(text);
      if (f.forMs === null)
        throw new SentryError(`--for ${JSON.stringify(text)} is not a length: a whole number and a unit, m (minutes), h (hours), d (days) or w (weeks), e.g. --for 4h, at most 36500 days`, 1);
      f.forText = text;
    } else if (flag === "--reason") {
      const text = value();
      // One line of text: a newline would forge a second line in sentry.log and block/IP.
      if (/[\x00-\x1f\x7f]/.test(text)) throw new SentryError("--reason must be one line of text, without control characters", 1);
      if (text.trim() === "") throw new SentryError("--reason needs some words", 1);
      if (text.length > REASON_MAX) throw new SentryError(`--reason is ${text.length} characters long: at most ${REASON_MAX}`, 1);
      f.reason = text.trim();
    } else {
      // One line, not the manual: the manual would scroll the mistake away.
      throw new SentryError(`Unknown option: ${arg}; see sentry --help`, 1);
    }
  }
  // `sentry --ip=IP` alone shows that address, as sentry.pl did.
  const action: ActionName = f.chosen ?? (f.rawIp !== null ? "report" : "help");
  if (action === "connect" && f.rawIp === null && env.PAM_RHOST !== undefined) f.rawIp = env.PAM_RHOST;
  let ip: string | null = null;
  let net: Cidr | null = null;
  if (f.rawIp !== null && f.rawIp.indexOf("/") !== -1 && (action === "allow" || action === "block" || action === "delist" || action === "report")) {
    // A range: by hand, for --allow, --block, --delist only (section 3.1); elsewhere parseIp refuses it below.
    net = parseNet(f.rawIp);
    if (net === null)
      throw new SentryError(
        `not a valid IP address or range: ${JSON.stringify(f.rawIp)}: expected an address, or a CIDR range such as 192.0.2.0/24 or 2001:db8:1::/48, ` +
          `from /${NET_MIN_BITS[4]} to /31 (IPv4) or /${NET_MIN_BITS[6]} to /127 (IPv6), with no bits set after the prefix`,
        1,
      );
  } else if (f.rawIp !== null) {
    ip = parseIp(f.rawIp);
    if (ip === null) throw new SentryError(`not a valid IP address: ${JSON.stringify(f.rawIp)}`, 1);
  }
  if (f.write && action !== "install") throw new SentryError("--write goes with --install", 1);
  if (f.check && action !== "update") throw new SentryError("--check goes with --update", 1);
  if (f.force && action !== "update" && action !== "block" && action !== "install")
    throw new SentryError("--force goes with --update, --block or --install", 1);
  if (f.missed && action !== "test-log") throw new SentryError("--missed goes with --test-log", 1);
  if (f.timer && !(action === "install" && f.write)) throw new SentryError("--timer goes with --install --write", 1);
  if (f.json && action !== "report" && action !== "list") throw new SentryError("--json goes with --report or --list", 1);
  if (listOption && action !== "list") throw new SentryError(`${listOption} goes with --list`, 1);
  if (f.forMs !== null && action !== "block") throw new SentryError("--for goes with --block", 1);
  if (f.reason !== null && action !== "block" && action !== "allow" && action !== "delist")
    throw new SentryError("--reason goes with --block, --allow or --delist", 1);
  const needsIp = () => new SentryError(`--${action} needs an address: --ip=IP`, 1);
  // Each action takes its own fields. Actions that need no address accept a
  // valid --ip and ignore it, as sentry.pl did.
  switch (action) {
    case "connect":
      if (ip === null) throw needsIp();
      return { action, ip };
    case "allow":
    case "delist":
    case "block": {
      const target: Target | null = net !== null ? { ip: null, net } : ip !== null ? { ip, net: null } : null;
      if (target === null) throw needsIp();
      if (action === "block") return { action, ...target, force: f.force, forMs: f.forMs, forText: f.forText, reason: f.reason };
      return { action, ...target, reason: f.reason };
    }
    case "report":
      return { action, ip, net, verbose: f.verbose, json: f.json };
    case "list":
      // --ip=IP narrows the list like --net does (and wins over it).
      return { action, list: ip !== null ? { ...f.list, net: parseCidr(ip) } : f.list, json: f.json };
    case "scan":
    case "sync":
    case "version":
      return { action, verbose: f.verbose };
    case "test-log":
      return { action, file: f.file, missed: f.missed };
    case "install":
      return { action, write: f.write, force: f.force, timer: f.timer };
    case "update":
      return { action, check: f.check, force: f.force };
    case "completion":
      return { action, shell: f.shell };
    case "resync":
    case "uninstall":
    case "doctor":
    case "rollback":
    case "help":
    case "man":
      return { action };
  }
}

// ==== 5. State files ========================================================
//
//   ROOT_DIR/seen/203.0.113.9    "1795262400\n1795262460\n"   one line per connection
//   ROOT_DIR/block/203.0.113.9   "2026-11-21T10:00:00Z block by connect: ssh …"
//   ROOT_DIR/sentry.log          "2026-11-21T10:00:00Z 203.0.113.9 block connect: ssh …"
//
// Files are the truth: an administrator can `ls block/`, `rm allow/IP` or
// `wc -l seen/IP`. Three rules keep them sound under a botnet's parallel
// connects and a full disk:
//   - a seen line is one O_APPEND write, which the kernel never interleaves;
//   - every other file is written to a temporary name, fsynced and renamed,
//     so a reader sees the old or the new file, never half of one;
//   - decisions and hosts.deny are changed under one cross-process lock
//     (section 5.2), so two connects never decide one address twice and a
//     block racing a delist never drops the other's entry.

/** Everything a command needs: its settings, the system, the parsed allow list. */
export interface Ctx {
  cfg: Config;
  sys: Sys;
  allowRanges: Cidr[];
}

/**
 * allowRanges is ALLOW_IPS, loopback and the ranges allowed by hand
 * (allow/10.0.0.0_8, section 3.1), so every check of ALLOW_IPS honours
 * those too. The folder is listed on first use and again after a range is
 * allowed. A connect does not list it (allow/ may hold an entry for every
 * address that ever logged in: 10 000 names cost it 20 ms): ipStatus
 * looks for the files of the ranges that could hold the address instead.
 */
export function makeCtx(cfg: Config, sys: Sys): Ctx {
  const configured = parseAllowList(cfg.ALLOW_IPS);
  const ctx: Ctx = {
    cfg,
    sys,
    get allowRanges(): Cidr[] {
      let all = allowNetCache.get(ctx);
      if (all === undefined) {
        all = [...configured, ...listNets(ctx, "allow")];
        allowNetCache.set(ctx, all);
      }
      return all;
    },
  };
  allowConfigured.set(ctx, configured);
  return ctx;
}

/** ctx → its allowRanges with the ranges of allow/; dropped when one is allowed or delisted. */
const allowNetCache = new WeakMap<Ctx, Cidr[]>();
/** ctx → ALLOW_IPS and loopback alone (what makeCtx parsed). */
const allowConfigured = new WeakMap<Ctx, Cidr[]>();

/**
 * The allowed range (allow/NET_LEN) that holds `ip`, or null, found by
 * looking for the file of each prefix that could hold it (24 lstats for
 * IPv4, 112 for IPv6, a few µs each: no listing of allow/).
 */
export function allowedRangeOf(ctx: Ctx, ip: string): Cidr | null {
  const family = ipFamily(ip);
  const max = family === 4 ? 32 : 128;
  // netPath's path.join once, not per prefix: 24 joins cost a connect more than the 24 lstats.
  const dir = path.join(ctx.cfg.ROOT_DIR, "allow");
  const listed = ++rangeProbes.calls > RANGE_PROBE_CALLS && ctx.sys.fs === realFs ? listedAllowNets(ctx, dir) : null;
  if (listed !== null) {
    // The widest range that holds ip, as the probes below would find it first.
    let found: Cidr | null = null;
    for (const net of listed) if (inRanges(ip, [net]) && (found === null || net.bits < found.bits)) found = net;
    return found;
  }
  const value = ipToBigInt(ip);
  for (let bits = NET_MIN_BITS[family]; bits < max; bits++) {
    const net = netAround(value, family, bits);
    if (ctx.sys.fs.lstatSync(`${dir}/${netFileName(net)}`, { throwIfNoEntry: false })) return net;
  }
  return null;
}

/**
 * A connect asks allowedRangeOf about one address: 24 lstats (112 for IPv6)
 * cost less than listing an allow/ of thousands of addresses. --scan and
 * --test-log ask about thousands: a --test-log of 20 MB (11,000 addresses)
 * made 630,000 failed stats, a quarter of its time. So past
 * RANGE_PROBE_CALLS calls a process lists allow/'s ranges once and keeps
 * the list while allow/ is unchanged: one lstat of the folder an address.
 * While allow/ is changing (the last two seconds) it probes as before.
 */
const RANGE_PROBE_CALLS = 64;
const rangeProbes: { calls: number; dir: string; stamp: string; nets: Cidr[] } = { calls: 0, dir: "", stamp: "", nets: [] };

/**
 * allow/'s ranges, from one listing kept while the folder is unchanged
 * (inode, mtime, ctime, size, to the nanosecond); null while it is
 * changing: the caller probes instead. A folder changed in the last two
 * seconds is not listed: file times move in coarse ticks, so a second
 * change in the tick of the listing would leave the stamp as it was; and a
 * --scan that allows address after address would list a big allow/ again
 * after each one. It is listed once it has settled.
 */
function listedAllowNets(ctx: Ctx, dir: string): Cidr[] | null {
  const st = fs.lstatSync(dir, { bigint: true, throwIfNoEntry: false });
  if (st === undefined) return []; // no allow/: no range
  const stamp = `${st.ino}:${st.mtimeNs}:${st.ctimeNs}:${st.size}`;
  if (rangeProbes.dir === dir && rangeProbes.stamp === stamp) return rangeProbes.nets;
  if (Date.now() - Number(st.mtimeNs / 1_000_000n) < 2000) return null; // the file system's clock, not ctx's
  rangeProbes.nets = listNets(ctx, "allow");
  rangeProbes.dir = dir;
  rangeProbes.stamp = stamp; // taken before the listing: a change during it moves the stamp, and the list is not used again
  return rangeProbes.nets;
}

export type Dir = "seen" | "allow" | "block";
const STATE_DIRS: Dir[] = ["seen", "allow", "block"];

/** ROOT_DIR/dir/ip. `ip` must be canonical: parseIp made it, so it is a safe file name. */
export function statePath(ctx: Ctx, dir: Dir, ip: string): string {
  return path.join(ctx.cfg.ROOT_DIR, dir, ip);
}

/** A file-system failure as the one error type, naming the path (exit 2). */
export function ioError(what: string, file: string, e: unknown): SentryError {
  // O_NOFOLLOW refuses a symlink with ELOOP, whose text ("too many levels of
  // symbolic links") would hide what is wrong.
  if (errCode(e) === "ELOOP") return new SentryError(`cannot ${what} ${file}: it is a symbolic link, and sentry follows none inside ROOT_DIR (someone may be trying to make it write elsewhere): remove it`, 2);
  return new SentryError(`cannot ${what} ${file}: ${errText(e)}`, 2);
}

/**
 * Creates ROOT_DIR (0750: the logs' evidence and the addresses of every
 * client are not for every local user) and its three folders. Called only
 * when a write found them missing, so a connect costs no mkdir calls.
 */
export function ensureRoot(ctx: Ctx): void {
  const root = ctx.cfg.ROOT_DIR;
  for (const dir of [root, ...STATE_DIRS.map((d) => path.join(root, d))]) {
    try {
      try {
        ctx.sys.fs.mkdirSync(dir, { mode: 0o750 });
      } catch (e) {
        // ROOT_DIR's parents (/var/db) may be missing on a new system. (Not
        // recursive from the start: Node then reports a read-only disk as ENOENT.)
        if (dir !== root || errCode(e) !== "ENOENT") throw e;
        ctx.sys.fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o755 });
        ctx.sys.fs.mkdirSync(dir, { mode: 0o750 });
      }
    } catch (e) {
      if (errCode(e) === "EEXIST") {
        const st = ctx.sys.fs.statSync(dir, { throwIfNoEntry: false });
        if (st && st.isDirectory()) continue;
        throw new SentryError(`cannot use ${dir}: it exists and is not a directory`, 2);
      }
      throw ioError("create", dir, e);
    }
  }
}

/** Runs `fn`; if it failed because ROOT_DIR or a folder is missing, creates them and runs it again. */
function withRoot<T>(ctx: Ctx, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (errCode(e) !== "ENOENT") throw e;
    ensureRoot(ctx);
    return fn();
  }
}

/** The clock as epoch seconds (the unit of seen lines). */
export function epoch(ctx: Ctx): number {
  return Math.floor(ctx.sys.now() / 1000);
}

/** ISO 8601 time for humans, to the second. */
export function isoTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * Appends one connection to seen/IP and returns how many it now holds.
 * One write() of one short line on an O_APPEND descriptor: 40 parallel
 * connects of one address leave exactly 40 lines.
 */
export function recordConnection(ctx: Ctx, ip: string): number {
  const file = statePath(ctx, "seen", ip);
  const fsys = ctx.sys.fs;
  const line = `${epoch(ctx)}\n`;
  let fd: number;
  try {
    fd = withRoot(ctx, () => fsys.openSync(file, O_APPEND_NOFOLLOW | fs.constants.O_RDWR, 0o640));
  } catch (e) {
    throw ioError("record the connection in", file, e);
  }
  try {
    fsys.writeSync(fd, line);
    noteChange(ctx, ip);
    // Count the lines the file holds now, our own included. Every line
    // sentry writes is SEEN_LINE_BYTES long, so a file of a multiple of that
    // size costs no read (an address allowed for years has megabytes here).
    const size = fsys.fstatSync(fd).size;
    if (size % SEEN_LINE_BYTES === 0) return size / SEEN_LINE_BYTES;
    const buf = Buffer.allocUnsafe(Math.min(size, 1 << 20));
    let count = 0;
    for (let pos = 0; pos < size; ) {
      const n = fsys.readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
      if (n <= 0) break;
      for (let k = 0; k < n; k++) if (buf[k] === 10) count++;
      pos += n;
    }
    return count;
  } catch (e) {
    throw ioError("record the connection in", file, e);
  } finally {
    fsys.closeSync(fd);
  }
}

/**
 * Appends "EPOCH IP" to ROOT_DIR/connections.log: a change feed that keeps
 * the report's index in sentry.db current without listing seen/ (a million
 * files take seconds to list and stat). seen/IP stays the truth: the index
 * re-reads the size of every file the feed names. Losing a line costs an
 * inexact report until the next daily rebuild, never a decision.
 */
export function noteChange(ctx: Ctx, ip: string, what = ""): void {
  const file = path.join(ctx.cfg.ROOT_DIR, CONNECTIONS_LOG);
  try {
    writeNoFollow(ctx.sys.fs, file, `${epoch(ctx)} ${ip}${what ? ` ${what}` : ""}\n`, O_APPEND_NOFOLLOW | fs.constants.O_WRONLY);
  } catch (e) {
    ctx.sys.warn(`cannot append to ${file}: ${errText(e)} (the report's index will be rebuilt)`);
  }
}

/** Every seen line sentry writes is exactly this long: "1795262400\n" (ten digits until the year 2286). */
export const SEEN_LINE_BYTES = 11;

/** The change feed of seen/ (see noteChange), and its size at which expiry rotates it. */
export const CONNECTIONS_LOG = "connections.log";
const CONNECTIONS_LOG_ROTATE_BYTES = 16 * 1024 * 1024;

/** Bytes of seen/IP read at a time: a botnet's favourite address grows without bound, the memory of counting it does not. */
const SEEN_CHUNK = 64 * 1024;

/** How many connections seen/IP holds (0 if none): its newlines, counted a chunk at a time. */
export function countConnections(ctx: Ctx, ip: string): number {
  const file = statePath(ctx, "seen", ip);
  const fsys = ctx.sys.fs;
  let fd: number;
  try {
    fd = fsys.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    if (errCode(e) === "ENOENT") return 0;
    throw ioError("read", file, e);
  }
  try {
    const buf = Buffer.allocUnsafe(Math.min(SEEN_CHUNK, Math.max(1, fsys.fstatSync(fd).size)));
    let n = 0;
    for (let got = fsys.readSync(fd, buf, 0, buf.length, null); got > 0; got = fsys.readSync(fd, buf, 0, buf.length, null))
      for (let i = buf.indexOf(10); i !== -1 && i < got; i = buf.indexOf(10, i + 1)) n++;
    return n;
  } catch (e) {
    throw ioError("read", file, e);
  } finally {
    fsys.closeSync(fd);
  }
}

export type Status = "allowed" | "blocked" | null;

/** Whether an address is allowed (allow/IP, ALLOW_IPS or loopback), blocked, or neither. */
export function ipStatus(ctx: Ctx, ip: string): Status {
  const configured = allowConfigured.get(ctx);
  if (configured === undefined ? inRanges(ip, ctx.allowRanges) : inRanges(ip, configured) || allowedRangeOf(ctx, ip) !== null) return "allowed";
  const fsys = ctx.sys.fs;
  if (fsys.existsSync(statePath(ctx, "allow", ip))) return "allowed";
  if (fsys.existsSync(statePath(ctx, "block", ip))) return "blocked";
  return null;
}

/**
 * Writes `text` to `file` so that no reader ever sees a partial file: a
 * temporary file beside it, fsync, rename. On failure the temporary file is
 * removed and the old file is untouched.
 */
export function writeAtomic(ctx: Ctx, file: string, text: string, mode = 0o640): void {
  const fsys = ctx.sys.fs;
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  let fd: number | null = null;
  try {
    fd = withRoot(ctx, () => fsys.openSync(tmp, O_WRITE_NOFOLLOW, mode));
    fsys.writeSync(fd, text);
    fsys.fsyncSync(fd);
    fsys.closeSync(fd);
    fd = null;
    fsys.renameSync(tmp, file);
  } catch (e) {
    if (fd !== null) fsys.closeSync(fd);
    try {
      fsys.unlinkSync(tmp);
    } catch (e2) {
      if (errCode(e2) !== "ENOENT") ctx.sys.warn(`cannot remove ${tmp}: ${errText(e2)}`);
    }
    throw ioError("write", errCode(e) === "ELOOP" ? tmp : file, e);
  }
}

/**
 * The text of a small file of ROOT_DIR, opened without following a symlink
 * (ROOT_DIR's files are sentry's own: a link there is someone's attempt to
 * make root read or write elsewhere). Throws what the file system throws
 * (ENOENT, ELOOP for a symlink).
 */
export function readStateFile(ctx: Ctx, file: string, encoding: "utf8" | "latin1" = "utf8"): string {
  const fsys = ctx.sys.fs;
  const fd = fsys.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    return fsys.readFileSync(fd, encoding);
  } finally {
    fsys.closeSync(fd);
  }
}

/** Removes a file; true if it was there. */
export function removeFile(ctx: Ctx, file: string): boolean {
  try {
    ctx.sys.fs.unlinkSync(file);
    return true;
  } catch (e) {
    if (errCode(e) === "ENOENT") return false;
    throw ioError("remove", file, e);
  }
}

/**
 * The canonical addresses in allow/ or block/. Anything else found there
 * (a temporary file, an admin's note, a name that is not an address) is
 * passed over: only what parseIp re-creates exactly may reach hosts.deny.
 */
export function listDir(ctx: Ctx, dir: Dir): string[] {
  return folderNames(ctx, dir).filter((n) => parseIp(n) === n);
}

/** The names in folder `sub` of ROOT_DIR, as they are ([] if it does not exist yet); any other failure names the folder (exit 2). */
export function folderNames(ctx: Ctx, sub: string): string[] {
  const where = path.join(ctx.cfg.ROOT_DIR, sub);
  try {
    return ctx.sys.fs.readdirSync(where);
  } catch (e) {
    if (errCode(e) === "ENOENT") return [];
    throw ioError("list", where, e);
  }
}

/** The ranges (section 3.1) that allow/ or block/ holds as files; any other name is passed over, as in listDir. */
export function listNets(ctx: Ctx, dir: "allow" | "block"): Cidr[] {
  const out: Cidr[] = [];
  for (const n of folderNames(ctx, dir)) {
    if (n.indexOf("_") === -1) continue;
    const net = netFromFileName(n);
    if (net !== null) out.push(net);
  }
  return out;
}

/** ROOT_DIR/dir/NAME of a range (netFileName: built from parsed numbers, a safe file name). */
export function netPath(ctx: Ctx, dir: "allow" | "block", net: Cidr): string {
  return path.join(ctx.cfg.ROOT_DIR, dir, netFileName(net));
}

/** Strips what could fake a second log line or a terminal escape from text we store (log samples are attacker text). */
export function sanitize(text: string, max = 300): string {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\x00-\x1f\x7f]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/**
 * Appends one human line per decision to sentry.log: time, address, what,
 * why; queues the same for syslog and, where it is news an administrator
 * must hear, for the notifications (section 9.4), sent once the command is
 * done. Past SENTRY_LOG_ROTATE_KB the log is rotated (rotateSentryLog).
 */
export function logDecision(ctx: Ctx, ip: string, what: string, reason: string): void {
  const file = path.join(ctx.cfg.ROOT_DIR, "sentry.log");
  const now = ctx.sys.now();
  const text = sanitize(reason, 1000);
  const line = `${isoTime(now)} ${ip} ${what} ${text}\n`;
  queueNotice(ctx, { at: now, ip, what, reason: text });
  const fsys = ctx.sys.fs;
  let size = 0;
  try {
    const fd = withRoot(ctx, () => fsys.openSync(file, O_APPEND_NOFOLLOW | fs.constants.O_WRONLY, 0o640));
    try {
      // It holds what attackers typed as user names (sometimes a password):
      // not for every local user. An older sentry made it 0644.
      const st = fsys.fstatSync(fd);
      if (st.mode & 0o007) fsys.fchmodSync(fd, st.mode & 0o770);
      fsys.writeSync(fd, line);
      size = st.size + Buffer.byteLength(line);
    } finally {
      fsys.closeSync(fd);
    }
  } catch (e) {
    // The decision itself is already in the files; say so, but do not undo it.
    ctx.sys.warn(`cannot append to ${file}: ${errText(e)}`);
    return;
  }
  if (ctx.cfg.SENTRY_LOG_ROTATE_KB > 0 && size >= ctx.cfg.SENTRY_LOG_ROTATE_KB * 1024) rotateSentryLog(ctx);
}

// ---- 5.1 sentry.log rotates itself --------------------------------------------
//
//   sentry.log (10 MiB) → sentry.log.1 → sentry.log.2 … sentry.log.SENTRY_LOG_KEEP (then gone)
//
// A drop-in install has no logrotate entry, and sentry.log grew forever. The
// writer that pushes it past SENTRY_LOG_ROTATE_KB shifts the generations up,
// under the state lock, and looks again once it holds it: of a hundred
// writers that crossed the size together, one rotates, the others find a
// small sentry.log and leave it. A rename keeps the inode, so a writer that
// opened the old file a moment before still appends to it (now sentry.log.1):
// no line is lost, and only the oldest generation is ever dropped.

/** Shifts sentry.log to sentry.log.1 (and .1 to .2, …), keeping SENTRY_LOG_KEEP generations. */
export function rotateSentryLog(ctx: Ctx): void {
  const file = path.join(ctx.cfg.ROOT_DIR, "sentry.log");
  try {
    withLock(ctx, () => {
      const st = ctx.sys.fs.lstatSync(file, { throwIfNoEntry: false });
      if (!st || !st.isFile() || st.size < ctx.cfg.SENTRY_LOG_ROTATE_KB * 1024) return; // another writer rotated it
      const keep = ctx.cfg.SENTRY_LOG_KEEP;
      if (keep === 0) {
        ctx.sys.fs.unlinkSync(file);
        return;
      }
      for (let i = keep - 1; i >= 1; i--) {
        try {
          ctx.sys.fs.renameSync(`${file}.${i}`, `${file}.${i + 1}`);
        } catch (e) {
          if (errCode(e) !== "ENOENT") throw e;
        }
      }
      ctx.sys.fs.renameSync(file, `${file}.1`);
    });
  } catch (e) {
    ctx.sys.warn(`cannot rotate ${file}: ${errText(e)}`);
  }
}

// ---- 5.2 The lock ----------------------------------------------------------
//
// Node has no flock(). A SQLite `BEGIN IMMEDIATE` on a file of its own is a
// cross-process lock that waits (busy timeout) and that the kernel releases
// when a holder dies, even by SIGKILL; a lock file made with O_EXCL would
// stay behind after a crash and lock everyone out. node:sqlite is loaded
// only here and in the evidence index, never on a plain connect.

type SqliteModule = typeof import("node:sqlite");
let sqliteModule: SqliteModule | null = null;
let lockDepth = 0; // withLock is re-entrant: a delist under the lock may repair sentry.db, which locks

/** node:sqlite, loaded on first use (it costs start-up time a plain connect does not need). */
export function sqlite(): SqliteModule {
  if (sqliteModule === null) sqliteModule = process.getBuiltinModule("node:sqlite") as SqliteModule;
  return sqliteModule;
}

/**
 * Runs `fn` holding ROOT_DIR/sentry.lock; throws SentryError(2) if it cannot
 * be had in LOCK_TIMEOUT_SECONDS. With `busy` (the connect path), waits only
 * `busy.waitMs` and returns `busy.then()` if another process holds it: sshd
 * waits for every connect, and 100 connects of one address queueing here
 * for the one decision being made held sshd for up to 49 s each.
 */
export function withLock<T>(ctx: Ctx, fn: () => T, busy?: { waitMs: number; then: () => T }): T {
  if (lockDepth > 0) return fn(); // this process holds it already
  const file = path.join(ctx.cfg.ROOT_DIR, "sentry.lock");
  const { DatabaseSync } = sqlite();
  const open = () => {
    const db = withRoot(ctx, () => {
      // SQLite reports a missing folder as "unable to open": look first.
      if (!ctx.sys.fs.existsSync(ctx.cfg.ROOT_DIR)) ensureRoot(ctx);
      prepareDbFile(ctx, file, false); // the lock is in rollback-journal mode: no -wal, no -shm
      return new DatabaseSync(file, { timeout: busy ? busy.waitMs : ctx.cfg.LOCK_TIMEOUT_SECONDS * 1000 });
    });
    try {
      db.exec("BEGIN IMMEDIATE");
    } catch (e) {
      db.close();
      throw e;
    }
    return db;
  };
  let db: InstanceType<SqliteModule["DatabaseSync"]>;
  try {
    try {
      db = open();
    } catch (e) {
      // A lock file that is not a database (a disk error, an editor, a copy
      // gone wrong) would otherwise fail every block, allow and decision for
      // good. It holds nothing: move it aside, make a new one, say so.
      if (!isCorrupt(e)) throw e;
      moveLockAside(ctx, file);
      db = open();
    }
  } catch (e) {
    if (busy && isBusy(e)) return busy.then();
    // "database is locked" is SQLite's word for it: say whose lock and how long was waited.
    if (isBusy(e)) throw new SentryError(`cannot lock ${file}: another sentry process held it longer than LOCK_TIMEOUT_SECONDS (${ctx.cfg.LOCK_TIMEOUT_SECONDS} s); try again`, 2);
    throw new SentryError(`cannot lock ${file}: ${errText(e)}`, 2);
  }
  lockDepth++;
  let failed = false;
  try {
    return fn();
  } catch (e) {
    failed = true;
    throw rollbackAfter(db, e); // fn's error wins over the ROLLBACK's
  } finally {
    lockDepth--;
    try {
      // Releases the lock. Nothing was written through this handle, so this
      // ROLLBACK undoes nothing, and if it fails, that is the call's error.
      if (!failed) db.exec("ROLLBACK");
    } finally {
      db.close();
    }
  }
}

/** SQLite's "database is locked" (SQLITE_BUSY, 5): another process holds the lock. */
export function isBusy(e: unknown): boolean {
  const code = e instanceof Error ? (e as { errcode?: unknown }).errcode : undefined;
  return typeof code === "number" && (code & 0xff) === 5; // and its extended codes (SQLITE_BUSY_RECOVERY, …)
}

/**
 * Moves a corrupt sentry.lock to sentry.lock.corrupt-TIME. sentry itself
 * only ever leaves it empty (a lock writes no page), so a file that is
 * empty or starts with SQLite's header is one another process has just
 * recreated: that one is left alone. The lock cannot guard its own repair;
 * the window left (between that look and the rename) is microseconds, once,
 * and costs at worst one hosts.deny rewrite, which the next connect of the
 * address heals (connect, step 2).
 */
function moveLockAside(ctx: Ctx, file: string): void {
  const fsys = ctx.sys.fs;
  const head = Buffer.alloc(16);
  let n = 0;
  try {
    const fd = fsys.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      n = fsys.readSync(fd, head, 0, 16, 0);
    } finally {
      fsys.closeSync(fd);
    }
  } catch (e) {
    if (errCode(e) === "ENOENT") return;
    throw ioError("read", file, e);
  }
  if (n === 0 || head.toString("latin1") === "SQLite format 3\0") return;
  const aside = `${file}.corrupt-${isoTime(ctx.sys.now()).replace(/[-:]/g, "")}`;
  try {
    fsys.renameSync(file, aside);
  } catch (e) {
    if (errCode(e) === "ENOENT") return;
    throw ioError("move aside", file, e);
  }
  const note = `${file} was not a usable lock: moved to ${aside}, a new one is made`;
  ctx.sys.warn(note);
  logDecision(ctx, "-", "repair", note);
}

// ---- 5.3 Forgiven: a delist survives the loss of sentry.db -------------------
//
//   ROOT_DIR/delisted/203.0.113.9
//     {"at":1795262400123,"by":"admin","logs":{"2049:131077":5321900}}
//
// A delist (or an expiry) sets aside the address's tallies in sentry.db. But
// sentry.db is an index the manual says may be deleted: rebuilt, it would
// read the same old lines again, and the next connect would block the
// address once more on evidence already forgiven. So the files remember
// when it was forgiven ("at", epoch ms) and how far each log then reached
// ("logs": "dev:ino" of each log file → its size then), and a line about a
// forgiven address is not counted if it is from before that:
//   - a line with a full timestamp (RFC 3339 syslog; the journal's own
//     __REALTIME_TIMESTAMP) is old if stamped at or before "at";
//   - any other line (a classic syslog stamp has no year and no zone; `sshd
//     -E` writes none) is old if it lies below the size its file had then.
//     Byte positions of one inode only grow, so this is exact; a file that
//     was emptied in place (copytruncate) and written again reads as old
//     up to that size: in the forgiven address's favour, which is the side
//     to err on, since forgiving is what the administrator asked for;
//   - a file that was not there then (a rotation made it since) is new.
// The marker stays until the next delist of the address overwrites it.

/** When an address was last forgiven, and how far each log reached then. */
export interface Forgiven {
  at: number; // epoch ms
  logs: Record<string, number>; // "dev:ino" → size in bytes
  all?: boolean; // the marker could not be read: every line of the address is passed over
}

/** Looks up the forgiven addresses of one scan: one readdir, then a read per address met. */
export interface ForgivenLookup {
  names: Set<string>;
  get(ip: string): Forgiven | null;
}

export const DELISTED_DIR = "delisted";

/** "dev:ino", the identity of a log file across renames. */
export function fileIdent(st: { dev: number; ino: number }): string {
  return `${st.dev}:${st.ino}`;
}

/** Writes ROOT_DIR/delisted/IP: now, and the size of every log file sentry reads. Call under withLock. */
export function writeForgiven(ctx: Ctx, ip: string, by: string): void {
  const dir = path.join(ctx.cfg.ROOT_DIR, DELISTED_DIR);
  try {
    ctx.sys.fs.mkdirSync(dir, { mode: 0o750 });
  } catch (e) {
    if (errCode(e) !== "EEXIST") throw ioError("create", dir, e);
  }
  const logs: Record<string, number> = {};
  for (const src of logSources(ctx.cfg, ctx.sys.fs)) {
    if (src.kind !== "file") continue;
    const st = ctx.sys.fs.statSync(src.path, { throwIfNoEntry: false });
    if (st && st.isFile()) logs[fileIdent(st)] = st.size;
  }
  const f: Forgiven = { at: ctx.sys.now(), logs };
  writeAtomic(ctx, path.join(dir, ip), `${JSON.stringify({ ...f, by: sanitize(by, 100) })}\n`);
}

/**
 * Reads ROOT_DIR/delisted/IP; null if absent. A marker that cannot be read
 * or parsed passes over every line of that address (guessing could block
 * an address the administrator forgave), says so on stderr and in
 * sentry.log, and leaves every other address's evidence alone (failing the
 * whole read would switch protection off for all).
 */
export function readForgiven(ctx: Ctx, ip: string): Forgiven | null {
  const file = path.join(ctx.cfg.ROOT_DIR, DELISTED_DIR, ip);
  const unusable = (why: string): Forgiven => {
    const note = `${file} is not a usable delist marker (${why}): none of ${ip}'s log lines count until it is removed or ${ip} is delisted again`;
    ctx.sys.warn(note);
    logDecision(ctx, ip, "warning", note);
    return { at: 0, logs: {}, all: true };
  };
  let text: string;
  try {
    text = readStateFile(ctx, file);
  } catch (e) {
    if (errCode(e) === "ENOENT") return null;
    return unusable(ioError("read", file, e).message);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e; // JSON.parse throws nothing else
    return unusable(errText(e));
  }
  const o = v as { at?: unknown; logs?: unknown };
  if (typeof o !== "object" || o === null || typeof o.at !== "number" || typeof o.logs !== "object" || o.logs === null)
    return unusable('no "at" and "logs"');
  const logs: Record<string, number> = {};
  for (const [k, n] of Object.entries(o.logs)) if (typeof n === "number") logs[k] = n;
  return { at: o.at, logs };
}

/** The forgiven addresses, listed once; each marker is read on first use. */
export function forgivenLookup(ctx: Ctx): ForgivenLookup {
  const names = folderNames(ctx, DELISTED_DIR);
  const cache = new Map<string, Forgiven | null>();
  return {
    names: new Set(names.filter((n) => parseIp(n) === n)),
    get(ip) {
      if (!cache.has(ip)) cache.set(ip, readForgiven(ctx, ip));
      return cache.get(ip) ?? null;
    },
  };
}

const RFC3339_STAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)) /;

/**
 * Whether a log line about a forgiven address predates its forgiveness (see
 * above). `ident`/`at`: the file and byte offset of the line ("" for the
 * journal); `stampMs`: the time the journal gives the entry, or null.
 */
export function isForgivenLine(f: Forgiven | null, line: string, ident: string, at: number, stampMs: number | null): boolean {
  if (f === null) return false;
  if (f.all) return true;
  if (stampMs !== null) return stampMs <= f.at;
  const m = RFC3339_STAMP.exec(line);
  if (m) {
    const t = Date.parse(m[1].replace(/([+-]\d\d)(\d\d)$/, "$1:$2"));
    if (Number.isFinite(t)) return t <= f.at;
  }
  const size = f.logs[ident];
  return size !== undefined && at < size;
}

// ---- 5.4 Strict modes ---------------------------------------------------------
//
//   ROOT_DIR drwxrwxrwx root   → "… is writable by group or others (mode 0777): run chmod go-w ROOT_DIR"
//   sentry.conf owned by nobody → "… is owned by uid 65534, not by root: run chown root …"
//   seen/IP → /etc/shadow      → "cannot record … : it is a symbolic link …"
//
// sentry runs as root and writes into ROOT_DIR on every connection. If
// another user can write there, they can make root append to any file
// (seen/IP, sentry.log or connections.log as a symlink), overwrite one
// (scan.stamp, expire.stamp), turn blocking off (a sentry.conf saying
// ALLOW_IPS=0.0.0.0/0), or allow themselves (allow/IP). So, as sshd's
// StrictModes does for ~/.ssh, ROOT_DIR, its folders and sentry.conf must be
// owned by root (or the user running sentry) and not writable by group or
// others, and so must every folder above ROOT_DIR (one that others may
// write, like /tmp, only with its sticky bit, which keeps them from renaming
// what is not theirs); else every command refuses to act. And every file
// sentry opens in ROOT_DIR is opened with O_NOFOLLOW (SQLite's files are
// lstat'ed first: node:sqlite takes no flags), so a link planted before the
// modes were fixed is an error naming it, never followed.
//
// Cost on a connect: one stat per folder above ROOT_DIR (3 for
// /var/db/sentry), one lstat of ROOT_DIR and of each of its 4 folders, and
// an fstat of sentry.conf's descriptor if there is one; about 10 µs.

/** Flags of an append that creates and follows no link (seen/IP, sentry.log, connections.log). */
const O_APPEND_NOFOLLOW = fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
/** Flags of a write that creates or truncates and follows no link (temporary files, stamps). */
const O_WRITE_NOFOLLOW = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW;

/** The folders of ROOT_DIR that strict modes check (STATE_DIRS and the delist markers). */
const STRICT_DIRS = ["seen", "allow", "block", "delisted", "history"];

/** Writes `text` to `file` opened with `flags` (one of the two above), created 0640. Throws what the file system throws. */
function writeNoFollow(fsys: FsTable, file: string, text: string, flags: number): void {
  const fd = fsys.openSync(file, flags, 0o640);
  try {
    fsys.writeSync(fd, text);
  } finally {
    fsys.closeSync(fd);
  }
}

/** Why `p` with stat `st` may not be trusted by uid `uid`, with the fix; "" if it may. */
export function strictProblem(p: string, st: { uid: number; mode: number }, uid: number, stickyOk: boolean): string {
  if (st.uid !== 0 && st.uid !== uid)
    return `${p} is owned by uid ${st.uid}, not by root${uid !== 0 ? ` or uid ${uid}` : ""}, so its owner can subvert sentry: run chown root ${p}`;
  if (st.mode & 0o022 && !(stickyOk && st.mode & 0o1000)) {
    const who = (st.mode & 0o022) === 0o022 ? "group and others" : st.mode & 0o020 ? "group" : "others";
    return `${p} is writable by ${who} (mode ${(st.mode & 0o7777).toString(8).padStart(4, "0")}), so they can subvert sentry: run chmod go-w ${p}`;
  }
  return "";
}

/**
 * Throws SentryError(2) naming the path and the fix if ROOT_DIR, a folder
 * of it or a folder above it may be written by someone other than root and
 * `uid`. A ROOT_DIR that does not exist yet is fine (sentry makes it 0750).
 */
export function checkStrictModes(root: string, fsys: FsTable, uid: number): void {
  const fail = (msg: string) => {
    throw new SentryError(`strict modes: ${msg}`, 2);
  };
  const look = (p: string, follow: boolean) => {
    try {
      return follow ? fsys.statSync(p, { throwIfNoEntry: false }) : fsys.lstatSync(p, { throwIfNoEntry: false });
    } catch (e) {
      throw ioError("check the owner and mode of", p, e);
    }
  };
  for (let dir = path.dirname(root); ; dir = path.dirname(dir)) {
    const st = look(dir, true);
    if (st) {
      const bad = strictProblem(dir, st, uid, true);
      if (bad) fail(bad);
    }
    if (dir === path.dirname(dir)) break;
  }
  const st = look(root, false);
  if (!st) return;
  if (st.isSymbolicLink()) fail(`ROOT_DIR ${root} is a symbolic link: set ROOT_DIR to the folder it points to`);
  if (!st.isDirectory()) fail(`ROOT_DIR ${root} is not a folder`);
  const bad = strictProblem(root, st, uid, false);
  if (bad) fail(bad);
  for (const d of STRICT_DIRS) {
    const p = path.join(root, d);
    const sd = look(p, false);
    if (!sd) continue;
    if (!sd.isDirectory()) fail(`${p} is ${sd.isSymbolicLink() ? "a symbolic link" : "not a folder"}: it must be a folder of its own; remove it`);
    const bad2 = strictProblem(p, sd, uid, false);
    if (bad2) fail(bad2);
  }
}

/**
 * Before node:sqlite opens ROOT_DIR/name (it takes no O_NOFOLLOW): a link
 * there is an error naming it; a missing file is made 0600 (SQLite would
 * make it 0644, and sentry.db holds what attackers typed); an existing one
 * readable by others, and its -wal and -shm, are made 0600 (SQLite gives
 * those the main file's mode when it makes them).
 */
export function prepareDbFile(ctx: Ctx, file: string, wal = true): void {
  const fsys = ctx.sys.fs;
  for (const suffix of wal ? ["", "-wal", "-shm"] : [""]) {
    const p = file + suffix;
    const st = fsys.lstatSync(p, { throwIfNoEntry: false });
    if (!st) {
      if (suffix !== "") continue;
      try {
        fsys.closeSync(fsys.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600));
      } catch (e) {
        if (errCode(e) !== "EEXIST") throw ioError("create", p, e);
      }
      continue;
    }
    if (!st.isFile()) throw new SentryError(`cannot open ${p}: it is ${st.isSymbolicLink() ? "a symbolic link, and sentry follows none inside ROOT_DIR" : "not a regular file"}: remove it`, 2);
    if (st.mode & 0o077) {
      try {
        fsys.chmodSync(p, 0o600);
      } catch (e) {
        throw ioError("make private (chmod 0600)", p, e);
      }
    }
  }
}

// ==== 6. Evidence: reading log lines safely =================================
//
// Input → output, one line at a time:
//
//   Nov 21 10:00:00 host sshd[123]: Invalid user admin from 203.0.113.9 port 4242
//     => sshd: ssh 203.0.113.9 naughty ssh.invalid-user
//   Nov 21 10:00:01 host CRON[99]: pam_unix(cron:session): session opened for user root
//     => sshd: none: not a watched program (CRON)
//
// SAMPLES. Every real log line quoted in this file's comments is followed
// by what the classifier makes of it, in one fixed form that
// test/samples.test.ts reads and checks (so a comment cannot lie):
//
//   <the line, exactly as a log holds it>
//     "=> PROGRAM: SERVICE ADDRESS KIND RULE" when it is evidence, or
//     "=> PROGRAM: none: REASON", REASON being explainLine's why, exactly;
//     either may end in a remark: three spaces, then "(...)".
//
// PROGRAM is the program a line without a syslog prefix is read as (the
// setting's default: sshd for `sshd -E FILE` or the journal's MESSAGE).
// A sample that starts with "PROGRAM[PID]: " or "PROGRAM: " is the tail of
// a syslog line, and is read after a timestamp and a host. Consecutive
// samples are read in order with one ClassifierState, as one log would be
// (BSD ftpd's login lines need their connection line above them).
//
// This section is pure: it takes a line of text and returns what the line
// proves about one address, or null. Reading files, cursors and tallies live
// elsewhere. `classifyLine` is what the scanner calls; `explainLine` is the
// same thing with a human reason attached, for `sentry --test-log`.
//
// Kinds, from the point of view of the decision (section "Connect: the
// decision" of DESIGN.md):
//
//   success  a login succeeded. Allows the address for good, so this is the
//            kind an attacker most wants to forge: every success rule is
//            anchored at BOTH ends of the message and refuses ambiguity.
//   naughty  invalid/unknown/not-allowed user, any attempt on root, an
//            exceeded attempt limit, a failed mail login. One blocks.
//   failed   an ordinary failed authentication of an existing user.
//   probe    a connection that never tried to authenticate (scanners,
//            banner grabbers, key-exchange failures, OpenSSH 9.8+ penalties).
//
// ---------------------------------------------------------------------------
// THE RULE OF THIS SECTION — read before changing anything below.
//
// A log line is attacker-influenced text. sshd escapes control characters
// but not spaces, and logs a user name of up to 100 characters unquoted, so
// a client can make its user name `x from 203.0.113.9 port 22 ssh2`, or
// `Accepted`, or `2001:db8::1`. Mail and FTP daemons log user names the same
// way. So each line is parsed by the fixed structure its daemon writes:
//
//   1. the program, taken from the syslog prefix (which the syslog daemon,
//      not the client, writes) — cheap, and it drops ~all foreign lines;
//   2. the fixed start of the message (`Invalid user `, `Failed password
//      for `), which the daemon writes before any client text;
//   3. the address at the position the daemon writes it: counted FROM THE
//      END when client text comes before it (sshd), or from the start when
//      client text comes after it (Postfix, ProFTPD, Pure-FTPd, penalties).
//
// An address is never searched for as a substring or a regex anywhere in
// the line (`1.2.3.4` must not be found in `11.2.3.45`). The field that was
// cut out goes through parseIp(), the same validator that guards file names;
// if it is not exactly one address the line is ignored. A line whose shape
// does not fit is ignored, never guessed at. Where client text can sit on
// BOTH sides of the address (sshd key info, vsftpd's anonymous password),
// the parser only accepts a line it can read one way; two readings → null.
//
// Which mistake is safe: calling the attacker's own line `failed` instead of
// `naughty` (or the reverse) only changes how soon the attacker is blocked.
// Crediting or blaming ANOTHER address is never acceptable: a forged
// `success` would allow the attacker's next address, a forged `naughty`
// would let a client block the administrator's address.
//
// What is outside this parser's reach: a local user can write any line with
// `logger -t sshd ...`. Reading the journal with _UID/_COMM checks, or a
// log file only root can write to, is the reader's job, not this one's.
// ---------------------------------------------------------------------------


export type Service = "ssh" | "ftp" | "smtp" | "mua"; // smtp = Postfix SASL; mua = Dovecot/vpopmail IMAP/POP3
export type Kind = "success" | "failed" | "naughty" | "probe";

/** What one log line proves about one address. `user` is client text: display it escaped, never use it in a path. */
export interface Evidence {
  service: Service;
  ip: string;
  kind: Kind;
  rule: string;
  user?: string;
  /** A password guess (sshd: a failed password or keyboard-interactive attempt, not a key): GUESS_THRESHOLD counts these (section 7.1.2). */
  guess?: boolean;
  /** The client's port, where the line names one: with `ip`, which connection the line belongs to (section 7.1.2). */
  port?: string;
  /** This line ends the connection `port` (sshd's preauth close and disconnect lines). */
  ends?: boolean;
}

/**
 * Memory a classifier needs between lines of one log. BSD ftpd: its login
 * lines name the client by host name, and only the earlier `connection from
 * HOST (IP)` line of the same pid gives the address. sshd with PAM
 * keyboard-interactive: which PAM failures sshd has not (yet) logged a
 * `Failed` line of its own for, and which connections had PAM failures
 * (see 6.4, "PAM failures"). Bounded: at most FTPD_PIDS_MAX / SSH_PAM_MAX
 * entries each, oldest dropped first.
 */
export interface ClassifierState {
  ftpdConnections: Map<string, { host: string; ip: string }>;
  /** "pid NUL ip NUL user" → PAM failure lines not yet matched by a `Failed keyboard-interactive` line */
  sshPamUnmatched: Map<string, number>;
  /** "ip NUL user" → PAM failures since that client's last connection-closed line */
  sshPamFailures: Map<string, number>;
}

/** Longest line worth reading. Real auth lines are under 1 KiB; a longer one is garbage or an attack on the parser. */
export const MAX_LINE_CHARS = 8192;
/** BSD ftpd pids remembered (a few dozen bytes each). */
export const FTPD_PIDS_MAX = 4096;
/** sshd PAM attempts remembered per map (a few dozen bytes each). */
export const SSH_PAM_MAX = 4096;

export function newClassifierState(): ClassifierState {
  return { ftpdConnections: new Map(), sshPamUnmatched: new Map(), sshPamFailures: new Map() };
}

/** Sets `key` in a Map used as a bounded age-ordered memory: re-inserted at the end, oldest dropped past `max`. */
function remember<V>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) {
    const oldest = map.keys().next();
    if (oldest.done) break;
    map.delete(oldest.value);
  }
}

// ---- 6.1 The syslog prefix --------------------------------------------------
//
// Four shapes reach us:
//
//   none (sshd -E FILE, journalctl -o cat):
//     Invalid user admin from 203.0.113.9 port 4242
//       => sshd: ssh 203.0.113.9 naughty ssh.invalid-user
//   classic syslog (RFC 3164; also journalctl -o short; the host and a
//   facility.level word are optional — some syslogds omit the first and add
//   the second; Dovecot's own log_path file has no host):
//     Nov 21 10:00:00 host sshd[123]: Invalid user admin from 203.0.113.9 port 4242
//       => sshd: ssh 203.0.113.9 naughty ssh.invalid-user
//     Nov 23 21:50:19 sshd[8148]: Invalid user admin from 203.0.113.9 port 4242
//       => sshd: ssh 203.0.113.9 naughty ssh.invalid-user
//     May 29 15:21:53 gr auth.info sshd-session[25292]: Invalid user admin from 203.0.113.9 port 4242
//       => sshd: ssh 203.0.113.9 naughty ssh.invalid-user
//     Jun 12 19:24:38 imap-login: Info: Login aborted: Connection closed (auth failed, 3 attempts in 15 secs) (auth_failed): user=<eft>, method=PLAIN, rip=80.51.181.144, lip=127.4.20.69, TLS, session=<25Nw4GQ3Ms9QM7WQ>
//       => dovecot: mua 80.51.181.144 naughty mail.dovecot-auth-failed
//   RFC 3339 (rsyslog's default on newer systems; journalctl -o short-iso
//   writes +0000 without the colon; some writers drop the zone):
//     2026-11-21T10:00:00.123456+00:00 host sshd[123]: Invalid user admin from 203.0.113.9 port 4242
//       => sshd: ssh 203.0.113.9 naughty ssh.invalid-user
//   vsftpd's own log file (vsftpd.log, ctime date, no program field):
//     Fri Jan 19 12:20:33 2007 [pid 27202] [anonymous] FAIL LOGIN: Client "64.106.46.98"
//       => vsftpd: ftp 64.106.46.98 failed ftp.vsftpd-failed
//
// The prefix is written by the syslog daemon, so the program found here is
// trustworthy as far as the log file is (see "outside this parser's reach").
// A line that does not start with a timestamp is taken as unprefixed: daemon
// messages never start with a month name or a year.

const CLASSIC_TS = /^[A-Z][a-z]{2} {1,2}\d{1,2} \d\d:\d\d:\d\d /;
const RFC3339_TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)? /;
const CTIME_TS = /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} /;
// "prog[pid]: ", "prog: ", or (seen from ProFTPD through some syslogds) "prog[pid] ".
const PROGRAM_FIELD = /^([^\s[\]:]{1,64})(?:\[(\d{1,10})\])?(:?)(?: |$)/;
const FACILITY_LEVEL = /^[a-z0-9]{2,10}\.[a-z]{3,7} /;

/**
 * Splits the syslog prefix: none (`sshd -E FILE`, `journalctl -o cat`),
 * classic (`Nov 21 10:00:00 host prog[pid]: msg`), RFC 3339
 * (`2026-11-21T10:00:00.123456+00:00 host prog[pid]: msg`), and vsftpd's own
 * ctime-dated log. For a line with no prefix, program = defaultProgram.
 * Null when a timestamp is there but no program field follows it.
 */
export function splitLine(line: string, defaultProgram: string): { program: string; pid: string; message: string } | null {
  const r = splitPrefix(line, defaultProgram);
  return r && { program: r.program, pid: r.pid, message: r.message };
}

/**
 * splitLine, and which prefix the line had: "none" (no timestamp), "host"
 * (timestamp, host, program: what a syslog daemon writes) or "hostless"
 * (timestamp then program: some syslogds, and logs programs write
 * themselves, like Dovecot's log_path and vsftpd.log). sshd reaches a file
 * only through syslog, so its successes are taken from "none" (sshd -E,
 * the journal's MESSAGE) and "host" lines only (see parseSshd).
 */
function splitPrefix(line: string, defaultProgram: string): { program: string; pid: string; message: string; prefix: "none" | "host" | "hostless" } | null {
  let ts = CLASSIC_TS.exec(line) ?? RFC3339_TS.exec(line);
  if (!ts) {
    const ct = CTIME_TS.exec(line);
    if (ct) {
      // vsftpd.log: the pid, if any, is inside the message as "[pid N] ".
      return { program: defaultProgram, pid: "", message: line.slice(ct[0].length), prefix: "hostless" };
    }
    return { program: defaultProgram, pid: "", message: line, prefix: "none" };
  }
  let rest = line.slice(ts[0].length);
  let prefix: "host" | "hostless" = "hostless";
  // Either "prog[pid]: msg" straight away (no host), or "host [fac.level ]prog[pid]: msg".
  let p = PROGRAM_FIELD.exec(rest);
  if (!p || (p[3] !== ":" && p[2] === undefined)) {
    const sp = rest.indexOf(" ");
    if (sp <= 0) return null;
    rest = rest.slice(sp + 1);
    const fl = FACILITY_LEVEL.exec(rest);
    if (fl) rest = rest.slice(fl[0].length);
    p = PROGRAM_FIELD.exec(rest);
    // Without a colon the field is only a program if it carries a [pid].
    if (!p || (p[3] !== ":" && p[2] === undefined)) return null;
    prefix = "host";
  }
  return { program: p[1], pid: p[2] ?? "", message: rest.slice(p[0].length), prefix };
}

// ---- 6.2 Which program, which service ---------------------------------------
//
// A cheap lookup on the program name comes before any regex, so the ~99% of
// a busy log that is cron, kernel, systemd... costs one Map lookup.
//
// DAEMONS and LOG_GROUPS are the one list of what sentry reads: the parser
// (familyOf), the journal reader (JOURNAL_IDENTS: `journalctl -t`), the
// choice of log files (USUAL_LOGS, DEFAULT_PROGRAM for lines without a
// syslog prefix), --test-log and --doctor's count of "lines of its daemons"
// are all derived from them. Four hand-kept lists had drifted (vpopmail,
// dovecot-auth and submission-login were parsed but not read from the
// journal nor counted by --doctor): add a daemon here, and only here.

type DaemonFamily = "sshd" | "vsftpd" | "proftpd" | "pureftpd" | "bsdftpd" | "dovecot" | "postfix" | "vpopmail";

/** Where a group of daemons logs, as one setting: SSH_LOG, FTP_LOG, MAIL_LOG. */
export type LogGroup = "ssh" | "ftp" | "mail";

/** Every program name whose lines are parsed, its parser (family) and its group. Each is also a journal SYSLOG_IDENTIFIER. */
export const DAEMONS: readonly { program: string; family: DaemonFamily; group: LogGroup }[] = [
  // OpenSSH < 9.8 logs as sshd; 9.8+ splits the per-connection process into
  // sshd-session; 10.0 moves pre-authentication into sshd-auth.
  { program: "sshd", family: "sshd", group: "ssh" },
  { program: "sshd-session", family: "sshd", group: "ssh" },
  { program: "sshd-auth", family: "sshd", group: "ssh" },
  { program: "vsftpd", family: "vsftpd", group: "ftp" },
  { program: "proftpd", family: "proftpd", group: "ftp" },
  { program: "pure-ftpd", family: "pureftpd", group: "ftp" },
  { program: "ftpd", family: "bsdftpd", group: "ftp" },
  { program: "dovecot", family: "dovecot", group: "mail" },
  { program: "dovecot-auth", family: "dovecot", group: "mail" },
  { program: "imap-login", family: "dovecot", group: "mail" },
  { program: "pop3-login", family: "dovecot", group: "mail" },
  { program: "submission-login", family: "dovecot", group: "mail" },
  { program: "managesieve-login", family: "dovecot", group: "mail" },
  // Postfix: postfix/smtpd, postfix/submission/smtpd, postfix/smtps/smtpd;
  // multi-instance names (postfix-incoming/smtpd) are matched in familyOf,
  // but the journal can only be asked for names listed here.
  { program: "postfix/smtpd", family: "postfix", group: "mail" },
  { program: "postfix/submission/smtpd", family: "postfix", group: "mail" },
  { program: "postfix/smtps/smtpd", family: "postfix", group: "mail" },
  // vpopmail through syslog as "vpopmail[pid]: vchkpw-pop3: ...", or under a
  // log name of its own (vchkpw-*, matched in familyOf).
  { program: "vpopmail", family: "vpopmail", group: "mail" },
  { program: "vchkpw-pop3", family: "vpopmail", group: "mail" },
  { program: "vchkpw-imap", family: "vpopmail", group: "mail" },
  { program: "vchkpw-smtp", family: "vpopmail", group: "mail" },
  { program: "vchkpw-submission", family: "vpopmail", group: "mail" },
];

/** Each group: its setting, services, default program, usual files, and what --doctor says of it. */
export const LOG_GROUPS: readonly {
  name: LogGroup;
  setting: "SSH_LOG" | "FTP_LOG" | "MAIL_LOG";
  services: Service[];
  on(cfg: Config): boolean; // protected with these settings
  off: string; // the settings that stop protecting it
  defaultProgram: string; // the program of a line without a syslog prefix (sshd -E, vsftpd.log)
  usual: string[]; // where it logs, by platform, in the order tried
  daemons: string; // its daemons, in words
  hint: string; // what to check when its log shows none of their lines
}[] = [
  {
    name: "ssh",
    setting: "SSH_LOG",
    services: ["ssh"],
    on: () => true,
    off: "",
    defaultProgram: "sshd",
    usual: ["/var/log/auth.log", "/var/log/secure", "/var/log/authlog", "/var/log/secure.log", "/var/log/messages"],
    daemons: "sshd",
    hint: "check LogLevel (INFO or VERBOSE) and SyslogFacility in sshd_config",
  },
  {
    name: "ftp",
    setting: "FTP_LOG",
    services: ["ftp"],
    on: (cfg) => cfg.PROTECT_FTP,
    off: "PROTECT_FTP=0",
    defaultProgram: "vsftpd",
    usual: ["/var/log/vsftpd.log", "/var/log/proftpd/proftpd.log", "/var/log/ftp.log", "/var/log/xferlog", "/var/log/messages"],
    daemons: "an FTP server",
    hint: "check that the FTP server logs logins (vsftpd: syslog_enable=YES)",
  },
  {
    name: "mail",
    setting: "MAIL_LOG",
    services: ["smtp", "mua"],
    on: (cfg) => cfg.PROTECT_SMTP || cfg.PROTECT_MUA,
    off: "PROTECT_MUA=0 PROTECT_SMTP=0",
    defaultProgram: "dovecot",
    usual: ["/var/log/mail.log", "/var/log/maillog", "/var/log/messages"],
    daemons: "Dovecot, Postfix or vpopmail",
    hint: "check that the mail servers log logins (Dovecot: auth_verbose=yes)",
  },
];

const FAMILY_BY_PROGRAM = new Map<string, DaemonFamily>(DAEMONS.map((d) => [d.program, d.family]));

/** The parser of a program name, or null if sentry does not read that program. */
export function familyOf(program: string): DaemonFamily | null {
  const f = FAMILY_BY_PROGRAM.get(program);
  if (f) return f;
  // Postfix multi-instance names like postfix-incoming/smtpd.
  if (program.startsWith("postfix") && program.endsWith("/smtpd")) return "postfix";
  // vpopmail run under a log name of its own, e.g. vchkpw-pop3.
  if (program.startsWith("vchkpw-")) return "vpopmail";
  return null;
}

// ---- 6.3 Small helpers ------------------------------------------------------

interface Result {
  ev: Evidence | null;
  why: string;
}

function no(why: string): Result {
  return { ev: null, why };
}

/** Client text quoted for a `why`: JSON escapes control characters, and long names are cut. */
function q(text: string): string {
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}...` : text);
}

/** Builds the evidence, or refuses the line if the cut-out address is not exactly one IP. */
function found(service: Service, addr: string, kind: Kind, rule: string, why: string, user?: string): Result {
  const ip = parseIp(addr);
  if (!ip) return no(`address field is not a valid IP (${q(addr)})`);
  const ev: Evidence = { service, ip, kind, rule };
  if (user !== undefined) ev.user = user;
  return { ev, why };
}

function isDigits(s: string, max: number): boolean {
  return s.length > 0 && s.length <= max && /^\d+$/.test(s);
}

/** "A port N" or "A" (older OpenSSH), exactly. Returns A or null. */
function addrMaybePort(s: string): string | null {
  const m = /^(\S+)(?: port \d{1,5})?$/.exec(s);
  return m ? m[1] : null;
}

/**
 * "U A port N" → { user: U, addr: A }: the address is the word before the
 * final " port N", so whatever U contains (spaces, "1.2.3.4 port 22") lies
 * to its left. Null if the text does not end with "A port N".
 */
function userThenAddrPort(s: string): { user: string; addr: string } | null {
  const p = s.lastIndexOf(" port ");
  if (p < 0 || !isDigits(s.slice(p + 6), 5)) return null;
  const sp = s.lastIndexOf(" ", p - 1);
  if (sp < 0) return null;
  const addr = s.slice(sp + 1, p);
  return addr ? { user: s.slice(0, sp), addr } : null;
}

// ---- 6.4 sshd (OpenSSH 7.4 to 10) -------------------------------------------
//
// Real lines this section reads (fail2ban's test corpus, OpenSSH auth.c,
// auth2.c, packet.c, sshd.c, sshd-session.c, srclimit.c):
//
//   Accepted password for alice from 198.51.100.7 port 52100 ssh2
//     => sshd: ssh 198.51.100.7 success ssh.accepted
//   Accepted publickey for alice from 198.51.100.7 port 52100 ssh2: ED25519 SHA256:Pcs5TWfcOSKb7Rw/XyvHfUcaQzmw6HtLrjUoyXuzIj8
//     => sshd: ssh 198.51.100.7 success ssh.accepted
//   Failed password for invalid user ROOT from 194.117.26.69 port 50273 ssh2
//     => sshd: ssh 194.117.26.69 naughty ssh.failed-invalid-user
//   Failed publickey for invalid user graysky from 127.0.0.1 port 37954 ssh2: RSA SHA256:v3dpapGleDaUKf$4V1vKyR9ZyUgjaJAmoCTcb2PLljI
//     => sshd: ssh 127.0.0.1 naughty ssh.failed-invalid-user
//   Invalid user ftp from 192.0.2.2 port 37220
//     => sshd: ssh 192.0.2.2 naughty ssh.invalid-user
//   User root from 46.45.128.3 not allowed because listed in DenyUsers
//     => sshd: ssh 46.45.128.3 naughty ssh.user-not-allowed
//   error: maximum authentication attempts exceeded for root from 61.0.0.1 port 49940 ssh2 [preauth]
//     => sshd: ssh 61.0.0.1 naughty ssh.max-auth-tries
//   Disconnecting invalid user admin 192.0.2.117 port 44004: Too many authentication failures [preauth]
//     => sshd: ssh 192.0.2.117 naughty ssh.too-many-failures
//   Connection closed by authenticating user root 192.0.2.10 port 46038 [preauth]
//     => sshd: ssh 192.0.2.10 naughty ssh.closed-root
//   Connection closed by invalid user  192.0.2.68 port 34916 [preauth]
//     => sshd: ssh 192.0.2.68 naughty ssh.closed-invalid-user
//   Connection closed by 192.0.2.212 port 22 [preauth]
//     => sshd: ssh 192.0.2.212 probe ssh.closed-preauth
//   Did not receive identification string from 192.0.2.5 port 35836
//     => sshd: ssh 192.0.2.5 probe ssh.no-identification
//   banner exchange: Connection from 20.64.105.146 port 47144: invalid format
//     => sshd: ssh 20.64.105.146 probe ssh.banner-exchange
//   Unable to negotiate with 192.0.2.1 port 55419: no matching cipher found. Their offer: aes256-cbc [preauth]
//     => sshd: ssh 192.0.2.1 probe ssh.kex-negotiation
//   drop connection #13 from [192.168.133.142]:57590 on [192.168.133.132]:22 penalty: failed authentication
//     => sshd: ssh 192.168.133.142 probe ssh.penalty
//   Timeout before authentication for connection from 192.0.2.31 to 192.0.2.1, pid = 4242
//     => sshd: ssh 192.0.2.31 probe ssh.login-grace-timeout
//   error: PAM: Authentication failure for alice from 192.0.2.10
//     => sshd: ssh 192.0.2.10 failed ssh.pam-failed
//   PAM: Authentication failure for illegal user nosuchuser from 192.0.2.10
//     => sshd: ssh 192.0.2.10 naughty ssh.pam-invalid-user   (sshd -E: no "error: ")
//
// The privilege-separated child appends " [preauth]"; "error: " and
// "fatal: " are level prefixes. Both are server text and are peeled first.
//
// Where client text sits, line by line (THE RULE: one reading or none):
//   - Accepted/Failed/maximum attempts: U before the address, key info
//     (client text for some methods) after it: sshFromTail, two readings → none.
//   - Invalid user, PAM: ... for U from A, Connection closed/Disconnecting
//     ... U A port N: U before the address and only server text after it,
//     so the address is counted from the end: one reading.
//   - User U from A not allowed, banner exchange, Unable to negotiate,
//     ssh_dispatch_run_fatal, drop connection, Timeout before authentication
//     for connection: server text up to the address, read from the start.
//   - Bad protocol version identification 'JUNK' from A port N: JUNK before,
//     nothing after: from the end.

const MAX_AUTH = "maximum authentication attempts exceeded for ";
const GRACE_98 = "Timeout before authentication for connection from ";
const TOO_MANY = ": Too many authentication failures";
/** The level sshd's log functions put before some messages ("error: ", "fatal: "): same length, server text. */
const SSH_LEVEL_LEN = "error: ".length;
/** Appended by the privilege-separated child: server text. */
const PREAUTH = " [preauth]";
/** Written by sshd before U for an account that does not exist (auth.c); a client can type it too, see below. */
const INVALID_USER = "invalid user ";
/** The same for sshd's PAM line (auth-pam.c). */
const ILLEGAL_USER = "illegal user ";
const SSH_METHOD = /^[a-z0-9-]{1,32}(?:\/[a-z0-9-]{1,32})?$/;

// One "from ADDR port N[ ssh2]" field that is followed by the end of the
// line or by ": " (key info). Sticky: tried at each " from " in turn.
const FROM_FIELD = / from (\S+)(?: port (\d{1,5}))?(?: ssh[12])?(?=$|: )/y;

/**
 * Finds the address in "U from A port N ssh2[: INFO]". U is client text and
 * comes first; INFO comes last and is client text too for some methods
 * (hostbased: client user "..", client host ".."; a certificate's key ID;
 * a GSSAPI principal). So a "from A port N ssh2" field that ends the line
 * or is followed by ": " — a candidate — can be the daemon's or a forgery
 * on either side, and the line is read only when there is exactly one:
 *
 *   Failed password for x from 1.2.3.4 port 1 ssh2 from 203.0.113.9 port 5 ssh2
 *     => sshd: ssh 203.0.113.9 failed ssh.failed
 *     — the first field is followed by " from", so it is no candidate:
 *       one candidate, 203.0.113.9.
 *   Failed password for invalid user test from 127.0.0.1 port 58946 ssh2: from 10.10.1.2 port 55555 ssh2
 *     => sshd: none: ambiguous: several 'from ADDR port N' fields around client-chosen text; ignored
 *     — two candidates: either U is "test from 127.0.0.1 port 58946 ssh2:"
 *       or INFO is "from 10.10.1.2 port 55555 ssh2". Ignored.
 *
 * Ignoring such a line lets a client hide attempts made with user names
 * that hold "from ADDR port N ssh2:". No account is named so, and a
 * successful login (Accepted) always names a real account, so those
 * attempts can never succeed and nothing of value is lost.
 */
function sshFromTail(rest: string): { user: string; addr: string; port?: string } | { why: string } {
  let hit: { start: number; addr: string; port?: string } | null = null;
  let i = rest.indexOf(" from ");
  while (i !== -1) {
    FROM_FIELD.lastIndex = i;
    const m = FROM_FIELD.exec(rest);
    if (m) {
      if (hit) return { why: "ambiguous: several 'from ADDR port N' fields around client-chosen text; ignored" };
      hit = { start: i, addr: m[1], port: m[2] };
    }
    i = rest.indexOf(" from ", i + 1);
  }
  if (!hit) return { why: "sshd line without a 'from ADDR port N' field at the end" };
  return { user: rest.slice(0, hit.start), addr: hit.addr, port: hit.port };
}

/**
 * Marks `r`'s evidence as a password guess of the connection from its
 * address and `port` (section 7.1.2), or as that connection's end. The port
 * is read from the same field as the address (the one candidate of
 * sshFromTail, or counted from the end), so a client cannot name another's.
 */
function sshConn(r: Result, how: { guess?: boolean; port?: string; ends?: boolean }): Result {
  if (r.ev === null) return r;
  if (how.guess) r.ev.guess = true;
  if (how.port !== undefined && isDigits(how.port, 5)) {
    r.ev.port = how.port;
    if (how.ends) r.ev.ends = true;
  }
  return r;
}

/** "U A port N" → N, the last field; "" without one (older sshd: "A" alone). */
function tailPort(s: string): string {
  const p = s.lastIndexOf(" port ");
  return p < 0 ? "" : s.slice(p + 6);
}

// ---------------------------------------------------------------------------
// PAM failures (sshd with UsePAM yes and keyboard-interactive logins)
//
// auth-pam.c, sshpam_query(), for every failed PAM conversation:
//   error("PAM: %s for %s%.100s from %.100s", pam_strerror(...),
//         valid ? "" : "illegal user ", user, rhost)
// auth.c, auth_log(), for the same attempt: "Failed keyboard-interactive/pam
// for U from A port N ssh2" — but at LogLevel VERBOSE only, unless the user
// is invalid or the connection's failures reached MaxAuthTries/2. Measured
// against OpenSSH 9.2 (kbd-int, 3 wrong answers per connection), at INFO:
//   PAM: Authentication failure for alice from 192.0.2.10
//     => sshd: ssh 192.0.2.10 failed ssh.pam-failed
//   PAM: Authentication failure for alice from 192.0.2.10
//     => sshd: ssh 192.0.2.10 failed ssh.pam-failed
//   PAM: Authentication failure for alice from 192.0.2.10
//     => sshd: ssh 192.0.2.10 failed ssh.pam-failed
//   Connection closed by authenticating user alice 192.0.2.10 port 36379 [preauth]
//     => sshd: none: sshd: connection of "alice" closed after 3 PAM failure(s), counted on their own lines: not a probe
// and at VERBOSE: PAM: ..., then Failed keyboard-interactive/pam ..., per
// attempt; the same close line.
// So at INFO the PAM line is the only trace of a guess, and a bot guessing
// three passwords per connection looked like a string of probes.
//
// Rule: every PAM failure line counts (failed; naughty for root or an
// illegal user, as the Failed line would), and a `Failed keyboard-interactive`
// line is the same attempt as an earlier PAM line of the same process, address
// and user that no Failed line has claimed yet: it counts nothing. The PAM
// line always comes first (sshpam_query returns the failure to the caller,
// which then calls auth_log), so the pairing is a count per key, which holds
// however the attempts of several connections interleave. The key has the pid
// where the log has one (syslog; PAM and auth_log both run in the monitor
// process, so their pids agree); `sshd -E FILE` and the journal's MESSAGE have
// none, and there address + user + order decide: two connections from one
// address as one user are one client, whichever of its lines pairs up.
// The close line of a connection whose address + user had PAM failures since
// its previous close line is that connection's end, not a probe: it counts
// nothing (its [preauth] line may come from another process, sshd-auth in
// OpenSSH 10, so this match ignores the pid).
//
// What this memory does not see: lines of one connection read by two
// different runs of the scanner (the state lives for one read of one log;
// a busy server's other clients trigger reads mid-connection). Then a
// Failed line whose PAM line was read before counts too, once more for the
// same attempt of the same address (a faster block of that client), and
// the close line is a probe again (which blocks nobody): never evidence
// about another address. With UseDNS yes the PAM line names a host, not an
// address, and decides nothing; sshd's Failed lines still count.
// pam_unix's own lines (pam_unix(sshd:auth): authentication failure; ...)
// go to syslog only and repeat sshd's PAM line: they stay uncounted.
//
// pam_strerror() texts that reach this error() (PAM_AUTH_ERR, PAM_MAXTRIES,
// PAM_ACCT_EXPIRED; the success path returns before it). One of them holds
// " for ", so the message is matched whole, never cut at a " for ".
const SSH_PAM_MESSAGES = ["Authentication failure", "Have exhausted maximum number of retries for service", "User account has expired"];

function sshPamKey(pid: string, ip: string, user: string): string {
  return `${pid}\0${ip}\0${user}`;
}

/** PAM: MSG for [illegal user ]U from A — U is client text, nothing follows A: the last " from " is sshd's. */
function parseSshPam(m: string, pid: string, state: ClassifierState | undefined): Result {
  let rest: string | null = null;
  for (const text of SSH_PAM_MESSAGES) {
    if (m.startsWith(`PAM: ${text} for `)) rest = m.slice(`PAM: ${text} for `.length);
  }
  if (rest === null) return no("sshd PAM line not about a failed authentication");
  const f = rest.lastIndexOf(" from ");
  if (f < 0) return no("sshd PAM failure line without 'from ADDR'");
  const addr = rest.slice(f + 6);
  if (!/^\S+$/.test(addr)) return no("sshd PAM failure line does not end with 'from ADDR'");
  const ip = parseIp(addr);
  if (!ip) return no(`address field is not a valid IP (${q(addr)})`);
  // "illegal user " is sshd's for an account that does not exist; a client
  // typing those words gets naughty for its own address, as it deserves.
  const illegal = rest.startsWith(ILLEGAL_USER);
  const user = rest.slice(illegal ? ILLEGAL_USER.length : 0, f);
  if (state) {
    const k = sshPamKey(pid, ip, user);
    remember(state.sshPamUnmatched, k, (state.sshPamUnmatched.get(k) ?? 0) + 1, SSH_PAM_MAX);
    const c = `${ip}\0${user}`;
    remember(state.sshPamFailures, c, (state.sshPamFailures.get(c) ?? 0) + 1, SSH_PAM_MAX);
  }
  // A guess (the password or answer PAM refused); the line names no port, so
  // it counts towards GUESS_THRESHOLD but not towards one connection's.
  if (illegal) return sshConn(found("ssh", ip, "naughty", "ssh.pam-invalid-user", `sshd: PAM authentication failure for invalid user ${q(user)}`, user), { guess: true });
  if (user === "root") return sshConn(found("ssh", ip, "naughty", "ssh.pam-root", "sshd: PAM authentication failure for root", user), { guess: true });
  return sshConn(found("ssh", ip, "failed", "ssh.pam-failed", `sshd: PAM authentication failure for ${q(user)}`, user), { guess: true });
}

/** True (and the PAM line's claim used up) when a `Failed keyboard-interactive` line repeats an earlier PAM line. */
function claimSshPam(state: ClassifierState | undefined, pid: string, addr: string, user: string): boolean {
  const ip = parseIp(addr);
  if (!state || !ip) return false;
  const k = sshPamKey(pid, ip, user);
  const n = state.sshPamUnmatched.get(k) ?? 0;
  if (n <= 0) return false;
  if (n === 1) state.sshPamUnmatched.delete(k);
  else state.sshPamUnmatched.set(k, n - 1);
  return true;
}

/** A connection of `user` from `addr` ended: how many PAM failures it had (0: none remembered), forgotten now. */
function endSshPam(state: ClassifierState | undefined, addr: string, user: string): number {
  const ip = parseIp(addr);
  if (!state || !ip) return 0;
  const c = `${ip}\0${user}`;
  const n = state.sshPamFailures.get(c) ?? 0;
  state.sshPamFailures.delete(c);
  return n;
}

// The forms of one shape: a fixed lead (server text), then the address at
// one of three places, and no client text that could pass for it. Each row
// is a line sshd writes; `at` says where its address sits:
//   "rest"       the whole rest of the line is "A" or "A port N";
//   "last-from"  the rest is client text, then " from A[ port N]" ends the
//                line: nothing follows the address, so the LAST " from " is
//                sshd's own, whatever the client text holds (read from the end);
//   "head"       "A port N: " follows the lead, then server text that could
//                one day quote the client: read from the start.
// Lines of other shapes (client text on both sides of the address, a user
// field before it, conditions on the user) keep their own code in parseSshd.
interface SshdForm {
  lead: string;
  at: "rest" | "last-from" | "head";
  kind: Kind;
  rule: string;
  /** The evidence's why; a "last-from" row with `user` names the client text it holds. */
  why: string;
  /** "text": the client text before " from " is the user name; "root": the line is about root. */
  user?: "text" | "root";
  /** Evidence only with " [preauth]" (before authentication); otherwise it is about a known user. */
  preauthOnly?: boolean;
  /** How a line of this lead that does not fit is called in its why. */
  name: string;
}

const SSHD_FORMS: readonly SshdForm[] = [
  // Invalid user U from A port N   (auth.c: "Invalid user %.100s from %.100s port %d")
  { lead: "Invalid user ", at: "last-from", kind: "naughty", rule: "ssh.invalid-user", why: "sshd: invalid user", user: "text", name: "'Invalid user'" },
  // Bad protocol version identification 'JUNK' from A port N   (OpenSSH 7.x; JUNK is the client's)
  { lead: "Bad protocol version identification ", at: "last-from", kind: "probe", rule: "ssh.bad-protocol", why: "sshd: bad protocol version identification", name: "bad-protocol" },
  // Did not receive identification string from A[ port N]   (a port scanner: connected and sent nothing)
  { lead: "Did not receive identification string from ", at: "rest", kind: "probe", rule: "ssh.no-identification", why: "sshd: client sent no identification string", name: "'Did not receive identification'" },
  // Timeout before authentication for A port N   (before 9.8; see GRACE_98 for the newer form)
  { lead: "Timeout before authentication for ", at: "rest", kind: "probe", rule: "ssh.login-grace-timeout", why: "sshd: timeout before authentication", name: "timeout" },
  // ROOT LOGIN REFUSED FROM A   (old and vendor sshd builds)
  { lead: "ROOT LOGIN REFUSED FROM ", at: "rest", kind: "naughty", rule: "ssh.root-refused", why: "sshd: root login refused", user: "root", name: "root-refused" },
  // banner exchange: Connection from A port N: invalid format   (OpenSSH 8.x+)
  { lead: "banner exchange: Connection from ", at: "head", kind: "probe", rule: "ssh.banner-exchange", why: "sshd: banner exchange failed", name: "banner-exchange" },
  // Unable to negotiate with A port N: no matching cipher found. Their offer: ...   ("Their offer" is client text)
  { lead: "Unable to negotiate with ", at: "head", kind: "probe", rule: "ssh.kex-negotiation", why: "sshd: key exchange negotiation failed", name: "negotiation" },
  // ssh_dispatch_run_fatal: Connection from A port N: message authentication code incorrect [preauth]
  { lead: "ssh_dispatch_run_fatal: Connection from ", at: "head", kind: "probe", rule: "ssh.kex-fatal", why: "sshd: protocol error before authentication", preauthOnly: true, name: "dispatch-error" },
];

/** " from " and " port " as they stand between the fields of these lines. */
const FROM_SEP = " from ";
/** "A port N: " at the head of the rest of a "head" row's line. */
const HEAD_ADDR = /^(\S+) port \d{1,5}: /;

/** Reads one line of an SSHD_FORMS row (m starts with form.lead; level and [preauth] already peeled). */
function parseSshdForm(form: SshdForm, m: string, preauth: boolean): Result {
  if (form.preauthOnly && !preauth) return no(`sshd ${form.name} line not before authentication: about a known user, not evidence`);
  const rest = m.slice(form.lead.length);
  let addr: string | null;
  let user: string | undefined = form.user === "root" ? "root" : undefined;
  if (form.at === "rest") {
    addr = addrMaybePort(rest);
    if (!addr) return no(`sshd ${form.name} line without 'ADDR port N'`);
  } else if (form.at === "head") {
    const r = HEAD_ADDR.exec(rest);
    if (!r) return no(`sshd ${form.name} line without 'ADDR port N:'`);
    addr = r[1];
  } else {
    // The lead ends in a space, which may be the one " from " starts with
    // (an empty user name: "Invalid user  from A").
    const f = m.lastIndexOf(FROM_SEP);
    if (f < form.lead.length - 1) return no(`sshd ${form.name} line without 'from ADDR'`);
    addr = addrMaybePort(m.slice(f + FROM_SEP.length));
    if (!addr) return no(`sshd ${form.name} line does not end with 'from ADDR port N'`);
    if (form.user === "text") user = m.slice(form.lead.length, Math.max(form.lead.length, f));
  }
  return found("ssh", addr, form.kind, form.rule, form.user === "text" && user !== undefined ? `${form.why} ${q(user)}` : form.why, user);
}

function parseSshd(msg: string, pid = "", prefix: "none" | "host" | "hostless" = "none", state?: ClassifierState): Result {
  let m = msg;
  if (m.startsWith("error: ") || m.startsWith("fatal: ")) m = m.slice(SSH_LEVEL_LEN);
  const preauth = m.endsWith(PREAUTH);
  if (preauth) m = m.slice(0, -PREAUTH.length);

  // Accepted|Failed METHOD for [invalid user ]U from A port N ssh2[: INFO]
  // (auth.c auth_log: "%s %s%s%s for %s%.100s from %.200s port %d ssh2%s%s")
  if (m.startsWith("Accepted ") || m.startsWith("Failed ")) {
    const accepted = m.startsWith("Accepted ");
    const sp = m.indexOf(" ");
    const forAt = m.indexOf(" for ", sp);
    if (forAt < 0 || forAt - sp > 70) return no("sshd Accepted/Failed line without 'METHOD for'");
    const method = m.slice(sp + 1, forAt);
    if (!SSH_METHOD.test(method)) return no("sshd Accepted/Failed line with an unknown method field");
    const r = sshFromTail(m.slice(forAt + 5));
    if ("why" in r) return no(r.why);
    // "invalid user " is written by sshd before U for a user that does not
    // exist. A client can also put those words in U, but an existing user
    // cannot be named so: the worst a client gains is naughty for its own
    // address, which is what it deserves anyway.
    const invalid = r.user.startsWith(INVALID_USER);
    const user = invalid ? r.user.slice(INVALID_USER.length) : r.user;
    if (accepted) {
      if (invalid) return no("sshd Accepted line for an invalid user: not a shape sshd writes");
      // The monitor logs a success after authentication, so never with the
      // unprivileged child's " [preauth]"; and sshd reaches a log file only
      // through a syslog daemon, which writes the host field. A success
      // allows its address for good: only sshd's exact forms are taken.
      if (preauth) return no("sshd Accepted line with [preauth]: not a shape sshd writes");
      if (prefix === "hostless") return no("sshd Accepted line without the syslog host field: not a shape syslog writes");
      return found("ssh", r.addr, "success", "ssh.accepted", `sshd: accepted ${method} for ${q(user)}`, user);
    }
    if (method.startsWith("keyboard-interactive") && claimSshPam(state, pid, r.addr, user)) {
      return no(`sshd: failed ${method} for ${q(user)}: the attempt its PAM line already counted`);
    }
    // A password typed (or guessed): what GUESS_THRESHOLD and CONNECTION_GUESSES
    // weigh. A failed key is not: an agent offers its keys by itself (7.1.2).
    const how = { guess: method === "password" || method.startsWith("keyboard-interactive"), port: r.port };
    if (invalid) return sshConn(found("ssh", r.addr, "naughty", "ssh.failed-invalid-user", `sshd: failed ${method} for invalid user ${q(user)}`, user), how);
    if (user === "root") return sshConn(found("ssh", r.addr, "naughty", "ssh.failed-root", `sshd: failed ${method} for root`, user), how);
    return sshConn(found("ssh", r.addr, "failed", "ssh.failed", `sshd: failed ${method} for ${q(user)}`, user), how);
  }
  if (m.startsWith("Postponed ") || m.startsWith("Partial ")) {
    return no("sshd: intermediate step of a multi-step login, not an outcome");
  }

  // Timeout before authentication for connection from A to B, pid = N
  // (OpenSSH 9.8+: the listener logs its child's LoginGraceTime exit; all
  // server text, A is the client and B the server's own address.) Its lead
  // starts like the older form's row in SSHD_FORMS, so it is read here,
  // before the rows are tried.
  if (m.startsWith(GRACE_98)) {
    const r = /^Timeout before authentication for connection from (\S+) to \S+, pid = \d{1,10}$/.exec(m);
    if (!r) return no("sshd timeout line without 'from ADDR to ADDR, pid = N'");
    return found("ssh", r[1], "probe", "ssh.login-grace-timeout", "sshd: timeout before authentication");
  }

  // The forms that are one fixed lead, an address at a fixed place and
  // nothing else the client chooses: the rows of SSHD_FORMS.
  for (const form of SSHD_FORMS) {
    if (m.startsWith(form.lead)) return parseSshdForm(form, m, preauth);
  }

  // User U from A not allowed because REASON   (auth.c allowed_user)
  // U here is the passwd entry's name, not client text, and A comes before
  // the server's reason: read from the start, U must be one word.
  // Other lines start "User " too: "User child is on pid 17441" (VERBOSE,
  // after every login) is not this one.
  if (m.startsWith("User ") && m.includes(" not allowed because ")) {
    const r = /^User (\S{1,100}) from (\S+) not allowed because /.exec(m);
    if (!r) return no("sshd 'User ... not allowed' line without an address");
    return found("ssh", r[2], "naughty", "ssh.user-not-allowed", `sshd: user ${q(r[1])} not allowed`, r[1]);
  }

  // Connection closed by [authenticating |invalid ]user U A port N [preauth]
  // Connection reset by ..., Disconnected from ...        (packet.c, sshd 7.5+)
  // Connection closed by A port N [preauth]               (no user yet)
  // Without [preauth] these are ordinary ends of logged-in sessions.
  for (const lead of ["Connection closed by ", "Connection reset by ", "Disconnected from "]) {
    if (!m.startsWith(lead)) continue;
    if (!preauth) return no("sshd: connection ended after login, not evidence");
    const rest = m.slice(lead.length);
    let who: "none" | "authenticating" | "invalid" = "none";
    let body = rest;
    if (rest.startsWith("authenticating user ")) {
      who = "authenticating";
      body = rest.slice("authenticating user ".length);
    } else if (rest.startsWith("invalid user ")) {
      who = "invalid";
      body = rest.slice("invalid user ".length);
    } else if (rest.startsWith("user ")) {
      return no("sshd: connection of a logged-in user ended");
    }
    if (who === "none") {
      const addr = addrMaybePort(body);
      if (!addr) return no("sshd connection-closed line without 'ADDR port N'");
      return sshConn(found("ssh", addr, "probe", "ssh.closed-preauth", "sshd: connection closed before authentication"), { port: tailPort(body), ends: true });
    }
    // U may be empty: "invalid user  192.0.2.68 port 34916".
    const r = userThenAddrPort(` ${body}`);
    if (!r) return no("sshd connection-closed line does not end with 'ADDR port N'");
    const user = r.user.slice(1);
    const pamFailures = endSshPam(state, r.addr, user);
    const end = { port: tailPort(body), ends: true };
    if (who === "invalid") return sshConn(found("ssh", r.addr, "naughty", "ssh.closed-invalid-user", `sshd: connection closed by invalid user ${q(user)}`, user), end);
    if (user === "root") return sshConn(found("ssh", r.addr, "naughty", "ssh.closed-root", "sshd: connection closed while authenticating as root", user), end);
    if (pamFailures > 0) return no(`sshd: connection of ${q(user)} closed after ${pamFailures} PAM failure(s), counted on their own lines: not a probe`);
    // An existing user who gave up (their Failed lines, if any, are counted on their own).
    return sshConn(found("ssh", r.addr, "probe", "ssh.closed-authenticating", `sshd: connection closed while authenticating ${q(user)}`, user), end);
  }

  // maximum authentication attempts exceeded for [invalid user ]U from A port N ssh2 [preauth]
  // For an existing user other than root this is most often an ssh-agent
  // holding more keys than MaxAuthTries, each offered in turn (measured with
  // sshd 9.2 at LogLevel INFO: this line and the "Disconnecting" one below
  // are all such a connection logs): failed attempts of a real account, which
  // FAIL_THRESHOLD weighs, not the naughty guess of a name.
  if (m.startsWith(MAX_AUTH)) {
    const r = sshFromTail(m.slice(MAX_AUTH.length));
    if ("why" in r) return no(r.why);
    const invalid = r.user.startsWith(INVALID_USER);
    const user = invalid ? r.user.slice(INVALID_USER.length) : r.user;
    if (!invalid && user !== "root") return found("ssh", r.addr, "failed", "ssh.max-auth-tries-user", `sshd: maximum authentication attempts exceeded for ${q(user)}`, user);
    return found("ssh", r.addr, "naughty", "ssh.max-auth-tries", `sshd: maximum authentication attempts exceeded for ${q(user)}`, user);
  }

  // Disconnecting (authenticating|invalid) user U A port N: Too many authentication failures [preauth]
  // Other "Disconnecting ...: REASON" lines can carry client text in REASON
  // ("Change of username or service not allowed: (admin,ssh-connection) -> ..."),
  // so only this fixed reason is read.
  if (m.startsWith("Disconnecting ") && m.endsWith(TOO_MANY)) {
    const body = m.slice("Disconnecting ".length, -TOO_MANY.length);
    // Keep the space before U, so that an empty U still leaves "U A port N" its shape.
    let who = "";
    if (body.startsWith("authenticating user ")) who = body.slice("authenticating user".length);
    else if (body.startsWith("invalid user ")) who = body.slice("invalid user".length);
    else return no("sshd 'Disconnecting' line without a user field");
    const r = userThenAddrPort(who);
    if (!r) return no("sshd 'Disconnecting' line does not end with 'ADDR port N'");
    const user = r.user.slice(1);
    endSshPam(state, r.addr, user);
    const end = { port: tailPort(who), ends: true };
    // The twin of "maximum authentication attempts exceeded" for an existing
    // user (above), which already counted the attempts: the end of it.
    if (body.startsWith("authenticating user ") && user !== "root")
      return sshConn(found("ssh", r.addr, "probe", "ssh.too-many-failures-user", `sshd: too many authentication failures for ${q(user)}`, user), end);
    return sshConn(found("ssh", r.addr, "naughty", "ssh.too-many-failures", `sshd: too many authentication failures for ${q(user)}`, user), end);
  }


  // OpenSSH 9.8+ (sshd.c / srclimit.c), all server text:
  //   drop connection #13 from [192.0.2.7]:57590 on [192.0.2.1]:22 penalty: failed authentication
  //     => sshd: ssh 192.0.2.7 probe ssh.penalty
  //   drop connection #0 from [192.0.2.7]:57590 on [192.0.2.1]:22 penalty: connections without attempting authentication
  //     => sshd: ssh 192.0.2.7 probe ssh.penalty
  //   drop connection #3 from [192.0.2.7]:57590 on [192.0.2.1]:22 past MaxStartups
  //     => sshd: none: sshd: connection dropped for server load (MaxStartups), not evidence
  // A penalty refusal is a connection refused before any authentication:
  // probe (the failures that earned the penalty are counted on their own
  // lines). "past MaxStartups" is the server shedding load under a flood;
  // the refused client may be anyone, so it is no evidence.
  if (m.startsWith("drop connection #")) {
    const r = /^drop connection #\d{1,10} from \[([^\]\s]+)\]:\d{1,5} on \[[^\]\s]+\]:\d{1,5} (.+)$/.exec(m);
    if (!r) return no("sshd drop-connection line of an unknown shape");
    if (!r[2].startsWith("penalty: ")) return no("sshd: connection dropped for server load (MaxStartups), not evidence");
    return found("ssh", r[1], "probe", "ssh.penalty", `sshd: connection refused, ${r[2]}`);
  }

  // sshd's own PAM failure line: see "PAM failures" above.
  if (m.startsWith("PAM: ")) return parseSshPam(m, pid, state);
  // The PAM modules' lines for sshd (pam_unix(sshd:auth): authentication
  // failure; ... rhost=A  user=U; "PAM 2 more authentication failures")
  // repeat an attempt sshd logs itself ("Failed password", "PAM: ...",
  // "Invalid user"). Counting both would double a real user's typos towards
  // the attempt limit, so they are left to sshd's own.
  if (m.startsWith("pam_") || m.startsWith("PAM")) {
    return no("PAM module line for sshd: sshd logs its own line for the same attempt");
  }
  if (m.startsWith("Received disconnect from ")) {
    return no("sshd: disconnect message (client text); the connection's close line is counted instead");
  }
  return no("sshd line not about authentication");
}

// ---- 6.5 PAM's authentication-failure line (pam_unix) -----------------------
//
//   pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=test rhost=58.254.172.161
//     => vsftpd: ftp 58.254.172.161 naughty ftp.pam-unknown-user
//   pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=root rhost=176.61.140.225  user=root
//     => dovecot: mua 176.61.140.225 naughty mail.dovecot-pam
//   (pam_unix) authentication failure; logname= uid=0 euid=0 tty= ruser= rhost=209.67.1.67
//     => vsftpd: ftp 209.67.1.67 naughty ftp.pam-unknown-user
//
// ruser= is the name the client typed (fail2ban's corpus has
// "ruser=rhost=1.2.3.4 rhost=192.0.43.10"), and with pam_unix's `audit`
// option so is user=: pam_unix then logs what was typed, spaces included,
// for unknown accounts too. So client text can sit on BOTH sides of the
// address, and this line is read the way sshFromTail reads sshd's:
//
//   a reading is a " rhost=" after the first " ruser=" (logname= and tty=
//   before it are the server's) followed by one word and then the end of
//   the line or " user=" / "  user=" and anything;
//   exactly one reading → its address; none or several → the line decides
//   nothing.
//
//   pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=x rhost=192.0.2.66  user=x rhost=198.51.100.7
//     => vsftpd: none: ambiguous: several 'rhost=ADDR' fields around client-typed ruser=/user= text; ignored
//     — two readings: rhost 192.0.2.66 with user "x rhost=198.51.100.7",
//       or ruser "x rhost=192.0.2.66  user=x" and rhost 198.51.100.7.
//       Ignored (it used to blame 198.51.100.7, which never connected).
//   pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=rhost=1.2.3.4 rhost=192.0.43.10
//     => vsftpd: ftp 192.0.43.10 naughty ftp.pam-unknown-user
//     — "rhost=1.2.3.4" follows "=", not " ": one reading, 192.0.43.10.
//
// Ignoring a line lets a client hide a PAM failure behind a typed name that
// holds " rhost=": no account is named so, and the daemon's own line for
// the attempt (vsftpd FAIL LOGIN, Dovecot's auth failed) still counts.
// A present user= no longer proves an existing account (audit logs any
// name); callers only use its absence, which still means an unknown one.

// Sticky: tried at each " rhost=" in turn, without copying the line's tail.
const PAM_RHOST_FIELD = /(\S*)(?: {1,2}user=(.*))?$/y;

function pamRhost(msg: string): { addr: string; user: string | null } | { why: string } {
  const ruser = msg.indexOf(" ruser=");
  let hit: { addr: string; user: string | null } | null = null;
  let i = msg.indexOf(" rhost=", ruser < 0 ? 0 : ruser);
  if (i < 0) return { why: "PAM line without rhost=" };
  while (i !== -1) {
    PAM_RHOST_FIELD.lastIndex = i + 7;
    const m = PAM_RHOST_FIELD.exec(msg);
    if (m) {
      if (hit) return { why: "ambiguous: several 'rhost=ADDR' fields around client-typed ruser=/user= text; ignored" };
      hit = { addr: m[1], user: m[2] ?? null };
    }
    i = msg.indexOf(" rhost=", i + 1);
  }
  if (!hit) return { why: "PAM line with client text after rhost=: not a shape pam_unix writes" };
  if (hit.addr === "") return { why: "PAM line with an empty rhost= (local login)" };
  return hit;
}

function isPamAuthFailure(m: string): boolean {
  return (
    (m.startsWith("pam_unix(") && m.includes(":auth): authentication failure; ")) ||
    m.startsWith("(pam_unix) authentication failure; ")
  );
}

// ---- 6.6 FTP ----------------------------------------------------------------

// vsftpd (logging.c), through syslog or in its own vsftpd.log:
//   [pid 27202] [anonymous] FAIL LOGIN: Client "64.106.46.98"
//     => vsftpd: ftp 64.106.46.98 failed ftp.vsftpd-failed
//   [pid 15019] [guest] FAIL LOGIN: Client "::ffff:192.0.2.1", "User is not in the allow user list."
//     => vsftpd: ftp 192.0.2.1 naughty ftp.vsftpd-refused
//   [username] FAIL LOGIN: Client "192.0.2.222"
//     => vsftpd: ftp 192.0.2.222 failed ftp.vsftpd-failed   (syslog: the pid is in the prefix)
//   [pid 3101] [alice] OK LOGIN: Client "198.51.100.7"
//     => vsftpd: ftp 198.51.100.7 success ftp.vsftpd-ok
//   [pid 3101] [ftp] OK LOGIN: Client "198.51.100.7", anon password "guest@"
//     => vsftpd: none: vsftpd OK LOGIN with text after the address (anonymous login): not a user's success
// The [user] is client text (it may hold `] FAIL LOGIN: Client "1.2.3.4"`),
// and so is the anonymous password at the END of an OK line. FAIL lines
// end in server text, so the address is the quoted field followed by the
// end or by one quoted server reason — but only when no OK marker precedes
// it: an anonymous OK line can END with a forged FAIL marker inside its
// password. OK lines (which allow the address) are taken only when the
// marker occurs exactly once and nothing follows the address; an anonymous
// login proves nothing about a user and is no success at all.
//
// Ignoring a line with a doubled marker lets a client hide attempts made
// with user names that hold such markers. No account is named that way, so
// those attempts can never succeed: nothing is lost by not counting them.
const VSFTPD_FAIL = "] FAIL LOGIN: ";
const VSFTPD_OK = "] OK LOGIN: ";
const VSFTPD_FAIL_TAIL = /^Client "([^"]*)"(?:, "([^"]*)")?$/;

function parseVsftpd(msg: string): Result {
  let m = msg;
  const pid = /^\[pid \d{1,10}\] /.exec(m);
  if (pid) m = m.slice(pid[0].length);
  if (isPamAuthFailure(m)) return ftpPam(m);
  if (!m.startsWith("[")) return no("vsftpd line not about a login");
  const fail = m.lastIndexOf(`${VSFTPD_FAIL}Client "`);
  const ok = m.lastIndexOf(`${VSFTPD_OK}Client "`);
  if (fail > 0) {
    if (ok !== -1) return no("ambiguous: vsftpd FAIL and OK login markers in one line; ignored");
    const t = VSFTPD_FAIL_TAIL.exec(m.slice(fail + VSFTPD_FAIL.length));
    if (!t) return no('vsftpd FAIL LOGIN line does not end with Client "ADDR"');
    const user = m.slice(1, fail);
    if (t[2] !== undefined) {
      return found("ftp", t[1], "naughty", "ftp.vsftpd-refused", `vsftpd: login refused for ${q(user)}: ${q(t[2])}`, user);
    }
    if (user === "root") return found("ftp", t[1], "naughty", "ftp.vsftpd-failed-root", "vsftpd: failed login as root", user);
    return found("ftp", t[1], "failed", "ftp.vsftpd-failed", `vsftpd: failed login for ${q(user)}`, user);
  }
  if (ok > 0) {
    if (m.indexOf(`${VSFTPD_OK}Client "`) !== ok) {
      return no("ambiguous: the vsftpd login marker appears more than once; ignored");
    }
    const t = /^Client "([^"]*)"$/.exec(m.slice(ok + VSFTPD_OK.length));
    if (!t) return no("vsftpd OK LOGIN with text after the address (anonymous login): not a user's success");
    const user = m.slice(1, ok);
    return found("ftp", t[1], "success", "ftp.vsftpd-ok", `vsftpd: login of ${q(user)}`, user);
  }
  return no("vsftpd line not about a login");
}

// PAM lines from an FTP daemon. The daemon logs its own line for a failed
// password (vsftpd FAIL LOGIN, ProFTPD "Login failed"), so a PAM failure of
// an existing account is not counted twice. A PAM failure WITHOUT user= is
// an unknown account: naughty, and counting a naughty twice changes nothing.
function ftpPam(m: string): Result {
  const r = pamRhost(m);
  if ("why" in r) return no(r.why);
  if (r.user !== null) return no("PAM failure naming user= (an existing account, or any name under pam_unix audit): the FTP daemon logs its own line for it");
  return found("ftp", r.addr, "naughty", "ftp.pam-unknown-user", "PAM: FTP login for an unknown user");
}

// ProFTPD (mod_auth.c). Every line starts "SERVERNAME (CLIENTHOST[CLIENTIP])"
// then " - " or ": ", all server text and BEFORE the client's text, so the
// address is read from the start (fail2ban's corpus has a user name carrying
// "proftpd[17424] ... (hihoinjection[1.2.3.44])" that this ignores):
//   myhost.example.com (example.com[192.0.2.4]) - USER jtittle@domain.org: no such user found from example.com [192.0.2.4] to 192.0.2.1:21
//     => proftpd: ftp 192.0.2.4 naughty ftp.proftpd-no-such-user
//   myhost (mail.example.net[::ffff:67.227.224.66]): USER username (Login failed): Incorrect password.
//     => proftpd: ftp 67.227.224.66 failed ftp.proftpd-failed
//   myhost (123.123.123.123[123.123.123.123]): USER username (Login failed): User in /etc/ftpusers
//     => proftpd: ftp 123.123.123.123 naughty ftp.proftpd-refused
//   myhost (::ffff:59.167.242.100[::ffff:59.167.242.100]): SECURITY VIOLATION: root login attempted.
//     => proftpd: ftp 59.167.242.100 naughty ftp.proftpd-root
//   mail (::ffff:1.2.3.4[::ffff:1.2.3.4]) - Maximum login attempts (3) exceeded
//     => proftpd: ftp 1.2.3.4 naughty ftp.proftpd-max-attempts
//   myhost (client.example.net[198.51.100.7]) - USER alice: Login successful.
//     => proftpd: ftp 198.51.100.7 success ftp.proftpd-ok
// One reading: CLIENTHOST is a reverse-DNS name (the client's DNS chooses
// it), but the head refuses one holding a space, "[", "]", "(" or ")", so
// the first "[" after "(" opens the address and nothing the client types
// (the USER text) comes before it.
const PROFTPD_HEAD = /^\S{1,255} \([^\s[\]()]{0,255}\[([^\]\s]{1,64})\]\)(?: -|:) /;

function parseProftpd(msg: string): Result {
  if (isPamAuthFailure(msg)) return ftpPam(msg);
  const h = PROFTPD_HEAD.exec(msg);
  if (!h) return no("proftpd line without 'SERVER (HOST[ADDR])'");
  const addr = h[1];
  const m = msg.slice(h[0].length);
  if (m.startsWith("USER ")) {
    // Success is anchored at both ends: a failure line always ends in the
    // server's reason or "to ADDR:PORT", never in ": Login successful."
    const s = /^USER (.{0,255}): Login successful\.?$/.exec(m);
    if (s) return found("ftp", addr, "success", "ftp.proftpd-ok", `proftpd: login of ${q(s[1])}`, s[1]);
    const nf = m.lastIndexOf(": no such user found from ");
    if (nf > 4) {
      const user = m.slice(5, nf);
      return found("ftp", addr, "naughty", "ftp.proftpd-no-such-user", `proftpd: no such user ${q(user)}`, user);
    }
    const lf = m.lastIndexOf(" (Login failed): ");
    if (lf > 4) {
      const user = m.slice(5, lf);
      const reason = m.slice(lf + 17);
      if (/^Incorrect password\.?$/.test(reason) && user !== "root") {
        return found("ftp", addr, "failed", "ftp.proftpd-failed", `proftpd: incorrect password for ${q(user)}`, user);
      }
      // Root, or a user refused outright (ftpusers, invalid shell, <Limit LOGIN>).
      return found("ftp", addr, "naughty", "ftp.proftpd-refused", `proftpd: login refused for ${q(user)}: ${q(reason)}`, user);
    }
    return no("proftpd USER line of an unknown shape");
  }
  if (/^SECURITY VIOLATION: root login attempted\.?$/i.test(m)) {
    return found("ftp", addr, "naughty", "ftp.proftpd-root", "proftpd: root login attempted", "root");
  }
  if (/^Maximum login attempts \(\d{1,5}\) exceeded/.test(m)) {
    return found("ftp", addr, "naughty", "ftp.proftpd-max-attempts", "proftpd: maximum login attempts exceeded");
  }
  return no("proftpd line not about a login");
}

// Pure-FTPd (log_pam/log_puredb via logfile()): "(USER@HOST) [LEVEL] TEXT".
// USER is "?" until a login succeeds and then the account name, both
// server-known; HOST is the client (an address when pure-ftpd runs with -H,
// otherwise possibly a host name, which parseIp refuses). The client's own
// text only appears inside TEXT, after the address.
//   (?@203.0.113.9) [WARNING] Authentication failed for user [admin]
//     => pure-ftpd: ftp 203.0.113.9 failed ftp.pureftpd-failed
//   (?@2001:db8::9) [WARNING] Authentication failed for user [root]
//     => pure-ftpd: ftp 2001:db8::9 naughty ftp.pureftpd-failed-root
//   (alice@198.51.100.7) [INFO] alice is now logged in
//     => pure-ftpd: ftp 198.51.100.7 success ftp.pureftpd-ok
// One reading: nothing the client types comes before the address (USER is
// "?" until a login succeeds), HOST cannot hold ") [" or "@" (a host name
// or an address), so the first ") [" closes the field and its last "@"
// opens HOST; the typed name in TEXT comes after both.
function parsePureftpd(msg: string): Result {
  if (isPamAuthFailure(msg)) return ftpPam(msg);
  if (!msg.startsWith("(")) return no("pure-ftpd line without '(USER@HOST)'");
  const close = msg.indexOf(") [");
  if (close < 0 || close > 300) return no("pure-ftpd line without '(USER@HOST) [LEVEL]'");
  const who = msg.slice(1, close);
  const at = who.lastIndexOf("@");
  if (at < 0) return no("pure-ftpd line without '(USER@HOST)'");
  const addr = who.slice(at + 1);
  const lv = /^\[([A-Z]{1,10})\] /.exec(msg.slice(close + 2));
  if (!lv) return no("pure-ftpd line without a [LEVEL]");
  const text = msg.slice(close + 2 + lv[0].length);
  if (text.startsWith("Authentication failed for user [") && text.endsWith("]")) {
    const user = text.slice(32, -1);
    if (user === "root") return found("ftp", addr, "naughty", "ftp.pureftpd-failed-root", "pure-ftpd: failed login as root", user);
    return found("ftp", addr, "failed", "ftp.pureftpd-failed", `pure-ftpd: failed login for ${q(user)}`, user);
  }
  if (lv[1] === "INFO" && text.endsWith(" is now logged in")) {
    const user = text.slice(0, -17);
    if (!/^\S{1,255}$/.test(user)) return no("pure-ftpd login line with an unusual user field");
    return found("ftp", addr, "success", "ftp.pureftpd-ok", `pure-ftpd: login of ${q(user)}`, user);
  }
  return no("pure-ftpd line not about a login");
}

// BSD ftpd (FreeBSD/NetBSD/OpenBSD ftpd.c). Login lines name the client by
// remotehost — the reverse-DNS name, which the client's own DNS controls —
// so the address is never read from them. It comes from the earlier
// connection line of the same pid (logged under the same -l flag):
//   ftpd[123]: connection from host.example.com (192.0.2.4)
//     => ftpd: none: ftpd connection line: 192.0.2.4 remembered for pid 123
//   ftpd[124]: connection from 192.0.2.4 (192.0.2.4) to ftp.example.org
//     => ftpd: none: ftpd connection line: 192.0.2.4 remembered for pid 124   (VIRTUAL_HOSTING)
//   ftpd[123]: FTP LOGIN FAILED FROM host.example.com, admin
//     => ftpd: ftp 192.0.2.4 failed ftp.bsdftpd-failed   (authpriv, e.g. auth.log)
//   ftpd[123]: FTP LOGIN FAILED FROM host.example.com
//     => ftpd: ftp 192.0.2.4 failed ftp.bsdftpd-failed   (ftp facility, e.g. messages)
//   ftpd[123]: FTP LOGIN REFUSED FROM host.example.com, root
//     => ftpd: ftp 192.0.2.4 naughty ftp.bsdftpd-refused   (user in /etc/ftpusers)
//   ftpd[123]: repeated login failures from host.example.com
//     => ftpd: ftp 192.0.2.4 naughty ftp.bsdftpd-repeated
//   ftpd[123]: FTP LOGIN FROM host.example.com as alice
//     => ftpd: ftp 192.0.2.4 success ftp.bsdftpd-ok
//   ftpd[123]: ANONYMOUS FTP LOGIN FROM host.example.com, guest@
//     => ftpd: none: ftpd anonymous login: proves nothing about a user   (anonymous: no success)
// The two FAILED forms go to different facilities, so one file holds one.
// One reading: the address is taken only from the connection line, whose
// HOST has no space, so " (" after it is ftpd's and the parenthesised
// field is the address; the login lines' client text (user name, anonymous
// password) only has to name the same HOST as that line.
const FTPD_CONNECT = /^connection from (\S{1,255}) \(([^()\s]{1,64})\)(?: to \S{1,255})?$/;

function parseBsdFtpd(pid: string, msg: string, state: ClassifierState | undefined): Result {
  const c = FTPD_CONNECT.exec(msg);
  if (c) {
    if (!state) return no("ftpd connection line (no classifier state to remember it in)");
    if (!pid) return no("ftpd connection line without a pid");
    const ip = parseIp(c[2]);
    if (!ip) return no(`address field is not a valid IP (${q(c[2])})`);
    const map = state.ftpdConnections;
    map.delete(pid); // re-insert at the end: the Map's order is age
    map.set(pid, { host: c[1], ip });
    while (map.size > FTPD_PIDS_MAX) {
      const oldest = map.keys().next();
      if (oldest.done) break;
      map.delete(oldest.value);
    }
    return no(`ftpd connection line: ${ip} remembered for pid ${pid}`);
  }
  let kind: Kind;
  let rule: string;
  let what: string;
  let host: string;
  let user: string | undefined;
  let r: RegExpExecArray | null;
  if ((r = /^FTP LOGIN FAILED FROM ([^\s,]{1,255})(?:, (.{0,255}))?$/.exec(msg))) {
    host = r[1];
    user = r[2];
    kind = user === "root" ? "naughty" : "failed";
    rule = user === "root" ? "ftp.bsdftpd-failed-root" : "ftp.bsdftpd-failed";
    what = user === undefined ? "failed login" : `failed login for ${q(user)}`;
  } else if ((r = /^FTP LOGIN REFUSED FROM ([^\s,]{1,255}), (.{0,255})$/.exec(msg))) {
    [, host, user] = r;
    kind = "naughty";
    rule = "ftp.bsdftpd-refused";
    what = `login refused for ${q(user)}`;
  } else if ((r = /^repeated login failures from (\S{1,255})$/.exec(msg))) {
    host = r[1];
    kind = "naughty";
    rule = "ftp.bsdftpd-repeated";
    what = "repeated login failures";
  } else if ((r = /^FTP LOGIN FROM (\S{1,255}) as (\S{1,255})(?: .*)?$/.exec(msg))) {
    [, host, user] = r;
    kind = "success";
    rule = "ftp.bsdftpd-ok";
    what = `login of ${q(user)}`;
  } else if (msg.startsWith("ANONYMOUS FTP LOGIN FROM ")) {
    return no("ftpd anonymous login: proves nothing about a user");
  } else {
    return no("ftpd line not about a login");
  }
  const conn = state && pid ? state.ftpdConnections.get(pid) : undefined;
  if (!conn) return no(`no earlier 'connection from' line for ftpd[${pid}]: address unknown`);
  if (conn.host !== host) return no(`ftpd[${pid}] login names ${q(host)} but its connection was from ${q(conn.host)}`);
  return found("ftp", conn.ip, kind, rule, `ftpd: ${what} from ${conn.host}`, user);
}

// ---- 6.7 Dovecot (imap-login, pop3-login, submission-login, managesieve-login) ----
//
//   dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=198.51.100.7, lip=192.0.2.1, mpid=4242, TLS, session=<x>
//     => dovecot: mua 198.51.100.7 success mail.dovecot-login
//   dovecot: imap-login: Disconnected (auth failed, 2 attempts): user=<username.bob>, method=PLAIN, rip=49.176.98.87, lip=113.212.99.194, TLS
//     => dovecot: mua 49.176.98.87 naughty mail.dovecot-auth-failed
//   dovecot[442]: pop3-login: Aborted login (auth failed, 1 attempts in 17 secs): user=<test>, method=PLAIN, rip=192.51.100.13, lip=203.0.113.17, session=<Y>
//     => dovecot: mua 192.51.100.13 naughty mail.dovecot-auth-failed
//   dovecot[996]: imap-login: Login aborted: Connection closed (auth failed, 2 attempts in 14 secs) (auth_failed): user=<jose>, method=PLAIN, rip=138.255.206.154, lip=5.135.93.75, TLS, session=<8o>
//     => dovecot: mua 138.255.206.154 naughty mail.dovecot-auth-failed   (2.4)
//   Jun 12 19:24:38 imap-login: Info: Login aborted: Connection closed (auth failed, 3 attempts in 15 secs) (auth_failed): user=<eft>, method=PLAIN, rip=80.51.181.144, lip=127.4.20.69, TLS, session=<25Nw4GQ3Ms9QM7WQ>
//     => dovecot: mua 80.51.181.144 naughty mail.dovecot-auth-failed   (own log file)
//   dovecot: pop3-login: Disconnected (no auth attempts): rip=121.44.24.254, lip=113.212.99.194, TLS: Disconnected
//     => dovecot: mua 121.44.24.254 probe mail.dovecot-no-auth
//   dovecot: pop3-login: Aborted login (tried to use disabled plaintext auth): rip=190.210.136.21, lip=113.212.99.193
//     => dovecot: mua 190.210.136.21 probe mail.dovecot-no-auth
//
// The user name is client text: Dovecot passes it through str_sanitize(user,
// 80), which replaces control characters but NOT "," or ">" — so
// user=<x>, rip=192.0.2.66, lip=...> is a valid user name. The fields come
// from login_log_format_elements, by default
// "user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}>":
// user first, rip after it, and nothing the client chooses after rip.
// So: a rip= field that comes BEFORE the first user=< (the admin moved it
// forward) is Dovecot's; otherwise the LAST rip= field is Dovecot's. The
// reason in parentheses before the fields is server text.
//
// This needs %r in login_log_format_elements, as in the default and every
// distribution's configuration: with it removed, the only rip= left on a
// line would be one a client typed into its user name, and nothing in the
// line could tell. (`sentry --doctor` is the place to check the setting.)

function dovecotRip(m: string): string | null {
  const user = m.indexOf("user=<");
  const rips: number[] = [];
  let i = m.indexOf("rip=");
  while (i !== -1) {
    // A field starts after ", " or ": " (the first field), nowhere else.
    if (i >= 2 && (m.startsWith(", ", i - 2) || m.startsWith(": ", i - 2))) rips.push(i);
    i = m.indexOf("rip=", i + 4);
  }
  if (rips.length === 0) return null;
  const at = user === -1 || rips[0] < user ? rips[0] : rips[rips.length - 1];
  const end = m.indexOf(",", at);
  return m.slice(at + 4, end === -1 ? m.length : end);
}

function parseDovecotLogin(service: Service, sub: string, msg: string): Result {
  let m = msg;
  if (m.startsWith("Info: ")) m = m.slice(6);
  if (m.startsWith("Login: ")) {
    const addr = dovecotRip(m);
    if (addr === null) return no(`dovecot ${sub} login line without rip=`);
    const u = /^Login: user=<([^>]{0,100})>, /.exec(m);
    return found(service, addr, "success", "mail.dovecot-login", `dovecot ${sub}: login${u ? ` of ${q(u[1])}` : ""}`, u ? u[1] : undefined);
  }
  // The reason: everything before the first field.
  let fields = m.length;
  for (const f of [": user=<", ": method=", ": rip="]) {
    const k = m.indexOf(f);
    if (k !== -1 && k < fields) fields = k;
  }
  const head = m.slice(0, fields);
  let kind: Kind;
  let what: string;
  if (head.includes("(auth failed")) {
    kind = "naughty";
    what = "authentication failed";
  } else if (
    head.includes("(no auth attempts") ||
    head.includes("(disconnected before auth was ready") ||
    head.includes("(tried to use disabled plaintext auth") ||
    head.includes("(tried to use disallowed plaintext auth")
  ) {
    kind = "probe";
    what = "connection closed without a login attempt";
  } else {
    return no(`dovecot ${sub} line not about authentication`);
  }
  const addr = dovecotRip(m);
  if (addr === null) return no(`dovecot ${sub} line without rip=`);
  const u = m.indexOf("user=<");
  const user = u === -1 ? undefined : m.slice(u + 6, Math.min(m.length, u + 6 + 100)).split(">, ")[0];
  return found(service, addr, kind, kind === "naughty" ? "mail.dovecot-auth-failed" : "mail.dovecot-no-auth", `dovecot ${sub}: ${what}`, user);
}

// Dovecot's auth process. Each of these repeats an attempt that the login
// process also logs as "auth failed" — counted twice it stays one naughty,
// which blocks either way, so they are read too (they are all a log has
// when the login process logs elsewhere):
//   dovecot: auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=informix rhost=80.255.3.104
//     => dovecot: mua 80.255.3.104 naughty mail.dovecot-pam
//   dovecot: auth-worker(default): pam(account@example.com,200.76.17.206): pam_authenticate() failed: User not known to the underlying authentication module
//     => dovecot: mua 200.76.17.206 naughty mail.dovecot-pam
//   dovecot: auth-worker(12345): Info: pam(user,1.2.3.4,<sess>): pam_authenticate() failed: Authentication failure (password mismatch?)
//     => dovecot: mua 1.2.3.4 naughty mail.dovecot-pam
//   dovecot: auth-worker(jose.basanta,138.255.206.154)<1489164><8oNSumM3A8mK/86a>: request [393]: unix_user: pam_authenticate() failed: Authentication failure (Password mismatch?)
//     => dovecot: mua 138.255.206.154 naughty mail.dovecot-pam   (2.4)
// In pam(USER,ADDR) the user comes first and is split off at the first
// comma, which is only safe because Dovecot's default auth_username_chars
// ("a-zA-Z0-9.-_@") has no comma; a user name outside that set (the admin
// widened it) makes the line ambiguous, and it is ignored.
const DOVECOT_AUTH_HEAD = /^auth(?:-worker)?(?:\(([^()]{0,300})\))?((?:<[^<>]{0,64}>){0,3}): (?:(?:Info|Warning|Error): )?/;
const DOVECOT_USER_CHARS = /^[A-Za-z0-9._@-]{0,100}$/;

function parseDovecotAuth(msg: string): Result {
  const h = DOVECOT_AUTH_HEAD.exec(msg);
  if (!h) return no("dovecot auth line of an unknown shape");
  const rest = msg.slice(h[0].length);
  if (isPamAuthFailure(rest)) {
    const r = pamRhost(rest);
    if ("why" in r) return no(r.why);
    return found("mua", r.addr, "naughty", "mail.dovecot-pam", "dovecot auth: PAM authentication failure", r.user ?? undefined);
  }
  if (!rest.includes("pam_authenticate() failed")) return no("dovecot auth line not about a failed authentication");
  let inner: string | null = null;
  if (rest.startsWith("pam(")) {
    const close = rest.indexOf("): ");
    if (close > 0) inner = rest.slice(4, close);
  } else if (h[1] !== undefined && h[1].includes(",")) {
    inner = h[1]; // 2.4: auth-worker(USER,ADDR)
  }
  if (inner === null) return no("dovecot pam_authenticate line without (USER,ADDR)");
  const parts = inner.split(",");
  if (parts.length > 3 || (parts.length === 3 && !parts[2].startsWith("<")) || parts.length < 2) {
    return no("ambiguous: dovecot (USER,ADDR) field with extra commas; ignored");
  }
  if (!DOVECOT_USER_CHARS.test(parts[0])) return no("dovecot user name outside auth_username_chars: ambiguous, ignored");
  return found("mua", parts[1], "naughty", "mail.dovecot-pam", `dovecot auth: pam_authenticate failed for ${q(parts[0])}`, parts[0]);
}

function parseDovecot(program: string, msg: string): Result {
  let sub = program;
  let m = msg;
  if (program === "dovecot" || program === "dovecot-auth") {
    const s = /^([a-z0-9]{1,16}-login): /.exec(m);
    if (s) {
      sub = s[1];
      m = m.slice(s[0].length);
    } else if (m.startsWith("auth")) {
      return parseDovecotAuth(m);
    } else if (isPamAuthFailure(m)) {
      return parseDovecotAuth(`auth: ${m}`);
    } else {
      return no("dovecot line not from a login or auth process");
    }
  }
  if (!sub.endsWith("-login")) return no("dovecot line not from a login process");
  // Dovecot's submission service is SMTP AUTH: it follows PROTECT_SMTP, not PROTECT_MUA.
  const service: Service = sub === "submission-login" ? "smtp" : "mua";
  return parseDovecotLogin(service, sub, m);
}

// ---- 6.8 Postfix SASL (smtpd) -----------------------------------------------
//
//   postfix/smtpd[3937]: warning: HOSTNAME[1.1.1.1]: SASL LOGIN authentication failed: authentication failure
//     => postfix/smtpd: smtp 1.1.1.1 naughty smtp.postfix-sasl-failed
//   postfix/submission/smtpd[11538]: warning: unknown[82.221.106.233]: SASL LOGIN authentication failed: UGFzc3dvcmQ6
//     => postfix/submission/smtpd: smtp 82.221.106.233 naughty smtp.postfix-sasl-failed
//   postfix/smtps/smtpd[42]: warning: astra4139.startdedicated.de[62.138.2.143]: SASL LOGIN authentication failed: UGFzc3dvcmQ6
//     => postfix/smtps/smtpd: smtp 62.138.2.143 naughty smtp.postfix-sasl-failed
//   postfix/smtpd[21022]: warning: unknown[1.1.1.1]: SASL LOGIN authentication failed: Connection lost to authentication server
//     => postfix/smtpd: none: postfix: SASL server unreachable, not the client's failure
//   postfix/submission/smtpd[4242]: 4DXZ3k0Qf2z9sVR: client=client.example.net[198.51.100.7], sasl_method=PLAIN, sasl_username=alice
//     => postfix/submission/smtpd: smtp 198.51.100.7 success smtp.postfix-sasl-ok
//
// "HOST[ADDR]" is Postfix's client name (a verified host name or "unknown")
// and address, written before anything the client sends: read from the start.
// One reading: the client's text (the SASL reply quoted in the reason,
// sasl_username) all comes after "]", and HOST (a name Postfix verified
// forward and back, or "unknown") holds no "[" or "]", so the first "["
// opens the address.
// "Connection lost to authentication server" is the server's own trouble,
// not the client's (fail2ban agrees): no evidence.
const POSTFIX_SASL_FAIL = /^warning: [^\s[\]]{1,255}\[([^\]\s]{1,64})\](?::\d{1,5})?: SASL [A-Za-z0-9_-]{1,32} authentication failed(?:: (.*))?$/;
const POSTFIX_SASL_OK = /^[0-9A-Za-z]{5,20}: client=[^\s[\]]{1,255}\[([^\]\s]{1,64})\](?::\d{1,5})?, sasl_method=[A-Za-z0-9_-]{1,32}, sasl_username=(.{1,255})$/;

function postfixAddr(a: string): string {
  return a.startsWith("IPv6:") ? a.slice(5) : a; // older Postfix spelled IPv6 clients [IPv6:2001:db8::1]
}

function parsePostfix(msg: string): Result {
  let r = POSTFIX_SASL_FAIL.exec(msg);
  if (r) {
    if (r[2] === "Connection lost to authentication server") {
      return no("postfix: SASL server unreachable, not the client's failure");
    }
    return found("smtp", postfixAddr(r[1]), "naughty", "smtp.postfix-sasl-failed", "postfix: SASL authentication failed");
  }
  r = POSTFIX_SASL_OK.exec(msg);
  if (r) return found("smtp", postfixAddr(r[1]), "success", "smtp.postfix-sasl-ok", `postfix: SASL login of ${q(r[2])}`, r[2]);
  return no("postfix line not about SASL authentication");
}

// ---- 6.9 vpopmail (vchkpw.c), through syslog as "vpopmail[pid]: vchkpw-pop3: ..." ----
//
//   vchkpw-pop3: vpopmail user not found nobody@example.com:203.0.113.9
//     => vchkpw-pop3: mua 203.0.113.9 naughty mail.vpopmail-failed
//   vchkpw-smtp: password fail (pass: 'hunter2') alice@example.com:203.0.113.9
//     => vchkpw-smtp: smtp 203.0.113.9 naughty mail.vpopmail-failed
//   vchkpw-pop3: password fail alice@example.com:2001:db8::9
//     => vchkpw-pop3: mua 2001:db8::9 naughty mail.vpopmail-failed
//   vchkpw-pop3: (PLAIN) login success alice@example.com:198.51.100.7
//     => vchkpw-pop3: mua 198.51.100.7 success mail.vpopmail-ok
//   vchkpw-pop3: system user not found nobody:203.0.113.9
//     => vchkpw-pop3: mua 203.0.113.9 naughty mail.vpopmail-failed
//
// Format "%s@%s:%s" (user, domain, IpAddr) ends the line. vpopmail's
// parse_email() admits no '@' ':' or space in the user and only [a-z0-9.-]
// in the domain, and the address has no '@': so the LAST '@' starts the
// domain, the first ':' after it ends it, and the rest is the address —
// one reading only, whatever the password (client text) holds. The log
// name follows the port: vchkpw-smtp/-submission/-smtps/-25/-465/-587 are
// SMTP AUTH (PROTECT_SMTP); every other one is POP/IMAP (PROTECT_MUA).

function vpopTail(s: string, withDomain: boolean): { user: string; addr: string } | null {
  if (withDomain) {
    const at = s.lastIndexOf("@");
    if (at < 0) return null;
    const colon = s.indexOf(":", at);
    if (colon < 0 || !/^[A-Za-z0-9.-]{0,255}$/.test(s.slice(at + 1, colon))) return null;
    const sp = s.lastIndexOf(" ", at);
    return { user: s.slice(sp + 1, colon), addr: s.slice(colon + 1) };
  }
  const sp = s.lastIndexOf(" ");
  const colon = s.indexOf(":", sp + 1);
  if (colon < 0 || s.indexOf("@", sp + 1) !== -1) return null;
  return { user: s.slice(sp + 1, colon), addr: s.slice(colon + 1) };
}

const VPOP_SMTP_NAMES = new Set(["vchkpw-smtp", "vchkpw-smtps", "vchkpw-submission", "vchkpw-25", "vchkpw-465", "vchkpw-587"]);

function parseVpopmail(program: string, msg: string): Result {
  let name = program;
  let m = msg;
  if (program === "vpopmail") {
    const s = /^(vchkpw-[a-z0-9]{1,16}): /.exec(m);
    if (!s) return no("vpopmail line not from vchkpw");
    name = s[1];
    m = m.slice(s[0].length);
  }
  const service: Service = VPOP_SMTP_NAMES.has(name) ? "smtp" : "mua";
  let kind: Kind;
  let what: string;
  let withDomain = true;
  if (m.startsWith("vpopmail user not found ")) {
    kind = "naughty";
    what = "unknown user";
  } else if (m.startsWith("system user not found ")) {
    kind = "naughty";
    what = "unknown system user";
    withDomain = false;
  } else if (m.startsWith("password fail ")) {
    kind = "naughty";
    what = "password failure";
    // "password fail (pass: '...') u@d:A" or, for /etc/passwd users, "u:A".
    withDomain = m.lastIndexOf("@") > m.lastIndexOf("') ");
  } else if (/^\([A-Z0-9-]{1,16}\) login success \S{1,400}$/.test(m)) {
    kind = "success";
    what = "login";
    withDomain = m.includes("@");
  } else {
    return no(`${name} line not about authentication`);
  }
  const t = vpopTail(m, withDomain);
  if (!t) return no(`${name} line does not end with USER@DOMAIN:ADDR`);
  return found(service, t.addr, kind, kind === "success" ? "mail.vpopmail-ok" : "mail.vpopmail-failed", `${name}: ${what} for ${q(t.user)}`, t.user);
}

// ---- 6.10 The entry points --------------------------------------------------

/**
 * Classification with a human reason, for `sentry --test-log`: the evidence
 * and why (e.g. "sshd: invalid user \"admin\""), or null and why not
 * ("not a watched program (cron)", "sshd line not about authentication",
 * "address field is not a valid IP"). Never throws on any string.
 */
export function explainLine(line: string, defaultProgram: string, state?: ClassifierState): { ev: Evidence | null; why: string } {
  if (typeof line !== "string") return no("not a line of text");
  let s = line;
  // First, before any regex: bound the work. A 10 MB "line" is not a log line.
  if (s.length > MAX_LINE_CHARS + 2) return no(`line longer than ${MAX_LINE_CHARS} characters: not understood`);
  if (s.endsWith("\n")) s = s.slice(0, -1);
  if (s.endsWith("\r")) s = s.slice(0, -1); // sshd -E writes "\r\n"
  if (s.length > MAX_LINE_CHARS) return no(`line longer than ${MAX_LINE_CHARS} characters: not understood`);
  if (s.length === 0) return no("empty line");
  const parts = splitPrefix(s, defaultProgram);
  if (!parts) return no("timestamp without a program field: not a syslog line");
  const family = familyOf(parts.program);
  if (!family) return no(`not a watched program (${parts.program.slice(0, 64) || "none"})`);
  const msg = parts.message;
  switch (family) {
    case "sshd":
      return parseSshd(msg, parts.pid, parts.prefix, state);
    case "vsftpd":
      return parseVsftpd(msg);
    case "proftpd":
      return parseProftpd(msg);
    case "pureftpd":
      return parsePureftpd(msg);
    case "bsdftpd":
      return parseBsdFtpd(parts.pid, msg, state);
    case "dovecot":
      return parseDovecot(parts.program, msg);
    case "postfix":
      return parsePostfix(msg);
    case "vpopmail":
      return parseVpopmail(parts.program, msg);
  }
}

/** What one log line proves about one address, or null. See explainLine for why. */
export function classifyLine(line: string, defaultProgram: string, state?: ClassifierState): Evidence | null {
  return explainLine(line, defaultProgram, state).ev;
}

// ---- 6.11 What the logs say of one address ----------------------------------

export const SERVICES: Service[] = ["ssh", "ftp", "smtp", "mua"];

/** What the logs say of one address for one service. */
export interface Tally {
  success: number;
  failed: number;
  naughty: number;
  probe: number;
  sample: string; // one telling line, for the reason (the worst kind seen)
  guesses?: number; // of the failed and naughty lines, the password guesses (Evidence.guess; 0 if absent)
  connMax?: number; // most password guesses seen in one connection (section 7.1.2; 0 if absent)
}

export type Tallies = Partial<Record<Service, Tally>>;

/**
 * "ssh: 0 success, 4 naughty, 1 failed, 0 probe": one service's tally as
 * the reasons, --test-log and the report print it (and admins grep it).
 */
export function tallyText(s: Service, t: Tally): string {
  return `${s}: ${t.success} success, ${t.naughty} naughty, ${t.failed} failed, ${t.probe} probe`;
}

// ==== 7. Log sources ========================================================
//
//   SSH_LOG=""            → /var/log/auth.log (the first of the usual places that exists)
//   SSH_LOG="/var/log/sshd.log" → that file (sshd -E: lines without a syslog prefix)
//   SSH_LOG="journal"     → journalctl -o json -t sshd -t sshd-session -t sshd-auth
//   SSH_LOG="journal:/srv/remote.journal" → the same, read from that journal file
//
// Each source is read incrementally: sentry.db keeps, per source, where the
// last read stopped (device, inode and offset of a file; the journal's own
// cursor), and per address and service the tallies of what the lines said.
// A decision therefore costs the bytes written since the previous one, not
// the whole log, and a 200 MB auth.log costs what a 2 MB one does.
//
// Rotation: a new inode means the file was rotated; the old one, found
// beside it as NAME.1 or NAME-DATE with the remembered inode, is finished
// first. A file shorter than the offset was truncated and is read from 0.
// The first read of a log starts FIRST_SCAN_MB from its end. A connect reads
// for at most SCAN_SECONDS (sshd waits for it) and says so in sentry.log
// when it stops early; the next reader carries on from there.
//
// One read is one SQLite `BEGIN IMMEDIATE` transaction: lines are counted
// once, even when 20 connects cross the threshold in the same instant.

export interface LogSource {
  key: string; // the cursor's name in sentry.db: the path, or "journal" / "journal:PATH"
  kind: "file" | "journal";
  path: string; // the file, or the journal file ("" = the system journal)
  services: Service[]; // the services whose evidence is taken from it
  program: string; // the program of a line without a syslog prefix (sshd -E, vsftpd.log)
  idents: string[]; // journal: SYSLOG_IDENTIFIERs to read
  explicit: boolean; // named by the administrator (missing is then worth a warning)
}

/** Where each group logs, by platform, in the order they are tried (from LOG_GROUPS). */
export const USUAL_LOGS = Object.fromEntries(LOG_GROUPS.map((g) => [g.name, g.usual])) as Record<LogGroup, string[]>;

/** The journal's SYSLOG_IDENTIFIERs of each group's daemons (from DAEMONS). */
export const JOURNAL_IDENTS = Object.fromEntries(
  LOG_GROUPS.map((g) => [g.name, DAEMONS.filter((d) => d.group === g.name).map((d) => d.program)]),
) as Record<LogGroup, string[]>;

const DEFAULT_PROGRAM = Object.fromEntries(LOG_GROUPS.map((g) => [g.name, g.defaultProgram])) as Record<LogGroup, string>;

/** Where journalctl may live; the journal is used only if one exists. */
const JOURNALCTL = ["/usr/bin/journalctl", "/bin/journalctl"];

/**
 * The sources to read for the enabled services. Two services logging to one
 * file share one source (and one read).
 */
export function logSources(cfg: Config, fsys: FsTable): LogSource[] {
  const wanted: ["ssh" | "ftp" | "mail", string, Service[]][] = [["ssh", cfg.SSH_LOG, ["ssh"]]];
  if (cfg.PROTECT_FTP) wanted.push(["ftp", cfg.FTP_LOG, ["ftp"]]);
  const mail: Service[] = [];
  if (cfg.PROTECT_SMTP) mail.push("smtp");
  if (cfg.PROTECT_MUA) mail.push("mua");
  if (mail.length) wanted.push(["mail", cfg.MAIL_LOG, mail]);
  const out = new Map<string, LogSource>();
  for (const [family, setting, services] of wanted) {
    let src: LogSource | null = null;
    if (setting === "journal" || setting.startsWith("journal:")) {
      const file = setting.slice("journal:".length);
      src = { key: setting, kind: "journal", path: file, services, program: "", idents: JOURNAL_IDENTS[family], explicit: true };
    } else if (setting !== "") {
      src = { key: setting, kind: "file", path: setting, services, program: DEFAULT_PROGRAM[family], idents: [], explicit: true };
    } else {
      const file = USUAL_LOGS[family].find((f) => fsys.existsSync(f));
      if (file) src = { key: file, kind: "file", path: file, services, program: DEFAULT_PROGRAM[family], idents: [], explicit: false };
      else if (JOURNALCTL.some((j) => fsys.existsSync(j)))
        src = { key: "journal", kind: "journal", path: "", services, program: "", idents: JOURNAL_IDENTS[family], explicit: false };
    }
    if (!src) continue;
    const seen = out.get(src.key);
    if (seen) {
      seen.services = [...new Set([...seen.services, ...src.services])];
      seen.idents = [...new Set([...seen.idents, ...src.idents])];
    } else out.set(src.key, src);
  }
  return [...out.values()];
}

// ---- 7.1 The evidence index: sentry.db --------------------------------------

type Db = InstanceType<SqliteModule["DatabaseSync"]>;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS cursors (
  source   TEXT PRIMARY KEY,      -- a path, or journal[:PATH]
  ident    TEXT NOT NULL,         -- "dev:ino" of the file read, or the journal cursor
  offset   INTEGER NOT NULL,      -- bytes of that file already read
  skipping INTEGER NOT NULL,      -- 1: offset is inside an over-long line, skip to its end
  head     TEXT NOT NULL DEFAULT '', -- hex of the file's first bytes (copytruncate)
  read_at  INTEGER NOT NULL       -- epoch ms of the last read
);
CREATE TABLE IF NOT EXISTS tallies (
  ip TEXT NOT NULL, service TEXT NOT NULL,
  success INTEGER NOT NULL, failed INTEGER NOT NULL, naughty INTEGER NOT NULL, probe INTEGER NOT NULL,
  sample TEXT NOT NULL, sample_rank INTEGER NOT NULL,
  pending INTEGER NOT NULL DEFAULT 1, -- how often new evidence came since --scan last weighed it
  guesses INTEGER NOT NULL DEFAULT 0,   -- password guesses among failed/naughty (section 7.1.2)
  conn_port TEXT NOT NULL DEFAULT '',   -- the client port of the connection still open at the last read ('' none)
  conn_n INTEGER NOT NULL DEFAULT 0,    -- its guesses so far
  conn_max INTEGER NOT NULL DEFAULT 0,  -- most guesses seen in one connection
  PRIMARY KEY (ip, service)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notes (at INTEGER NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (   -- user names an address tried, at most NAMES_PER_ADDRESS each (section 7.1.1)
  ip TEXT NOT NULL, user TEXT NOT NULL,
  naughty INTEGER NOT NULL,          -- 1: named on a naughty line (an unknown name, root, a refused user)
  PRIMARY KEY (ip, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logins (  -- names that logged in successfully, from anywhere: the typo check knows them
  user TEXT PRIMARY KEY, at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS report_ips (  -- the report's index of seen/ (section 10.1)
  ip TEXT PRIMARY KEY, n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS report_ips_n ON report_ips (n);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
`;

/** How telling a line is as the sample of a reason: a success explains an allow, naughty a block. */
const KIND_RANK: Record<Kind, number> = { probe: 0, failed: 1, naughty: 2, success: 3 };

/** SQLite's ways of saying a file is not a sound database. */
function isCorrupt(e: unknown): boolean {
  return /not a database|malformed|corrupt|SQLITE_CORRUPT|SQLITE_NOTADB/i.test(errText(e));
}

/**
 * Opens sentry.db, creating its tables. A corrupt file is moved aside as
 * sentry.db.corrupt-TIME (under the lock, so two processes do not both move
 * it, the second one moving the fresh file) and a new one made: it is only
 * an index, rebuilt from the logs. A bash-2.00 sentry.db is imported once.
 */
export function openIndex(ctx: Ctx): Db {
  const file = path.join(ctx.cfg.ROOT_DIR, "sentry.db");
  const { DatabaseSync } = sqlite();
  const open = (): Db => {
    if (!ctx.sys.fs.existsSync(ctx.cfg.ROOT_DIR)) ensureRoot(ctx);
    prepareDbFile(ctx, file);
    const db = new DatabaseSync(file, { timeout: ctx.cfg.LOCK_TIMEOUT_SECONDS * 1000 });
    try {
      db.exec("PRAGMA journal_mode=WAL");
      db.exec(SCHEMA);
      // An index made by an earlier build of this version lacks later columns.
      const cols = db.prepare("PRAGMA table_info(cursors)").all().map((r) => String(r.name));
      if (!cols.includes("head")) db.exec("ALTER TABLE cursors ADD COLUMN head TEXT NOT NULL DEFAULT ''");
      // Section 7.1.2's columns, for a sentry.db made before them: existing rows start at 0 guesses.
      const tcols = db.prepare("PRAGMA table_info(tallies)").all().map((r) => String(r.name));
      for (const [col, decl] of [["guesses", "INTEGER NOT NULL DEFAULT 0"], ["conn_port", "TEXT NOT NULL DEFAULT ''"], ["conn_n", "INTEGER NOT NULL DEFAULT 0"], ["conn_max", "INTEGER NOT NULL DEFAULT 0"]])
        if (!tcols.includes(col)) db.exec(`ALTER TABLE tallies ADD COLUMN ${col} ${decl}`);
    } catch (e) {
      db.close();
      throw e;
    }
    return db;
  };
  let db: Db;
  try {
    db = open();
  } catch (e) {
    if (!isCorrupt(e)) throw new SentryError(`cannot open ${file}: ${errText(e)}`, 2);
    withLock(ctx, () => {
      try {
        open().close(); // another process may have replaced it meanwhile
      } catch (e2) {
        if (!isCorrupt(e2)) throw new SentryError(`cannot open ${file}: ${errText(e2)}`, 2);
        const aside = `${file}.corrupt-${isoTime(ctx.sys.now()).replace(/[-:]/g, "")}`;
        for (const suffix of ["", "-wal", "-shm"]) {
          try {
            ctx.sys.fs.renameSync(file + suffix, aside + suffix);
          } catch (e3) {
            if (errCode(e3) !== "ENOENT") throw ioError("move aside", file + suffix, e3);
          }
        }
        ctx.sys.warn(`${file} was corrupt: moved to ${aside}, rebuilding the index from the logs`);
      }
    });
    try {
      db = open();
    } catch (e4) {
      throw new SentryError(`cannot open ${file}: ${errText(e4)}`, 2);
    }
  }
  importBash200(ctx, db);
  return db;
}

/** Runs `fn` with sentry.db open (openIndex: created, repaired, imported), then closes it. */
export function withIndex<T>(ctx: Ctx, fn: (db: Db) => T): T {
  const db = openIndex(ctx);
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

/** The same, only if sentry.db exists already (reading must not create it); else `none`. */
function ifIndex<T>(ctx: Ctx, none: T, fn: (db: Db) => T): T {
  return ctx.sys.fs.existsSync(path.join(ctx.cfg.ROOT_DIR, "sentry.db")) ? withIndex(ctx, fn) : none;
}

/**
 * A number of a sentry.sh 2.00 row, or null when it is not one: a whole
 * number from 0 to `max` (NULL is 0, the column's default). Anything else
 * (text, a fraction, a negative, a time in the future) is a row written by
 * something other than sentry.sh, and importing it as 0 would turn, say, a
 * block into nothing without a word.
 */
export function bashNumber(v: unknown, max: number): number | null {
  if (v === null) return 0;
  const n = typeof v === "bigint" ? Number(v) : typeof v === "number" ? v : NaN;
  return Number.isSafeInteger(n) && n >= 0 && n <= max ? n : null;
}

/**
 * sentry.sh 2.00 kept everything in sentry.db, table ip_records(ip, seen,
 * allow, block), allow and block holding the epoch of the decision or 0.
 * Its rows become files, once; the table is renamed, never dropped, so
 * nothing an administrator had is lost. A row that is not valid is named
 * (stderr, and sentry.log, which a --connect's admin reads) and skipped:
 * it stays in the renamed table.
 */
export function importBash200(ctx: Ctx, db: Db): number {
  const hasTable = () => db.prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name='ip_records'").get();
  if (!hasTable()) return 0;
  let n = 0;
  const blocked: string[] = [];
  withLock(ctx, () => {
    // Look again under the lock: processes that met the old table at the same
    // time queue here, and all but the first find it already renamed (the
    // RENAME would fail, and the rows must not be read twice).
    if (!hasTable()) return;
    const rows = db.prepare("SELECT ip, seen, allow, block FROM ip_records").all();
    const skipped: string[] = [];
    const skip = (why: string) => {
      skipped.push(why);
      ctx.sys.warn(`sentry.sh 2.00 import: skipped ${why}`);
    };
    // A decision time more than a day ahead of the clock is no time sentry.sh wrote.
    const latest = Math.floor(ctx.sys.now() / 1000) + 86_400;
    for (const row of rows) {
      const ip = parseIp(String(row.ip));
      if (ip === null) {
        skip(`${JSON.stringify(String(row.ip))}, not an IP address`);
        continue;
      }
      const field = (col: "seen" | "allow" | "block", max: number, what: string): number | null => {
        const v = bashNumber(row[col], max);
        if (v === null) skip(`${JSON.stringify(String(row.ip))}: ${col} is ${JSON.stringify(String(row[col]))}, not ${what}`);
        return v;
      };
      const seenRaw = field("seen", Number.MAX_SAFE_INTEGER, "a count of connections");
      if (seenRaw === null) continue;
      const allow = field("allow", latest, "0 or the time of the allow (epoch seconds, not in the future)");
      if (allow === null) continue;
      const block = field("block", latest, "0 or the time of the block (epoch seconds, not in the future)");
      if (block === null) continue;
      // More connections than this decide nothing more: the seen/ file written stays small.
      const seen = Math.min(seenRaw, 1_000_000);
      if (seen > 0 && countConnections(ctx, ip) === 0) {
        // The times of old connections are unknown: they count from the import.
        writeAtomic(ctx, statePath(ctx, "seen", ip), `${epoch(ctx)}\n`.repeat(seen));
      }
      if (allow > 0 && ipStatus(ctx, ip) === null) {
        writeAtomic(ctx, statePath(ctx, "allow", ip), `${isoTime(allow * 1000)} allow by sentry.sh 2.00 (imported)\n`);
      } else if (block > 0 && ipStatus(ctx, ip) === null) {
        const file = statePath(ctx, "block", ip);
        // Its end runs from the import (issue 16): a 2.00 block older than
        // EXPIRE_BLOCK_DAYS would otherwise be lifted by the first expiry
        // after an upgrade, and a whole blocklist would open at once. The
        // file keeps the old block time as "since" and as its mtime, so its
        // age shows; blockEnd (mtime + until - since) ends it EXPIRE_BLOCK_DAYS after the import.
        const len = defaultBlockLength(ctx.cfg);
        const until = len.ms > 0 ? `until ${isoTime(ctx.sys.now() + len.ms)} (${lengthText(len.ms)} from the import on ${isoTime(ctx.sys.now())}; ${len.why})\n` : "";
        writeAtomic(ctx, file, `${isoTime(block * 1000)} block by sentry.sh 2.00 (imported)\n${until}`);
        ctx.sys.fs.utimesSync(file, block, block); // its age shows
        blocked.push(ip);
      }
      n++;
    }
    if (ctx.cfg.ADD_TO_TCPWRAPPERS) writeHostsDeny(ctx);
    // And every enabled firewall (section 9.2), as a block decided here
    // would be: an upgrade with ADD_TO_NFTABLES=1 must not leave the old
    // blocks in hosts.deny only. A backend that fails is a warning and a
    // sentry.log line (backendFailed); the block files stand, and --resync
    // puts them in later.
    const len = defaultBlockLength(ctx.cfg);
    for (const ip of blocked) {
      for (const b of enabledBackends(ctx)) {
        const r = b.add(ip, ctx.cfg, ctx.sys, len.ms > 0 ? len.ms : undefined);
        if (!r.ok) backendFailed(ctx, ip, b.name, "add", r.error);
      }
    }
    writeHostsAllowed(ctx); // the imported allows (section 9.1.2)
    db.exec("ALTER TABLE ip_records RENAME TO ip_records_imported_by_sentry3");
    const not = skipped.length ? `; ${skipped.length} rows skipped as not valid (${skipped.slice(0, 3).join("; ")}${skipped.length > 3 ? "; …" : ""})` : "";
    logDecision(ctx, "-", "import", `${n} addresses from the sentry.sh 2.00 table ip_records (kept as ip_records_imported_by_sentry3)${not}`);
  });
  return n;
}

// ---- 7.1.1 Names: typos of real accounts, and how many names an address tried ----
//
//   Invalid user alcie from 203.0.113.9 port 4242
//     => sshd: ssh 203.0.113.9 naughty ssh.invalid-user   (what the line says; alice is an account here)
//     → here: the kind sshd writes for an existing user, a failed attempt, not naughty
//   Invalid user admin from 203.0.113.9 port 4242
//     => sshd: ssh 203.0.113.9 naughty ssh.invalid-user   (no account is near "admin")
//     → naughty, as before
//
// An unknown name is naughty because bots guess names; a person mistypes
// one. Measured against sshd 9.2: "ssh alcie@host" once, a wrong password
// once, and the third connection, the one that would have succeeded, was
// blocked for 90 days. So a name within TYPO_DISTANCE edits of a local
// account that can log in (PASSWD_FILE: uid 1000 or more, a real shell; read
// only when an unknown name shows up) or of a name that has logged in
// successfully here from anywhere (the logins table) counts as the failed
// attempt of that account: FAIL_THRESHOLD still weighs it. root is never such
// a name (bots try "roots", "r00t"). A bot that guesses names next to real
// accounts gains failures instead of naughty lines, nothing more.
//
// The names an address tried (at most NAMES_PER_ADDRESS) are kept in the
// users table: several names from one address is a bot's pattern, and makes
// its block long (blockLength, section 8).

/** Distinct user names remembered per address (enough to tell one from several). */
export const NAMES_PER_ADDRESS = 16;
/** Names of successful logins remembered, the least recent dropped first. */
export const LOGINS_MAX = 256;
/** Longest name the typo check compares (Linux user names are at most 32 characters). */
const TYPO_NAME_MAX = 32;
/** Shortest: one edit from a 1–3 letter name reaches what bots guess anyway ("a", "pi", "git" next to "u", "p", "gi"). */
const TYPO_NAME_MIN = 4;

/** A naughty rule about an unknown name → the kind the same line has for an existing account. */
const TYPO_KIND: Record<string, Kind> = {
  "ssh.invalid-user": "probe", // the notice; the attempt is its "Failed ..." line
  "ssh.failed-invalid-user": "failed",
  "ssh.closed-invalid-user": "probe",
  "ssh.max-auth-tries": "failed",
  "ssh.too-many-failures": "probe",
  "ftp.proftpd-no-such-user": "failed",
  "ftp.pam-unknown-user": "failed",
};

/**
 * Edits (insert, delete, change, swap of two neighbours: the optimal string
 * alignment distance) from `a` to `b`, or max + 1 as soon as it is more
 * than `max`. "alcie" → "alice" is 1.
 */
export function editDistance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let prev2: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, prev2[j - 2] + 1);
      cur.push(d);
      best = Math.min(best, d);
    }
    if (best > max) return max + 1;
    prev2 = prev;
    prev = cur;
  }
  return Math.min(prev[b.length], max + 1);
}

/** The accounts of a passwd file a person logs in with: uid 1000 or more (not nobody), a shell that is not nologin/false. */
export function passwdAccounts(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || f[0] === "" || f[0].startsWith("#")) continue;
    const uid = Number(f[2]);
    const shell = f[6].trim();
    if (!Number.isInteger(uid) || uid < 1000 || uid === 65534) continue;
    if (shell === "" || /(nologin|false)$/.test(shell)) continue;
    out.push(f[0]);
  }
  return out;
}

/** Whether `name` is a typo of one of `known` (within `max` edits); never for root. */
export function isTypo(name: string, known: string[], max: number): boolean {
  if (max <= 0 || name === "root" || name.length > TYPO_NAME_MAX || name.length < TYPO_NAME_MIN) return false;
  return known.some((k) => k !== "root" && k.length >= TYPO_NAME_MIN && editDistance(name, k, max) <= max);
}

/** Local accounts (PASSWD_FILE) and names that logged in here. An unreadable file is a warning: the logins still count. */
function knownNames(ctx: Ctx, db: Db): string[] {
  const names = db.prepare("SELECT user FROM logins").all().map((r) => String(r.user));
  try {
    names.push(...passwdAccounts(ctx.sys.fs.readFileSync(ctx.cfg.PASSWD_FILE, "utf8")));
  } catch (e) {
    ctx.sys.warn(`cannot read ${ctx.cfg.PASSWD_FILE} for the typo check: ${errText(e)} (only names that logged in count)`);
  }
  return names;
}

/**
 * Turns the lines of a mistyped name into the kinds they have for a real
 * account (TYPO_KIND), in place. `typoOf` answers for one name; it is asked
 * only for names on naughty lines of a rule that has a real-account twin,
 * so the passwd file is read only when such a name shows up. Shared by
 * --scan/--connect (weighNames) and --test-log, so a prediction cannot
 * differ from what a decision sees.
 */
export function retypeTypos(found: Found, typoOf: (user: string) => boolean): void {
  for (const per of found.values())
    for (const t of per.values())
      for (const [user, rules] of t.names)
        for (const [rule, r] of rules) {
          const as = TYPO_KIND[rule];
          if (r.kind !== "naughty" || as === undefined || !typoOf(user)) continue;
          t.naughty -= r.n;
          t[as] += r.n;
          r.kind = as;
        }
}

/** The names of successful logins in one read (they are "known" to the typo check from then on). */
function loginNames(found: Found): string[] {
  const out: string[] = [];
  for (const per of found.values())
    for (const t of per.values())
      for (const [user, rules] of t.names) for (const r of rules.values()) if (r.kind === "success") out.push(user);
  return out;
}

/** A memoised typo check against names read once, on first need. */
function typoChecker(max: number, known: () => string[]): (user: string) => boolean {
  let names: string[] | null = null;
  const memo = new Map<string, boolean>();
  return (user) => {
    if (max <= 0) return false;
    let is = memo.get(user);
    if (is === undefined) memo.set(user, (is = isTypo(user, (names ??= known()), max)));
    return is;
  };
}

/** Per address, the distinct names on its naughty lines in one read (what makes a block strong: blockLength). */
export function naughtyNamesOf(per: Map<Service, { names: Names }>): number {
  const names = new Set<string>();
  for (const t of per.values()) for (const [user, rules] of t.names) for (const r of rules.values()) if (r.kind === "naughty") names.add(user);
  return names.size;
}

/**
 * Before one read's tallies are added: remembers the names that logged in,
 * turns the lines of a mistyped name into the kinds they have for a real
 * account, and records the names each address tried. Inside scanLogs'
 * transaction.
 */
function weighNames(ctx: Ctx, db: Db, found: Found): void {
  const putLogin = db.prepare("INSERT INTO logins (user, at) VALUES (?, ?) ON CONFLICT(user) DO UPDATE SET at = excluded.at");
  const logins = loginNames(found);
  for (const user of logins) putLogin.run(user, ctx.sys.now());
  if (logins.length > 0) db.prepare("DELETE FROM logins WHERE user NOT IN (SELECT user FROM logins ORDER BY at DESC LIMIT ?)").run(LOGINS_MAX);
  retypeTypos(found, typoChecker(ctx.cfg.TYPO_DISTANCE, () => knownNames(ctx, db)));
  const putName = db.prepare(
    "INSERT INTO users (ip, user, naughty) SELECT ?, ?, ? WHERE (SELECT COUNT(*) FROM users WHERE ip = ?) < ? " +
      "ON CONFLICT(ip, user) DO UPDATE SET naughty = MAX(naughty, excluded.naughty)",
  );
  for (const [ip, per] of found)
    for (const t of per.values())
      for (const [user, rules] of t.names) {
        const kinds = [...rules.values()].map((r) => r.kind);
        if (kinds.includes("naughty") || kinds.includes("failed")) putName.run(ip, user, kinds.includes("naughty") ? 1 : 0, ip, NAMES_PER_ADDRESS);
      }
}

// ---- 7.1.2 Password guesses, and how many one connection made -----------------
//
//   Failed password for alice from 203.0.113.9 port 40100 ssh2   ┐
//   Failed password for alice from 203.0.113.9 port 40100 ssh2   │ one connection:
//   Failed password for alice from 203.0.113.9 port 40100 ssh2   │ 4 guesses: a program
//   Failed password for alice from 203.0.113.9 port 40100 ssh2   ┘
//   Connection closed by authenticating user alice 203.0.113.9 port 40100 [preauth]   → ends it
//
// ssh asks at most NumberOfPasswordPrompts (3) passwords per connection, so
// a person's connection shows 3 guesses at most; more is a bot using
// MaxAuthTries (6 by default), which gave it 18 guesses on a real account
// before sentry decided at the third connection (issue 16). CONNECTION_GUESSES
// makes that strong evidence, weighed at the second connection (section 8).
// A key is never a guess: an agent offers its keys by itself, and sshd logs
// failed keys at INFO only past MaxAuthTries/2 (issue 16's agent lockout).
//
// "One connection" is the address and the client port of the line, read
// from the same field as the address (sshd writes "from A port P"; counted
// from the end on close lines), never the pid: `sshd -E` files and the
// journal's MESSAGE have none. Its close line ends it, so a later
// connection from a reused port starts from 0; a guess from another port
// ends the one before (two connections of one address interleaved count as
// several short ones: fewer, never more, than they made). PAM's own failure
// lines name no port: they count as guesses, not per connection.
//
// Bounded memory: sentry.db's tally keeps, per address, the connection
// still open at the end of the last read (its port and count) and the
// most seen in one (conn_max); a read keeps, per address, the first
// connection it met (which may continue the open one), the largest of the
// middle ones and the last one.

/** One connection's guesses in one read (port, count, whether its close line was read). */
interface ConnSeg {
  port: string;
  n: number;
  closed: boolean;
}
/** A read's connections of one address: the first, the most of the middle ones, the last (above). */
export interface ConnTrack {
  segs: ConnSeg[]; // at most 2: the first, and the open last one
  mid: number;
  /** Ports whose close line came before this read's first guess (one may be sentry.db's open connection); "*" = too many to keep, all of them. */
  endsFirst?: string[];
}
/** Close lines before an address's first guess in one read kept one by one; past this, "*" (closing counts less, never more). */
const CONN_ENDS_MAX = 16;

/** Folds the last segment into `mid` once it is closed (the first stays: it may continue sentry.db's open connection). */
function connFold(c: ConnTrack): void {
  const last = c.segs[c.segs.length - 1];
  if (c.segs.length > 1 && last.closed) {
    c.mid = Math.max(c.mid, last.n);
    c.segs.pop();
  }
}

/** A password guess on the connection from `port`. */
export function connGuess(c: ConnTrack, port: string): void {
  const last = c.segs[c.segs.length - 1];
  if (last && !last.closed && last.port === port) {
    last.n++;
    return;
  }
  if (last && !last.closed) {
    last.closed = true; // another port: that connection is over, or interleaved (counted short, never long)
    connFold(c);
  }
  c.segs.push({ port, n: 1, closed: false }); // at most [first, this]: connFold took any closed one between
}

/** The close line of the connection from `port`. */
export function connEnd(c: ConnTrack, port: string): void {
  const last = c.segs[c.segs.length - 1];
  if (!last) {
    // No guess yet in this read: it may end the connection sentry.db holds open.
    const ends = (c.endsFirst ??= []);
    if (ends.includes(port) || ends.includes("*")) return;
    if (ends.length >= CONN_ENDS_MAX) c.endsFirst = ["*"];
    else ends.push(port);
    return;
  }
  if (!last.closed && last.port === port) {
    last.closed = true;
    connFold(c);
  }
}

/** The most guesses in one connection this read saw alone (--test-log, which has no sentry.db); 0: only close lines. */
export function connMaxOf(c: ConnTrack): number {
  return Math.max(c.mid, 0, ...c.segs.map((x) => x.n));
}

/**
 * sentry.db's open connection and maximum for an address, after this
 * read's connections: the first one continues the open one if it has its
 * port (a connection read by two runs), else the open one ended unseen.
 */
export function connMerge(c: ConnTrack, before: { port: string; n: number; max: number }): { port: string; n: number; max: number } {
  const ends = c.endsFirst ?? [];
  const open = before.port !== "" && !ends.includes(before.port) && !ends.includes("*") ? before : null;
  const first = c.segs[0];
  if (!first) return open ?? { port: "", n: 0, max: before.max };
  const firstN = open && first.port === open.port ? open.n + first.n : first.n;
  const last = c.segs.length > 1 ? c.segs[c.segs.length - 1] : { ...first, n: firstN };
  const max = Math.max(before.max, firstN, c.mid, last.n);
  return last.closed ? { port: "", n: 0, max } : { port: last.port, n: last.n, max };
}

// ---- 7.2 Reading a source -------------------------------------------------------

/** What one read of the sources found: per address and service, counts and a sample. */
type Found = Map<string, Map<Service, Tally & { rank: number; names: Names; conn?: ConnTrack }>>;
/** Per user name of one address and service: per rule, its kind and how many lines (section 7.1.1). */
type Names = Map<string, Map<string, { kind: Kind; n: number }>>;

export interface ScanResult {
  readable: number; // sources that could be read
  sources: number;
  bytes: number; // bytes of log read
  lines: number;
  capped: boolean; // stopped at SCAN_SECONDS
  busy?: boolean; // a connect found another process reading (sentry.db locked) and read nothing
  touched: Set<string>; // addresses with new evidence, at most OTHERS_MAX + 1 (one more says "too many to decide for")
  succeeded: Set<string>; // addresses with a new successful login (it lifts a block decided on failures: liftAfterSuccess)
  notes: string[];
  forgiven?: ForgivenLookup; // delisted addresses whose older lines are not counted (section 5.3)
  flush?: () => void; // writes what `found` holds to the tallies and empties it (scanLogs)
  files?: [string, string, number][]; // per file source read: path, "dev:ino", where the read stopped (a journal: none, see LOOKED)
  skipped?: string[]; // what this read could not reach though it counts as read: a rotated tail (readRotatedTail)
}

/** The longest log line worth reading; longer ones are skipped whole (no daemon writes them). */
const MAX_LINE = MAX_LINE_CHARS;
const CHUNK = 1 << 20;
/**
 * Addresses a read holds in memory before it adds them to the tallies (same
 * transaction). A log names each address a few KB of counts, names and a
 * sample: the first read of a 200 MB log met 50,000 addresses and peaked at
 * 260 MiB holding them all. A success read after the flush of a typo of the
 * same name does not turn that typo back (7.1.1); the next read weighs again.
 */
const FOUND_FLUSH = 2000;

function addFound(found: Found, ev: Evidence, line: string): void {
  let per = found.get(ev.ip);
  if (!per) found.set(ev.ip, (per = new Map()));
  let t = per.get(ev.service);
  if (!t) per.set(ev.service, (t = { success: 0, failed: 0, naughty: 0, probe: 0, sample: "", rank: -1, names: new Map() }));
  t[ev.kind]++;
  if (ev.guess) t.guesses = (t.guesses ?? 0) + 1;
  if (ev.port !== undefined) {
    // Section 7.1.2: which connection; only guesses and ends move the count.
    if (ev.guess) connGuess((t.conn ??= { segs: [], mid: 0 }), ev.port);
    else if (ev.ends) connEnd((t.conn ??= { segs: [], mid: 0 }), ev.port);
  }
  if (ev.user !== undefined && ev.user !== "" && (t.names.has(ev.user) || t.names.size < NAMES_PER_ADDRESS)) {
    let rules = t.names.get(ev.user);
    if (!rules) t.names.set(ev.user, (rules = new Map()));
    const r = rules.get(ev.rule);
    if (r) r.n++;
    else rules.set(ev.rule, { kind: ev.kind, n: 1 });
  }
  if (KIND_RANK[ev.kind] >= t.rank) {
    t.rank = KIND_RANK[ev.kind];
    t.sample = sanitize(line.trim(), 300);
  }
}

export interface Cursor {
  ident: string;
  offset: number;
  skipping: number;
  head: string; // hex of the file's first bytes (up to HEAD_BYTES): its content's identity
}

/**
 * logrotate's copytruncate keeps the inode: the file is copied away and
 * emptied in place. If it then grows past the old offset before the next
 * read, size and inode look unchanged and the new lines would be skipped.
 * The first bytes of a log (a timestamp, a host) tell the contents apart.
 */
const HEAD_BYTES = 64;

/** Hex of the first `n` bytes of an open file (fewer if it is shorter). */
function readHead(fsys: FsTable, fd: number, n: number): string {
  const buf = Buffer.alloc(n);
  const got = fsys.readSync(fd, buf, 0, n, 0);
  return buf.subarray(0, got).toString("hex");
}

/**
 * The one line reader of sentry (the scanner, --test-log, the report's
 * feed). Hands `fn` every complete line of an open file from `start` up to
 * `size`, and returns where it stopped: the start of a line still being
 * written, which the next read begins with. `start` null reads on from the
 * file's own position (a pipe, stdin) to its end.
 *
 * A line longer than MAX_LINE is handed over as null, once, and then skipped
 * to its newline, also across calls (`skipping` in, `skipping` out): the
 * tail of such a line is never parsed, because an attacker can make its end
 * look like a line of its own. `more` is asked before every chunk but the
 * first (a read always makes progress); `lastPartial` hands over an
 * unterminated last line too (--test-log: a file without its last newline).
 */
export function readLines(
  fsys: FsTable,
  fd: number,
  from: { start: number | null; size: number; skipping: boolean },
  fn: (line: string | null, at: number) => void,
  opts: { more?: () => boolean; lastPartial?: boolean; onChunk?: (bytes: number) => void } = {},
): { offset: number; skipping: boolean; stopped: boolean; bytes: number } {
  const buf = Buffer.allocUnsafe(CHUNK + MAX_LINE);
  const first = from.start ?? 0;
  let pos = first; // file offset of buf[0]
  let carry = 0; // bytes of an unfinished line at the start of buf
  let skipping = from.skipping;
  let stopped = false;
  let bytes = 0;
  while (pos + carry < from.size) {
    if (pos + carry > first && opts.more && !opts.more()) {
      stopped = true;
      break;
    }
    const want = Math.min(CHUNK, from.size - pos - carry);
    const n = fsys.readSync(fd, buf, carry, want, from.start === null ? null : pos + carry);
    if (n <= 0) break;
    bytes += n;
    opts.onChunk?.(bytes);
    const end = carry + n;
    let lineStart = 0;
    for (let nl = buf.indexOf(10, 0); nl !== -1 && nl < end; nl = buf.indexOf(10, nl + 1)) {
      if (skipping) skipping = false; // the end of an over-long line
      else fn(nl - lineStart <= MAX_LINE ? buf.toString("utf8", lineStart, nl) : null, pos + lineStart);
      lineStart = nl + 1;
    }
    // What is left is the start of a line that has not ended in this chunk.
    const rest = end - lineStart;
    if (skipping || rest > MAX_LINE) {
      if (!skipping) fn(null, pos + lineStart);
      skipping = true;
      pos += end;
      carry = 0;
    } else {
      buf.copy(buf, 0, lineStart, end);
      pos += lineStart;
      carry = rest;
    }
  }
  if (opts.lastPartial && carry > 0 && !skipping) fn(buf.toString("utf8", 0, carry), pos);
  return { offset: pos, skipping, stopped, bytes };
}

/** Reads one log from `start`, classifying each complete line into `found`. */
/** Reads shorter than this show no progress: they end before anyone waits. */
const PROGRESS_MIN_BYTES = 8 << 20;

/**
 * "sentry: reading /var/log/auth.log: 45% (90 of 200 MB)" on stderr, over
 * itself, when stderr is a terminal and the read is long: an admin who
 * runs the first --scan of a 2 GB log sees it move, not a hung command.
 * Nothing otherwise (a cron job's mail, tcpd's spawn, a pipe). Returns the
 * chunk callback of readLines and the end of the line, or nulls.
 */
function progress(ctx: Ctx, what: string, total: number): { tick?: (bytes: number) => void; end: () => void } {
  if (!ctx.sys.errTty || !(total >= PROGRESS_MIN_BYTES)) return { end: () => undefined };
  let shown = -1;
  const mb = (n: number) => Math.round(n / 1e6);
  return {
    tick(bytes) {
      const pct = Math.min(100, Math.floor((bytes * 100) / total));
      if (pct === shown) return;
      shown = pct;
      ctx.sys.err(`\rsentry: reading ${sanitize(what, 200)}: ${pct}% (${mb(bytes)} of ${mb(total)} MB)\x1b[K`);
    },
    end: () => void (shown >= 0 && ctx.sys.err("\n")),
  };
}

function readFileFrom(
  ctx: Ctx,
  fd: number,
  size: number,
  start: number,
  skipping: boolean,
  src: LogSource,
  found: Found,
  res: ScanResult,
  deadline: number,
): { offset: number; skipping: boolean; stopped: boolean } {
  const state = newClassifierState();
  const forgiven = res.forgiven ?? null;
  const ident = forgiven && forgiven.names.size > 0 ? fileIdent(ctx.sys.fs.fstatSync(fd)) : "";
  // The deadline is set before the wait for the index's lock; readLines
  // always reads one chunk, so a connect that waited long still moves the
  // cursor on (else every later connect would stop at the same place).
  const shown = progress(ctx, src.path, size - start);
  const r = readLines(
    ctx.sys.fs,
    fd,
    { start, size, skipping },
    (line, at) => {
      if (line === null) return; // over-long: no daemon writes such lines
      res.lines++;
      const ev = classifyLine(line, src.program, state);
      if (!ev || !src.services.includes(ev.service)) return;
      if (forgiven && forgiven.names.has(ev.ip) && isForgivenLine(forgiven.get(ev.ip), line, ident, at, null)) return;
      addFound(found, ev, line);
      if (found.size >= FOUND_FLUSH) res.flush?.();
    },
    { more: () => ctx.sys.now() <= deadline, onChunk: shown.tick },
  );
  shown.end();
  res.bytes += r.bytes;
  if (r.stopped) res.capped = true;
  return r;
}

/**
 * Finds the rotated copy of `file` that has inode `ident` (NAME.1,
 * NAME-20261121, …), or says why there is none: compressed at once (no
 * delaycompress), moved or deleted, or the folder cannot be listed.
 */
function findRotated(ctx: Ctx, file: string, ident: string): string | { why: string } {
  const dir = path.dirname(file);
  const base = path.basename(file);
  let names: string[];
  try {
    names = ctx.sys.fs.readdirSync(dir);
  } catch (e) {
    // The folder that held the file a moment ago: gone or closed to us now.
    // Anything else (EIO, ENOMEM) is not an answer and goes up.
    if (["ENOENT", "ENOTDIR", "EACCES", "EPERM"].includes(errCode(e))) return { why: `${dir} cannot be listed: ${errText(e)}` };
    throw e;
  }
  for (const name of names) {
    if (!(name.startsWith(`${base}.`) || name.startsWith(`${base}-`)) || /\.(gz|bz2|xz|zst)$/.test(name)) continue;
    const st = ctx.sys.fs.statSync(path.join(dir, name), { throwIfNoEntry: false });
    if (st && `${st.dev}:${st.ino}` === ident) return path.join(dir, name);
  }
  return { why: "no uncompressed copy of it is beside it (compressed at once, moved or deleted)" };
}

/**
 * Where a read of a log file starts, from its cursor and what the file is
 * now (issue 13: the decision apart from the reading, so a table of cases
 * tests it). Five ways:
 *   first         no cursor: the last `firstBytes` of the file, from inside
 *                 a line that is skipped (a first read is bounded)
 *   on            the same file: from the cursor
 *   truncated     the same inode, shorter than the cursor: from the start
 *   copytruncate  the same inode, but its first bytes changed (emptied in
 *                 place and written again past the cursor): from the start
 *   rotated       another inode: the old file's tail first (readRotatedTail),
 *                 then the new one from the start
 */
export type ReadStart = { how: "first" | "on" | "truncated" | "copytruncate" | "rotated"; start: number; skipping: boolean };
export function readStart(cur: Cursor | undefined, now: { ident: string; size: number; head: string }, firstBytes: number): ReadStart {
  if (!cur) {
    const start = Math.max(0, now.size - firstBytes);
    return { how: "first", start, skipping: start > 0 };
  }
  if (cur.ident !== now.ident) return { how: "rotated", start: 0, skipping: false };
  if (now.size < cur.offset) return { how: "truncated", start: 0, skipping: false };
  if (cur.head !== "" && now.head.slice(0, cur.head.length) !== cur.head) return { how: "copytruncate", start: 0, skipping: false };
  return { how: "on", start: cur.offset, skipping: cur.skipping === 1 };
}

/**
 * After a rotation, reads what the old file held past the cursor, found
 * beside the new one by inode. Returns the cursor to keep if the time cap
 * stopped it inside the old file (the next read finds it again and carries
 * on; moving on to the new file would drop the rest of the old tail), else
 * null. A tail that cannot be found or read makes this read incomplete
 * (res.skipped): a success may sit in it, so it holds back blocks like any
 * unread log, for this one read (the cursor then moves to the new file).
 */
function readRotatedTail(ctx: Ctx, src: LogSource, cur: Cursor, found: Found, res: ScanResult, deadline: number): Cursor | null {
  const fsys = ctx.sys.fs;
  const old = findRotated(ctx, src.path, cur.ident);
  if (typeof old !== "string") {
    const why = `${src.path} was rotated and the rest of the old file cannot be read: ${old.why}`;
    res.notes.push(why);
    (res.skipped ??= []).push(why);
    return null;
  }
  let ofd: number | null = null;
  try {
    ofd = fsys.openSync(old, "r");
    const ost = fsys.fstatSync(ofd);
    const r = readFileFrom(ctx, ofd, ost.size, Math.min(cur.offset, ost.size), cur.skipping === 1, src, found, res, deadline);
    return r.stopped ? { ident: cur.ident, offset: r.offset, skipping: r.skipping ? 1 : 0, head: cur.head } : null;
  } catch (e) {
    const why = `cannot read the rotated ${old}: ${errText(e)}`;
    res.notes.push(why);
    (res.skipped ??= []).push(why);
    return null;
  } finally {
    if (ofd !== null) fsys.closeSync(ofd);
  }
}

/** Reads one file source from its cursor. Returns the new cursor, or null if unreadable. */
function scanFile(ctx: Ctx, src: LogSource, cur: Cursor | undefined, found: Found, res: ScanResult, deadline: number): Cursor | null {
  const fsys = ctx.sys.fs;
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO named as a log must not hang the connect in open();
    // it is refused just below as not a regular file.
    fd = fsys.openSync(src.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    if (src.explicit || errCode(e) !== "ENOENT") res.notes.push(`cannot read ${src.path}: ${errText(e)}`);
    return null;
  }
  try {
    const st = fsys.fstatSync(fd);
    if (!st.isFile()) {
      res.notes.push(`cannot read ${src.path}: not a regular file`);
      return null;
    }
    const ident = `${st.dev}:${st.ino}`;
    const head = readHead(fsys, fd, Math.min(HEAD_BYTES, st.size));
    const at = readStart(cur, { ident, size: st.size, head }, ctx.cfg.FIRST_SCAN_MB * 1024 * 1024);
    if (at.how === "truncated") res.notes.push(`${src.path} was truncated; reading it from the start`);
    if (at.how === "copytruncate") res.notes.push(`${src.path} was emptied and written again (copytruncate); reading it from the start`);
    if (at.how === "first" && at.start > 0) res.notes.push(`first read of ${src.path}: its last ${ctx.cfg.FIRST_SCAN_MB} MB of ${(st.size / 1048576).toFixed(0)} MB`);
    if (at.how === "rotated" && cur) {
      const keep = readRotatedTail(ctx, src, cur, found, res, deadline);
      if (keep) return keep;
    }
    const r = readFileFrom(ctx, fd, st.size, at.start, at.skipping, src, found, res, deadline);
    return { ident, offset: r.offset, skipping: r.skipping ? 1 : 0, head };
  } catch (e) {
    res.notes.push(`cannot read ${src.path}: ${errText(e)}`);
    return null;
  } finally {
    fsys.closeSync(fd);
  }
}

/**
 * Who may speak for a daemon in the journal. SYSLOG_IDENTIFIER is whatever
 * the writer says (`logger -t sshd "Accepted password for root from A port 1
 * ssh2"` by any local user would allow A); _UID is a trusted field journald
 * adds from the socket's credentials. sshd logs only through its root
 * process (the privilege-separated child's messages go through the
 * monitor), so an sshd entry must come from uid 0; FTP and mail daemons
 * may run as their own system accounts (postfix, ftp), never as a login
 * user. An entry without _UID (a journal-remote file from another host) is
 * as trustworthy as that file.
 */
function journalWriterOk(entry: Record<string, unknown>, ident: string, cfg: Config): boolean {
  if (typeof entry._UID !== "string") return entry._UID === undefined;
  const uid = Number(entry._UID);
  if (!Number.isInteger(uid)) return false;
  // JOURNAL_LOGIN_UID_MIN: 1000 is Debian's and Fedora's first login user
  // (SYS_UID_MAX + 1); 500 on older Red Hat, 501 on macOS: set it there.
  return JOURNAL_IDENTS.ssh.includes(ident) ? uid === 0 : uid < cfg.JOURNAL_LOGIN_UID_MIN;
}

/** Reads the journal since its cursor through `journalctl -o json`. */
function scanJournal(ctx: Ctx, src: LogSource, cur: Cursor | undefined, found: Found, res: ScanResult, deadline: number): Cursor | null {
  // Only the fields read here (journalctl adds __CURSOR and the timestamps
  // itself): a real entry carries some 30 fields, over 1 KB of JSON, so a
  // first read of 100 000 entries would overflow the output buffer
  // (ENOBUFS), and a journal that can never be read decides nothing, ever.
  // (--output-fields needs systemd 236, 2017.)
  const args = ["-o", "json", "--output-fields=MESSAGE,SYSLOG_IDENTIFIER,_UID", "--no-pager", "-q"];
  if (src.path) args.push(`--file=${src.path}`);
  for (const id of src.idents) args.push("-t", id);
  if (cur && cur.ident) args.push(`--after-cursor=${cur.ident}`);
  else args.push("-n", String(ctx.cfg.JOURNAL_FIRST_ENTRIES)); // a first read: the latest entries only, as FIRST_SCAN_MB for a file
  const timeoutMs = Math.max(1000, Math.min(ctx.cfg.COMMAND_TIMEOUT_SECONDS * 1000, deadline - ctx.sys.now()));
  const r = ctx.sys.run("journalctl", args, { timeoutMs });
  // Killed at the time cap (or at the output buffer's end) after printing
  // some entries: a capped read, like a file's. The complete lines are read
  // and the cursor moves past them, so the next read carries on; refusing
  // them would leave the cursor where it was, and a journal too big to read
  // in one go (100 000 entries take journalctl seconds) would never be read.
  const full = r.stdout.lastIndexOf("\n") + 1;
  const stopped = r.status === null && full > 0 && (r.error === "timed out" || /ENOBUFS/.test(r.error));
  if (r.status !== 0 && !stopped) {
    res.notes.push(`cannot read the journal${src.path ? ` ${src.path}` : ""}: journalctl ${r.error || `exited ${r.status}: ${r.stderr.trim().slice(0, 200)}`}`);
    return null;
  }
  if (stopped) res.capped = true;
  let cursor = cur ? cur.ident : "";
  const state = newClassifierState();
  for (const line of r.stdout.slice(0, full).split("\n")) {
    if (line === "") continue;
    res.lines++;
    res.bytes += line.length + 1;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e; // JSON.parse throws nothing else
      res.notes.push("journalctl printed a line that is not JSON; stopped there");
      break;
    }
    if (typeof entry.__CURSOR === "string") cursor = entry.__CURSOR;
    const ident = typeof entry.SYSLOG_IDENTIFIER === "string" ? entry.SYSLOG_IDENTIFIER : "";
    // MESSAGE is a string, or an array of bytes when it is not valid UTF-8.
    const m = entry.MESSAGE;
    const msg = typeof m === "string" ? m : Array.isArray(m) ? Buffer.from(m.filter((b) => typeof b === "number")).toString("utf8") : "";
    if (msg === "" || ident === "" || msg.length > MAX_LINE) continue;
    if (!journalWriterOk(entry, ident, ctx.cfg)) continue;
    const ev = classifyLine(msg, ident, state);
    if (!ev || !src.services.includes(ev.service)) continue;
    const fg = res.forgiven;
    if (fg && fg.names.has(ev.ip)) {
      // journalctl adds __REALTIME_TIMESTAMP (µs) to every entry: the exact time the entry was written.
      const us = typeof entry.__REALTIME_TIMESTAMP === "string" ? Number(entry.__REALTIME_TIMESTAMP) : NaN;
      if (isForgivenLine(fg.get(ev.ip), msg, "", 0, Number.isFinite(us) ? us / 1000 : null)) continue;
    }
    addFound(found, ev, `${ident}: ${msg}`);
    if (found.size >= FOUND_FLUSH) res.flush?.();
  }
  return { ident: cursor, offset: 0, skipping: 0, head: "" };
}

/**
 * Reads every source since its cursor and adds what it found to the
 * tallies, in one transaction. `seconds` caps the work (a connect); the
 * caller learns which addresses got new evidence. `waitMs` (a connect):
 * wait only that long for another reader and then return `busy`; what that
 * reader reads, it counts for every address, and the next look decides.
 */
export function scanLogs(ctx: Ctx, db: Db, seconds: number, waitMs?: number): ScanResult {
  const sources = logSources(ctx.cfg, ctx.sys.fs);
  const res: ScanResult = { readable: 0, sources: sources.length, bytes: 0, lines: 0, capped: false, touched: new Set(), succeeded: new Set(), notes: [] };
  res.forgiven = forgivenLookup(ctx);
  const deadline = ctx.sys.now() + seconds * 1000;
  try {
    if (waitMs !== undefined) db.exec(`PRAGMA busy_timeout = ${Math.floor(waitMs)}`);
    db.exec("BEGIN IMMEDIATE");
  } catch (e) {
    if (waitMs !== undefined && isBusy(e)) {
      res.busy = true;
      return res;
    }
    res.notes.push(`cannot lock sentry.db: ${errText(e)}`);
    return res;
  }
  try {
    const getCur = db.prepare("SELECT ident, offset, skipping, head FROM cursors WHERE source = ?");
    const putCur = db.prepare(
      "INSERT INTO cursors (source, ident, offset, skipping, head, read_at) VALUES (?, ?, ?, ?, ?, ?) " +
        "ON CONFLICT(source) DO UPDATE SET ident=excluded.ident, offset=excluded.offset, skipping=excluded.skipping, head=excluded.head, read_at=excluded.read_at",
    );
    const found: Found = new Map();
    const upsert = db.prepare(
      "INSERT INTO tallies (ip, service, success, failed, naughty, probe, sample, sample_rank, guesses) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) " +
        "ON CONFLICT(ip, service) DO UPDATE SET success=success+excluded.success, failed=failed+excluded.failed, " +
        "naughty=naughty+excluded.naughty, probe=probe+excluded.probe, guesses=guesses+excluded.guesses, " +
        "sample=CASE WHEN excluded.sample_rank >= sample_rank THEN excluded.sample ELSE sample END, " +
        "sample_rank=MAX(sample_rank, excluded.sample_rank), pending=pending+1",
    );
    // Section 7.1.2: one connection's guesses, carried across reads.
    const getConn = db.prepare("SELECT conn_port, conn_n, conn_max FROM tallies WHERE ip = ? AND service = ?");
    const putConn = db.prepare("UPDATE tallies SET conn_port = ?, conn_n = ?, conn_max = ? WHERE ip = ? AND service = ?");
    const endConn = db.prepare("UPDATE tallies SET conn_port = '', conn_n = 0 WHERE ip = ? AND service = ? AND conn_port = ?");
    const endAll = db.prepare("UPDATE tallies SET conn_port = '', conn_n = 0 WHERE ip = ? AND service = ?");
    res.flush = () => {
      weighNames(ctx, db, found);
      for (const [ip, per] of found) {
        // Both sets outlive the flush, so they hold copies of their own: a
        // key cut from a log line keeps the whole line alive (a first read
        // of 200,000 addresses held 33 MB of lines through `touched` alone).
        // `touched` is only ever used when it is small (gatherEvidence).
        if (res.touched.size <= OTHERS_MAX) res.touched.add(ownCopy(ip));
        if ([...per.values()].some((t) => t.success > 0)) res.succeeded.add(ownCopy(ip));
        for (const [service, t] of per) {
          upsert.run(ip, service, t.success, t.failed, t.naughty, t.probe, t.sample, t.rank, t.guesses ?? 0);
          if (!t.conn) continue;
          if (t.conn.segs.length === 0) {
            // Only close lines: they may end the connection held open.
            for (const port of t.conn.endsFirst ?? []) {
              if (port === "*") endAll.run(ip, service);
              else endConn.run(ip, service, port);
            }
            continue;
          }
          const row = getConn.get(ip, service);
          const m = connMerge(t.conn, { port: String(row?.conn_port ?? ""), n: Number(row?.conn_n ?? 0), max: Number(row?.conn_max ?? 0) });
          putConn.run(m.port, m.n, m.max, ip, service);
        }
      }
      found.clear();
    };
    for (const src of sources) {
      const row = getCur.get(src.key) as Cursor | undefined;
      const next = src.kind === "file" ? scanFile(ctx, src, row, found, res, deadline) : scanJournal(ctx, src, row, found, res, deadline);
      if (next === null) continue;
      res.readable++;
      if (src.kind === "file") (res.files ??= []).push([src.path, next.ident, next.offset]);
      putCur.run(src.key, next.ident, next.offset, next.skipping, next.head, ctx.sys.now());
    }
    res.flush();
    if (res.capped) res.notes.push(`stopped reading the logs after ${seconds} s; the next read carries on`);
    const note = db.prepare("INSERT INTO notes (at, text) VALUES (?, ?)");
    for (const n of res.notes) note.run(ctx.sys.now(), n);
    db.exec("DELETE FROM notes WHERE rowid NOT IN (SELECT rowid FROM notes ORDER BY rowid DESC LIMIT 50)");
    db.exec("COMMIT");
  } catch (e) {
    throw new SentryError(`cannot update the evidence index: ${errText(rollbackAfter(db, e))}`, 2);
  }
  return res;
}

/** The tallies of one address in the index. */
export function tallies(db: Db, ip: string): Tallies {
  const t: Tallies = {};
  const rows = db.prepare("SELECT service, success, failed, naughty, probe, sample, guesses, conn_max FROM tallies WHERE ip = ?").all(ip);
  for (const r of rows) {
    const s = String(r.service) as Service;
    if (!SERVICES.includes(s)) continue;
    t[s] = { success: Number(r.success), failed: Number(r.failed), naughty: Number(r.naughty), probe: Number(r.probe), sample: String(r.sample) };
    // Only where there are any, so tallies without guesses look as they always did.
    if (Number(r.guesses) > 0) t[s].guesses = Number(r.guesses);
    if (Number(r.conn_max) > 0) t[s].connMax = Number(r.conn_max);
  }
  return t;
}

/**
 * Why what the logs say so far is not the whole story, or null if it is:
 * a protected service's log could not be read, or the time cap stopped the
 * read before the end. A success may sit in what was not read, so such
 * evidence can allow but must not block (DESIGN.md step 5: a read failure
 * never blocks a legitimate user); the next read settles it.
 */
export function incomplete(res: ScanResult): string | null {
  if (res.readable < res.sources) return `${res.sources - res.readable} of ${res.sources} logs could not be read`;
  if (res.capped) return "the logs were not read to their end";
  if (res.skipped?.length) return res.skipped[0];
  return null;
}

/**
 * The evidence for `ip` from every protected service's log, or null if no
 * log could be read at all (fail safe: no log, no decision). `partial` says
 * why the evidence may lack a success (see incomplete). "busy": another
 * process was reading and `waitMs` ran out (scanLogs).
 */
export function gatherEvidence(
  ctx: Ctx,
  ip: string,
  waitMs?: number,
): {
  tallies: Tallies;
  partial: string | null;
  naughtyNames: number;
  succeeded: Set<string>;
  files: [string, string, number][] | null;
  others: { ip: string; tallies: Tallies; naughtyNames: number }[];
} | null | "busy" {
  const db = openIndex(ctx);
  try {
    const res = scanLogs(ctx, db, ctx.cfg.SCAN_SECONDS, waitMs);
    if (res.busy) return "busy";
    for (const n of res.notes) ctx.sys.warn(n);
    if (res.capped) logDecision(ctx, ip, "scan-capped", `read ${res.bytes} bytes in ${ctx.cfg.SCAN_SECONDS} s; the next read carries on`);
    if (res.readable === 0) {
      ctx.sys.warn(`no log could be read for ${ip}; nothing decided`);
      return null;
    }
    const files = res.files !== undefined && res.files.length === res.sources ? res.files : null; // a journal has no size to compare
    // The addresses whose connects this read turned away (scanLogs: busy)
    // left their decision to it: those with new lines and the connections
    // of a connect's decision. A read of many addresses (a first read) leaves
    // them to --scan and their next connects.
    const others: { ip: string; tallies: Tallies; naughtyNames: number }[] = [];
    if (res.touched.size <= OTHERS_MAX)
      for (const o of res.touched)
        if (o !== ip && ipStatus(ctx, o) === null && countConnections(ctx, o) >= ctx.cfg.CONNECT_THRESHOLD)
          others.push({ ip: o, tallies: tallies(db, o), naughtyNames: userNames(db, o).naughty });
    return { tallies: tallies(db, ip), partial: incomplete(res), naughtyNames: userNames(db, ip).naughty, succeeded: res.succeeded, files, others };
  } finally {
    db.close();
  }
}

/** Most other addresses one connect's read decides for (gatherEvidence). */
const OTHERS_MAX = 20;

/**
 * `s` as a string of its own. V8 keeps a substring of 13 characters or more
 * (203.0.113.200) as a view into the string it was cut from, so an address
 * kept after its line is read would keep the line with it. Addresses are
 * ASCII: latin1 round-trips them exactly.
 */
function ownCopy(s: string): string {
  return s.length < 13 ? s : Buffer.from(s, "latin1").toString("latin1");
}

/** Sets aside the evidence index's tallies (and names) for `ip`: a delisted or expired address starts again from nothing. */
export function forgetEvidence(ctx: Ctx, ip: string, open?: Db): void {
  const forget = (db: Db) => {
    db.prepare("DELETE FROM tallies WHERE ip = ?").run(ip);
    db.prepare("DELETE FROM users WHERE ip = ?").run(ip);
  };
  if (open) forget(open);
  else ifIndex(ctx, undefined, forget);
}

/** The user names `ip` tried (not its successes), and how many of them were named on naughty lines. */
export function userNames(db: Db, ip: string): { names: string[]; naughty: number } {
  const rows = db.prepare("SELECT user, naughty FROM users WHERE ip = ? ORDER BY user").all(ip);
  return { names: rows.map((r) => String(r.user)), naughty: rows.filter((r) => Number(r.naughty) > 0).length };
}

/** The evidence index's tallies for `ip`, or null when there is no index. */
export function readEvidence(ctx: Ctx, ip: string): Tallies | null {
  return ifIndex<Tallies | null>(ctx, null, (db) => tallies(db, ip));
}

/** The latest notes of the index (first reads, caps, unreadable logs), for --report --verbose. */
export function indexNotes(ctx: Ctx): string[] {
  return ifIndex(ctx, [] as string[], (db) =>
    db
      .prepare("SELECT at, text FROM notes ORDER BY rowid DESC LIMIT 10")
      .all()
      .map((r) => `${isoTime(Number(r.at))} ${String(r.text)}`)
      .reverse(),
  );
}

// ---- 7.3 --test-log: how sentry reads a log ---------------------------------
//
//   $ sentry --test-log /var/log/auth.log
//        1  naughty  ssh  203.0.113.9                             sshd: invalid user "admin"
//        2  other    not a watched program (CRON)
//        3  off      smtp 198.51.100.4                            ignored: PROTECT_SMTP=0 (postfix: SASL LOGIN failed)
//        4  missed   sshd timeout line without 'ADDR port N'
//   …
//   addresses (numeric order), with what --scan and --connect would do:
//   203.0.113.9   ssh: 0 success, 1 naughty, 0 failed, 0 probe → would block once seen 3 times
//   2001:db8::9   ssh: 0 success, 4 naughty, 0 failed, 0 probe → would block
//
//   totals: 4 lines: 1 matched (0 success, 0 failed, 1 naughty, 0 probe), 1 off (service not protected or read elsewhere), 0 ignored (known daemon, not about a login), 1 missed (known daemon, not understood), 1 other (not a watched program)
//     sshd               2 lines: 1 matched (1 naughty), 1 missed
//
// fail2ban-regex's job: before trusting sentry with a server, an
// administrator runs it over the server's own logs and sees every line's
// fate and what sentry would do, with the settings in force: a service
// that is off is said to be off, never "would block"; an address that has
// not reached the threshold says when it would be decided. A prediction
// that differs from what --scan does is a lie to the admin, so the rules
// are the ones --scan uses (thresholdReached, decide), not a copy.
//
// The address column is as wide as the longest address (39 characters:
// eight groups of four hex digits), so IPv4 and IPv6 lines stay aligned;
// the output is written as the file is read, and a log may be gigabytes.

/** The program assumed for lines without a syslog prefix, guessed from the file's name. */
export function programForFile(file: string): string {
  const base = path.basename(file).toLowerCase();
  if (/ftp|xferlog/.test(base)) return DEFAULT_PROGRAM.ftp;
  if (/mail|dovecot|imap|pop3/.test(base)) return DEFAULT_PROGRAM.mail;
  return DEFAULT_PROGRAM.ssh;
}

/** Why lines of `service` are not read with these settings ("PROTECT_SMTP=0"), or null when they are (mirrors logSources). */
export function serviceOff(cfg: Config, service: Service): string | null {
  if (service === "ftp" && !cfg.PROTECT_FTP) return "PROTECT_FTP=0";
  if (service === "smtp" && !cfg.PROTECT_SMTP) return "PROTECT_SMTP=0";
  if (service === "mua" && !cfg.PROTECT_MUA) return "PROTECT_MUA=0";
  return null;
}

/** Numeric order of canonical addresses: IPv4 before IPv6, each by value (10.0.0.9 before 10.0.0.10). */
export function compareIps(a: string, b: string): number {
  const fa = ipFamily(a);
  const fb = ipFamily(b);
  if (fa !== fb) return fa - fb;
  const x = (parseCidr(a) as Cidr).base;
  const y = (parseCidr(b) as Cidr).base;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The fate of one line in --test-log; the four kinds of evidence, or why it is not evidence. */
export type LineClass = Kind | "off" | "ignored" | "missed" | "other";

/**
 * Reasons (explainLine's `why`) of a known daemon's line that was
 * understood and is deliberately not evidence: the daemon speaking of
 * something else, a line another line already counts, an ambiguous line
 * refused. Any other reason of a known daemon means its shape was not
 * understood: "missed", what --missed lists so a new daemon version's
 * wording is noticed. Kept to the wording of section 6's no(...) calls.
 */
const NOT_EVIDENCE_BY_DESIGN =
  /not about|not from |not evidence|intermediate step|logs its own line|counted instead|proves nothing|remembered for pid|not a user's success|not the client's failure|user ended|\bignored$/;

/** Reasons explainLine gives for a line that is not of a watched daemon at all. */
const NOT_A_DAEMON_LINE = /^(not a watched program|empty line|timestamp without a program field|line longer than|not a line of text)/;

/** The class of a line explainLine found no evidence in, from its reason. */
export function classOfReason(why: string): "ignored" | "missed" | "other" {
  if (NOT_A_DAEMON_LINE.test(why)) return "other";
  return NOT_EVIDENCE_BY_DESIGN.test(why) ? "ignored" : "missed";
}

/** What --scan and --connect would do with an address, in words: "would block once seen 3 times". */
export function predict(
  t: Tallies,
  o: {
    status: Status;
    allowListed: boolean; // in ALLOW_IPS or loopback
    allowRange?: string | null; // else the range of allow/ that holds it ("198.51.100.0/24")
    connections: number;
    cfg: Pick<Config, "CONNECT_THRESHOLD" | "STRONG_CONNECT_THRESHOLD" | "FAIL_THRESHOLD" | "EARLY_NAUGHTY_LINES" | "GUESS_THRESHOLD" | "CONNECTION_GUESSES">;
    naughtyNames: number;
    blockFor?: string; // how long the block would last ("10 minutes"): blockLength's answer
  },
): string {
  if (o.status === "allowed") {
    if (o.allowListed) return "in ALLOW_IPS or loopback: never blocked";
    return o.allowRange ? `in the allowed range ${o.allowRange} (allow/): nothing to do` : "already allowed (allow/): nothing to do";
  }
  if (o.status === "blocked") return "already blocked (block/): nothing to do";
  const v = decide(t, o.cfg.FAIL_THRESHOLD, o.cfg);
  if (v.action === "none") return "would decide nothing yet";
  // A block says how long: blockLength weighs the same evidence --scan weighs.
  const what = v.action === "block" && o.blockFor ? `block for ${o.blockFor}` : v.action;
  const threshold = decisionThreshold(v, v.action === "block" && earlyEvidence(t, o.naughtyNames, o.cfg), o.cfg);
  if (!thresholdReached(t, o.connections, threshold)) return `would ${what} once seen ${threshold} times`;
  return `would ${what}`;
}

interface LineCounts {
  lines: number;
  success: number;
  failed: number;
  naughty: number;
  probe: number;
  off: number;
  ignored: number;
  missed: number;
  other: number;
}

function newCounts(): LineCounts {
  return { lines: 0, success: 0, failed: 0, naughty: 0, probe: 0, off: 0, ignored: 0, missed: 0, other: 0 };
}

/** "12 lines: 3 matched (1 success, 2 failed), 9 ignored"; `all` shows the zero counts too; `width` right-aligns the first number. */
export function formatCounts(c: LineCounts, all: boolean, width = 0): string {
  const matched = c.success + c.failed + c.naughty + c.probe;
  const kinds = (["success", "failed", "naughty", "probe"] as const).filter((k) => all || c[k] > 0).map((k) => `${c[k]} ${k}`);
  const parts: string[] = [];
  const part = (n: number, text: string) => void ((all || n > 0) && parts.push(text));
  part(matched, `${matched} matched (${kinds.join(", ")})`);
  part(c.off, `${c.off} off${all ? " (service not protected, or read from another log)" : ""}`);
  part(c.ignored, `${c.ignored} ignored${all ? " (known daemon, not about a login)" : ""}`);
  part(c.missed, `${c.missed} missed${all ? " (known daemon, not understood: --missed lists them)" : ""}`);
  part(c.other, `${c.other} other${all ? " (not a watched program)" : ""}`);
  return `${String(c.lines).padStart(width)} lines${parts.length ? ": " : ""}${parts.join(", ")}`;
}

/** The address column: wide enough for any canonical address. */
const IP_COLUMN = 39;

/**
 * Where --test-log keeps what it found per address while it reads: a
 * private temporary SQLite database (the empty file name: SQLite makes it
 * in TMPDIR and deletes it on close, its page cache bounded), filled every
 * FOUND_FLUSH addresses. Held in JS, a 200 MB log's 50,000 addresses (a few
 * KB each: counts, names, a sample) peaked at 379 MiB; a 2 GB log would
 * not fit a small VPS at all. The merge keeps addFound's rules: counts add
 * up, the sample is the latest line of the worst kind, at most
 * NAMES_PER_ADDRESS names per address and service.
 */
export function foundSpill(): {
  put: (found: Found) => void;
  logins: () => string[];
  count: () => number;
  widest: () => number;
  each: (fn: (ip: string, per: Map<Service, Tally & { rank: number; names: Names }>) => void) => void;
  close: () => void;
} {
  const { DatabaseSync } = sqlite();
  const db: Db = new DatabaseSync("");
  // Thrown away on close: no journal, no fsync.
  db.exec("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE; PRAGMA cache_size=-2048");
  db.exec(
    "CREATE TABLE t (key TEXT NOT NULL, ip TEXT NOT NULL, service TEXT NOT NULL, success INTEGER NOT NULL, failed INTEGER NOT NULL, " +
      "naughty INTEGER NOT NULL, probe INTEGER NOT NULL, rank INTEGER NOT NULL, sample TEXT NOT NULL, guesses INTEGER NOT NULL, conn_max INTEGER NOT NULL, PRIMARY KEY (ip, service));" +
      "CREATE INDEX t_key ON t (key, ip);" +
      "CREATE TABLE n (ip TEXT NOT NULL, service TEXT NOT NULL, user TEXT NOT NULL, rule TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL, " +
      "PRIMARY KEY (ip, service, user, rule));",
  );
  const putT = db.prepare(
    "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ip, service) DO UPDATE SET success = success + excluded.success, " +
      "failed = failed + excluded.failed, naughty = naughty + excluded.naughty, probe = probe + excluded.probe, " +
      "guesses = guesses + excluded.guesses, conn_max = MAX(conn_max, excluded.conn_max), " +
      "sample = CASE WHEN excluded.rank >= rank THEN excluded.sample ELSE sample END, rank = MAX(rank, excluded.rank)",
  );
  const putN = db.prepare(
    "INSERT INTO n SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM n WHERE ip = ? AND service = ? AND user = ?) " +
      "OR (SELECT COUNT(DISTINCT user) FROM n WHERE ip = ? AND service = ?) < ? ON CONFLICT (ip, service, user, rule) DO UPDATE SET n = n + excluded.n",
  );
  // The order of compareIps: family, then value.
  const key = (ip: string) => `${ipFamily(ip)}${(parseCidr(ip) as Cidr).base.toString(16).padStart(32, "0")}`;
  return {
    put(found) {
      db.exec("BEGIN");
      try {
        for (const [ip, per] of found)
          for (const [service, t] of per) {
            // One connection's guesses split by a put count as two (7.1.2: fewer, never more).
            putT.run(key(ip), ip, service, t.success, t.failed, t.naughty, t.probe, t.rank, t.sample, t.guesses ?? 0, t.conn ? connMaxOf(t.conn) : 0);
            for (const [user, rules] of t.names)
              for (const [rule, r] of rules) putN.run(ip, service, user, rule, r.kind, r.n, ip, service, user, ip, service, NAMES_PER_ADDRESS);
          }
        db.exec("COMMIT");
      } catch (e) {
        throw rollbackAfter(db, e);
      }
      found.clear();
    },
    logins: () => db.prepare("SELECT DISTINCT user FROM n WHERE kind = 'success'").all().map((r) => String(r.user)),
    count: () => Number(db.prepare("SELECT COUNT(DISTINCT ip) AS n FROM t").get()?.n ?? 0),
    widest: () => Number(db.prepare("SELECT COALESCE(MAX(LENGTH(ip)), 0) AS w FROM t").get()?.w ?? 0),
    each(fn) {
      const names = db.prepare("SELECT service, user, rule, kind, n FROM n WHERE ip = ?");
      let ip: string | null = null;
      let per = new Map<Service, Tally & { rank: number; names: Names }>();
      const done = () => {
        if (ip === null) return;
        for (const r of names.iterate(ip)) {
          const t = per.get(String(r.service) as Service);
          if (!t) continue;
          let rules = t.names.get(String(r.user));
          if (!rules) t.names.set(String(r.user), (rules = new Map()));
          rules.set(String(r.rule), { kind: String(r.kind) as Kind, n: Number(r.n) });
        }
        fn(ip, per);
      };
      for (const r of db.prepare("SELECT ip, service, success, failed, naughty, probe, rank, sample, guesses, conn_max FROM t ORDER BY key, ip").iterate()) {
        if (r.ip !== ip) {
          done();
          ip = String(r.ip);
          per = new Map();
        }
        per.set(String(r.service) as Service, {
          success: Number(r.success),
          failed: Number(r.failed),
          naughty: Number(r.naughty),
          probe: Number(r.probe),
          sample: String(r.sample),
          rank: Number(r.rank),
          names: new Map(),
          ...(Number(r.guesses) > 0 ? { guesses: Number(r.guesses) } : {}),
          ...(Number(r.conn_max) > 0 ? { connMax: Number(r.conn_max) } : {}),
        });
      }
      done();
    },
    close: () => db.close(),
  };
}

/** --test-log FILE|-: every line's class and why, what would be done with each address, and totals. */
export function testLog(ctx: Ctx, file: string, missedOnly = false): number {
  const fsys = ctx.sys.fs;
  // The source this file is, if sentry reads it with these settings: its
  // services and its prefix-less program are then exactly those of --scan.
  const sources = logSources(ctx.cfg, fsys);
  const src = file === "-" ? undefined : sources.find((x) => x.kind === "file" && path.resolve(x.path) === path.resolve(file));
  let fd: number;
  try {
    fd = file === "-" ? 0 : fsys.openSync(file, "r");
  } catch (e) {
    throw ioError("read", file, e);
  }
  const program = src ? src.program : file === "-" ? "sshd" : programForFile(file);
  const state = newClassifierState();
  const found: Found = new Map();
  const spill = foundSpill();
  try {
    return testLogRead(ctx, file, missedOnly, fd, src, sources, program, state, found, spill);
  } finally {
    spill.close();
  }
}

function testLogRead(
  ctx: Ctx,
  file: string,
  missedOnly: boolean,
  fd: number,
  src: LogSource | undefined,
  sources: LogSource[],
  program: string,
  state: ClassifierState,
  found: Found,
  spill: ReturnType<typeof foundSpill>,
): number {
  const fsys = ctx.sys.fs;
  const total = newCounts();
  const perDaemon = new Map<string, LineCounts>();
  const out: string[] = [];
  const flush = () => {
    if (out.length) ctx.sys.out(out.join("\n"));
    out.length = 0;
  };
  const elsewhere = (service: Service): string => {
    const other = sources.find((x) => x.services.includes(service));
    return other ? `sentry reads ${service} evidence from ${other.kind === "journal" ? "the journal" : other.path}` : `sentry reads no log for ${service}`;
  };
  let n = 0;
  const show = (cls: LineClass, text: string) => {
    if (!missedOnly || cls === "missed") out.push(`${String(n).padStart(6)}  ${cls.padEnd(8)} ${text}`);
  };
  let res: { stopped: boolean };
  // Its lines go to stdout as it reads: on the same terminal they would cut the progress line.
  const shown = progress(ctx, file, file === "-" || (ctx.sys.outTty && !missedOnly) ? 0 : fsys.fstatSync(fd).size);
  try {
    res = readLines(fsys, fd, { start: null, size: Infinity, skipping: false }, (line) => {
      n++;
      total.lines++;
      if (line === null) {
        total.other++;
        show("other", `longer than ${MAX_LINE} bytes: not read (no daemon writes such lines)`);
      } else {
        const { ev, why } = explainLine(line, program, state);
        let cls: LineClass;
        if (ev) {
          const off = serviceOff(ctx.cfg, ev.service) ?? (src && !src.services.includes(ev.service) ? elsewhere(ev.service) : null);
          cls = off === null ? ev.kind : "off";
          if (off === null) addFound(found, ev, line);
          if (found.size >= FOUND_FLUSH) spill.put(found);
          const shown = off === null ? why : `ignored: ${off} (${why})`;
          show(cls, `${ev.service.padEnd(4)} ${ev.ip.padEnd(IP_COLUMN)} ${sanitize(shown, 240)}`);
        } else {
          cls = classOfReason(why);
          show(cls, sanitize(why, 200));
        }
        total[cls]++;
        if (cls !== "other") {
          const daemon = splitLine(line.replace(/\r?\n$/, ""), program)?.program ?? program;
          let d = perDaemon.get(daemon);
          if (!d) perDaemon.set(daemon, (d = newCounts()));
          d.lines++;
          d[cls]++;
        }
      }
      if (out.length >= 1000) flush();
      // Stop reading once nobody reads what we print (`| head`).
    }, { lastPartial: true, more: () => !(ctx.sys.outClosed?.() ?? false), onChunk: shown.tick });
  } catch (e) {
    throw ioError("read", file, e);
  } finally {
    shown.end();
    if (file !== "-") fsys.closeSync(fd);
  }
  flush();
  if (res.stopped) return 0;
  spill.put(found);

  const summary: string[] = [];
  summary.push(`totals: ${formatCounts(total, true)}`);
  const daemons = [...perDaemon.keys()].sort();
  const dw = Math.max(16, ...daemons.map((d) => d.length));
  const lw = String(total.lines).length;
  for (const d of daemons) summary.push(`  ${d.padEnd(dw)} ${formatCounts(perDaemon.get(d) as LineCounts, false, lw)}`);
  if (program !== "sshd") summary.push(`lines without a syslog prefix were read as ${program}'s`);
  if (missedOnly) {
    // stdout holds the missed lines alone, for scripts; the totals are for the reader.
    for (const l of summary) ctx.sys.err(`${l}\n`);
    return 0;
  }

  // What is known of each address in ROOT_DIR (seen/, allow/, block/) is part of the prediction.
  let stateNote: string | null = null;
  try {
    fsys.accessSync(ctx.cfg.ROOT_DIR, fs.constants.R_OK | fs.constants.X_OK);
  } catch (e) {
    if (errCode(e) !== "ENOENT") stateNote = `cannot read ${ctx.cfg.ROOT_DIR} (${errText(e)}): predictions assume no address was seen, allowed or blocked yet`;
  }
  // The typo check --scan applies (section 7.1.1): local accounts, names
  // that logged in here (sentry.db, if there is one) and in this file.
  const late: string[] = []; // notes met while the list is written go below it
  const typoOf = typoChecker(ctx.cfg.TYPO_DISTANCE, () => {
    const names = spill.logins();
    try {
      names.push(...passwdAccounts(fsys.readFileSync(ctx.cfg.PASSWD_FILE, "utf8")));
    } catch (e) {
      late.push(`note: cannot read ${ctx.cfg.PASSWD_FILE} for the typo check: ${errText(e)} (only names that logged in count)`);
    }
    if (stateNote === null) names.push(...ifIndex(ctx, [] as string[], (db) => db.prepare("SELECT user FROM logins").all().map((r) => String(r.user))));
    return names;
  });
  const iw = Math.max(15, spill.widest());
  out.push("", `${spill.count()} addresses (numeric order), with what --scan and --connect would do:`);
  spill.each((ip, per) => {
    const one: Found = new Map([[ip, per]]);
    retypeTypos(one, typoOf);
    const t: Tallies = {};
    for (const [s, x] of per) t[s] = x;
    const counts = SERVICES.flatMap((s) => {
      const x = t[s];
      return x ? [tallyText(s, x)] : [];
    }).join("; ");
    const names = naughtyNamesOf(per);
    const status = stateNote === null ? ipStatus(ctx, ip) : inRanges(ip, ctx.allowRanges) ? "allowed" : null;
    const allowListed = inRanges(ip, allowConfigured.get(ctx) ?? ctx.allowRanges); // ALLOW_IPS and loopback, as ipStatus reads them
    const would = predict(t, {
      status,
      allowListed,
      // Only an allowed address not in ALLOW_IPS is looked up in allow/'s ranges.
      allowRange: status === "allowed" && !allowListed ? (ctx.allowRanges.find((n) => inRanges(ip, [n]))?.text ?? null) : null,
      connections: stateNote === null ? countConnections(ctx, ip) : 0,
      cfg: ctx.cfg,
      naughtyNames: names,
      blockFor: ((ms) => (ms === 0 ? "good (EXPIRE_BLOCK_DAYS=0)" : lengthText(ms)))(blockLength(t, names, ctx.cfg).ms),
    });
    out.push(`${ip.padEnd(iw)} ${counts} → ${would}`);
    if (out.length >= 1000) flush();
  });
  out.push("", ...summary);
  if (file !== "-" && !src)
    out.push(`note: ${file} is not a log sentry reads with these settings (${sources.map((x) => (x.kind === "journal" ? "the journal" : x.path)).join(", ") || "none"}); predictions assume it were read for every protected service`);
  if (stateNote) out.push(`note: ${stateNote}`);
  out.push(...late);
  flush();
  return 0;
}

// ==== 8. Decision ===========================================================
//
//   { ssh: { success: 1, failed: 4, … } }           → allow  (a user who got in)
//   { ssh: { naughty: 1, … } }                      → block  (invalid user, root…)
//   { ssh: { failed: 11, … } }                      → block  (more than 10 failures)
//   { ssh: { failed: 5, guesses: 5, … } }           → block  (more than 4 password guesses: thin, 8.1)
//   { ssh: { failed: 7, guesses: 6, connMax: 6 } }  → block  (6 guesses in one connection: a program)
//   { ssh: { failed: 3, probe: 40, … } }            → none   (probes are not attempts)
//   { ssh: { failed: 3, … } }                       → none   (not known yet)
//
// The order of the rules is the safety of the whole tool: a success, on any
// service, wins over everything else, so a user behind an office NAT that an
// attacker shares is never locked out. The rules are a pure function of the
// tallies, so tests check them without logs.

export interface Verdict {
  action: "allow" | "block" | "none";
  reason: string;
}

/**
 * The decision of DESIGN.md step 4 from an address's tallies, with issue
 * 16's refinement of "more than 10 failures blocks": more than
 * GUESS_THRESHOLD password guesses block too, on thin evidence (a short
 * block, section 8.3), and more than CONNECTION_GUESSES in one connection
 * is a program's (section 7.1.2). `guess` limits of 0 are off.
 */
export function decide(
  t: Tallies,
  failLimit: number = DEFAULTS.FAIL_THRESHOLD,
  guess: Pick<Config, "GUESS_THRESHOLD" | "CONNECTION_GUESSES"> = DEFAULTS,
): Verdict {
  const entries = SERVICES.flatMap((s) => (t[s] ? [[s, t[s]] as const] : []));
  const describe = (s: Service, x: Tally) =>
    tallyText(s, x) +
    (x.sample ? `; e.g. ${JSON.stringify(x.sample)}` : "");
  for (const [s, x] of entries) if (x.success > 0) return { action: "allow", reason: describe(s, x) };
  for (const [s, x] of entries) if (x.naughty > 0) return { action: "block", reason: describe(s, x) };
  // Attempts are failed authentications. Probes (a scanner's banner grab, a
  // client that gave up) are shown but not counted: sshd ends every failed
  // connection with a "Connection closed by authenticating user" line, and
  // counting it too would block a user with 9 typos instead of 11.
  let attempts = 0;
  for (const [, x] of entries) attempts += x.failed;
  if (attempts > failLimit) {
    const [s, x] = entries.reduce((a, b) => (b[1].failed > a[1].failed ? b : a));
    return { action: "block", reason: `${attempts} failed attempts (more than ${failLimit}); ${describe(s, x)}` };
  }
  // Password guesses (not keys: an agent offers those by itself, 7.1.2).
  // fail2ban bans at its 5th failure (maxretry 5) and sentry let a password
  // guesser have 11; a person who forgot a password types ssh's 3 prompts
  // a time, so the 5th guess comes on their second connection at the
  // earliest, and the block it makes is thin (10 minutes, lifted by their
  // success: section 8.3). Failures of other services stay at failLimit:
  // a mail client retries a saved wrong password by itself.
  for (const [s, x] of entries)
    if (guess.CONNECTION_GUESSES > 0 && (x.connMax ?? 0) > guess.CONNECTION_GUESSES)
      return { action: "block", reason: `${x.connMax} password guesses in one connection (more than ${guess.CONNECTION_GUESSES}: ssh asks 3); ${describe(s, x)}` };
  let guesses = 0;
  for (const [, x] of entries) guesses += x.guesses ?? 0;
  if (guess.GUESS_THRESHOLD > 0 && guesses > guess.GUESS_THRESHOLD) {
    const [s, x] = entries.reduce((a, b) => ((b[1].guesses ?? 0) > (a[1].guesses ?? 0) ? b : a));
    return { action: "block", reason: `${guesses} password guesses (more than ${guess.GUESS_THRESHOLD}); ${describe(s, x)}` };
  }
  return { action: "none", reason: `${attempts} failed attempts, no success, nothing naughty` };
}

// A bot's evidence decides early:
//
//   2nd connect, logs: "Invalid user admin" + 6 × "Failed password for invalid user admin"
//                      + "maximum authentication attempts exceeded for invalid user admin" + …
//     → 8 naughty lines or more, one connection     → block now (STRONG_CONNECT_THRESHOLD), end this connection
//   2nd connect, logs: "Invalid user admin" / "Invalid user oracle" (two names)
//     → block now, end this connection
//   2nd connect, logs: `ssh root@host`, 3 passwords: 3 × "Failed password for root" + "Connection closed …"
//     → 4 naughty lines: strong (blockLength), but a person writes that → wait for the 3rd (CONNECT_THRESHOLD)
//   2nd connect, logs: 6 × "Failed password for alice … port 40100" (one connection, a real account)
//     → more guesses in one connection than ssh asks (CONNECTION_GUESSES, section 7.1.2) → block now, end this connection
//
// Measured against a real sshd 9.2 (issue 16): a bot that uses all of
// MaxAuthTries (6) per connection got 18 guesses before tcpd refused it,
// because sentry decided at the start of the third connection and tcpd lets
// that connection through whatever sentry decides. One connection of a
// person writes at most 5 naughty lines (ssh asks 3 passwords: "Invalid
// user", 3 failures, the closing line) and one user name; more lines, a
// second name, or more failures than FAIL_THRESHOLD is a bot, so weighing
// that at the second connection costs nobody legitimate anything, and the
// bot loses a whole connection of guesses (and, with section 8.2, the
// second one too). Everything else keeps the old threshold: the third
// connection is the one where a person's success shows and lifts a block
// (section 8.3). With MaxAuthTries 3 (what --doctor suggests) a bot's
// connection looks like a person's by its lines, and waits like one; it
// gets 3 guesses per connection instead. The price is one log read at every
// address's second connection (a cursor read: the bytes written since the
// last one).

/** Whether these tallies are a bot's, not a person's (above): enough to block before CONNECT_THRESHOLD. `naughtyNames` as in blockLength. */
export function earlyEvidence(t: Tallies, naughtyNames: number, cfg: Pick<Config, "EARLY_NAUGHTY_LINES" | "FAIL_THRESHOLD" | "CONNECTION_GUESSES">): boolean {
  let naughty = 0;
  let failed = 0;
  let connMax = 0;
  for (const s of SERVICES) {
    naughty += t[s]?.naughty ?? 0;
    failed += t[s]?.failed ?? 0;
    connMax = Math.max(connMax, t[s]?.connMax ?? 0);
  }
  const program = cfg.CONNECTION_GUESSES > 0 && connMax > cfg.CONNECTION_GUESSES; // section 7.1.2
  return naughtyNames >= 2 || naughty > cfg.EARLY_NAUGHTY_LINES || failed > cfg.FAIL_THRESHOLD || program;
}

/** The connection count (or, for --scan, log events) from which verdict `v` may be acted on: fewer for a block on a bot's evidence. */
export function decisionThreshold(v: Verdict, early: boolean, cfg: Pick<Config, "CONNECT_THRESHOLD" | "STRONG_CONNECT_THRESHOLD">): number {
  if (v.action === "block" && early) return Math.min(cfg.STRONG_CONNECT_THRESHOLD, cfg.CONNECT_THRESHOLD);
  return cfg.CONNECT_THRESHOLD;
}

/** The record line the old scripts printed and admins grep: "   3 connections from IP and it is blocked". */
export function recordLine(count: number, ip: string, status: Status): string {
  const n = String(count).padStart(4);
  return `${n} connections from ${ip}${status === "allowed" ? " and it is allowed" : status === "blocked" ? " and it is blocked" : ""}`;
}

/**
 * --connect: DESIGN.md's decision. Steps 1–3 cost a write, two stats and a
 * read of a small file; only an undecided address at its third connection
 * pays for the logs.
 */
export function connect(ctx: Ctx, ip: string): number {
  const count = recordConnection(ctx, ip); // 1
  const status = ipStatus(ctx, ip);
  ctx.sys.out(recordLine(count, ip, status));
  expireIfDue(ctx, ctx.cfg.CONNECT_WAIT_MS);
  refreshHostsAllowed(ctx); // the host's tcpd policy changed since hosts.allowed was written (section 9.1.2)
  if (status === "blocked") return healBlocked(ctx, ip); // 2: tcpd let a blocked address in
  if (status !== null) return healAllowed(ctx, ip); // 2: tcpd should have admitted it from hosts.allowed
  if (count < Math.min(ctx.cfg.CONNECT_THRESHOLD, ctx.cfg.STRONG_CONNECT_THRESHOLD)) return 0; // 3
  if (lookedNothingNew(ctx, ip)) return 0; // 4, short: nothing was written since its last look found nothing
  // No convoy: under a burst, every connect past the threshold would queue
  // behind the one reading the logs (sshd waits for each, and drops new
  // connections past MaxStartups). Our connection is counted; the reader
  // counts the log lines for every address; the next connect or --scan
  // decides with them.
  const evidence = gatherEvidence(ctx, ip, ctx.cfg.CONNECT_WAIT_MS); // 4
  if (evidence === "busy") return 0;
  if (evidence === null) {
    if (count < ctx.cfg.CONNECT_THRESHOLD) return 0; // 3: nothing would be decided yet anyway (gatherEvidence warned)
    // 5: no readable log, no decision; said where the admin looks (stderr is /dev/null under tcpd).
    withIndex(ctx, (db) => noteWithheld(ctx, db, [ip], "no log could be read, nothing decided"));
    return 0;
  }
  // What this read found may be the success some other address was blocked before.
  const lifted = Math.max(liftAfterSuccess(ctx, evidence.succeeded, "connect").code, evidence.partial === null ? decideOthers(ctx, evidence.others) : 0);
  const v = decide(evidence.tallies, ctx.cfg.FAIL_THRESHOLD, ctx.cfg);
  if (v.action === "none") {
    if (evidence.partial === null && evidence.files !== null) noteLookedNothing(ctx, ip, evidence.files);
    return lifted;
  }
  // 3: only a bot's evidence decides before CONNECT_THRESHOLD (see earlyEvidence).
  if (count < decisionThreshold(v, earlyEvidence(evidence.tallies, evidence.naughtyNames, ctx.cfg), ctx.cfg)) return lifted;
  if (v.action === "block" && evidence.partial !== null) {
    // 5: what was not read may hold this address's success.
    ctx.sys.warn(`not blocking ${ip} yet: ${evidence.partial}`);
    withIndex(ctx, (db) => noteWithheld(ctx, db, [ip], evidence.partial as string));
    return lifted;
  }
  const length = repeatLength(blockLength(evidence.tallies, evidence.naughtyNames, ctx.cfg), readHistory(ctx, ip), ctx.cfg);
  let cut = false;
  const code = withLock(ctx, () => {
    // Another connect of the same address may have decided while we read the logs.
    if (ipStatus(ctx, ip) !== null) return 0;
    if (v.action === "allow") return autoAllow(ctx, ip, "connect", v.reason);
    const c = setBlocked(ctx, ip, "connect", v.reason, length);
    // Only a block decided early (a bot's evidence): from CONNECT_THRESHOLD on, the deciding connection is where a person's success shows (section 8.3).
    cut = ctx.cfg.CUT_DECIDING_CONNECTION && count < ctx.cfg.CONNECT_THRESHOLD;
    cutFlows(ctx, ip); // nftables drops their packets from now on: end them, don't let them stall (section 9.2.2)
    return c;
  }, { waitMs: ctx.cfg.CONNECT_WAIT_MS, then: () => 0 }); // busy: the tallies are in sentry.db, the next look decides
  if (cut) {
    // Last, outside the lock and after syslog and the notifiers are on their
    // way: ending sshd may end this process too, and nothing may be lost then.
    flushOutbox(ctx);
    cutDecidingConnection(ctx, ip);
  }
  return Math.max(lifted, code);
}

/** Decides for the addresses a connect's read found past the threshold (gatherEvidence: others), on a complete read. */
function decideOthers(ctx: Ctx, others: { ip: string; tallies: Tallies; naughtyNames: number }[]): number {
  let code = 0;
  for (const o of others) {
    const v = decide(o.tallies, ctx.cfg.FAIL_THRESHOLD, ctx.cfg);
    if (v.action === "none") continue;
    const c = withLock(ctx, () => {
      if (ipStatus(ctx, o.ip) !== null) return 0; // its own connect decided meanwhile
      if (v.action === "allow") return autoAllow(ctx, o.ip, "connect", v.reason);
      const c2 = setBlocked(ctx, o.ip, "connect", v.reason, repeatLength(blockLength(o.tallies, o.naughtyNames, ctx.cfg), readHistory(ctx, o.ip), ctx.cfg));
      cutFlows(ctx, o.ip); // section 9.2.2
      return c2;
    }, { waitMs: ctx.cfg.CONNECT_WAIT_MS, then: () => 0 });
    code = Math.max(code, c);
  }
  return code;
}

// ---- 8.1 A look that found nothing, and logs that did not grow ----------------
//
//   looked   ["fail 10",[["/var/log/auth.log","2049:131","48213"]]]
//            none 192.0.2.10
//            none 198.51.100.4
//
// A monitoring probe or a health check connects all day without ever
// failing a login: past the threshold, each of its connects opened sentry.db
// and read the logs again (1.30× the cost of a new address). If no log has
// been written since the look that found nothing for it (each file's size
// and inode equal to where that read stopped), a new read would find
// nothing either: one stat per log decides, no database. The header is the
// cursor of the read the "none" lines were judged at; a read that moved on
// starts a new list, so an address with new lines always gets a real look.
// Conservative by construction: any difference (a rotated or grown log, a
// journal, another FAIL_THRESHOLD, a race that replaced the file) means the
// full look.

const LOOKED = "looked";

function lookedHeader(ctx: Ctx, files: [string, string, number][]): string {
  return JSON.stringify([`fail ${ctx.cfg.FAIL_THRESHOLD} guess ${ctx.cfg.GUESS_THRESHOLD} conn ${ctx.cfg.CONNECTION_GUESSES}`, files.map(([p, id, off]) => [p, id, String(off)])]);
}

/** True if `ip`'s last look found nothing and no log has grown since (see above): one read of `looked`, a stat per log. */
export function lookedNothingNew(ctx: Ctx, ip: string): boolean {
  const file = path.join(ctx.cfg.ROOT_DIR, LOOKED);
  let text: string;
  try {
    text = readStateFile(ctx, file);
  } catch (e) {
    if (errCode(e) === "ENOENT") return false;
    throw ioError("read", file, e);
  }
  const nl = text.indexOf("\n");
  if (nl < 0 || !text.includes(`\nnone ${ip}\n`)) return false;
  const sources = logSources(ctx.cfg, ctx.sys.fs);
  const now: [string, string, number][] = [];
  for (const src of sources) {
    if (src.kind !== "file") return false;
    const st = ctx.sys.fs.statSync(src.path, { throwIfNoEntry: false });
    if (!st || !st.isFile()) return false;
    now.push([src.path, fileIdent(st), st.size]);
  }
  return text.slice(0, nl) === lookedHeader(ctx, now);
}

/** Adds `ip` to the addresses whose look at the logs as `files` left them found nothing. */
function noteLookedNothing(ctx: Ctx, ip: string, files: [string, string, number][]): void {
  const file = path.join(ctx.cfg.ROOT_DIR, LOOKED);
  const header = lookedHeader(ctx, files);
  let text = "";
  try {
    text = readStateFile(ctx, file);
  } catch (e) {
    if (errCode(e) !== "ENOENT") throw ioError("read", file, e);
  }
  try {
    if (text.startsWith(`${header}\n`)) withRoot(ctx, () => writeNoFollow(ctx.sys.fs, file, `none ${ip}\n`, O_APPEND_NOFOLLOW | fs.constants.O_WRONLY));
    else writeAtomic(ctx, file, `${header}\nnone ${ip}\n`);
  } catch (e) {
    throw ioError("write", file, e);
  }
}

// ---- 8.2 The deciding connection ends with its block ------------------------
//
//   sentry --connect --ip=192.0.2.50          (this process)
//    └ sh -c "… sentry --connect --ip=%a …"   (libwrap's spawn; it waits for us)
//       └ sshd: [accepted]                    exe /usr/sbin/sshd, fd 4 = TCP 192.0.2.1:22 ↔ 192.0.2.50:40013
//                                             → SIGTERM: the bot's connection ends before its first guess
//
// tcpd spawns sentry from the sshd process that serves the connection being
// judged and lets that connection through whatever sentry decides, so a
// bot blocked at the start of its second connection still gets all of
// MaxAuthTries on it (issue 16: 12 guesses with nftables, 18 with tcpd
// alone, against fail2ban's 6). Ending that sshd process ends the
// connection before a single guess. The tree above is what a real sshd 9.2
// with libwrap shows (test/e2e-early.test.ts checks it).
//
// Ending a process is the one thing here that can hurt someone else, so
// the target must prove, from /proc, that it is the connection we judged:
//   1. it is an ancestor of this process, at most CUT_MAX_DEPTH generations
//      up, through shells only (libwrap's `sh -c`): nothing beside us. Its
//      pid cannot be reused while it is our ancestor; only in the moment
//      between the read and the signal could it die, be reaped by the
//      listener and its pid be handed out again (a pid wrap-around within
//      microseconds);
//   2. its executable is sshd or sshd-session (OpenSSH 9.8+);
//   3. it holds an ESTABLISHED TCP socket whose peer is the address just
//      blocked, read from its own network namespace's /proc/PID/net/tcp{,6}.
// sshd's listener holds only listening sockets (3 fails); an admin's session
// from another address fails 3; `sentry --connect` run by hand from a shell
// that is not a child of sshd fails 2. The worst a forged `--ip` can do is
// end a connection from that very address, which the block refuses anyway.
// Any doubt (a /proc we cannot read, a non-Linux system) ends nothing; it is
// said in sentry.log, because stderr is /dev/null under tcpd.

/** One row of /proc/net/tcp{,6}: its socket inode, state and the peer's canonical address. */
export function procNetPeers(text: string, v6: boolean): { inode: string; established: boolean; peer: string | null }[] {
  const rows: { inode: string; established: boolean; peer: string | null }[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [hex] = f[2].split(":");
    rows.push({ inode: f[9], established: f[3] === "01", peer: procNetAddress(hex, v6) });
  }
  return rows;
}

/** "320200C0" → "192.0.2.50"; /proc/net/tcp6's 32 digits are four host-order (little-endian) words. */
export function procNetAddress(hex: string, v6: boolean): string | null {
  if (!/^[0-9A-Fa-f]+$/.test(hex) || hex.length !== (v6 ? 32 : 8)) return null;
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(hex.slice(w + b, w + b + 2), 16));
  if (!v6) return parseIp(bytes.join("."));
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return parseIp(groups.join(":")); // an IPv4-mapped peer comes back as the IPv4
}

/**
 * The pid of the sshd process serving the connection from `ip` that spawned
 * this process, or why there is none (the three proofs above).
 */
export function decidingSshd(sys: Sys, ip: string, maxDepth: number): { pid: number } | { none: string } {
  if (sys.pid === undefined) return { none: "no process tree here" };
  // A process gone or hidden from us (ENOENT, ESRCH, EACCES, EPERM) is not one we may end: null. Anything else is thrown.
  const proc = <T>(f: string, get: () => T): T | null => {
    try {
      return get();
    } catch (e) {
      if (["ENOENT", "EACCES", "ESRCH", "EPERM"].includes(errCode(e) ?? "")) return null;
      throw ioError("read", f, e);
    }
  };
  const read = (f: string) => proc(f, () => sys.fs.readFileSync(f, "utf8"));
  const exeOf = (pid: number) => proc(`/proc/${pid}/exe`, () => path.basename(sys.fs.readlinkSync(`/proc/${pid}/exe`)));
  let pid = sys.pid;
  for (let depth = 1; depth <= maxDepth; depth++) {
    const status = read(`/proc/${pid}/status`);
    const ppid = Number(/^PPid:\s*(\d+)$/m.exec(status ?? "")?.[1] ?? 0);
    if (ppid <= 1) return { none: `no sshd among this process's ancestors (${status === null ? "/proc unreadable" : `pid ${pid}'s parent is ${ppid}`})` };
    pid = ppid;
    const exe = exeOf(pid);
    if (exe === "sshd" || exe === "sshd-session") {
      const fds = proc(`/proc/${pid}/fd`, () => sys.fs.readdirSync(`/proc/${pid}/fd`).map(String));
      if (fds === null) return { none: `cannot read sshd ${pid}'s open files` };
      const inodes = new Set<string>();
      for (const fd of fds) {
        // null: closed between readdir and readlink, so not the connection
        const m = /^socket:\[(\d+)\]$/.exec(proc(`/proc/${pid}/fd/${fd}`, () => sys.fs.readlinkSync(`/proc/${pid}/fd/${fd}`)) ?? "");
        if (m) inodes.add(m[1]);
      }
      for (const [file, v6] of [["tcp", false], ["tcp6", true]] as const) {
        for (const row of procNetPeers(read(`/proc/${pid}/net/${file}`) ?? "", v6))
          if (inodes.has(row.inode) && row.established && row.peer === ip) return { pid };
      }
      return { none: `sshd ${pid} holds no connection from ${ip}` };
    }
    // Only libwrap's shell may stand between sshd and us.
    if (exe === null || !/^(sh|dash|bash|ash|ksh|mksh|busybox)$/.test(exe)) return { none: `an ancestor (${exe ?? "unknown"}) is neither a shell nor sshd` };
  }
  return { none: `no sshd within ${maxDepth} generations` };
}

/** Ends the sshd connection from `ip` that spawned this connect, when /proc proves it is that one (above); says what it did in sentry.log. */
export function cutDecidingConnection(ctx: Ctx, ip: string): boolean {
  let found: { pid: number } | { none: string };
  try {
    found = decidingSshd(ctx.sys, ip, CUT_MAX_DEPTH);
  } catch (e) {
    // The block is made; an odd /proc must not turn it into a failed connect. Said where the admin looks.
    found = { none: errText(e) };
  }
  if ("none" in found) {
    logDecision(ctx, ip, "cut-skipped", found.none);
    return false;
  }
  // Said first: ending sshd can end this process with it (its process group).
  logDecision(ctx, ip, "cut", `ended the deciding connection (sshd pid ${found.pid})`);
  try {
    ctx.sys.kill?.(found.pid);
  } catch (e) {
    logDecision(ctx, ip, "cut-skipped", `could not end sshd ${found.pid}: ${errText(e)}`);
    return false;
  }
  return true;
}

/** Generations between sentry and the sshd that spawned it: libwrap's `sh -c`, and a shell the admin's hosts.allow line may add. */
const CUT_MAX_DEPTH = 4;

// ---- 8.3 How long a block lasts, and the success that lifts it ----------------
//
//   1 naughty line, 1 name ("root", from `ssh root@host` with a key)  → thin:   BLOCK_THIN_MINUTES
//   3 naughty lines, 1 name (one connection as "Invalid user admin")  → thin:   BLOCK_THIN_MINUTES
//   5 password guesses on a real account, 3 at most per connection    → thin:   BLOCK_THIN_MINUTES
//   6 naughty lines, or 2 names tried on naughty lines, or 11 failures → strong: EXPIRE_BLOCK_DAYS
//   4 password guesses or more in one connection (a program)           → strong: EXPIRE_BLOCK_DAYS
//
// Thin evidence is what a person leaves: one wrong name, one `ssh root@host`.
// A bot leaves more (several names, many lines) in the same three
// connections. The thin length is 10 minutes, fail2ban's default bantime,
// which users of such tools already expect: long enough that a bot with thin
// evidence gets at most THIN_NAUGHTY_LINES lines per 10 minutes in, short
// enough that a person who typed the wrong name waits a coffee, not a season.
// A block on failures alone (FAIL_THRESHOLD) stays strong: 11 wrong
// passwords on a real account is the shape of a password guesser too, and
// no lockout measured needed more than it. One on password guesses
// (GUESS_THRESHOLD, 5 to 10 of them) is thin: a person who forgot a
// password leaves exactly that (two connections of ssh's 3 prompts), and
// their next connection, let through by tcpd, logs the success that lifts
// it. With the nftables backend the set's rule drops that connection's
// packets too (section 9.2.2): such a person waits out the 10 minutes.
// More guesses in one connection than ssh asks (CONNECTION_GUESSES) is a
// program: strong.
//
// tcpd lets the connection that sentry judges through, whatever sentry
// decides on it (the block only applies from the next one). So a user
// blocked at the start of the connection that then logs in shows, in the
// logs read after the block, the very success the rule was waiting for:
// liftAfterSuccess turns such a block into an allow, "allowed after
// failures". A block is only decided on logs read to their end, so any
// success read afterwards was logged after the decision. Blocks an
// administrator made (--block) are not lifted so.

/** How long a block on these tallies lasts (ms, 0 = never), and why. `naughtyNames`: distinct names on naughty lines (userNames). */
export function blockLength(
  t: Tallies,
  naughtyNames: number,
  cfg: Pick<Config, "EXPIRE_BLOCK_DAYS" | "BLOCK_THIN_MINUTES" | "THIN_NAUGHTY_LINES" | "FAIL_THRESHOLD" | "CONNECTION_GUESSES">,
): { ms: number; why: string } {
  let naughty = 0;
  let failed = 0;
  let guesses = 0;
  let connMax = 0;
  for (const s of SERVICES) {
    naughty += t[s]?.naughty ?? 0;
    failed += t[s]?.failed ?? 0;
    guesses += t[s]?.guesses ?? 0;
    connMax = Math.max(connMax, t[s]?.connMax ?? 0);
  }
  // A program's connection (more guesses than ssh asks) is never thin.
  const program = cfg.CONNECTION_GUESSES > 0 && connMax > cfg.CONNECTION_GUESSES;
  // The guesses are named where they, not naughty lines, are the evidence.
  const lines =
    `${naughty} naughty line${naughty === 1 ? "" : "s"}, ${naughtyNames} name${naughtyNames === 1 ? "" : "s"} tried on them, ${failed} failed` +
    ((naughty === 0 && guesses > 0) || program ? `, ${guesses} password guess${guesses === 1 ? "" : "es"}, at most ${connMax} in one connection` : "");
  const thin = (naughty > 0 || guesses > 0) && naughty <= cfg.THIN_NAUGHTY_LINES && naughtyNames <= 1 && naughty + failed <= cfg.FAIL_THRESHOLD && !program;
  if (thin && cfg.BLOCK_THIN_MINUTES > 0) return { ms: cfg.BLOCK_THIN_MINUTES * 60_000, why: `thin evidence: ${lines}` };
  return { ms: cfg.EXPIRE_BLOCK_DAYS * 86_400_000, why: `${thin ? "thin" : "strong"} evidence: ${lines}` };
}

/** The configured length of a block that weighs no evidence (an administrator's --block). */
export function defaultBlockLength(cfg: Config): { ms: number; why: string } {
  return { ms: cfg.EXPIRE_BLOCK_DAYS * 86_400_000, why: "EXPIRE_BLOCK_DAYS" };
}

/** "10 minutes", "3 hours", "90 days". */
export function lengthText(ms: number): string {
  const m = Math.round(ms / 60_000);
  if (m < 120) return `${m} minute${m === 1 ? "" : "s"}`;
  if (m < 48 * 60) return `${Math.round(m / 60)} hours`;
  return `${Math.round(m / 1440)} days`;
}

/** A block the logs decided (a connect or --scan), which a later success lifts; not an administrator's. */
const DECIDED_BY_LOGS = /^\S+ block by (connect|scan): /;

/**
 * Lifts the blocks of `ips` (addresses with a success in the read just made)
 * that a connect or --scan decided: the success came after the block
 * (section 8.3). Returns the worst exit code and how many were lifted.
 */
export function liftAfterSuccess(ctx: Ctx, ips: Iterable<string>, by: string): { code: number; lifted: number } {
  let code = 0;
  let lifted = 0;
  for (const ip of ips) {
    if (!DECIDED_BY_LOGS.test(readBlockFile(ctx, ip) ?? "")) continue;
    const c = withLock(ctx, () => {
      const text = readBlockFile(ctx, ip); // a parallel run may have lifted it meanwhile
      if (text === null || !DECIDED_BY_LOGS.test(text)) return 0;
      lifted++;
      const was = text.split("\n")[0];
      const flag = afterFailures(ctx, ip);
      return setAllowed(ctx, ip, by, `${flag ?? "allowed after failures"}: a successful login was logged after the block (${was})`);
    });
    code = Math.max(code, c);
  }
  return { code, lifted };
}

// ---- 8.3.1 The brute force that succeeded ------------------------------------------
//
//   ssh: 9 failed (alice, admin, oracle), then "Accepted password for alice"
//     → allow/IP "… allow by connect: allowed after 9 failures (users: admin, alice, oracle): ssh: 1 success, …"
//
// The rule stands: a success allows (the colleague behind the office NAT is
// never locked out). But nine wrong passwords and then a right one is also
// the trace of a password guesser that found one, and the allow makes it a
// permanent pass. So such an allow carries this wording, which --report
// shows under a heading asking for attention, syslog and the notifications
// carry, and which ALLOW_AFTER_FAILURES_HOLD turns into a hold for review
// (review/IP: neither allowed nor blocked, said once) instead of an allow.
// The tallies hold no order: what was counted when the success is first
// weighed is, nearly always, what came before it.

/** "allowed after N failures (users: …)" when `t` holds `note` or more failed or naughty attempts (note > 0), else null. */
export function afterFailuresText(t: Tallies, users: string[], note: number): string | null {
  let n = 0;
  for (const s of SERVICES) n += (t[s]?.failed ?? 0) + (t[s]?.naughty ?? 0);
  if (note === 0 || n < note) return null;
  const shown = users.slice(0, 10).map((u) => sanitize(u, 40));
  return `allowed after ${n} failures (users: ${shown.length ? shown.join(", ") : "none logged"}${users.length > 10 ? `, … ${users.length - 10} more` : ""})`;
}

/** afterFailuresText for `ip` from the evidence index (null without one). */
export function afterFailures(ctx: Ctx, ip: string): string | null {
  return ifIndex<string | null>(ctx, null, (db) => afterFailuresText(tallies(db, ip), userNames(db, ip).names, ctx.cfg.ALLOW_AFTER_FAILURES_NOTE));
}

/**
 * An allow the logs decided: flagged if it came after failures, or held for
 * review instead (ALLOW_AFTER_FAILURES_HOLD). Call under withLock.
 */
export function autoAllow(ctx: Ctx, ip: string, by: string, reason: string): number {
  const flag = afterFailures(ctx, ip);
  if (flag === null) return setAllowed(ctx, ip, by, reason);
  if (!ctx.cfg.ALLOW_AFTER_FAILURES_HOLD) return setAllowed(ctx, ip, by, `${flag}: ${reason}`);
  const file = path.join(ctx.cfg.ROOT_DIR, REVIEW_DIR, ip);
  if (ctx.sys.fs.existsSync(file)) return 0; // held already, and said so
  try {
    ctx.sys.fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o750 });
  } catch (e) {
    throw ioError("create", path.dirname(file), e);
  }
  const why = `held for review, not allowed: ${flag}: ${reason}; sentry --allow --ip=${ip} lets it in, --block keeps it out`;
  writeAtomic(ctx, file, decisionText(ctx, "review", by, why));
  logDecision(ctx, ip, "review", `${by}: ${why}`);
  return 0;
}

/** Folder of the addresses held for review (ALLOW_AFTER_FAILURES_HOLD): review/IP, as allow/IP. */
export const REVIEW_DIR = "review";

/** The text of block/IP, or null if it is not blocked. */
function readBlockFile(ctx: Ctx, ip: string): string | null {
  const file = statePath(ctx, "block", ip);
  try {
    return ctx.sys.fs.readFileSync(file, "utf8");
  } catch (e) {
    if (errCode(e) === "ENOENT") return null;
    throw ioError("read", file, e);
  }
}

// ---- 8.3.2 Withheld blocks: a trace where the admin looks -----------------------
//
//   connect 203.0.113.9, FTP_LOG unreadable  →  sentry.db withheld: 203.0.113.9, since, "1 of 2 logs could not be read"
//                                            →  sentry.log (once an hour per cause):
//   2026-11-29T10:00:00Z 203.0.113.9 withheld not blocking it yet: 1 of 2 logs could not be read; …
//
// A block held back for want of a complete read (see incomplete()) is said
// on stderr, which is /dev/null under tcpd. One unreadable log holds back
// EVERY block, so this is protection silently off: it must show in
// sentry.log and --report. The list of addresses lives in sentry.db (one
// row each, updated in place); sentry.log gets one line per cause per
// WITHHELD_LOG_MINUTES, so a botnet of 10 000 addresses, each connecting
// while the log is unreadable, writes one line an hour, not 10 000. The
// cause is its text without numbers ("1 of 3 logs…" and "2 of 3 logs…" are
// one cause); the stamp is a meta row, taken in the same transaction as the
// rows, so two connects at once do not both write the line.

const WITHHELD_SCHEMA = `CREATE TABLE IF NOT EXISTS withheld (
  ip TEXT PRIMARY KEY, since INTEGER NOT NULL, at INTEGER NOT NULL, why TEXT NOT NULL
) WITHOUT ROWID`;
const WITHHELD_KEEP_MS = 30 * 86_400_000; // a row not renewed for 30 days is forgotten (no unbounded growth)

/** Records that the blocks of `ips` wait for `why`, and says so in sentry.log at most once per WITHHELD_LOG_MINUTES per cause. */
export function noteWithheld(ctx: Ctx, db: Db, ips: string[], why: string): void {
  if (ips.length === 0) return;
  const now = ctx.sys.now();
  const key = `withheld_logged:${why.replace(/\d+/g, "N")}`;
  let say = false;
  try {
    db.exec(WITHHELD_SCHEMA);
    db.exec("BEGIN IMMEDIATE");
    try {
      const put = db.prepare(
        "INSERT INTO withheld (ip, since, at, why) VALUES (?, ?, ?, ?) ON CONFLICT(ip) DO UPDATE SET at = excluded.at, why = excluded.why",
      );
      for (const ip of ips) put.run(ip, now, now, why);
      db.prepare("DELETE FROM withheld WHERE at < ?").run(now - WITHHELD_KEEP_MS);
      const last = db.prepare("SELECT value FROM meta WHERE key = ?").get(key);
      const at = last ? Number(last.value) : NaN;
      // A clock set back (at > now) must not silence it for good.
      if (!(now - at < ctx.cfg.WITHHELD_LOG_MINUTES * 60_000 && at <= now)) {
        say = true;
        db.prepare("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(key, String(now));
      }
      db.exec("COMMIT");
    } catch (e) {
      throw rollbackAfter(db, e);
    }
  } catch (e) {
    throw new SentryError(`cannot record the withheld blocks in sentry.db: ${errText(e)}`, 2);
  }
  if (!say) return;
  const who = ips.length === 1 ? ips[0] : "-";
  const what = ips.length === 1 ? "it" : `${ips.length} addresses`;
  logDecision(
    ctx,
    who,
    "withheld",
    `not blocking ${what} yet: ${why}; no address is blocked until every protected log is read to its end ` +
      `(sentry --doctor says which; sentry --report lists the addresses waiting); said at most every ${ctx.cfg.WITHHELD_LOG_MINUTES} minutes`,
  );
}

/** A complete read weighed every pending address: nothing is withheld any more. */
function clearWithheld(db: Db): void {
  db.exec(WITHHELD_SCHEMA);
  db.exec("DELETE FROM withheld");
}

/** One block that waits: the address, since when, why. */
export interface Withheld {
  ip: string;
  since: string; // ISO time it was first held back
  why: string;
}

/**
 * The blocks that wait now: recorded by noteWithheld, still neither allowed
 * nor blocked, and whose evidence still says block (a --delist set it aside).
 */
export function withheldBlocks(ctx: Ctx): Withheld[] {
  return ifIndex(ctx, [] as Withheld[], (db) => {
    if (!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'withheld'").get()) return [];
    const rows = db.prepare("SELECT ip, since, why FROM withheld ORDER BY since, ip").all();
    return rows
      .map((r) => ({ ip: String(r.ip), since: isoTime(Number(r.since)), why: String(r.why) }))
      .filter((w) => parseIp(w.ip) === w.ip && ipStatus(ctx, w.ip) === null && decide(tallies(db, w.ip), ctx.cfg.FAIL_THRESHOLD, ctx.cfg).action === "block");
  });
}

/** Who decided, in words: an administrator by name ("admin (alice)"), else connect, scan, expiry, fleet… */
export function byText(ctx: Ctx, by: string): string {
  return by === "admin" ? `admin (${operatorName(ctx.sys.env, ctx.sys.uid ?? (process.geteuid ? process.geteuid() : 0))})` : by;
}

/** The text of allow/IP or block/IP: when, who decided (byText), why. */
function decisionText(ctx: Ctx, what: string, by: string, reason: string): string {
  return `${isoTime(ctx.sys.now())} ${what} by ${byText(ctx, by)}: ${sanitize(reason, 1000)}\n`;
}

/**
 * Which administrator ran a manual action, for --list's "by": sudo's
 * SUDO_USER (the person, not root), else USER or LOGNAME, else the uid.
 * Only a plain login name is taken: the name is written into a record file
 * that --list parses, and the environment is the caller's to set.
 */
export function operatorName(env: Record<string, string | undefined>, uid: number): string {
  for (const v of [env.SUDO_USER, env.USER, env.LOGNAME]) if (v !== undefined && /^[A-Za-z0-9._][A-Za-z0-9._@-]{0,63}$/.test(v)) return v;
  return `uid ${uid}`;
}

/**
 * Allows `ip` (lifting any block, everywhere). Call under withLock.
 * Returns the exit code: 2 if a backend could not lift the block.
 */
export function setAllowed(ctx: Ctx, ip: string, by: string, reason: string): number {
  writeAtomic(ctx, statePath(ctx, "allow", ip), decisionText(ctx, "allow", by, reason));
  const wasBlocked = removeFile(ctx, statePath(ctx, "block", ip));
  logDecision(ctx, ip, "allow", `${byText(ctx, by)}: ${reason}`);
  writeHostsAllowed(ctx); // after the block is gone from block/: tcpd admits it from here on (section 9.1.2)
  return wasBlocked ? liftEverywhere(ctx, ip) : 0;
}

/**
 * Blocks `ip`: block/IP, hosts.deny, every enabled firewall. Call under
 * withLock. Addresses in ALLOW_IPS and loopback are refused here, the one
 * place every path that blocks goes through. `hostsDeny` false: the caller
 * rewrites hosts.deny once for many blocks (--scan's batches, section 8.6),
 * as expiry does for many lifts; block/IP is written first either way, so a
 * crash before that rewrite leaves hosts.deny stale, never the block lost
 * (the next connect of the address or --scan heals it, section 9.1.1).
 */
export function setBlocked(
  ctx: Ctx,
  ip: string,
  by: string,
  reason: string,
  length: { ms: number; why: string; forGood?: boolean } = defaultBlockLength(ctx.cfg),
  opts: { hostsDeny?: boolean } = {},
): number {
  if (inRanges(ip, ctx.allowRanges))
    throw new SentryError(`${ip} is in ALLOW_IPS or loopback and is never blocked`, 1);
  // The second line holds the block's own end (section 8.5); without one it lasts EXPIRE_BLOCK_DAYS from its mtime.
  const now = ctx.sys.now();
  // "until never" is a block for good (a repeat offender past REPEAT_FOREVER_AFTER): no touch or setting ends it.
  // Without either line (EXPIRE_BLOCK_DAYS=0) it follows EXPIRE_BLOCK_DAYS, whatever that is later set to.
  const until = length.ms > 0 ? `until ${isoTime(now + length.ms)} (${lengthText(length.ms)}; ${length.why})` : length.forGood ? `until never (for good; ${length.why})` : "";
  writeAtomic(ctx, statePath(ctx, "block", ip), decisionText(ctx, "block", by, reason) + (until ? `${until}\n` : ""));
  if (removeFile(ctx, statePath(ctx, "allow", ip))) writeHostsAllowed(ctx); // an allow replaced (--block of an allowed address): tcpd must stop admitting it
  logDecision(ctx, ip, "block", `${byText(ctx, by)}: ${reason}${until ? `; ${until}` : ""}`);
  if (length.ms > 0) expiryDueBy(ctx, now + length.ms);
  fleetOutbox(ctx, ip, by, reason, now, length.ms > 0 ? now + length.ms : null); // section 9.5: --sync pushes it
  let code = 0;
  if (ctx.cfg.ADD_TO_TCPWRAPPERS && opts.hostsDeny !== false) writeHostsDeny(ctx);
  for (const b of enabledBackends(ctx)) {
    const r = b.add(ip, ctx.cfg, ctx.sys, length.ms > 0 ? length.ms : undefined);
    if (!r.ok) code = backendFailed(ctx, ip, b.name, "add", r.error);
  }
  // Only the logs' blocks add up to a subnet (section 8.4): an administrator blocks what they name.
  if (by === "connect" || by === "scan") code = Math.max(code, aggregateSubnet(ctx, ip, length));
  return code;
}

/** Removes `ip` from hosts.deny and every enabled firewall. Call under withLock. */
function liftEverywhere(ctx: Ctx, ip: string, hostsDeny = true): number {
  let code = 0;
  if (ctx.cfg.ADD_TO_TCPWRAPPERS && hostsDeny) writeHostsDeny(ctx);
  for (const b of enabledBackends(ctx)) {
    const r = b.remove(ip, ctx.cfg, ctx.sys);
    if (!r.ok) code = backendFailed(ctx, ip, b.name, "remove", r.error);
  }
  return code;
}

/**
 * Forgets `ip`: no allow, no block, no connections counted, and its log
 * evidence so far set aside, so it starts again from nothing. Without the
 * last two, its next connect would block it again on the same old lines.
 * Its history of blocks (section 8.5.1) goes too, unless `keepHistory`
 * (expiry: a block that ran out is not forgiveness). `hostsDeny` false: the
 * caller rewrites hosts.deny once for many (expiry); `db`: sentry.db, open
 * in the caller's transaction.
 */
export function setDelisted(ctx: Ctx, ip: string, by: string, reason: string, opts: { keepHistory?: boolean; hostsDeny?: boolean; db?: Db } = {}): number {
  const hostsDeny = opts.hostsDeny ?? true;
  fleetForgive(ctx, ip, by); // section 9.5: an admin's forgiveness of a block this server pushed reaches the fleet
  if (!opts.keepHistory) forgetHistory(ctx, ip); // forgiveness; expiry keeps it (section 8.5.1)
  const wasAllowed = removeFile(ctx, statePath(ctx, "allow", ip));
  if (wasAllowed) writeHostsAllowed(ctx);
  const wasBlocked = removeFile(ctx, statePath(ctx, "block", ip));
  if (removeFile(ctx, statePath(ctx, "seen", ip))) noteChange(ctx, ip, "delist");
  removeFile(ctx, path.join(ctx.cfg.ROOT_DIR, REVIEW_DIR, ip)); // a hold for review (8.3.1) starts again too
  writeForgiven(ctx, ip, by); // before the index forgets: a crash between the two must not bring the evidence back
  forgetEvidence(ctx, ip, opts.db);
  logDecision(ctx, ip, "delist", `${byText(ctx, by)}: ${reason}${wasAllowed || wasBlocked ? "" : " (was neither allowed nor blocked)"}`);
  // Lift it from the firewalls even if block/IP was gone: an admin's `rm block/IP` leaves the sets behind.
  return liftEverywhere(ctx, ip, hostsDeny);
}

// ---- 8.4 Ranges: blocked or allowed as one entry ---------------------------------
//
//   sentry --ip=10.0.0.0/8 --allow          → allow/10.0.0.0_8 (honoured like ALLOW_IPS)
//   sentry --ip=2001:db8:1:2::/64 --block   → block/2001:db8:1:2::_64, hosts.deny "[2001:db8:1:2::]/64",
//                                             nft set v6net, ipset FIREWALL_TABLE-n6, pf/ipfw table
//   3 addresses of 2001:db8:1:2::/64 blocked by the logs (SUBNET_THRESHOLD) → the /64 blocked too
//
// One host owns a whole IPv6 /64 (18 quintillion addresses): blocking one
// address at a time never ends, which is why OpenSSH's PerSourcePenalties
// groups IPv6 by /64. A range's file is written like an address's (the
// same "until" line, so expiry and `touch` work alike); the addresses
// blocked in it keep their own files, so the report shows what led to it
// and delisting the range lifts it alone. A range never covers an allowed
// address, an allowed range, ALLOW_IPS or loopback: setBlockedNet refuses
// one, so no path (by hand, aggregation) can block the admin's office.

/** Why `net` must not be blocked (it covers something allowed, or `session`, the admin's own address), or "". */
export function netBlockProblem(ctx: Ctx, net: Cidr, session: string | null): string {
  const allowedRange = ctx.allowRanges.find((r) => rangesOverlap(r, net));
  if (allowedRange) return `${net.text} overlaps ${allowedRange.text}, which is allowed (ALLOW_IPS, loopback or allow/)`;
  const allowed = listDir(ctx, "allow").find((ip) => inRanges(ip, [net]));
  if (allowed) return `${net.text} holds ${allowed}, which is allowed (allow/${allowed})`;
  if (session !== null && inRanges(session, [net])) return `${net.text} holds ${session}, the address of your own session (SSH_CLIENT)`;
  return "";
}

/** Blocks range `net` (block/NAME, hosts.deny, every firewall). Call under withLock. Throws SentryError(1) if netBlockProblem says no. */
export function setBlockedNet(ctx: Ctx, net: Cidr, by: string, reason: string, length: { ms: number; why: string }, session: string | null = null): number {
  const bad = netBlockProblem(ctx, net, session);
  if (bad) throw new SentryError(`not blocking ${net.text}: ${bad}`, 1);
  const now = ctx.sys.now();
  const until = length.ms > 0 ? `until ${isoTime(now + length.ms)} (${lengthText(length.ms)}; ${length.why})` : "";
  writeAtomic(ctx, netPath(ctx, "block", net), decisionText(ctx, "block", by, reason) + (until ? `${until}\n` : ""));
  logDecision(ctx, net.text, "block", `${byText(ctx, by)}: ${reason}${until ? `; ${until}` : ""}`);
  if (length.ms > 0) expiryDueBy(ctx, now + length.ms);
  let code = 0;
  if (ctx.cfg.ADD_TO_TCPWRAPPERS) writeHostsDeny(ctx);
  for (const b of enabledBackends(ctx)) {
    const r = b.add(net.text, ctx.cfg, ctx.sys);
    if (!r.ok) code = backendFailed(ctx, net.text, b.name, "add", r.error);
  }
  return code;
}

/** Allows range `net` (allow/NAME): lifts its block, and the blocks of the addresses in it from every list. Call under withLock. */
export function setAllowedNet(ctx: Ctx, net: Cidr, by: string, reason: string): number {
  writeAtomic(ctx, netPath(ctx, "allow", net), decisionText(ctx, "allow", by, reason));
  allowNetCache.delete(ctx);
  const wasBlocked = removeFile(ctx, netPath(ctx, "block", net));
  logDecision(ctx, net.text, "allow", `${byText(ctx, by)}: ${reason}`);
  writeHostsAllowed(ctx);
  let code = 0;
  if (ctx.cfg.ADD_TO_TCPWRAPPERS) writeHostsDeny(ctx); // minus the allowed: hostsDenyText leaves them out
  const lift = [...(wasBlocked ? [net.text] : []), ...listDir(ctx, "block").filter((ip) => inRanges(ip, [net])), ...listNets(ctx, "block").filter((n) => rangesOverlap(n, net)).map((n) => n.text)];
  for (const b of enabledBackends(ctx)) {
    for (const x of lift) {
      const r = b.remove(x, ctx.cfg, ctx.sys);
      if (!r.ok) code = backendFailed(ctx, x, b.name, "remove", r.error);
    }
  }
  return code;
}

/** Forgets range `net`: no allow/NAME, no block/NAME, and it is taken out of every list. Call under withLock. */
export function setDelistedNet(ctx: Ctx, net: Cidr, by: string, reason: string): number {
  const wasAllowed = removeFile(ctx, netPath(ctx, "allow", net));
  const wasBlocked = removeFile(ctx, netPath(ctx, "block", net));
  allowNetCache.delete(ctx);
  if (wasAllowed) writeHostsAllowed(ctx);
  logDecision(ctx, net.text, "delist", `${byText(ctx, by)}: ${reason}${wasAllowed || wasBlocked ? "" : " (was neither allowed nor blocked)"}`);
  let code = 0;
  if (ctx.cfg.ADD_TO_TCPWRAPPERS) writeHostsDeny(ctx);
  // No longer allowed: the addresses blocked inside it go back into the firewalls.
  const readd = wasAllowed ? listDir(ctx, "block").filter((ip) => inRanges(ip, [net]) && !inRanges(ip, ctx.allowRanges)) : [];
  for (const b of enabledBackends(ctx)) {
    const r = b.remove(net.text, ctx.cfg, ctx.sys);
    if (!r.ok) code = backendFailed(ctx, net.text, b.name, "remove", r.error);
    for (const ip of readd) {
      const r2 = b.add(ip, ctx.cfg, ctx.sys);
      if (!r2.ok) code = backendFailed(ctx, ip, b.name, "add", r2.error);
    }
  }
  return code;
}

/**
 * After the logs blocked `ip`: if SUBNET_THRESHOLD addresses of its /64 (or,
 * with SUBNET_V4, its /24) are blocked now, blocks the subnet as well, as
 * long as the block that completed the count, unless it holds anything allowed
 * (then it says so in sentry.log and leaves it). Call under withLock.
 */
export function aggregateSubnet(ctx: Ctx, ip: string, length: { ms: number; why: string }): number {
  if (ctx.cfg.SUBNET_THRESHOLD === 0) return 0;
  if (ipFamily(ip) === 4 && !ctx.cfg.SUBNET_V4) return 0;
  const net = subnetOf(ip);
  if (ctx.sys.fs.existsSync(netPath(ctx, "block", net))) return 0;
  const behind = listDir(ctx, "block").filter((b) => inRanges(b, [net]));
  if (behind.length < ctx.cfg.SUBNET_THRESHOLD) return 0;
  const bad = netBlockProblem(ctx, net, null);
  if (bad) {
    logDecision(ctx, net.text, "not-aggregated", `${behind.length} addresses of it are blocked, but ${bad}`);
    return 0;
  }
  const shown = behind.slice(0, 20).join(", ") + (behind.length > 20 ? ", …" : "");
  return setBlockedNet(ctx, net, "aggregate", `${behind.length} addresses of this /${net.bits} are blocked (SUBNET_THRESHOLD=${ctx.cfg.SUBNET_THRESHOLD}): ${shown}`, length);
}

/** --allow, --block, --delist of a range by hand (section 8.4). */
export function manualNetAction(
  ctx: Ctx,
  action: "allow" | "block" | "delist",
  net: Cidr,
  opts: { forMs?: number | null; forText?: string | null; reason?: string | null } = {},
): number {
  const forFlag = opts.forMs ? ` --for ${opts.forText ?? lengthText(opts.forMs)}` : "";
  const reason = manualReason(`--${action}${forFlag}`, opts.reason ?? null);
  // SSH_CLIENT is "ADDR PORT LOCALPORT": the admin's own address, never to be blocked by their own hand.
  const session = parseIp((ctx.sys.env.SSH_CLIENT ?? "").split(" ")[0] ?? "");
  const code = withLock(ctx, () => {
    if (action === "allow") return setAllowedNet(ctx, net, "admin", reason);
    if (action === "block")
      return setBlockedNet(ctx, net, "admin", reason, opts.forMs ? { ms: opts.forMs, why: `--for ${opts.forText ?? lengthText(opts.forMs)}` } : defaultBlockLength(ctx.cfg), session);
    return setDelistedNet(ctx, net, "admin", reason);
  });
  const done = action === "allow" ? "allowed" : action === "block" ? "blocked" : "delisted";
  ctx.sys.out(`${done} ${net.text}${code !== 0 ? "; a backend failed, see above" : ""}`);
  return code;
}

// ---- 8.5 Expiry --------------------------------------------------------------
//
//   block/203.0.113.9   "2026-11-29T13:00:00Z block by connect: ssh: …
//                        until 2026-11-29T13:10:00Z (10 minutes; thin evidence: …)"
//   expire.stamp        its mtime is when the next block is due
//
// A blocked address never spawns sentry again (tcpd refuses it first), so its
// block cannot expire on its own connect. Each block file holds its own end
// (the "until" line); expire.stamp's modification time is the earliest end
// of all (or EXPIRE_CHECK_MINUTES from the last look, whichever is sooner,
// which also catches blocks written by hand), so any connect after that
// moment lifts it at the cost of one stat, and --scan always looks.
//
// `touch block/IP` renews a block as it always did: the block's length
// (until minus since, as written) runs from the file's modification time,
// so untouched it ends at "until" and touched it ends that length after the
// touch. A file without an "until" line (written before 3.1, by sentry.sh's
// import or by hand) lasts EXPIRE_BLOCK_DAYS from its modification time.

/** When the block recorded in `text` (modified at `mtimeMs`) ends, in epoch ms; null = never. */
export function blockEnd(text: string, mtimeMs: number, expireDays: number): number | null {
  if (/^until never\b/m.test(text)) return null;
  const since = /^(\S+) block by /.exec(text);
  const until = /^until (\S+)/m.exec(text);
  if (since && until) {
    const length = Date.parse(until[1]) - Date.parse(since[1]);
    if (Number.isFinite(length) && length >= 0) return mtimeMs + length;
  }
  return expireDays === 0 ? null : mtimeMs + expireDays * 86_400_000;
}

/** The end of the block of `ip` (see blockEnd), or undefined if it is not blocked. */
function blockEndOf(ctx: Ctx, ip: string): number | null | undefined {
  const file = statePath(ctx, "block", ip);
  const st = ctx.sys.fs.statSync(file, { throwIfNoEntry: false });
  const text = st ? readBlockFile(ctx, ip) : null;
  if (!st || text === null) return undefined;
  return blockEnd(text, st.mtimeMs, ctx.cfg.EXPIRE_BLOCK_DAYS);
}

// ---- 8.5.1 Repeat offenders: a short history per address ----------------------
//
//   ROOT_DIR/history/203.0.113.9   "blocked 2 times, last lifted 2026-11-29T13:10:00Z\n"
//
//   first block on strong evidence: 90 days; it runs out; the bot comes back
//   → second block 180 days (REPEAT_FACTOR_PERCENT=200), third 360, then
//     365 (REPEAT_MAX_DAYS); thin evidence: 10, 20, 40, 80 minutes, …
//
// A bot returns when its block ends; a person who mistyped a name rarely
// does so twice in a season. So each block that ran out multiplies the
// next one. sshguard multiplies by 1.5 from a 2-minute base and blacklists
// for good after a score; sentry's thin base is 10 minutes, and a bot with
// thin evidence that returns every time its block ends gets through
// THIN_NAUGHTY_LINES lines per block: doubling makes that a day's worth
// after 7 returns instead of 15 (1.5×), while a person's second mistake
// still costs only 20 minutes. The cap keeps a block within a year so that
// a reassigned address (dynamic pools, cloud instances) comes free again;
// REPEAT_FOREVER_AFTER=N makes the (N+1)th block permanent, as sshguard's
// blacklist does, for those who prefer that.
//
// Expiry writes the history and keeps it (an expired block is not
// forgiveness); an administrator's --delist removes it (that is). Only the
// blocks the logs decide grow; an administrator's --block lasts what they said.

export const HISTORY_DIR = "history";

/** An address's past: how many of its blocks ran out, and when the last one was lifted (epoch ms). */
export interface History {
  times: number;
  lifted: number;
}

/** Parses history/IP; null if it is not what writeHistory writes (an edit by hand: treated as no history, with a warning by the caller). */
export function parseHistory(text: string): History | null {
  const m = /^blocked (\d{1,6}) times?, last lifted (\S+)\n?$/.exec(text);
  if (!m) return null;
  const lifted = Date.parse(m[2]);
  return Number.isFinite(lifted) ? { times: Number(m[1]), lifted } : null;
}

/** The text of history/IP. */
export function historyText(h: History): string {
  return `blocked ${h.times} time${h.times === 1 ? "" : "s"}, last lifted ${isoTime(h.lifted)}\n`;
}

/** Reads history/IP; null if there is none. An unreadable one is said and counts as none (a longer block must not rest on a guess). */
export function readHistory(ctx: Ctx, ip: string): History | null {
  const file = path.join(ctx.cfg.ROOT_DIR, HISTORY_DIR, ip);
  let text: string;
  try {
    text = readStateFile(ctx, file);
  } catch (e) {
    if (errCode(e) === "ENOENT" || errCode(e) === "ENOTDIR") return null;
    throw ioError("read", file, e);
  }
  const h = parseHistory(text);
  if (h === null) ctx.sys.warn(`${file} is not a history sentry wrote ("blocked N times, last lifted TIME"): ${ip} is treated as a first offender`);
  return h;
}

/** Counts one more block of `ip` that ran out, lifted now. Call under withLock. */
function addHistory(ctx: Ctx, ip: string): History {
  const dir = path.join(ctx.cfg.ROOT_DIR, HISTORY_DIR);
  try {
    ctx.sys.fs.mkdirSync(dir, { mode: 0o750 });
  } catch (e) {
    if (errCode(e) !== "EEXIST") throw ioError("create", dir, e);
  }
  const h = { times: Math.min((readHistory(ctx, ip)?.times ?? 0) + 1, 999_999), lifted: ctx.sys.now() };
  writeAtomic(ctx, path.join(dir, ip), historyText(h));
  return h;
}

/** Forgets the history of `ip` (an administrator's --delist forgives). */
function forgetHistory(ctx: Ctx, ip: string): void {
  removeFile(ctx, path.join(ctx.cfg.ROOT_DIR, HISTORY_DIR, ip));
}

/**
 * The length of a block the logs decided, given the address's history:
 * `base` times REPEAT_FACTOR_PERCENT/100 for each earlier block that ran
 * out, at most REPEAT_MAX_DAYS (unless base is longer already), and for
 * good (ms 0) after REPEAT_FOREVER_AFTER of them.
 */
export function repeatLength(
  base: { ms: number; why: string },
  h: History | null,
  cfg: Pick<Config, "REPEAT_FACTOR_PERCENT" | "REPEAT_MAX_DAYS" | "REPEAT_FOREVER_AFTER">,
): { ms: number; why: string; forGood?: boolean } {
  if (h === null || h.times === 0 || base.ms === 0) return base;
  const past = `repeat offender: ${h.times} earlier block${h.times === 1 ? "" : "s"} ran out, the last lifted ${isoTime(h.lifted)}`;
  if (cfg.REPEAT_FOREVER_AFTER > 0 && h.times >= cfg.REPEAT_FOREVER_AFTER)
    return { ms: 0, forGood: true, why: `${base.why}; ${past}: for good (REPEAT_FOREVER_AFTER=${cfg.REPEAT_FOREVER_AFTER})` };
  const cap = cfg.REPEAT_MAX_DAYS > 0 ? Math.max(cfg.REPEAT_MAX_DAYS * 86_400_000, base.ms) : Infinity;
  let ms = base.ms;
  for (let i = 0; i < h.times && ms < cap; i++) ms = Math.round((ms * cfg.REPEAT_FACTOR_PERCENT) / 100);
  ms = Math.min(ms, cap, CONFIG_MAX.EXPIRE_BLOCK_DAYS * 86_400_000);
  return { ms, why: `${base.why}; ${past}: ${cfg.REPEAT_FACTOR_PERCENT}% per repeat${ms === cap ? `, capped at REPEAT_MAX_DAYS=${cfg.REPEAT_MAX_DAYS}` : ""}` };
}

const EXPIRE_STAMP = "expire.stamp";

/** Sets when the next expiry look is due (the stamp's mtime). False, with a warning, if it cannot. */
function setExpiryStamp(ctx: Ctx, at: number): boolean {
  const stamp = path.join(ctx.cfg.ROOT_DIR, EXPIRE_STAMP);
  try {
    // No symlink followed (section 5.4): the write refuses a link, and only then is its time set.
    withRoot(ctx, () => writeNoFollow(ctx.sys.fs, stamp, `next look for expired blocks at ${isoTime(at)}\n`, O_WRITE_NOFOLLOW));
    ctx.sys.fs.utimesSync(stamp, at / 1000, at / 1000);
    return true;
  } catch (e) {
    ctx.sys.warn(ioError("write", stamp, e).message);
    return false;
  }
}

/** A block ending at `end` brings the next expiry look forward to it. No stamp: the look is due already. */
function expiryDueBy(ctx: Ctx, end: number): void {
  const st = ctx.sys.fs.lstatSync(path.join(ctx.cfg.ROOT_DIR, EXPIRE_STAMP), { throwIfNoEntry: false });
  if (st && st.mtimeMs > end) setExpiryStamp(ctx, end);
}

/**
 * Runs expireBlocks if the stamp says a block is due; cheap (one stat) when
 * not. `waitMs` (a connect): if the lock is busy that long, the look is left
 * for a connect a minute later.
 */
export function expireIfDue(ctx: Ctx, waitMs?: number): void {
  const st = ctx.sys.fs.lstatSync(path.join(ctx.cfg.ROOT_DIR, EXPIRE_STAMP), { throwIfNoEntry: false });
  const now = ctx.sys.now();
  if (st && now < st.mtimeMs) return;
  // Stamp first: a second connect in the same instant skips the work.
  if (!setExpiryStamp(ctx, now + ctx.cfg.EXPIRE_CHECK_MINUTES * 60_000)) return;
  rotateFeed(ctx);
  if (ctx.cfg.EXPIRE_PER_CONNECT > 0) expireBlocks(ctx, ctx.cfg.EXPIRE_PER_CONNECT, waitMs);
}

/**
 * The same hourly moment keeps connections.log small: past
 * CONNECTIONS_LOG_ROTATE_BYTES it becomes connections.log.1 (the report's
 * index finishes a rotated file it had not read to its end, by inode).
 */
function rotateFeed(ctx: Ctx): void {
  const feed = path.join(ctx.cfg.ROOT_DIR, CONNECTIONS_LOG);
  const st = ctx.sys.fs.statSync(feed, { throwIfNoEntry: false });
  if (!st || st.size < CONNECTIONS_LOG_ROTATE_BYTES) return;
  try {
    ctx.sys.fs.renameSync(feed, `${feed}.1`);
  } catch (e) {
    ctx.sys.warn(`cannot rotate ${feed}: ${errText(e)}`);
  }
}

/**
 * Lifts every block whose end has come from every list (at most `max`: a
 * connect's share; the stamp then stays due), and sets the stamp to the next
 * end. Under the lock, so a block decided meanwhile cannot be missed by the
 * stamp. Returns how many were lifted from every list (hosts.deny and each
 * firewall switched on); a backend that failed has said so itself.
 */
export function expireBlocks(ctx: Ctx, max = Infinity, waitMs?: number): number {
  const busy = waitMs === undefined ? undefined : { waitMs, then: () => (setExpiryStamp(ctx, ctx.sys.now() + EXPIRE_BUSY_RETRY_MS), 0) };
  return withLock(ctx, () => {
    const now = ctx.sys.now();
    let next = now + ctx.cfg.EXPIRE_CHECK_MINUTES * 60_000;
    let lifted = 0; // lifted from every list: one a backend failed to lift is named by backendFailed, not counted
    let tried = 0; // `max` bounds these: each failure may cost a firewall tool's timeout
    let db: Db | null | undefined; // sentry.db, opened once for the pass (if it exists) at the first due block
    let failed = false;
    try {
      for (const ip of listDir(ctx, "block")) {
        const end = blockEndOf(ctx, ip);
        if (end === undefined || end === null) continue;
        if (end > now) {
          next = Math.min(next, end);
          continue;
        }
        if (tried >= max) {
          next = now; // more are due: the next connect carries on
          break;
        }
        tried++;
        const since = (readBlockFile(ctx, ip) ?? "").split(" ")[0];
        // hosts.deny once for the whole pass, below: rewriting it per address
        // made 1,000 due blocks cost 1,000 rewrites of a 1,000-line file.
        // sentry.db once too, one transaction: 50 deletes were 50 opens and 100 commits.
        if (db === undefined) {
          db = ctx.sys.fs.existsSync(path.join(ctx.cfg.ROOT_DIR, "sentry.db")) ? openIndex(ctx) : null;
          db?.exec("BEGIN IMMEDIATE");
        }
        const h = addHistory(ctx, ip); // before the delist: a crash between the two leaves the block, counted once more at worst
        const why = `blocked since ${since}, ended ${isoTime(end)}; blocked ${h.times} time${h.times === 1 ? "" : "s"} so far (history/${ip})`;
        if (setDelisted(ctx, ip, "expiry", why, { keepHistory: true, hostsDeny: false, db: db ?? undefined }) === 0) lifted++;
      }
    } catch (e) {
      failed = true;
      // The delist markers are written already: what was forgotten is kept, also after an error.
      throw db?.isTransaction ? rollbackAfter(db, e, "COMMIT") : e;
    } finally {
      try {
        if (!failed && db?.isTransaction) db.exec("COMMIT");
      } finally {
        db?.close();
      }
    }
    if (lifted > 0 && ctx.cfg.ADD_TO_TCPWRAPPERS) writeHostsDeny(ctx);
    // Ranges (section 8.4) end the same way; delisting one lifts it alone.
    for (const net of listNets(ctx, "block")) {
      const file = netPath(ctx, "block", net);
      const st = ctx.sys.fs.statSync(file, { throwIfNoEntry: false });
      if (!st) continue;
      let text: string;
      try {
        text = readStateFile(ctx, file);
      } catch (e) {
        throw ioError("read", file, e);
      }
      const end = blockEnd(text, st.mtimeMs, ctx.cfg.EXPIRE_BLOCK_DAYS);
      if (end === null) continue;
      if (end > now) {
        next = Math.min(next, end);
        continue;
      }
      if (tried >= max) {
        next = now;
        break;
      }
      tried++;
      if (setDelistedNet(ctx, net, "expiry", `blocked since ${text.split(" ")[0]}, ended ${isoTime(end)}`) === 0) lifted++;
    }
    setExpiryStamp(ctx, next);
    return lifted;
  }, busy);
}

/** A connect that finds the lock busy at expiry time leaves the look to a connect this much later. */
const EXPIRE_BUSY_RETRY_MS = 60_000;

// ---- 8.6 --scan: the logs decide, without a connect ------------------------------
//
// For daemons that never spawn sentry (an sshd without libwrap, Dovecot,
// Postfix, an FTP server), a timer runs `sentry --scan`: it reads every log
// since its cursor and weighs every address with new evidence by the same
// rules, once it shows CONNECT_THRESHOLD events (or seen/ holds that many
// connections). The same locks as a connect make it safe to run meanwhile.

/**
 * Whether the logs may decide for an address yet: it shows `threshold`
 * events in the logs, or seen/ holds that many connections (a connect
 * decides at that count). The one rule --scan and --test-log share, so
 * that --test-log predicts what --scan does.
 */
export function thresholdReached(t: Tallies, connections: number, threshold: number): boolean {
  let events = 0;
  for (const s of SERVICES) {
    const x = t[s];
    if (x) events += x.success + x.failed + x.naughty + x.probe;
  }
  return events >= threshold || connections >= threshold;
}

/**
 * What --scan does with one address whose evidence is pending: the rules
 * above, apart from the reading, the locking and the counting around them.
 * An address allowed or blocked already, or short of its threshold, is left
 * as it is; a block on a read that was not complete waits for one (see
 * incomplete: the success that would allow it may sit in what was not read).
 */
export type ScanStep = "allow" | "block" | "hold" | "none";
export function scanStep(action: Verdict["action"], status: Status, reached: boolean, partial: boolean): ScanStep {
  if (status !== null || !reached || action === "none") return "none";
  if (action === "block" && partial) return "hold";
  return action;
}

/**
 * Addresses one --scan decides under one hold of the lock, with one rewrite
 * of hosts.deny after them. One at a time, the first --scan of a server
 * under attack (5,000 addresses) took 54 s, mostly rewriting a growing
 * hosts.deny 5,000 times; per batch, the lock is still let go often enough
 * (well under a second) for an administrator's command to get in.
 */
const SCAN_BATCH = 250;

/** What one --scan did, for its summary line and exit code. */
interface ScanCounts {
  code: number;
  weighed: number;
  allowed: number;
  blocked: number;
  held: string[]; // blocks waiting for a complete read
}

/**
 * The addresses with evidence not weighed yet, in address order, SCAN_BATCH
 * at a time, each with the services and pending counts that were read.
 * Never all of them at once: a first --scan of a 1 GB log held every
 * pending row in one Map and peaked at 269 MiB. Evidence a connect adds
 * meanwhile for an address already passed is weighed by the next --scan.
 */
function* pendingBatches(db: Db): Generator<Map<string, [string, number][]>> {
  const next = db.prepare("SELECT DISTINCT ip FROM tallies WHERE pending > 0 AND ip > ? ORDER BY ip LIMIT ?");
  const rows = db.prepare("SELECT service, pending FROM tallies WHERE ip = ? AND pending > 0");
  let after = "";
  for (;;) {
    const ips = next.all(after, SCAN_BATCH).map((r) => String(r.ip));
    if (ips.length === 0) return;
    const batch = new Map<string, [string, number][]>();
    for (const ip of ips) batch.set(ip, rows.all(ip).map((r): [string, number] => [String(r.service), Number(r.pending)]));
    yield batch;
    after = ips[ips.length - 1];
  }
}

/**
 * Weighs `ips` (scanStep), then acts on them under one hold of the lock,
 * then clears what was weighed. block/IP files are written one by one (they
 * are the truth), hosts.deny once after them: a crash in between leaves it
 * stale, and the next --scan or a connect of a blocked address rewrites it.
 */
function scanBatch(ctx: Ctx, db: Db, ips: string[], pending: Map<string, [string, number][]>, partial: string | null, n: ScanCounts): void {
  const act: { ip: string; step: "allow" | "block"; reason: string; t: Tallies }[] = [];
  const weighed: string[] = [];
  for (const ip of ips) {
    n.weighed++;
    const t = tallies(db, ip);
    const v = decide(t, ctx.cfg.FAIL_THRESHOLD, ctx.cfg);
    const status = ipStatus(ctx, ip);
    const threshold = decisionThreshold(v, v.action === "block" && earlyEvidence(t, userNames(db, ip).naughty, ctx.cfg), ctx.cfg);
    const step = scanStep(v.action, status, status === null && thresholdReached(t, countConnections(ctx, ip), threshold), partial !== null);
    if (step === "hold") {
      n.held.push(ip); // still pending: the next complete read weighs it again
      continue;
    }
    if (step !== "none") act.push({ ip, step, reason: v.reason, t });
    weighed.push(ip);
  }
  if (act.length > 0)
    withLock(ctx, () => {
      let wrote = false;
      try {
        for (const a of act) {
          if (ipStatus(ctx, a.ip) !== null) continue; // a connect decided meanwhile
          if (a.step === "allow") {
            n.allowed++;
            n.code = Math.max(n.code, autoAllow(ctx, a.ip, "scan", a.reason));
            continue;
          }
          n.blocked++;
          wrote = true;
          const length = repeatLength(blockLength(a.t, userNames(db, a.ip).naughty, ctx.cfg), readHistory(ctx, a.ip), ctx.cfg);
          n.code = Math.max(n.code, setBlocked(ctx, a.ip, "scan", a.reason, length, { hostsDeny: false }));
          cutFlows(ctx, a.ip); // section 9.2.2
        }
      } finally {
        // Also after an error: the blocks written so far take effect.
        if (wrote && ctx.cfg.ADD_TO_TCPWRAPPERS) writeHostsDeny(ctx);
      }
    });
  // Each row's pending count is cleared only if it is still what was read:
  // evidence a parallel connect adds meanwhile keeps its row pending, and
  // the next --scan weighs it. One transaction: a commit per row was a
  // sync of sentry.db per address.
  const clear = db.prepare("UPDATE tallies SET pending = 0 WHERE ip = ? AND service = ? AND pending = ?");
  db.exec("BEGIN IMMEDIATE");
  try {
    for (const ip of weighed) for (const [service, k] of pending.get(ip) ?? []) clear.run(ip, service, k);
    db.exec("COMMIT");
  } catch (e) {
    throw rollbackAfter(db, e); // the original error wins over a failing ROLLBACK
  }
}

/**
 * The folders of ROOT_DIR whose files writeAtomic writes (seen/ is appended
 * to, never written whole, and can hold a million names: not listed here).
 */
const TEMP_SWEEP_DIRS = ["", "allow", "block", "review", "history", "delisted"];
/** writeAtomic's temporary name: ".NAME.tmp-PID". */
const ATOMIC_TEMP = /^\.(.+)\.tmp-(\d+)$/;

/** Whether no process `pid` exists (kill(pid, 0): ESRCH). Anything else, EPERM included, means it may. */
function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return errCode(e) === "ESRCH";
  }
}

/**
 * Removes what a killed run left behind: writeAtomic's ".NAME.tmp-PID" whose
 * process is gone and that nobody has touched for STALE_TEMP_MS. Every
 * reader passes over such a file (a killed --scan of a big backlog left
 * one in block/), but an administrator who lists the folder sees it, and
 * nothing else would ever remove it. Returns how many were removed; one
 * that cannot be says why on stderr.
 */
export function sweepTemps(ctx: Ctx): number {
  let removed = 0;
  for (const sub of TEMP_SWEEP_DIRS) {
    for (const name of folderNames(ctx, sub)) {
      const m = ATOMIC_TEMP.exec(name);
      if (m === null || !processGone(Number(m[2]))) continue;
      if (removeIfStale(ctx.sys, path.join(ctx.cfg.ROOT_DIR, sub, name), STALE_TEMP_MS)) removed++;
    }
  }
  return removed;
}

/** --scan: read the logs, decide for every address with new evidence, lift expired blocks. */
export function scanCommand(ctx: Ctx, verbose: boolean): number {
  const db = openIndex(ctx);
  const n: ScanCounts = { code: 0, weighed: 0, allowed: 0, blocked: 0, held: [] };
  let res: ScanResult;
  try {
    res = scanLogs(ctx, db, ctx.cfg.SCAN_RUN_SECONDS);
    for (const note of res.notes) ctx.sys.warn(note);
    if (res.readable === 0) {
      ctx.sys.warn("no log could be read; nothing decided");
      n.code = 2;
    }
    const partial = incomplete(res);
    const lift = liftAfterSuccess(ctx, res.succeeded, "scan");
    n.code = Math.max(n.code, lift.code);
    n.allowed += lift.lifted;
    for (const pending of pendingBatches(db)) scanBatch(ctx, db, [...pending.keys()], pending, partial, n);
    if (partial !== null) noteWithheld(ctx, db, n.held, partial);
    else if (res.readable > 0) clearWithheld(db);
  } finally {
    db.close();
  }
  const { code, weighed, allowed, blocked } = n;
  const held = n.held.length;
  const expired = expireBlocks(ctx);
  const healed = healHostsDeny(ctx, "scan");
  if (healed !== null) ctx.sys.warn(healed);
  const healedAllowed = healHostsAllowed(ctx, "scan");
  if (healedAllowed !== null) ctx.sys.warn(healedAllowed);
  const swept = sweepTemps(ctx);
  if (swept > 0) ctx.sys.warn(`removed ${swept} temporary files left by killed runs`);
  try {
    // --doctor reads this: a server without libwrap is protected if --scan runs.
    const stamp = path.join(ctx.cfg.ROOT_DIR, "scan.stamp");
    writeNoFollow(ctx.sys.fs, stamp, `${isoTime(ctx.sys.now())}\n`, O_WRITE_NOFOLLOW);
  } catch (e) {
    ctx.sys.warn(ioError("write", path.join(ctx.cfg.ROOT_DIR, "scan.stamp"), e).message);
  }
  const summary = `scan: read ${res.bytes} bytes (${res.lines} lines) from ${res.readable} of ${res.sources} logs; weighed ${weighed} addresses: ${allowed} allowed, ${blocked} blocked; ${expired} expired blocks lifted`;
  if (verbose || allowed || blocked || expired) ctx.sys.out(summary);
  if (held) ctx.sys.warn(`${held} blocks wait for a complete read: ${incomplete(res)}`);
  return code;
}

// ==== 9. Backends ===========================================================
//
// ---- 9.1 tcpwrappers: ROOT_DIR/hosts.deny -----------------------------------
//
//   block/203.0.113.7, block/2001:db8::7   →   "203.0.113.7\n[2001:db8::7]\n"
//
// /etc/hosts.allow includes this file as a client list
// (`sshd : /var/db/sentry/hosts.deny : deny`), where EVERY whitespace-separated
// word is a pattern: a comment's words are patterns, and a single word ALL
// refuses every client. So the file holds addresses and nothing else, one
// per line, IPv6 in brackets (tcpd compares [..] as a number; a bare IPv6
// matches only one spelling). It is derived from block/ (never edited in
// place), minus anything ALLOW_IPS covers, and replaced atomically under the
// lock, so tcpd never reads half of it and no concurrent block is lost.

/**
 * The text of hosts.deny for these blocked addresses and ranges. A range is
 * written in the one form every libwrap reads (checked with tcpdmatch and a
 * real sshd): IPv4 as net/mask (`10.0.0.0/255.0.0.0`: the /8 form is a
 * Debian patch), IPv6 as `[2001:db8:1:2::]/64`. A range that holds an
 * allowed address or range is left out (an address blocked in it stays
 * listed on its own): the deny line comes first in hosts.allow, so it
 * would refuse the allowed one too.
 */
export function hostsDenyText(blocked: string[], allowRanges: Cidr[], nets: Cidr[] = []): string {
  const lines = blocked
    .filter((ip) => parseIp(ip) === ip && !inRanges(ip, allowRanges))
    .sort((a, b) => ipFamily(a) - ipFamily(b) || (a < b ? -1 : a > b ? 1 : 0)) // IPv4 first
    .map((ip) => (ipFamily(ip) === 6 ? `[${ip}]` : ip));
  const netLines = nets
    .filter((n) => parseNet(n.text)?.text === n.text && !allowRanges.some((r) => rangesOverlap(r, n)))
    .sort((a, b) => a.family - b.family || (a.text < b.text ? -1 : a.text > b.text ? 1 : 0))
    .map((n) => {
      const [base, bits] = n.text.split("/");
      if (n.family === 6) return `[${base}]/${bits}`;
      return `${base}/${netBaseText(prefixMask(4, n.bits), 4)}`;
    });
  const all = [...lines, ...netLines];
  return all.length ? `${all.join("\n")}\n` : "";
}

/** What hosts.deny should say now: block/'s addresses and ranges, minus what is allowed. */
function hostsDenyWanted(ctx: Ctx): string {
  return hostsDenyText(listDir(ctx, "block"), ctx.allowRanges, listNets(ctx, "block"));
}

/** Rewrites ROOT_DIR/hosts.deny from block/. Call under withLock. */
export function writeHostsDeny(ctx: Ctx): void {
  writeAtomic(ctx, path.join(ctx.cfg.ROOT_DIR, "hosts.deny"), hostsDenyWanted(ctx), 0o644);
}

// ---- 9.1.1 hosts.deny heals --------------------------------------------------
//
//   block/203.0.113.7 exists, hosts.deny lacks it (a kill -9 between the two
//   writes of setBlocked, a full disk)  →  the next connect of 203.0.113.7
//   rewrites hosts.deny and re-adds it to every enabled firewall
//
// tcpd refuses an address listed in hosts.deny before it spawns sentry, so a
// connect from an address block/ says is blocked proves the list is stale.
// Without this, such an address stays "blocked" in block/ and free at the
// door for good. The look costs one read of hosts.deny, and only for an
// address that is blocked; the rewrite happens only when the file really
// lacks it: a blocked address also reaches sentry legitimately (sentry run
// from pam_exec, a firewall-only setup), and those connects must not
// rewrite the file each time. With ADD_TO_TCPWRAPPERS=0 there is no list to
// prove stale: --resync repairs the firewalls.

/** The addresses ROOT_DIR/hosts.deny holds now (canonical), or null if there is no file. */
export function readHostsDeny(ctx: Ctx): Set<string> | null {
  const file = path.join(ctx.cfg.ROOT_DIR, "hosts.deny");
  let text: string;
  try {
    text = readStateFile(ctx, file);
  } catch (e) {
    if (errCode(e) === "ENOENT") return null;
    throw ioError("read", file, e);
  }
  const out = new Set<string>();
  for (const word of text.split(/\s+/)) {
    const ip = parseIp(word.replace(/^\[(.*)\]$/, "$1"));
    if (ip !== null) out.add(ip);
  }
  return out;
}

/** What hosts.deny lacks and what it holds too many, compared with block/ (minus ALLOW_IPS). */
export function hostsDenyDiff(ctx: Ctx): { missing: string[]; extra: string[] } {
  const want = new Set(listDir(ctx, "block").filter((ip) => !inRanges(ip, ctx.allowRanges)));
  const have = readHostsDeny(ctx) ?? new Set<string>();
  return { missing: [...want].filter((ip) => !have.has(ip)), extra: [...have].filter((ip) => !want.has(ip)) };
}

/**
 * connect, step 2, for a blocked `ip`: if hosts.deny lacks it, rewrites
 * hosts.deny from block/ and re-adds `ip` to every enabled firewall, under
 * the lock (looking again there: a parallel connect may have healed it, or
 * the block being written may be about to). Returns the exit code.
 */
export function healBlocked(ctx: Ctx, ip: string): number {
  if (!ctx.cfg.ADD_TO_TCPWRAPPERS || inRanges(ip, ctx.allowRanges)) return 0;
  if (readHostsDeny(ctx)?.has(ip)) return 0;
  return withLock(ctx, () => {
    if (!ctx.sys.fs.existsSync(statePath(ctx, "block", ip)) || readHostsDeny(ctx)?.has(ip)) return 0;
    writeHostsDeny(ctx);
    let code = 0;
    const names: string[] = [];
    for (const b of enabledBackends(ctx)) {
      const r = b.add(ip, ctx.cfg, ctx.sys);
      if (!r.ok) code = backendFailed(ctx, ip, b.name, "add", r.error);
      else names.push(b.name);
    }
    const what = `connected although block/${ip} says blocked: hosts.deny lacked it and was rewritten${names.length ? `; re-added to ${names.join(", ")}` : ""}`;
    ctx.sys.warn(`${ip} ${what}`);
    logDecision(ctx, ip, "heal", what);
    return code;
  });
}

/**
 * --scan and --resync: compares hosts.deny with block/ and, if they differ,
 * rewrites it under the lock. Returns a line saying what was repaired, or
 * null if nothing was (or ADD_TO_TCPWRAPPERS is off).
 */
export function healHostsDeny(ctx: Ctx, by: string): string | null {
  if (!ctx.cfg.ADD_TO_TCPWRAPPERS) return null;
  return withLock(ctx, () => {
    // The exact text, not only the addresses: a word that is no address
    // (an admin's edit, an ALL) is a pattern to tcpd, and may refuse everyone.
    const file = path.join(ctx.cfg.ROOT_DIR, "hosts.deny");
    let have = "";
    try {
      have = readStateFile(ctx, file);
    } catch (e) {
      if (errCode(e) !== "ENOENT") throw ioError("read", file, e);
    }
    if (have === hostsDenyWanted(ctx)) return null;
    const { missing, extra } = hostsDenyDiff(ctx);
    writeHostsDeny(ctx);
    const show = (a: string[]) => `${a.length}${a.length ? ` (${a.slice(0, 5).join(", ")}${a.length > 5 ? ", …" : ""})` : ""}`;
    const what = `hosts.deny differed from block/ and was rewritten: ${show(missing)} missing, ${show(extra)} left over`;
    logDecision(ctx, "-", "heal", `${by}: ${what}`);
    return what;
  });
}

// ---- 9.1.2 hosts.allowed: tcpd admits the allowed without spawning sentry ----
//
//   allow/192.0.2.50, allow/10.0.0.0_8, ALLOW_IPS="2001:db8::/32"
//     → ROOT_DIR/hosts.allowed "10.0.0.0/255.0.0.0\n192.0.2.50\n[2001:db8::]/32\n"
//   /etc/hosts.allow
//     sshd : /var/db/sentry/hosts.deny : deny
//     sshd : /var/db/sentry/hosts.allowed : allow
//     sshd : ALL : spawn /var/db/sentry/sentry --connect --ip=%a : allow
//
// An allowed address is done at step 2 of a connect, but tcpd still starts
// a process for it: the admin's and a CI system's thousand daily logins
// each cost one. With the middle line tcpd admits them itself. Their
// connections are then no longer counted (--report says so).
//
// NEVER WIDEN WHO MAY CONNECT (section 11.1.1). tcpd stops at the first rule
// that matches, in hosts.allow and then hosts.deny, so an "allow" line
// admits an address that the host's own policy (its rules in hosts.allow,
// and HOSTS_DENY) would refuse. The guarantee does not rest on where the
// line is placed (no tcpd line can say "allowed AND granted by the rules
// below"), but on what the file holds: an address or range is listed only
// where the host's policy WITHOUT sentry's lines surely grants sshd to all
// of it, read with sentry's reading of hosts_access(5) (the one --install
// checks against tcpdmatch). For a listed address tcpd then either meets
// the admin's own rule that decided it before (the same verdict: grant),
// or sentry's deny line (narrower), or this line (grant, as before). A rule
// whose match an address does not decide (a host name, LOCAL, a wildcard)
// keeps out every address whose verdict it could turn to "denied": those
// keep spawning sentry, which lets them in at step 2 as before. The policy can change after the
// file was written: a connect that finds HOSTS_ALLOW or HOSTS_DENY newer
// than hosts.allowed rewrites it (three stats), and --scan, --resync and
// --doctor compare it with what it should say.
//
// Written like hosts.deny (same syntax, temp file, fsync, rename, under the
// lock) on every path that changes allow/: --allow, --delist, a success
// that allows, a block that replaces an allow, ranges, sentry.sh's import,
// --install. Allows do not expire, and the fleet never allows. Loopback is
// never listed (tcpd meets it at the spawn line, and it costs nothing then
// to let sentry say so); ALLOW_IPS is (a change of sentry.conf shows at the
// next --scan, or at the connect of an address it newly allows).

/** The file tcpd reads the allowed from. */
function hostsAllowedPath(ctx: Ctx): string {
  return path.join(ctx.cfg.ROOT_DIR, "hosts.allowed");
}

/** A range or address as one word of a tcpd client list (net/mask for IPv4, [v6]/bits, as hosts.deny writes them). */
export function tcpdWord(c: Cidr): string {
  const max = c.family === 4 ? 32 : 128;
  const base = netBaseText(c.base, c.family);
  if (c.family === 6) return c.bits === max ? `[${base}]` : `[${base}]/${c.bits}`;
  return c.bits === max ? base : `${base}/${netBaseText(c.bits === 0 ? 0n : ((1n << BigInt(c.bits)) - 1n) << BigInt(32 - c.bits), 4)}`;
}

/**
 * The host's own policy for sshd (sentry's lines taken out), ready to be
 * asked about many addresses: an allow/ of 10,000 meets a hosts.deny of
 * 2,000 old-style rules, so the patterns are parsed once.
 */
interface HostPolicy {
  compiled: CompiledRule[];
  cuts: Record<Family, bigint[]>; // where some pattern of an sshd rule starts or ends, sorted
  granted: Map<string, boolean>; // "family:i" → whether tcpd surely grants the i-th interval between cuts
}

/** Reads HOSTS_ALLOW and HOSTS_DENY without sentry's lines. Throws SentryError if one cannot be read. */
function readHostPolicy(ctx: Ctx): HostPolicy {
  const before = policyPair(readPolicyFile(ctx, ctx.cfg.HOSTS_ALLOW), readPolicyFile(ctx, ctx.cfg.HOSTS_DENY)).before;
  const rules = [...parseAccessFile(before.allow, ctx.cfg.HOSTS_ALLOW, true), ...parseAccessFile(before.deny, ctx.cfg.HOSTS_DENY, false)];
  const cuts: Record<Family, Set<bigint>> = { 4: new Set(), 6: new Set() };
  for (const r of rules) {
    if (!forSshd(r)) continue;
    for (const w of r.clients) {
      const sp = patternSpan(w);
      if (sp === null || sp === "host") continue;
      cuts[sp.family].add(sp.lo);
      cuts[sp.family].add(sp.hi + 1n);
    }
  }
  const sorted = (x: Set<bigint>) => [...x].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { compiled: compileRules(rules), cuts: { 4: sorted(cuts[4]), 6: sorted(cuts[6]) }, granted: new Map() };
}

/**
 * Whether the host's policy surely grants sshd to every address of `c`.
 * The address patterns of its rules cut the address space into intervals
 * on each of which every pattern matches all or nothing (as in
 * sampleClients), so one address of each interval the range touches
 * answers for all of it; the answer is kept per interval, and 10,000
 * allowed addresses outside every rule cost one look, not 10,000.
 */
function policyGrantsAll(p: HostPolicy, c: Cidr): boolean {
  const max = c.family === 4 ? 32 : 128;
  const lo = c.base;
  const hi = c.base + (1n << BigInt(max - c.bits)) - 1n;
  const cuts = p.cuts[c.family];
  const interval = (v: bigint): number => {
    let i = 0; // how many cuts are at or below v (binary search: they are sorted)
    for (let top = cuts.length; i < top; ) {
      const mid = (i + top) >> 1;
      if (cuts[mid] <= v) i = mid + 1;
      else top = mid;
    }
    return i;
  };
  const last = interval(hi);
  for (let i = interval(lo); i <= last; i++) {
    const key = `${c.family}:${i}`;
    let ok = p.granted.get(key);
    if (ok === undefined) {
      const v = i === 0 ? 0n : cuts[i - 1]; // the interval's first address
      const verdicts = compiledVerdictsAt(p.compiled, c.family, v);
      ok = verdicts.size === 1 && verdicts.has("granted");
      p.granted.set(key, ok);
    }
    if (!ok) return false;
  }
  return true;
}

/**
 * What hosts.allowed should hold: allow/'s addresses and ranges and
 * ALLOW_IPS, minus loopback, minus an address a listed range holds, minus
 * whatever the host's policy does not surely grant (`left`).
 */
export function hostsAllowedWanted(ctx: Ctx, policy: HostPolicy): { text: string; listed: Cidr[]; left: string[] } {
  const loop = parseAllowList("");
  const configured: Cidr[] = [];
  for (const w of ctx.cfg.ALLOW_IPS.split(/[\s,]+/)) {
    const c = w === "" ? null : parseCidr(w);
    if (c !== null) configured.push(c); // (a bad word stopped the command already: makeCtx parsed them)
  }
  // Ranges first: an address a listed range holds needs no line of its own (one the policy left out does).
  const nets = [...configured, ...listNets(ctx, "allow")].sort((a, b) => a.bits - b.bits);
  const addrs = listDir(ctx, "allow").map((ip) => parseCidr(ip) as Cidr);
  const listed: Cidr[] = [];
  const listedNets: Cidr[] = []; // few: the addresses are checked against these only
  const left: string[] = [];
  const seen = new Set<string>();
  for (const c of [...nets, ...addrs]) {
    const word = tcpdWord(c);
    if (seen.has(word) || loop.some((l) => rangesOverlap(l, c) && l.bits <= c.bits) || listedNets.some((n) => n.bits < c.bits && rangesOverlap(n, c))) continue;
    seen.add(word);
    if (policyGrantsAll(policy, c)) {
      listed.push(c);
      if (c.bits < (c.family === 4 ? 32 : 128)) listedNets.push(c);
    }
    else left.push(c.bits === (c.family === 4 ? 32 : 128) ? netBaseText(c.base, c.family) : c.text);
  }
  listed.sort((a, b) => a.family - b.family || (a.base < b.base ? -1 : a.base > b.base ? 1 : a.bits - b.bits));
  return { text: listed.map((c) => `${tcpdWord(c)}\n`).join(""), listed, left };
}

/**
 * What hosts.allowed should say now; "" when ALLOWED_TO_TCPWRAPPERS is off,
 * and "" (with a warning) when the policy cannot be read: then sentry
 * cannot know whom the host admits, and lists nobody.
 */
function hostsAllowedText(ctx: Ctx): string {
  if (!ctx.cfg.ALLOWED_TO_TCPWRAPPERS) return "";
  let policy: HostPolicy;
  try {
    policy = readHostPolicy(ctx);
  } catch (e) {
    if (!(e instanceof SentryError)) throw e;
    ctx.sys.warn(`hosts.allowed lists no one: ${e.message} (sentry lists only addresses the host's own tcpd policy admits)`);
    return "";
  }
  return hostsAllowedWanted(ctx, policy).text;
}

/** Rewrites ROOT_DIR/hosts.allowed from allow/ and ALLOW_IPS. Call under withLock. Off: emptied if it exists, else left absent. */
export function writeHostsAllowed(ctx: Ctx): void {
  const file = hostsAllowedPath(ctx);
  if (!ctx.cfg.ALLOWED_TO_TCPWRAPPERS && !ctx.sys.fs.existsSync(file)) return;
  writeAtomic(ctx, file, hostsAllowedText(ctx), 0o644);
}

/** The text of ROOT_DIR/hosts.allowed, or null if there is no file. */
function readHostsAllowed(ctx: Ctx): string | null {
  try {
    return readStateFile(ctx, hostsAllowedPath(ctx));
  } catch (e) {
    if (errCode(e) === "ENOENT") return null;
    throw ioError("read", hostsAllowedPath(ctx), e);
  }
}

/** Whether canonical `ip` is among the words of a hosts.allowed text (an address or a range). */
export function hostsAllowedHas(text: string, ip: string): boolean {
  const family = ipFamily(ip);
  const v = ipToBigInt(ip);
  for (const w of text.split(/\s+/)) {
    const s = w === "" ? null : patternSpan(w);
    if (s !== null && s !== "host" && s.family === family && v >= s.lo && v <= s.hi) return true;
  }
  return false;
}

/**
 * connect, step 2, for an allowed `ip`: tcpd should have admitted it from
 * hosts.allowed without spawning sentry. If the file lacks it and the
 * host's policy grants it, the file is stale (a kill -9 between two
 * writes, an ALLOW_IPS added to sentry.conf): rewritten under the lock. An
 * allowed address reaches here legitimately too (the line is not
 * installed, loopback, an address the policy does not surely grant): one
 * read of a small file, and no write.
 */
export function healAllowed(ctx: Ctx, ip: string): number {
  if (!ctx.cfg.ALLOWED_TO_TCPWRAPPERS || inRanges(ip, parseAllowList(""))) return 0;
  const have = readHostsAllowed(ctx);
  if (have === null || hostsAllowedHas(have, ip)) return 0; // no file: the line cannot be working yet (--scan writes it)
  let policy: HostPolicy;
  try {
    policy = readHostPolicy(ctx);
  } catch (e) {
    if (!(e instanceof SentryError)) throw e;
    return 0; // cannot tell whom the host admits: nothing to heal, --doctor says why
  }
  if (!policyGrantsAll(policy, parseCidr(ip) as Cidr)) return 0;
  return withLock(ctx, () => {
    if (hostsAllowedHas(readHostsAllowed(ctx) ?? "", ip)) return 0;
    writeHostsAllowed(ctx);
    const what = "connected although allowed: hosts.allowed lacked it and was rewritten";
    ctx.sys.warn(`${ip} ${what}`);
    logDecision(ctx, ip, "heal", what);
    return 0;
  }, { waitMs: ctx.cfg.CONNECT_WAIT_MS, then: () => 0 });
}

/**
 * connect, every one: the host's policy was edited after hosts.allowed was
 * written (HOSTS_ALLOW or HOSTS_DENY is newer), so an address it lists may
 * now be one the host denies: rewritten. Three stats; no file, no work.
 */
export function refreshHostsAllowed(ctx: Ctx): void {
  if (!ctx.cfg.ALLOWED_TO_TCPWRAPPERS) return;
  const fsys = ctx.sys.fs;
  const mine = fsys.statSync(hostsAllowedPath(ctx), { throwIfNoEntry: false });
  if (!mine) return;
  const newest = Math.max(...[ctx.cfg.HOSTS_ALLOW, ctx.cfg.HOSTS_DENY].map((f) => fsys.statSync(f, { throwIfNoEntry: false })?.mtimeMs ?? 0));
  if (newest <= mine.mtimeMs) return;
  withLock(ctx, () => {
    const now = fsys.statSync(hostsAllowedPath(ctx), { throwIfNoEntry: false });
    if (now && newest <= now.mtimeMs) return; // a parallel connect did it
    const old = readHostsAllowed(ctx) ?? "";
    writeHostsAllowed(ctx);
    // A policy file dated in the future would make every connect rewrite: date ours after it.
    const after = fsys.statSync(hostsAllowedPath(ctx), { throwIfNoEntry: false });
    if (after && after.mtimeMs < newest) fsys.utimesSync(hostsAllowedPath(ctx), new Date(), new Date(newest + 1000));
    const now2 = readHostsAllowed(ctx) ?? "";
    if (now2 !== old) logDecision(ctx, "-", "heal", `${ctx.cfg.HOSTS_ALLOW} or ${ctx.cfg.HOSTS_DENY} changed: hosts.allowed rewritten (${now2.split("\n").filter((l) => l).length} entries)`);
  }, { waitMs: ctx.cfg.CONNECT_WAIT_MS, then: () => undefined });
}

/**
 * --scan and --resync: compares hosts.allowed with what it should say and,
 * if they differ, rewrites it under the lock. Returns a line saying what
 * was repaired, or null.
 */
export function healHostsAllowed(ctx: Ctx, by: string): string | null {
  if (!ctx.cfg.ALLOWED_TO_TCPWRAPPERS && readHostsAllowed(ctx) === null) return null;
  return withLock(ctx, () => {
    const have = readHostsAllowed(ctx);
    const want = hostsAllowedText(ctx);
    if (have === want) return null;
    writeHostsAllowed(ctx);
    const words = (t: string) => t.split(/\s+/).filter((w) => w !== "");
    const extra = words(have ?? "").filter((w) => !words(want).includes(w));
    const missing = words(want).filter((w) => !words(have ?? "").includes(w));
    const show = (a: string[]) => `${a.length}${a.length ? ` (${a.slice(0, 5).join(", ")}${a.length > 5 ? ", …" : ""})` : ""}`;
    const what = `hosts.allowed differed from allow/, ALLOW_IPS and the host's policy and was rewritten: ${show(missing)} missing, ${show(extra)} left over`;
    logDecision(ctx, "-", "heal", `${by}: ${what}`);
    return what;
  });
}

// ---- 9.2 Firewalls: nftables, iptables+ipset, pf, ipfw ---------------------------
//
//   block 203.0.113.7, ADD_TO_NFTABLES=1  →  nft add element inet sentry_blocklist v4 { 203.0.113.7 }
//   block 2001:db8::7, ADD_TO_IPTABLES=1  →  ipset add -exist sentry_blocklist-6 2001:db8::7
//   block 203.0.113.7, ADD_TO_PF=1        →  pfctl -t sentry_blocklist -T add 203.0.113.7
//                                            pfctl -k 203.0.113.7
//   block 203.0.113.7, ADD_TO_IPFW=1      →  ipfw -q table sentry_blocklist add 203.0.113.7
//
// sentry never writes firewall rules. Each backend fills one table or set
// that a rule written once by the admin refers to; rules(cfg) prints that
// rule (README and --install show it). So sentry cannot lock the admin out
// by a bad rule, and turning a backend off is one line in sentry.conf.
//
// Every call of a tool goes through sys.run: an argument vector, never a
// shell, killed after COMMAND_TIMEOUT_SECONDS (sshd waits for a --connect,
// so a wedged firewall tool must not hold logins up). The address is
// canonical and was validated by parseIp; the table name is checked here,
// because it comes from sentry.conf or the environment and lands on a
// command line. Nothing here throws: a missing tool, a timeout or a refusal
// is {ok:false, error} with one line naming the command, and the caller
// turns it into a warning; the block itself is recorded regardless.
//
// Idempotency is the contract of add and remove (a --resync replays every
// block; two connects of one botnet race to block one address): adding a
// member twice or removing one that is absent is ok. Each backend gets that
// from the tool itself where it can (ipset -exist, ipfw -q, pfctl counting
// "0/1 addresses added"), and from an atomic nft batch otherwise, never from
// a list-then-act sequence another sentry process could interleave with.


/** What one backend operation did. error is "" when ok, else one line naming the tool and the command. */
export interface BackendResult {
  ok: boolean;
  error: string;
}

/** One firewall that sentry can put addresses in. */
export interface Backend {
  name: "nftables" | "iptables" | "pf" | "ipfw";
  /** Whether the admin switched it on (ADD_TO_NFTABLES, ADD_TO_IPTABLES, ADD_TO_PF, ADD_TO_IPFW). */
  enabled(cfg: Config): boolean;
  /** Puts canonical `ip` in the table; ok if it already was there. */
  add(ip: string, cfg: Config, sys: Sys, timeoutMs?: number): BackendResult; // timeoutMs: the block's length, for a set whose members can carry one (NFT_TIMEOUT)
  /** Takes canonical `ip` out of the table; ok if it was not there. */
  remove(ip: string, cfg: Config, sys: Sys): BackendResult;
  /** The addresses in the table now, canonical and sorted; [] if the table does not exist; null if it cannot be read. */
  list(cfg: Config, sys: Sys): string[] | null;
  /** The rule(s) the admin loads once so the table takes effect, as a file or shell snippet with # comments. */
  rules(cfg: Config): string;
}

// ---- 9.2.1 Shared pieces ----------------------------------------------------------

/**
 * A table name sentry accepts: a letter, then letters, digits, _ or -, 29 at
 * most. Why these limits: it is passed on a command line (so no spaces, no
 * quotes, no leading "-" that a tool would read as an option, no "/" or "..");
 * nft's grammar needs a letter first; ipfw reads an all-digit name as an old
 * numbered table; ipset names are at most 31 characters and the iptables
 * backend appends "-4"/"-6"; pf's limit is 31.
 */
export const TABLE_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]{0,28}$/;

/** "" if cfg.FIREWALL_TABLE is usable, else the one-line reason. */
export function tableNameError(cfg: Config): string {
  const name = cfg.FIREWALL_TABLE;
  if (typeof name === "string" && TABLE_NAME_RE.test(name)) return "";
  return (
    `FIREWALL_TABLE=${JSON.stringify(name)} is not a valid table name: ` +
    "use a letter, then letters, digits, _ or -, at most 29 characters"
  );
}

const fail = (error: string): BackendResult => ({ ok: false, error });
const OK: BackendResult = { ok: true, error: "" };

/** Refuses what sentry's own checks should already have refused: a bad table name or a non-canonical address. */
function precheck(ip: string | null, cfg: Config, tool: string): string {
  const bad = tableNameError(cfg);
  if (bad) return `${tool}: ${bad}; nothing was run`;
  // A range (section 3.1) is checked as strictly: parseNet re-creates it exactly.
  if (ip !== null && parseIp(ip) !== ip && parseNet(ip)?.text !== ip) return `${tool}: ${JSON.stringify(ip)} is not a canonical address or range; nothing was run`;
  return "";
}

/** Text of a tool's output made into one readable line. */
function oneLine(text: string, max = 240): string {
  const line =
    text
      .split("\n")
      .map((l) => l.replace(/[\x00-\x1f\x7f]+/g, " ").trim())
      .find((l) => l !== "") ?? "";
  return line.length > max ? line.slice(0, max - 1) + "…" : line;
}

/** The runner of one backend call: the same timeout for every command, and a uniform error line. */
interface Call {
  result: RunResult;
  ok: boolean; // exit 0
  ran: boolean; // the tool started and finished (false: not found, timed out, killed)
  error: string; // "" when ok, else "CMDLINE: why"
}

function call(sys: Sys, cfg: Config, cmd: string, args: string[]): Call {
  const timeoutMs = cfg.COMMAND_TIMEOUT_SECONDS * 1000;
  const result = sys.run(cmd, args, { timeoutMs });
  const line = [cmd, ...args].join(" ");
  const ran = result.error === "";
  const ok = ran && result.status === 0;
  let why = "";
  if (result.error === "timed out") {
    why = `timed out after ${cfg.COMMAND_TIMEOUT_SECONDS} s (COMMAND_TIMEOUT_SECONDS) and was killed`;
  } else if (result.error === "not found") {
    why = `${cmd} not found: is it installed and on PATH?`;
  } else if (!ran) {
    why = result.error;
  } else if (!ok) {
    why = `exit ${result.status}: ${oneLine(result.stderr) || oneLine(result.stdout) || "no message"}`;
  }
  return { result, ok, ran, error: ok ? "" : `${line}: ${why}` };
}

/** Canonical, unique, sorted: what list() returns. Sorted as text, which is stable and all a comparison needs. */
function tidy(ips: Iterable<string>): string[] {
  return [...new Set(ips)].sort();
}

// ---- 9.2.2 nftables ---------------------------------------------------------------
//
// Sentry's own table `inet FIREWALL_TABLE` holds two sets, v4 (ipv4_addr)
// and v6 (ipv6_addr). Not "ip4"/"ip6": `ip6` is a keyword of nft's grammar
// and cannot name a set (`set ip6 {` and `@ip6` are syntax errors).
//
//   add     nft add element inet T v4 { IP }
//           One process, one atomic transaction; adding an element that is
//           there is not an error for nft (only `create element` is).
//           If it fails (no table or set yet: nothing was loaded, or a
//           `flush ruleset` reload removed them), one batch creates what is
//           missing and adds:
//           nft add table inet T ; add set inet T v4 { type ipv4_addr ; } ; add element inet T v4 { IP }
//           `add table`/`add set` are no-ops when the object exists with the
//           same definition. The fast path comes first because a set the
//           admin declared with extra flags (interval, timeout, counter)
//           makes `add set` fail with "File exists", while adding an
//           element to it works.
//   remove  nft add element inet T v4 { IP } ; delete element inet T v4 { IP }
//           nft < 1.0.8 has no `destroy element`, and `delete element` of
//           an absent one fails. Adding then deleting in one transaction
//           succeeds whether or not it was there, and is atomic: no other
//           process sees the address come and go. If even that fails, the
//           same batch runs after the create steps above.
//   list    nft list table inet T, the elements of sets v4 and v6; if the
//           table does not exist (nft list tables does not show it): [].
//
// The chain that uses the sets is the admin's (rules() below). It drops:
// a dropped SYN tells a scanner nothing and costs it a timeout per try,
// and a host that answers nothing cannot be used to reflect resets at a
// spoofed source. A reject (`reject with tcp reset`) would fail faster,
// which only helps someone testing the block by hand. The rule matches
// every packet, not only new connections, so the attacker's open session
// is cut off too (pf needs `pfctl -k` for that).

// The deciding connection, and any other flow of the address just blocked,
// ends at once rather than stalling. The set's drop rule makes every packet
// of those flows vanish, but sshd does not know: a pre-login child waits
// out LoginGraceTime (120 s) holding one of its MaxStartups slots, which is
// how a blocked bot could still push sshd into dropping the admin's
// connections (issue 16). `ss -K` closes the sockets whose peer is that
// address (the kernel's SOCK_DESTROY, Linux 4.5+ with INET_DIAG_DESTROY);
// sshd sees its socket fail and exits. Only the blocked address's own flows
// are touched, and those are dead anyway once the set holds it.
//
//   ss -K -t dst 192.0.2.30 or dst [::ffff:192.0.2.30]   (an sshd on :: sees IPv4 clients so)
//   ss -K -t dst [2001:db8::30]

/** Closes this host's TCP sockets whose peer is `ip` (after an nftables block); says in sentry.log how many, or why none. */
export function cutFlows(ctx: Ctx, ip: string): number | null {
  if (!ctx.cfg.ADD_TO_NFTABLES || parseIp(ip) !== ip) return null;
  const filter = ipFamily(ip) === 4 ? ["dst", ip, "or", "dst", `[::ffff:${ip}]`] : ["dst", `[${ip}]`];
  const r = ctx.sys.run("ss", ["-K", "-H", "-t", ...filter], { timeoutMs: ctx.cfg.COMMAND_TIMEOUT_SECONDS * 1000 });
  if (r.error !== "" || r.status !== 0) {
    logDecision(ctx, ip, "cut-skipped", `ss -K: ${r.error || r.stderr.trim().split("\n")[0] || `exit ${r.status}`}`);
    return null;
  }
  const n = r.stdout.split("\n").filter((l) => l.trim() !== "").length;
  if (n > 0) logDecision(ctx, ip, "cut", `closed ${n} TCP connection${n === 1 ? "" : "s"} of the blocked address (ss -K)`);
  return n;
}

/**
 * The set of an address family: v4 or v6; a range (section 3.1) goes to
 * v4net or v6net, which sentry makes with `flags interval` (a set without
 * it refuses a prefix). Separate sets, so that v4/v6, which an admin may
 * have declared with flags of their own, are never redefined.
 */
function nftSet(ip: string): { set: string; type: string } {
  const net = ip.indexOf("/") !== -1 ? "net" : "";
  const type = ipFamily(ip.split("/")[0]) === 4 ? "ipv4_addr" : "ipv6_addr";
  return { set: `${type === "ipv4_addr" ? "v4" : "v6"}${net}`, type: net ? `${type} ; flags interval` : type };
}

/** nft's argument vector of a script: its words. Table name and address are checked, so no word has a space. */
const words = (script: string): string[] => script.split(/\s+/).filter((w) => w !== "");

function nftCreateSteps(table: string, ip: string, cfg?: Config): string {
  const { set, type } = nftSet(ip);
  const flags = cfg?.NFT_TIMEOUT && ip.indexOf("/") === -1 ? " ; flags timeout" : "";
  return `add table inet ${table} ; add set inet ${table} ${set} { type ${type}${flags} ; } ;`;
}

/**
 * The longest timeout sentry gives an nft element: kernels before 6.x keep
 * a set element's timeout in 32-bit milliseconds (49.7 days) and wrap
 * beyond. Longer blocks are lifted by sentry's expiry alone, as without
 * NFT_TIMEOUT; the kernel's timeout is for the short ones, which must end
 * on time even if no connect or --scan runs then.
 */
export const NFT_TIMEOUT_MAX_MS = 30 * 86_400_000;

function nftAdd(ip: string, cfg: Config, sys: Sys, timeoutMs?: number): BackendResult {
  const bad = precheck(ip, cfg, "nftables");
  if (bad) return fail(bad);
  const T = cfg.FIREWALL_TABLE;
  const { set } = nftSet(ip);
  // NFT_TIMEOUT: the admin declared v4/v6 with `flags timeout` (nftRules prints it so); ranges' sets have none.
  const timeout = cfg.NFT_TIMEOUT && timeoutMs && timeoutMs <= NFT_TIMEOUT_MAX_MS && ip.indexOf("/") === -1 ? ` timeout ${Math.ceil(timeoutMs / 1000)}s` : "";
  const element = `add element inet ${T} ${set} { ${ip}${timeout} }`;
  const first = call(sys, cfg, "nft", words(element));
  if (first.ok) return OK;
  if (!first.ran) return fail(`nftables: ${first.error}`);
  const second = call(sys, cfg, "nft", words(`${nftCreateSteps(T, ip, cfg)} ${element}`));
  if (second.ok) return OK;
  return fail(`nftables: ${second.error} (before that: ${first.error})`);
}

function nftRemove(ip: string, cfg: Config, sys: Sys): BackendResult {
  const bad = precheck(ip, cfg, "nftables");
  if (bad) return fail(bad);
  const T = cfg.FIREWALL_TABLE;
  const { set } = nftSet(ip);
  const addDelete = `add element inet ${T} ${set} { ${ip} } ; delete element inet ${T} ${set} { ${ip} }`;
  const first = call(sys, cfg, "nft", words(addDelete));
  if (first.ok) return OK;
  if (!first.ran) return fail(`nftables: ${first.error}`);
  const second = call(sys, cfg, "nft", words(`${nftCreateSteps(T, ip, cfg)} ${addDelete}`));
  if (second.ok) return OK;
  return fail(`nftables: ${second.error} (before that: ${first.error})`);
}

/**
 * The members of sets v4 and v6 in the output of `nft list table`:
 *
 *   table inet sentry_blocklist {
 *           set v4 {
 *                   type ipv4_addr
 *                   elements = { 192.0.2.5, 192.0.2.6,
 *                                192.0.2.7 }
 *           }
 *           chain input { ... }
 *   }
 *
 * Only words that parse as an address of the set's family count: element
 * options (timeout 1h, expires 59m, comment "…"), ranges and prefixes the
 * admin put in by hand are not sentry's members.
 */
export function parseNftTable(text: string): string[] {
  const out: string[] = [];
  let inSet: 4 | 6 | 0 = 0; // the family of the set block we are in
  let netSet = false; // v4net/v6net: ranges (section 3.1), not addresses
  let setDepth = 0; // brace depth at which that block opened
  let inElements = false;
  let depth = 0;
  for (const line of text.split("\n")) {
    const m = /^\s*set (v4|v6)(net)? \{\s*$/.exec(line);
    if (m && inSet === 0) {
      inSet = m[1] === "v4" ? 4 : 6;
      netSet = m[2] === "net";
      setDepth = depth;
      depth++;
      continue;
    }
    let rest = line;
    if (inSet !== 0 && !inElements) {
      const e = /^\s*elements = \{(.*)$/.exec(line);
      if (e) {
        inElements = true;
        depth++;
        rest = e[1];
      }
    }
    if (inSet !== 0 && inElements) {
      const close = rest.indexOf("}");
      const body = close === -1 ? rest : rest.slice(0, close);
      for (const w of body.split(/[\s,]+/)) {
        if (netSet) {
          const net = parseNet(w);
          if (net !== null && net.text === w && net.family === inSet) out.push(w);
          continue;
        }
        const ip = parseIp(w);
        if (ip !== null && ip === w && ipFamily(ip) === inSet) out.push(ip);
      }
      if (close !== -1) {
        inElements = false;
        depth--;
        rest = rest.slice(close + 1);
      } else continue;
    }
    for (const ch of rest) {
      if (ch === "{") depth++;
      else if (ch === "}") depth--;
    }
    if (inSet !== 0 && depth <= setDepth) inSet = 0;
  }
  return tidy(out);
}

function nftList(cfg: Config, sys: Sys): string[] | null {
  if (precheck(null, cfg, "nftables")) return null;
  const T = cfg.FIREWALL_TABLE;
  const r = call(sys, cfg, "nft", ["list", "table", "inet", T]);
  if (r.ok) return parseNftTable(r.result.stdout);
  if (!r.ran) return null;
  // Failed: no such table (then it has no members), or nft cannot work here.
  const tables = call(sys, cfg, "nft", ["list", "tables"]);
  if (!tables.ok) return null;
  const exists = tables.result.stdout.split("\n").some((l) => l.trim() === `table inet ${T}`);
  return exists ? null : [];
}

function nftRules(cfg: Config): string {
  const bad = tableNameError(cfg);
  if (bad) return `# ${bad}\n`;
  const T = cfg.FIREWALL_TABLE;
  return `# sentry fills the sets v4 and v6 of table inet ${T}; this chain drops
# every packet from their members. Load it with \`nft -f FILE\` or include it
# from /etc/nftables.conf. Loading it again neither repeats the rules nor
# empties the sets; a \`flush ruleset\` (nftables.service reload) does empty
# them: run \`sentry --resync\` after one.${cfg.NFT_TIMEOUT ? `
# NFT_TIMEOUT=1: v4 and v6 carry flags timeout, so each block's element ends
# by itself; a set's flags cannot change, so delete sets v4/v6 made without
# it (nft delete set inet ${T} v4; … v6), load this, then sentry --resync.` : ""}
table inet ${T} {
	set v4 { type ipv4_addr;${cfg.NFT_TIMEOUT ? " flags timeout;" : ""} }
	set v6 { type ipv6_addr;${cfg.NFT_TIMEOUT ? " flags timeout;" : ""} }
	set v4net { type ipv4_addr; flags interval; }
	set v6net { type ipv6_addr; flags interval; }
	chain input { type filter hook input priority -10; policy accept; }
}
flush chain inet ${T} input
table inet ${T} {
	chain input {
		ip saddr @v4 drop
		ip6 saddr @v6 drop
		ip saddr @v4net drop
		ip6 saddr @v6net drop
	}
}
`;
}

export const nftablesBackend: Backend = {
  name: "nftables",
  enabled: (cfg) => cfg.ADD_TO_NFTABLES,
  add: nftAdd,
  remove: nftRemove,
  list: nftList,
  rules: nftRules,
};

// ---- 9.2.3 iptables + ipset -------------------------------------------------------
//
// iptables has no sets of its own: the rule matches an ipset. One set per
// family, since a hash:ip set holds one family: FIREWALL_TABLE-4
// (hash:ip family inet) for iptables, FIREWALL_TABLE-6 (family inet6) for
// ip6tables. Sentry only runs ipset; the two iptables rules are the admin's.
//
//   add     ipset add -exist T-4 IP            (-exist: already there is ok)
//           if that fails (no set yet), create it and try once more:
//           ipset create T-4 hash:ip family inet -exist ; ipset add -exist T-4 IP
//           (create -exist is a no-op for an identical set; a set the admin
//           made with other options is used as it is, by the first command).
//   remove  ipset del -exist T-4 IP            (-exist: absent is ok)
//           if that fails (no set), create it and delete once more: an
//           empty new set is exactly "not a member", and no error message
//           has to be parsed to tell a missing set from a real failure.
//   list    ipset save T-4 ("add T-4 IP" lines), same for T-6; a set that
//           `ipset list -n` does not show has no members.

const ipsetName = (cfg: Config, fam: 4 | 6) => `${cfg.FIREWALL_TABLE}-${fam}`;
/** The hash:net set of the ranges of a family (section 3.1): FIREWALL_TABLE-n4/-n6 (a hash:ip set refuses a prefix). */
const ipsetNetName = (cfg: Config, fam: 4 | 6) => `${cfg.FIREWALL_TABLE}-n${fam}`;
const ipsetCreate = (name: string, fam: 4 | 6, kind = "hash:ip") => ["create", name, kind, "family", fam === 4 ? "inet" : "inet6", "-exist"];
/** ipset names are at most 31 characters (IPSET_MAXNAMELEN - 1). */
const IPSET_NAME_MAX = 31;

function ipsetChange(ip: string, cfg: Config, sys: Sys, verb: "add" | "del"): BackendResult {
  const bad = precheck(ip, cfg, "iptables");
  if (bad) return fail(bad);
  const isNet = ip.indexOf("/") !== -1;
  const fam = ipFamily(ip.split("/")[0]);
  const name = isNet ? ipsetNetName(cfg, fam) : ipsetName(cfg, fam);
  if (name.length > IPSET_NAME_MAX) return fail(`iptables: the set of ranges would be named ${name}, longer than ipset's ${IPSET_NAME_MAX} characters: shorten FIREWALL_TABLE; nothing was run`);
  const change = [verb, "-exist", name, ip];
  const first = call(sys, cfg, "ipset", change);
  if (first.ok) return OK;
  if (!first.ran) return fail(`iptables: ${first.error}`);
  const create = call(sys, cfg, "ipset", ipsetCreate(name, fam, isNet ? "hash:net" : "hash:ip"));
  if (!create.ok) return fail(`iptables: ${create.error} (before that: ${first.error})`);
  const again = call(sys, cfg, "ipset", change);
  if (again.ok) return OK;
  return fail(`iptables: ${again.error}`);
}

/** The members in `ipset save NAME` output: lines "add NAME IP". */
export function parseIpsetSave(text: string, name: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const w = line.trim().split(/\s+/);
    if (w[0] !== "add" || w[1] !== name || w.length < 3) continue;
    if (w[2].indexOf("/") !== -1) {
      if (parseNet(w[2])?.text === w[2]) out.push(w[2]); // a range of the hash:net set
      continue;
    }
    const ip = parseIp(w[2]);
    if (ip !== null && ip === w[2]) out.push(ip);
  }
  return tidy(out);
}

function ipsetList(cfg: Config, sys: Sys): string[] | null {
  if (precheck(null, cfg, "iptables")) return null;
  const out: string[] = [];
  let names: string[] | null = null; // `ipset list -n`, fetched only if a save fails
  const names4and6 = [ipsetName(cfg, 4), ipsetName(cfg, 6)];
  // The sets of ranges only if their names fit (else no range was ever added).
  for (const fam of [4, 6] as const) if (ipsetNetName(cfg, fam).length <= IPSET_NAME_MAX) names4and6.push(ipsetNetName(cfg, fam));
  for (const name of names4and6) {
    const r = call(sys, cfg, "ipset", ["save", name]);
    if (r.ok) {
      out.push(...parseIpsetSave(r.result.stdout, name));
      continue;
    }
    if (!r.ran) return null;
    if (names === null) {
      const n = call(sys, cfg, "ipset", ["list", "-n"]);
      if (!n.ok) return null;
      names = n.result.stdout.split("\n").map((l) => l.trim());
    }
    if (names.includes(name)) return null; // it exists, yet cannot be read
  }
  return tidy(out);
}

function ipsetRules(cfg: Config): string {
  const bad = tableNameError(cfg);
  if (bad) return `# ${bad}\n`;
  const s4 = ipsetName(cfg, 4);
  const s6 = ipsetName(cfg, 6);
  const n4 = ipsetNetName(cfg, 4);
  const n6 = ipsetNetName(cfg, 6);
  return `# sentry fills the ipsets ${s4} and ${s6} (addresses), ${n4} and ${n6} (ranges); these rules drop every packet
# from their members. Run them once at boot, before other INPUT rules (e.g.
# from a netfilter-persistent or ifupdown hook): the sets must exist before
# a rule names them. Running them again adds nothing twice.
ipset create ${s4} hash:ip family inet -exist
ipset create ${s6} hash:ip family inet6 -exist
ipset create ${n4} hash:net family inet -exist
ipset create ${n6} hash:net family inet6 -exist
iptables -C INPUT -m set --match-set ${s4} src -j DROP 2>/dev/null || iptables -I INPUT -m set --match-set ${s4} src -j DROP
ip6tables -C INPUT -m set --match-set ${s6} src -j DROP 2>/dev/null || ip6tables -I INPUT -m set --match-set ${s6} src -j DROP
iptables -C INPUT -m set --match-set ${n4} src -j DROP 2>/dev/null || iptables -I INPUT -m set --match-set ${n4} src -j DROP
ip6tables -C INPUT -m set --match-set ${n6} src -j DROP 2>/dev/null || ip6tables -I INPUT -m set --match-set ${n6} src -j DROP
`;
}

export const iptablesBackend: Backend = {
  name: "iptables",
  enabled: (cfg) => cfg.ADD_TO_IPTABLES,
  add: (ip, cfg, sys) => ipsetChange(ip, cfg, sys, "add"),
  remove: (ip, cfg, sys) => ipsetChange(ip, cfg, sys, "del"),
  list: ipsetList,
  rules: ipsetRules,
};

// ---- 9.2.4 pf (OpenBSD, FreeBSD, macOS) ------------------------------------------
//
//   add     pfctl -t T -T add IP     creates the table (persist) if missing;
//                                    "0/1 addresses added" and exit 0 if
//                                    the address was there already
//           pfctl -k IP              kills the states from IP: pf passes
//                                    packets of an established state without
//                                    evaluating rules, so without this the
//                                    attacker's open session would live on
//   remove  pfctl -t T -T delete IP  "0/1 addresses deleted" and exit 0 if
//                                    absent; "Table does not exist." if there
//                                    is no table, which also means absent
//   list    pfctl -t T -T show       one address per line ("   192.0.2.5");
//                                    no table: []
//
// pfctl's messages are fixed English strings (pfr_strerror), not the C
// library's, so matching "Table does not exist" is safe.

const PF_NO_TABLE = /Table does not exist/;

function pfAdd(ip: string, cfg: Config, sys: Sys): BackendResult {
  const bad = precheck(ip, cfg, "pf");
  if (bad) return fail(bad);
  const add = call(sys, cfg, "pfctl", ["-t", cfg.FIREWALL_TABLE, "-T", "add", ip]);
  if (!add.ok) return fail(`pf: ${add.error}`);
  const kill = call(sys, cfg, "pfctl", ["-k", ip]);
  if (!kill.ok) return fail(`pf: ${ip} is in table ${cfg.FIREWALL_TABLE}, but its open connections were not cut: ${kill.error}`);
  return OK;
}

function pfRemove(ip: string, cfg: Config, sys: Sys): BackendResult {
  const bad = precheck(ip, cfg, "pf");
  if (bad) return fail(bad);
  const del = call(sys, cfg, "pfctl", ["-t", cfg.FIREWALL_TABLE, "-T", "delete", ip]);
  if (del.ok) return OK;
  if (del.ran && PF_NO_TABLE.test(del.result.stderr)) return OK;
  return fail(`pf: ${del.error}`);
}

/** The members in `pfctl -T show` output: "   192.0.2.5" lines; negated ("!…") and network ("…/24") entries are skipped. */
export function parsePfShow(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const w = line.trim();
    if (parseNet(w)?.text === w) {
      out.push(w); // a range (section 3.1)
      continue;
    }
    const ip = parseIp(w);
    if (ip !== null && ip === w) out.push(ip);
  }
  return tidy(out);
}

function pfList(cfg: Config, sys: Sys): string[] | null {
  if (precheck(null, cfg, "pf")) return null;
  const r = call(sys, cfg, "pfctl", ["-t", cfg.FIREWALL_TABLE, "-T", "show"]);
  if (r.ok) return parsePfShow(r.result.stdout);
  if (r.ran && PF_NO_TABLE.test(r.result.stderr)) return [];
  return null;
}

function pfRules(cfg: Config): string {
  const bad = tableNameError(cfg);
  if (bad) return `# ${bad}\n`;
  const T = cfg.FIREWALL_TABLE;
  return `# sentry fills the pf table <${T}>; put these lines in /etc/pf.conf, the
# block rule before your pass rules, and load it with \`pfctl -f /etc/pf.conf\`.
# A reload empties the table: run \`sentry --resync\` after one.
table <${T}> persist
block in quick from <${T}>
`;
}

export const pfBackend: Backend = {
  name: "pf",
  enabled: (cfg) => cfg.ADD_TO_PF,
  add: pfAdd,
  remove: pfRemove,
  list: pfList,
  rules: pfRules,
};

// ---- 9.2.5 ipfw (FreeBSD 11 and later: named tables) ------------------------------
//
//   add     ipfw -q table T add IP       -q makes a duplicate key not an
//                                        error, and creates a missing table
//                                        (type addr) without the warning
//                                        "DEPRECATED: inserting data into
//                                        non-existent table"; so no separate
//                                        `ipfw table T create` (one process
//                                        per block, and no "already exists"
//                                        error to interpret)
//   remove  ipfw -q table T delete IP    -q makes an absent key not an error;
//                                        no table: "Table T does not exist"
//                                        (exit 65), which means absent too
//   list    ipfw table T list            "192.0.2.5/32 0" lines; no table:
//                                        "No such process" (ESRCH): []
//
// One addr table holds IPv4 and IPv6 alike, so one rule covers both. The
// rule matches every packet, so it must come before check-state or any
// keep-state rule for the attacker's open session to be cut as well.

const IPFW_NO_TABLE_DELETE = /does not exist/;
const IPFW_NO_TABLE_LIST = /No such process/;

function ipfwChange(ip: string, cfg: Config, sys: Sys, verb: "add" | "delete"): BackendResult {
  const bad = precheck(ip, cfg, "ipfw");
  if (bad) return fail(bad);
  const r = call(sys, cfg, "ipfw", ["-q", "table", cfg.FIREWALL_TABLE, verb, ip]);
  if (r.ok) return OK;
  if (verb === "delete" && r.ran && IPFW_NO_TABLE_DELETE.test(r.result.stderr)) return OK;
  return fail(`ipfw: ${r.error}`);
}

/** The members in `ipfw table T list` output: "ADDR/32 VALUE" or "ADDR/128 VALUE"; wider prefixes are skipped. */
export function parseIpfwList(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*([0-9A-Fa-f.:]+)\/(\d+)(\s|$)/.exec(line);
    if (!m) continue;
    const net = parseNet(`${m[1]}/${m[2]}`);
    if (net !== null) {
      out.push(net.text); // a range (section 3.1)
      continue;
    }
    const ip = parseIp(m[1]);
    if (ip === null) continue;
    if (Number(m[2]) !== (ipFamily(ip) === 4 ? 32 : 128)) continue;
    out.push(ip);
  }
  return tidy(out);
}

function ipfwList(cfg: Config, sys: Sys): string[] | null {
  if (precheck(null, cfg, "ipfw")) return null;
  const r = call(sys, cfg, "ipfw", ["table", cfg.FIREWALL_TABLE, "list"]);
  if (r.ok) return parseIpfwList(r.result.stdout);
  if (r.ran && IPFW_NO_TABLE_LIST.test(r.result.stderr)) return [];
  return null;
}

function ipfwRules(cfg: Config): string {
  const bad = tableNameError(cfg);
  if (bad) return `# ${bad}\n`;
  const T = cfg.FIREWALL_TABLE;
  return `# sentry fills the ipfw table ${T} (IPv4 and IPv6); put these lines in your
# firewall script (firewall_script in rc.conf) before any check-state,
# keep-state or allow rule. Rule number 100 is an example.
ipfw -q table ${T} create type addr missing
ipfw -q add 100 deny ip from 'table(${T})' to any
`;
}

export const ipfwBackend: Backend = {
  name: "ipfw",
  enabled: (cfg) => cfg.ADD_TO_IPFW,
  add: (ip, cfg, sys) => ipfwChange(ip, cfg, sys, "add"),
  remove: (ip, cfg, sys) => ipfwChange(ip, cfg, sys, "delete"),
  list: ipfwList,
  rules: ipfwRules,
};

/** Every firewall backend, in the order they are tried. tcpwrappers (hosts.deny) is not one: it is a file, not a tool. */
export const firewallBackends: Backend[] = [nftablesBackend, iptablesBackend, pfBackend, ipfwBackend];

function enabledBackends(ctx: Ctx): Backend[] {
  return firewallBackends.filter((b) => b.enabled(ctx.cfg));
}

/** A firewall that failed: a warning now, a line in sentry.log for --report --verbose. Returns exit code 2. */
function backendFailed(ctx: Ctx, ip: string, name: string, op: string, error: string): number {
  ctx.sys.warn(`${name}: could not ${op} ${ip}: ${error} (the decision is recorded in ${ctx.cfg.ROOT_DIR})`);
  logDecision(ctx, ip, "backend-failed", `${name} ${op}: ${error}`);
  return 2;
}

// ---- 9.3 --resync -------------------------------------------------------------
//
// A firewall reload or a reboot empties the sets sentry filled; block/ still
// says who is blocked. --resync makes every enabled backend hold exactly
// block/ (minus ALLOW_IPS): adds what is missing, removes what is left over.

/** --resync: make hosts.deny and every enabled firewall match block/. */
export function resync(ctx: Ctx): number {
  return withLock(ctx, () => {
    const blocked = listDir(ctx, "block").filter((ip) => !inRanges(ip, ctx.allowRanges));
    // Ranges (section 8.4) too, minus any that holds something allowed (hostsDenyText leaves those out as well).
    const nets = listNets(ctx, "block").filter((n) => !ctx.allowRanges.some((r) => rangesOverlap(r, n)));
    blocked.push(...nets.map((n) => n.text));
    const want = new Set(blocked);
    let code = 0;
    const healed = healHostsDeny(ctx, "resync");
    const lines: string[] = [`hosts.deny: ${ctx.cfg.ADD_TO_TCPWRAPPERS ? `${want.size - nets.length} addresses${nets.length ? `, ${nets.length} ranges` : ""}${healed ? `; ${healed}` : ""}` : "off"}`];
    const healedAllowed = healHostsAllowed(ctx, "resync");
    const allowedNow = readHostsAllowed(ctx);
    lines.push(`hosts.allowed: ${ctx.cfg.ALLOWED_TO_TCPWRAPPERS ? `${(allowedNow ?? "").split("\n").filter((l) => l !== "").length} entries${healedAllowed ? `; ${healedAllowed}` : ""}` : "off"}`);
    for (const b of enabledBackends(ctx)) {
      const have = b.list(ctx.cfg, ctx.sys);
      let added = 0;
      let removed = 0;
      for (const ip of blocked) {
        if (have && have.includes(ip)) continue;
        const r = b.add(ip, ctx.cfg, ctx.sys);
        if (r.ok) added++;
        else code = backendFailed(ctx, ip, b.name, "add", r.error);
      }
      for (const ip of have ?? []) {
        if (want.has(ip)) continue;
        // pf and ipfw keep ranges in the one table, where an admin may have put their own: only sentry's own range sets are pruned.
        if (ip.indexOf("/") !== -1 && (b.name === "pf" || b.name === "ipfw")) continue;
        const r = b.remove(ip, ctx.cfg, ctx.sys);
        if (r.ok) removed++;
        else code = backendFailed(ctx, ip, b.name, "remove", r.error);
      }
      lines.push(`${b.name}: ${added} added, ${removed} removed${have === null ? " (could not list the set: every block re-added)" : ""}`);
    }
    ctx.sys.out(lines.join("\n"));
    return code;
  });
}

// ---- 9.4 Telling the administrator: syslog and notifications ------------------
//
//   logDecision(203.0.113.9, "block", "connect: ssh: …")
//     → syslog   "sentry[4711]: 203.0.113.9 block connect: ssh: …"  (authpriv.notice)
//     → mail     Subject: sentry on web1: 1 blocked
//     → command  SENTRY_EVENT=block SENTRY_IP=203.0.113.9 SENTRY_REASON="connect: ssh: …" …
//
// Central logging and SIEMs look in syslog, and an administrator wants to
// hear of a block or of a brute force that succeeded without reading
// sentry.log. Node cannot write to /dev/log (no unix datagram sockets), so a
// logger(1) child does it. Under tcpd sshd waits for sentry, so nothing here
// is waited for: what a command decided is queued (logDecision) and sent
// once, when it is done (flushOutbox, from main()), by children started
// detached, stdout and stderr on /dev/null, the message on a pipe, each under
// timeout(1) with NOTIFY_TIMEOUT_SECONDS: a stuck mail server or a hanging
// script is killed by its own timer, never holds a login up, and never
// piles up. A connect that decides nothing queues nothing and starts no
// child. A --scan that blocks 500 addresses sends ONE message listing them
// (blacklist.py did the same), a connect its own. What a long --scan queues
// is bounded (the outbox, below): its syslog lines leave every 48 KiB, its
// message shows the first 1,000 decisions and counts the rest.
//
// Commands are argument vectors, never a shell: the reason holds text an
// attacker typed (a user name such as `$(reboot)`), which reaches a
// NOTIFY_COMMAND only as data in an environment variable and on stdin.
// NOTIFY_COMMAND, NOTIFY_EMAIL and SENDMAIL are EXEC_SETTINGS (section 1).

/** One decision queued for syslog and, if it is news, for the notifications. */
export interface Notice {
  at: number; // epoch ms
  ip: string;
  what: string; // the sentry.log action word
  reason: string;
}

/**
 * What one command has to tell, sent when it ends (flushOutbox). Bounded,
 * whatever the command decides: a first --scan of an attacked server can
 * block 250,000 addresses, and holding a Notice for each (twice) took more
 * memory than the read. syslog lines go out whenever SYSLOG_BATCH_BYTES of
 * them are queued, to one more detached logger each: under the 64 KiB a pipe
 * holds, so the write is done at once (a larger one waits in this process
 * for an event loop that a --scan does not run until it ends). The message
 * keeps its first NOTICE_LINES decisions whole and only counts the others
 * (sentry.log has every line).
 */
const outbox: { syslog: Notice[]; syslogBytes: number; notices: Notice[]; more: Map<string, number> } = { syslog: [], syslogBytes: 0, notices: [], more: new Map() };
const SYSLOG_BATCH_BYTES = 48 * 1024;
const NOTICE_LINES = 1000;

/** The event a decision is for an administrator, or null if it is not news (an allow, a delist, an expiry). */
export function noticeEvent(what: string, reason: string): string | null {
  if (what === "block") return "block";
  if (what === "backend-failed") return "backend-failure";
  if (what === "withheld") return "withheld";
  if (what === "review") return "held-for-review";
  if (what === "allow" && ALLOWED_AFTER.test(reason)) return "allowed-after-failures";
  return null;
}

/** The wording of a brute force that succeeded, in allow/IP and sentry.log (see afterFailures). */
const ALLOWED_AFTER = /allowed after \d+ failures/;

function queueNotice(ctx: Ctx, n: Notice): void {
  if (ctx.cfg.SYSLOG) {
    outbox.syslog.push(n);
    outbox.syslogBytes += n.ip.length + n.what.length + n.reason.length + 3;
    if (outbox.syslogBytes >= SYSLOG_BATCH_BYTES) sendSyslog(ctx);
  }
  const event = ctx.cfg.NOTIFY_EMAIL !== "" || ctx.cfg.NOTIFY_COMMAND !== "" ? noticeEvent(n.what, n.reason) : null;
  if (event === null) return;
  if (outbox.notices.length < NOTICE_LINES) outbox.notices.push(n);
  else outbox.more.set(event, (outbox.more.get(event) ?? 0) + 1);
}

/** The addresses NOTIFY_EMAIL names (a local user or user@domain each); throws SentryError(1) for anything else. */
export function parseNotifyEmail(text: string): string[] {
  const list = text.split(/[\s,]+/).filter((w) => w !== "");
  for (const a of list)
    // A word starting with "-" would be an option to sendmail.
    if (!/^[A-Za-z0-9._%+=][A-Za-z0-9._%+=-]*(@[A-Za-z0-9.-]+)?$/.test(a))
      throw new SentryError(`NOTIFY_EMAIL: ${JSON.stringify(a)} is not a mail address (user or user@domain)`, 1);
  return list;
}

/** Subject, body and SENTRY_* variables of one message about `notices` (pure; the reasons are already sanitized). */
export function composeNotice(host: string, notices: Notice[], more: ReadonlyMap<string, number> = new Map()): { subject: string; body: string; env: Record<string, string> } {
  const counts = new Map<string, number>();
  for (const n of notices) {
    const e = noticeEvent(n.what, n.reason) as string;
    counts.set(e, (counts.get(e) ?? 0) + 1);
  }
  let dropped = 0; // decisions counted, not kept (queueNotice)
  for (const [e, k] of more) {
    counts.set(e, (counts.get(e) ?? 0) + k);
    dropped += k;
  }
  const total = notices.length + dropped;
  const words: Record<string, string> = {
    block: "blocked",
    "allowed-after-failures": "ALLOWED AFTER FAILURES (check them)",
    "backend-failure": "firewall failures",
    withheld: "blocks withheld",
    "held-for-review": "held for review",
  };
  const parts = [...counts].map(([e, n]) => `${n} ${words[e]}`);
  const one = total === 1 ? ` ${notices[0].ip}` : "";
  const subject = `sentry on ${host}: ${parts.join(", ")}${one}`;
  const shown = notices.slice(0, NOTICE_LINES);
  const lines = shown.map((n) => `${isoTime(n.at)} ${n.ip} ${n.what} ${n.reason}`);
  if (total > shown.length) lines.push(`… and ${total - shown.length} more (sentry.log has every line)`);
  const body = `${subject}\n\n${lines.join("\n")}\n\nsentry --list shows who is blocked and why; sentry --report --ip=IP one address.\n`;
  return {
    subject,
    body,
    env: {
      SENTRY_EVENT: [...counts.keys()].join(","),
      SENTRY_COUNT: String(total),
      // The addresses of the lines shown: an environment string longer than
      // 128 KiB (about 8,000 addresses) makes exec fail with E2BIG.
      SENTRY_IP: shown.map((n) => n.ip).join(" "),
      SENTRY_REASON: notices[0]?.reason ?? "",
      SENTRY_HOST: host,
      SENTRY_SUBJECT: subject,
    },
  };
}

/** An executable called `name` (a path, or looked up in PATH and the sbin folders), or null. */
function findProgram(ctx: Ctx, name: string): string | null {
  const dirs = name.includes("/") ? [""] : [...(ctx.sys.env.PATH ?? "").split(":"), "/usr/bin", "/bin", "/usr/sbin", "/sbin"];
  for (const d of dirs) {
    const p = d === "" ? name : path.join(d, name);
    if (d !== "" && !path.isAbsolute(d)) continue; // a relative PATH entry is wherever tcpd's cwd is
    try {
      ctx.sys.fs.accessSync(p, fs.constants.X_OK);
      if (ctx.sys.fs.statSync(p).isFile()) return p;
    } catch (e) {
      if (errCode(e) !== "ENOENT" && errCode(e) !== "EACCES" && errCode(e) !== "ENOTDIR") throw e;
    }
  }
  return null;
}

/**
 * Starts `argv` detached under timeout(1), `input` on its stdin, stdout and
 * stderr on /dev/null, and does not wait for it. A message of up to 64 KiB
 * fits the pipe at once (a connect's always does), so this process exits at
 * once; a longer one (a --scan's list) is written as the child reads, and
 * timeout(1) ends a child that stops reading. No file holds the message: a
 * temporary file took space from a full ROOT_DIR. Returns "" or why it could
 * not start.
 */
export function detachCommand(ctx: Ctx, argv: string[], input: string, env: Record<string, string>): string {
  const timeout = findProgram(ctx, "timeout");
  const cmd = findProgram(ctx, argv[0]);
  if (cmd === null) return `${argv[0]} not found`;
  if (timeout === null) return "timeout(1) not found (coreutils): sentry starts no child it cannot time-cap";
  try {
    const child = childProcess().spawn(timeout, ["-s", "KILL", String(ctx.cfg.NOTIFY_TIMEOUT_SECONDS), cmd, ...argv.slice(1)], {
      detached: true, // its own process group: tcpd's and sshd's signals are not its business
      stdio: ["pipe", "ignore", "ignore"],
      env,
      cwd: "/",
    });
    // Found executable above; a late exec failure or a reader that went away has nowhere left to be said.
    child.on("error", () => undefined);
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input);
    child.unref();
    return "";
  } catch (e) {
    return errText(e);
  }
}

/** The environment of the children the outbox starts. */
const outboxEnv = (ctx: Ctx): Record<string, string> => ({ PATH: "/usr/bin:/bin:/usr/sbin:/sbin", ROOT_DIR: ctx.cfg.ROOT_DIR });

/** Sends the queued syslog lines to one detached logger; a failure is kept for flushOutbox to say once. */
function sendSyslog(ctx: Ctx): void {
  const lines = outbox.syslog.splice(0);
  outbox.syslogBytes = 0;
  if (lines.length === 0) return;
  // One line per message; logger reads them from stdin. --id gives our pid, as a daemon's lines carry theirs.
  const text = lines.map((n) => `${n.ip} ${n.what} ${n.reason}`).join("\n") + "\n";
  const why = detachCommand(ctx, ["logger", "-t", "sentry", `--id=${process.pid}`, "-p", "authpriv.notice"], text, outboxEnv(ctx));
  // Said once per command (flushOutbox): the lines are lost to syslog, never to sentry.log.
  if (why !== "") syslogFailed ??= `syslog: ${why}`;
}
let syslogFailed: string | null = null;

/**
 * Sends what this command queued: the syslog lines still queued to one more
 * logger(1), one message by NOTIFY_EMAIL and one by NOTIFY_COMMAND for the
 * notices. A notifier that cannot be started is said on stderr and in
 * sentry.log.
 */
export function flushOutbox(ctx: Ctx): void {
  sendSyslog(ctx);
  const notices = outbox.notices.splice(0);
  const failed: string[] = [];
  if (syslogFailed !== null) failed.push(syslogFailed);
  syslogFailed = null;
  const env = outboxEnv(ctx);
  if (notices.length) {
    const host = (process.getBuiltinModule("node:os") as typeof import("node:os")).hostname();
    const m = composeNotice(host, notices, outbox.more);
    if (ctx.cfg.NOTIFY_EMAIL !== "") {
      const to = parseNotifyEmail(ctx.cfg.NOTIFY_EMAIL);
      const mail =
        `To: ${to.join(", ")}\nSubject: ${m.subject}\nAuto-Submitted: auto-generated\n` +
        `MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n${m.body}`;
      const why = detachCommand(ctx, [ctx.cfg.SENDMAIL, "-oi", "--", ...to], mail, env);
      if (why) failed.push(`NOTIFY_EMAIL: ${why}`);
    }
    if (ctx.cfg.NOTIFY_COMMAND !== "") {
      const argv = ctx.cfg.NOTIFY_COMMAND.split(/\s+/).filter((w) => w !== "");
      const why = detachCommand(ctx, argv, m.body, { ...env, ...m.env });
      if (why) failed.push(`NOTIFY_COMMAND: ${why}`);
    }
  }
  for (const f of failed) {
    ctx.sys.warn(`cannot notify: ${f}`);
    logDecision(ctx, "-", "notify-failed", f);
  }
  // What those two lines queued is not sent again: one failure, one line.
  outbox.syslog.length = 0;
  outbox.syslogBytes = 0;
  outbox.notices.length = 0;
  outbox.more.clear();
  syslogFailed = null;
}

// ---- 9.5 Fleet: CrowdSec's Local API ----------------------------------------------
//
//   server A: --connect blocks 203.0.113.9 → fleet.outbox gets one line
//   server A: --sync   → POST /v1/alerts  [{scenario: "sentry/ssh-naughty",
//                         decisions: [{origin: "sentry", scope: "Ip",
//                         value: "203.0.113.9", duration: "2159h59m58s", …}]}]
//   server B: --sync   → GET /v1/decisions/stream?origins=sentry,cscli →
//                         {"new": [{"value": "203.0.113.9", "duration":
//                         "2159h59m57.9s", "origin": "sentry", …}], "deleted": null}
//              → block/203.0.113.9 "… block by fleet (sentry/sentry/ssh-naughty): …
//                                   until 2027-02-27T13:00:00Z (90 days; fleet decision)"
//
// Administrators with many servers want an attacker blocked on one refused by
// all, through an engine they already run: CrowdSec's Local API (LAPI), which
// Debian packages and whose bouncers (nftables, nginx, …) then enforce
// sentry's blocks too. A server is a CrowdSec *machine* (it pushes alerts
// that carry decisions) and a *bouncer* (it pulls the decision stream with
// its own key: the stream's "since last pull" position is kept per key on the
// LAPI, so two servers sharing one key steal each other's changes).
//
// Rules, and the attack or failure each stops:
//   - No network on the connect path: setBlocked appends one O_APPEND line to
//     fleet.outbox (under the state lock, so --sync's rename never cuts one);
//     a LAPI that is down or slow never holds sshd up.
//   - --sync renames the outbox to fleet.sending under the state lock and
//     pushes it outside the lock (connects never wait for the network); what
//     is pushed leaves fleet.sending at once, what failed stays for the next
//     run: nothing lost, nothing sent twice (short of a crash between the
//     LAPI's answer and the rewrite). fleet.lock keeps two --syncs apart.
//   - The fleet never blocks what this server allows: allow/, ALLOW_IPS and
//     loopback win, and the conflict is written to sentry.log and
//     fleet.conflicts (--report shows it). A local block is never lifted or
//     rewritten by the fleet; a deletion lifts only a block "by fleet".
//   - A fleet block is never pushed back (no echo): it is written here, not
//     through setBlocked.
//   - The stream is input from the network: a value that is not an address
//     is refused (the address becomes a file name), ranges wider than one
//     address are not applied (block/ holds addresses), durations are capped
//     at CROWDSEC_MAX_DAYS, and this server holds at most CROWDSEC_MAX_BLOCKS
//     fleet blocks.
//   - Expiry is local, from the duration the stream gave (the LAPI's flush
//     deletes old decisions without telling any bouncer): the block file gets
//     the usual "until" line and section 8.5 lifts it.
//   - 1.4.6 (Debian 12) and 1.6+: durations only in h/m/s (1.4.6 refuses "d"),
//     scope spelled exactly "Ip", stop_at now (a decision ends at stop_at +
//     duration), a User-Agent "sentry/VERSION" (anything without exactly one
//     "/" gets 401), the allowlist check only where it exists (404 before 1.6.6).

const FLEET_OUTBOX = "fleet.outbox";
const FLEET_SENDING = "fleet.sending";
const FLEET_TOKEN = "fleet.jwt";
const FLEET_STAMP = "fleet.stamp"; // mtime: the last sync that fully succeeded
const FLEET_PULLED = "fleet.pulled"; // present once a startup pull was applied; without it the next pull starts over
const FLEET_CONFLICTS = "fleet.conflicts";
const FLEET_BATCH = 50; // alerts per POST: one per POST gives ~330/s on SQLite, 50 ~720/s
const FLEET_BODY_MAX = 64 * 1024 * 1024; // a stream larger than this is refused (100,000 decisions are ~15 MB)
const FLEET_TRIES = 5; // a 5xx ("database is locked" under parallel writers) is retried this often, with backoff

/** Whether this server is part of a fleet. */
export function fleetConfigured(cfg: Config): boolean {
  return cfg.CROWDSEC_URL !== "";
}

/** One line of fleet.outbox: a block to push, or a forgiveness to propagate. */
export interface OutboxRecord {
  op: "ban" | "delete";
  ip: string;
  at: number; // epoch ms of the decision
  end?: number | null; // ban: epoch ms it ends; null = never
  scenario?: string;
  message?: string;
}

/**
 * The scenario name a block is pushed under: which rule fired.
 *   ("admin", "--block") → "sentry/admin"
 *   ("connect", "ssh: 0 success, 3 naughty, …") → "sentry/ssh-naughty"
 *   ("scan", "12 failed attempts (more than 10); ftp: …") → "sentry/ftp-failures"
 */
export function fleetScenario(by: string, reason: string): string {
  if (by === "admin") return "sentry/admin";
  const failures = /^\d+ failed attempts \(more than \d+\); (\w+):/.exec(reason);
  if (failures) return `sentry/${failures[1]}-failures`;
  const naughty = /^(\w+): \d+ success, (\d+) naughty/.exec(reason);
  if (naughty) return `sentry/${naughty[1]}-${Number(naughty[2]) > 0 ? "naughty" : "failures"}`;
  return `sentry/${by.replace(/[^a-z0-9-]/gi, "") || "block"}`;
}

/** Appends one record to fleet.outbox (one write on O_APPEND: parallel connects never interleave). */
function appendOutbox(ctx: Ctx, rec: OutboxRecord): void {
  const file = path.join(ctx.cfg.ROOT_DIR, FLEET_OUTBOX);
  try {
    withRoot(ctx, () => writeNoFollow(ctx.sys.fs, file, `${JSON.stringify(rec)}\n`, O_APPEND_NOFOLLOW | fs.constants.O_WRONLY));
  } catch (e) {
    // The block itself stands; only the fleet misses it. Say it where the admin looks.
    ctx.sys.warn(`${ioError("append to", file, e).message}: the fleet will not hear of ${rec.op} ${rec.ip}`);
    logDecision(ctx, rec.ip, "fleet-failed", `cannot queue ${rec.op} for the fleet: ${errText(e)}`);
  }
}

/** setBlocked's hook: queue a local block for --sync. A block learned from the fleet is never queued (no echo). */
export function fleetOutbox(ctx: Ctx, ip: string, by: string, reason: string, at: number, end: number | null): void {
  if (!fleetConfigured(ctx.cfg) || !ctx.cfg.CROWDSEC_PUSH || by === "fleet") return;
  appendOutbox(ctx, { op: "ban", ip, at, end, scenario: fleetScenario(by, reason), message: sanitize(`${by}: ${reason}`, 400) });
}

/** setDelisted's hook: an admin's --delist of a block this server pushed deletes it on the LAPI (next --sync). */
export function fleetForgive(ctx: Ctx, ip: string, by: string): void {
  if (by !== "admin" || !fleetConfigured(ctx.cfg) || !ctx.cfg.CROWDSEC_PUSH) return;
  const text = readBlockFile(ctx, ip);
  if (text === null || isFleetBlock(text)) return; // not blocked, or learned from the fleet (not ours to delete)
  appendOutbox(ctx, { op: "delete", ip, at: ctx.sys.now() });
}

/** Whether a block file's text is a block learned from the fleet. */
export function isFleetBlock(text: string): boolean {
  return /^\S+ block by fleet[ :]/.test(text);
}

/**
 * A Go duration ("3h59m58.885s", "-2.5s", "1h") in ms, or null if it is
 * not one. The LAPI writes the time a decision has left this way.
 */
export function parseGoDuration(text: string): number | null {
  const m = /^([+-]?)((?:\d+(?:\.\d+)?(?:h|m|s|ms|us|µs|ns))+)$/.exec(text);
  if (!m) return null;
  const unit: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 1e-3, µs: 1e-3, ns: 1e-6 };
  let ms = 0;
  for (const part of m[2].matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)/g)) ms += Number(part[1]) * unit[part[2]];
  if (!Number.isFinite(ms)) return null;
  return m[1] === "-" ? -ms : ms;
}

/** ms as a Go duration in whole seconds, hours at most ("2159h59m58s"): 1.4.6 refuses days. */
export function goDuration(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m${s % 60}s`;
}

/** The fleet's settings, resolved and checked. Secrets stay inside. */
interface FleetConf {
  url: URL;
  login: string;
  password: string;
  apiKey: string;
  cert: string; // PEM text, or ""
  key: string;
  ca: string;
  origins: string[];
}

/**
 * Reads a file that holds secrets: refused if group or others may read or
 * write it (anyone who can read it can speak for this server), or if it is
 * not a regular file.
 */
function readSecretFile(ctx: Ctx, setting: string, file: string): string {
  let fd: number;
  try {
    fd = ctx.sys.fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new SentryError(`${setting}: cannot read ${file}: ${errText(e)}`, 2);
  }
  try {
    const st = ctx.sys.fs.fstatSync(fd);
    if (!st.isFile()) throw new SentryError(`${setting}: ${file} is not a regular file`, 2);
    if (st.mode & 0o066)
      throw new SentryError(`${setting}: ${file} holds secrets and is readable or writable by group or others (mode ${(st.mode & 0o777).toString(8)}): run chmod 600 ${file}`, 2);
    return ctx.sys.fs.readFileSync(fd, "utf8");
  } finally {
    ctx.sys.fs.closeSync(fd);
  }
}

/**
 * The `key: value` lines of CrowdSec's local_api_credentials.yaml
 * (url, login, password, ca_cert_path, cert_path, key_path): flat YAML,
 * values optionally quoted.
 *   login: web-01
 *   password: "s3cr3t"
 */
export function parseCredentials(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+):\s*(.*?)\s*$/.exec(line);
    if (!m || m[2].startsWith("#")) continue;
    out[m[1]] = m[2].replace(/^"(.*)"$|^'(.*)'$/, "$1$2");
  }
  return out;
}

/** Resolves the fleet settings; SentryError(1) naming what is missing, (2) for an unreadable or unsafe file. */
export function fleetConf(ctx: Ctx): FleetConf {
  const cfg = ctx.cfg;
  let url: URL;
  try {
    url = new URL(cfg.CROWDSEC_URL);
  } catch (e) {
    if (errCode(e) !== "ERR_INVALID_URL") throw e; // the one error new URL() throws
    throw new SentryError(`CROWDSEC_URL=${JSON.stringify(cfg.CROWDSEC_URL)} is not a URL (expected http://HOST:PORT/ or https://…)`, 1);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new SentryError(`CROWDSEC_URL must be http:// or https://, not ${url.protocol}`, 1);
  const fc: FleetConf = { url, login: cfg.CROWDSEC_LOGIN, password: cfg.CROWDSEC_PASSWORD, apiKey: cfg.CROWDSEC_API_KEY, cert: "", key: "", ca: "", origins: [] };
  let certPath = cfg.CROWDSEC_CERT;
  let keyPath = cfg.CROWDSEC_KEY;
  let caPath = cfg.CROWDSEC_CA;
  if (cfg.CROWDSEC_CREDENTIALS !== "") {
    const c = parseCredentials(readSecretFile(ctx, "CROWDSEC_CREDENTIALS", cfg.CROWDSEC_CREDENTIALS));
    fc.login = c.login ?? fc.login;
    fc.password = c.password ?? fc.password;
    certPath = c.cert_path || certPath;
    keyPath = c.key_path || keyPath;
    caPath = c.ca_cert_path || caPath;
  }
  if (certPath !== "" || keyPath !== "") {
    if (certPath === "" || keyPath === "") throw new SentryError("CROWDSEC_CERT and CROWDSEC_KEY go together: a client certificate needs its key", 1);
    fc.cert = readStateText(ctx, "CROWDSEC_CERT", certPath);
    fc.key = readSecretFile(ctx, "CROWDSEC_KEY", keyPath);
  }
  if (caPath !== "") fc.ca = readStateText(ctx, "CROWDSEC_CA", caPath);
  // A secret written in sentry.conf (0640 or 0644 is common for it) is as exposed as a credentials file would be.
  const conf = path.join(cfg.ROOT_DIR, "sentry.conf");
  const confSt = ctx.sys.fs.lstatSync(conf, { throwIfNoEntry: false });
  if (confSt && confSt.isFile() && confSt.mode & 0o044 && /^\s*CROWDSEC_(PASSWORD|API_KEY)\s*=/m.test(readStateFile(ctx, conf)))
    throw new SentryError(`${conf} holds CROWDSEC_PASSWORD or CROWDSEC_API_KEY and is readable by group or others (mode ${(confSt.mode & 0o777).toString(8)}): run chmod 600 ${conf}, or move them to a CROWDSEC_CREDENTIALS file`, 2);
  if (cfg.CROWDSEC_PUSH && fc.cert === "" && (fc.login === "" || fc.password === ""))
    throw new SentryError("CROWDSEC_PUSH=1 needs this server's machine: CROWDSEC_CREDENTIALS, or CROWDSEC_LOGIN and CROWDSEC_PASSWORD, or CROWDSEC_CERT and CROWDSEC_KEY (or set CROWDSEC_PUSH=0)", 1);
  if (cfg.CROWDSEC_PULL && fc.cert === "" && fc.apiKey === "")
    throw new SentryError("CROWDSEC_PULL=1 needs this server's own bouncer key CROWDSEC_API_KEY (cscli bouncers add NAME), or CROWDSEC_CERT and CROWDSEC_KEY (or set CROWDSEC_PULL=0)", 1);
  fc.origins = cfg.CROWDSEC_ORIGINS.split(/[\s,]+/).filter((o) => o !== "");
  for (const o of fc.origins) if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(o)) throw new SentryError(`CROWDSEC_ORIGINS: ${JSON.stringify(o)} is not an origin name`, 1);
  return fc;
}

function readStateText(ctx: Ctx, setting: string, file: string): string {
  try {
    return ctx.sys.fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new SentryError(`${setting}: cannot read ${file}: ${errText(e)}`, 2);
  }
}

interface LapiReply {
  status: number;
  body: string;
}

/**
 * One HTTP request to the LAPI, through node:http/https (fetch cannot send a
 * client certificate without a dependency). Never throws for an HTTP status;
 * a network failure or timeout is a SentryError(2) naming the LAPI.
 */
async function lapiRequest(ctx: Ctx, fc: FleetConf, method: string, where: string, headers: Record<string, string>, body?: string): Promise<LapiReply> {
  const url = new URL(where.replace(/^\//, ""), fc.url.href.endsWith("/") ? fc.url.href : `${fc.url.href}/`);
  const mod = (url.protocol === "https:" ? process.getBuiltinModule("node:https") : process.getBuiltinModule("node:http")) as typeof import("node:https");
  const timeoutMs = ctx.cfg.CROWDSEC_TIMEOUT_SECONDS * 1000;
  const opts: import("node:https").RequestOptions = {
    method,
    headers: { "User-Agent": `sentry/${VERSION}`, ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...headers },
    timeout: timeoutMs,
  };
  if (fc.cert) Object.assign(opts, { cert: fc.cert, key: fc.key });
  if (fc.ca) opts.ca = fc.ca;
  return await new Promise<LapiReply>((resolve, reject) => {
    const fail = (why: string) => reject(new SentryError(`cannot reach the CrowdSec LAPI at ${fc.url.origin} (${method} ${url.pathname}): ${why}`, 2));
    const req = mod.request(url, opts, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > FLEET_BODY_MAX) {
          req.destroy();
          fail(`its answer is larger than ${FLEET_BODY_MAX / 1048576} MB: refused`);
          return;
        }
        chunks.push(c);
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", (e) => fail(errText(e)));
    });
    req.on("timeout", () => {
      req.destroy();
      fail(`no answer within ${ctx.cfg.CROWDSEC_TIMEOUT_SECONDS} s (CROWDSEC_TIMEOUT_SECONDS)`);
    });
    req.on("error", (e) => fail(errCode(e) || errText(e)));
    req.end(body);
  });
}

/** A short, safe excerpt of a LAPI answer for a message. */
function replyText(r: LapiReply): string {
  return `HTTP ${r.status}${r.body ? `: ${sanitize(r.body.trim(), 200)}` : ""}`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The machine's token: cached in fleet.jwt (0600) until near its expiry; `fresh` logs in again. */
async function machineToken(ctx: Ctx, fc: FleetConf, fresh: boolean): Promise<string> {
  const file = path.join(ctx.cfg.ROOT_DIR, FLEET_TOKEN);
  const who = `${fc.url.origin} ${fc.cert ? "certificate" : fc.login}`;
  if (!fresh) {
    try {
      const c = JSON.parse(readStateFile(ctx, file)) as { token?: unknown; expire?: unknown; who?: unknown };
      // A token is bcrypt's 140 ms saved per run; renewed five minutes before it ends.
      if (typeof c.token === "string" && c.who === who && typeof c.expire === "string" && Date.parse(c.expire) - 300_000 > ctx.sys.now()) return c.token;
    } catch (e) {
      if (errCode(e) !== "ENOENT" && !(e instanceof SyntaxError)) throw ioError("read", file, e);
    }
  }
  const body = fc.cert ? "{}" : JSON.stringify({ machine_id: fc.login, password: fc.password });
  const r = await lapiRequest(ctx, fc, "POST", "/v1/watchers/login", {}, body);
  let token: unknown;
  let expire: unknown;
  try {
    ({ token, expire } = JSON.parse(r.body) as { token?: unknown; expire?: unknown });
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    token = undefined; // a reply that is not JSON is refused below, with its status and body
  }
  if (r.status !== 200 || typeof token !== "string")
    throw new SentryError(`the CrowdSec LAPI at ${fc.url.origin} refused the login of machine ${fc.cert ? "(client certificate)" : JSON.stringify(fc.login)}: ${replyText(r)} (check CROWDSEC_LOGIN/CROWDSEC_PASSWORD or CROWDSEC_CREDENTIALS; cscli machines list)`, 2);
  writeAtomic(ctx, file, `${JSON.stringify({ token, expire: typeof expire === "string" ? expire : isoTime(ctx.sys.now() + 3_000_000), who })}\n`, 0o600);
  return token;
}

/** A machine request: the token, renewed once on 401; 5xx retried with backoff. */
async function machineRequest(ctx: Ctx, fc: FleetConf, method: string, where: string, body?: string): Promise<LapiReply> {
  let token = await machineToken(ctx, fc, false);
  let renewed = false;
  for (let attempt = 0; ; attempt++) {
    const r = await lapiRequest(ctx, fc, method, where, { Authorization: `Bearer ${token}` }, body);
    if (r.status === 401 && !renewed) {
      renewed = true;
      token = await machineToken(ctx, fc, true);
      continue;
    }
    // SQLite's "database is locked" under parallel writers is a 500 that passes.
    if (r.status >= 500 && attempt + 1 < FLEET_TRIES) {
      await sleep(Math.min(200 * 2 ** attempt, 2000) * (0.5 + Math.random()));
      continue;
    }
    return r;
  }
}

/** Runs fn holding fleet.lock (one --sync at a time), a SQLite lock like sentry.lock, held across the network calls. */
async function withSyncLock<T>(ctx: Ctx, fn: () => Promise<T>): Promise<T> {
  const file = path.join(ctx.cfg.ROOT_DIR, "fleet.lock");
  const { DatabaseSync } = sqlite();
  let db: InstanceType<SqliteModule["DatabaseSync"]>;
  try {
    db = withRoot(ctx, () => {
      if (!ctx.sys.fs.existsSync(ctx.cfg.ROOT_DIR)) ensureRoot(ctx);
      prepareDbFile(ctx, file, false);
      return new DatabaseSync(file, { timeout: ctx.cfg.LOCK_TIMEOUT_SECONDS * 1000 });
    });
    try {
      db.exec("BEGIN IMMEDIATE");
    } catch (e) {
      db.close();
      throw e;
    }
  } catch (e) {
    throw new SentryError(`cannot lock ${file} (another --sync still running?): ${errText(e)}`, 2);
  }
  let failed = false;
  try {
    return await fn();
  } catch (e) {
    failed = true;
    throw rollbackAfter(db, e); // fn's error wins over the ROLLBACK's
  } finally {
    try {
      if (!failed) db.exec("ROLLBACK"); // releases fleet.lock: nothing was written through it
    } finally {
      db.close();
    }
  }
}

/** Parses the lines of an outbox file; a torn or foreign line is reported and dropped. */
export function parseOutbox(text: string, warn: (why: string) => void): OutboxRecord[] {
  const out: OutboxRecord[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    try {
      const r = JSON.parse(line) as OutboxRecord;
      if ((r.op === "ban" || r.op === "delete") && typeof r.ip === "string" && parseIp(r.ip) === r.ip && typeof r.at === "number") {
        out.push(r);
        continue;
      }
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e; // a torn line is not JSON: reported below
    }
    warn(`fleet outbox: dropped a line that is not a record: ${JSON.stringify(sanitize(line, 120))}`);
  }
  return out;
}

/** Moves fleet.outbox to fleet.sending under the state lock (no append is halfway then), unless a previous run left one. */
function takeOutbox(ctx: Ctx): OutboxRecord[] {
  const root = ctx.cfg.ROOT_DIR;
  const sending = path.join(root, FLEET_SENDING);
  withLock(ctx, () => {
    if (ctx.sys.fs.lstatSync(sending, { throwIfNoEntry: false })) return; // left by a failed run: push it first
    try {
      ctx.sys.fs.renameSync(path.join(root, FLEET_OUTBOX), sending);
    } catch (e) {
      if (errCode(e) !== "ENOENT") throw ioError("rename", path.join(root, FLEET_OUTBOX), e);
    }
  });
  let text: string;
  try {
    text = readStateFile(ctx, sending);
  } catch (e) {
    if (errCode(e) === "ENOENT") return [];
    throw ioError("read", sending, e);
  }
  return parseOutbox(text, (w) => ctx.sys.warn(w));
}

/** Rewrites fleet.sending with what is still to push (or removes it). */
function keepUnsent(ctx: Ctx, rest: OutboxRecord[]): void {
  const sending = path.join(ctx.cfg.ROOT_DIR, FLEET_SENDING);
  if (rest.length === 0) removeFile(ctx, sending);
  else writeAtomic(ctx, sending, rest.map((r) => `${JSON.stringify(r)}\n`).join(""));
}

/** One alert (1.4.6's required fields) carrying one ban decision. */
export function alertFor(rec: OutboxRecord, now: number, maxMs: number): Record<string, unknown> {
  const left = rec.end === null || rec.end === undefined ? maxMs : Math.min(rec.end - now, maxMs);
  const scenario = rec.scenario ?? "sentry/block";
  return {
    scenario,
    scenario_hash: "",
    scenario_version: "",
    message: rec.message ?? "",
    events_count: 1,
    start_at: new Date(rec.at).toISOString(),
    stop_at: new Date(now).toISOString(), // a decision ends at stop_at + duration: an old stop_at is born expired
    capacity: 0,
    leakspeed: "0",
    simulated: false,
    events: [],
    source: { scope: "Ip", value: rec.ip, ip: rec.ip },
    decisions: [{ duration: goDuration(left), origin: "sentry", scenario, scope: "Ip", type: "ban", value: rec.ip }],
  };
}

interface PushResult {
  pushed: number;
  deleted: number;
  skipped: number; // expired, or allowlisted by the LAPI
}

/** Pushes the outbox; what could not be pushed stays in fleet.sending. */
async function fleetPush(ctx: Ctx, fc: FleetConf): Promise<PushResult> {
  const res: PushResult = { pushed: 0, deleted: 0, skipped: 0 };
  let todo = takeOutbox(ctx);
  if (todo.length === 0) return res;
  let allowlistApi = true; // 1.6.6+; 404 before: then nothing is checked
  const maxMs = ctx.cfg.CROWDSEC_MAX_DAYS * 86_400_000;
  try {
    while (todo.length > 0) {
      const now = ctx.sys.now();
      if (todo[0].op === "delete") {
        const r = await machineRequest(ctx, fc, "DELETE", `/v1/decisions?ip=${encodeURIComponent(todo[0].ip)}`);
        if (r.status !== 200) throw new SentryError(`the CrowdSec LAPI did not delete the decisions on ${todo[0].ip}: ${replyText(r)}`, 2);
        logDecision(ctx, todo[0].ip, "fleet-delete", "--delist propagated: its decisions deleted on the LAPI");
        res.deleted++;
        todo = todo.slice(1);
        keepUnsent(ctx, todo);
        continue;
      }
      let n = 0;
      while (n < todo.length && n < FLEET_BATCH && todo[n].op === "ban") n++;
      const batch = todo.slice(0, n);
      const alerts: Record<string, unknown>[] = [];
      for (const rec of batch) {
        if (rec.end !== null && rec.end !== undefined && rec.end - now < 1000) {
          res.skipped++;
          continue;
        }
        if (allowlistApi) {
          // An alert that carries its own decisions skips the LAPI's allowlists: ask first.
          const r = await machineRequest(ctx, fc, "GET", `/v1/allowlists/check/${encodeURIComponent(rec.ip)}`);
          if (r.status === 404) allowlistApi = false;
          else if (r.status === 200 && /"allowlisted"\s*:\s*true/.test(r.body)) {
            logDecision(ctx, rec.ip, "fleet-allowlisted", "not pushed: the LAPI's allowlist holds it");
            res.skipped++;
            continue;
          }
        }
        alerts.push(alertFor(rec, now, maxMs));
      }
      if (alerts.length > 0) {
        const r = await machineRequest(ctx, fc, "POST", "/v1/alerts", JSON.stringify(alerts));
        if (r.status !== 200 && r.status !== 201) throw new SentryError(`the CrowdSec LAPI refused ${alerts.length} alerts: ${replyText(r)}`, 2);
        res.pushed += alerts.length;
      }
      todo = todo.slice(n);
      keepUnsent(ctx, todo);
    }
  } finally {
    // Keep a record of what is left even if a request threw between two rewrites.
    if (todo.length > 0) keepUnsent(ctx, todo);
  }
  return res;
}

/** One entry of the decision stream, as the LAPI sends it (checked field by field: it is network input). */
interface StreamDecision {
  value: string;
  scope: string;
  type: string;
  origin: string;
  scenario: string;
  duration: string;
  id: number;
}

function asDecisions(v: unknown): StreamDecision[] {
  if (!Array.isArray(v)) return [];
  return v.filter((d): d is StreamDecision => typeof d === "object" && d !== null && typeof d.value === "string" && typeof d.scope === "string");
}

export interface PullResult {
  added: number;
  renewed: number;
  lifted: number;
  refused: string[]; // why entries were not applied (one line per kind, with a count)
  conflicts: number; // bans of addresses this server allows
}

/**
 * Applies one answer of the decision stream to block/, hosts.deny and the
 * firewalls. Pure of the network: tests feed it hostile streams directly.
 * Call without the lock: it takes it.
 */
export function applyStream(ctx: Ctx, stream: { new?: unknown; deleted?: unknown }): PullResult {
  const res: PullResult = { added: 0, renewed: 0, lifted: 0, refused: [], conflicts: 0 };
  const refused = new Map<string, number>();
  const refuse = (why: string) => refused.set(why, (refused.get(why) ?? 0) + 1);
  const addressOf = (d: StreamDecision): string | null => {
    const scope = d.scope.toLowerCase();
    if (scope === "ip") {
      const ip = parseIp(d.value);
      if (ip === null) refuse("a value that is not an address");
      return ip;
    }
    if (scope === "range") {
      const c = parseCidr(d.value);
      if (c === null) {
        refuse("a range that is not one");
        return null;
      }
      if (c.bits !== (c.family === 4 ? 32 : 128)) {
        refuse("a range wider than one address (block/ holds addresses)");
        return null;
      }
      return parseIp(d.value.split("/")[0]);
    }
    refuse(`scope ${sanitize(d.scope, 20)} (sentry applies Ip and Range)`);
    return null;
  };
  withLock(ctx, () => {
    const now = ctx.sys.now();
    const changedAdd: string[] = [];
    const changedLift: string[] = [];
    // Deletions first: a stream may delete one decision and add another for the same address.
    for (const d of asDecisions(stream.deleted)) {
      const ip = addressOf(d);
      if (ip === null) continue;
      const text = readBlockFile(ctx, ip);
      if (text === null || !isFleetBlock(text)) continue; // never a local block; twice is harmless
      removeFile(ctx, statePath(ctx, "block", ip));
      logDecision(ctx, ip, "delist", `fleet: decision deleted on the LAPI (${sanitize(d.origin ?? "", 40)}/${sanitize(d.scenario ?? "", 80)})`);
      changedLift.push(ip);
      res.lifted++;
    }
    let held = listDir(ctx, "block").filter((ip) => isFleetBlock(readBlockFile(ctx, ip) ?? "")).length;
    const maxMs = ctx.cfg.CROWDSEC_MAX_DAYS * 86_400_000;
    for (const d of asDecisions(stream.new)) {
      if (d.type !== "ban") {
        refuse(`type ${sanitize(String(d.type), 20)} (sentry applies ban)`);
        continue;
      }
      const ip = addressOf(d);
      if (ip === null) continue;
      const left = parseGoDuration(String(d.duration));
      if (left === null) {
        refuse("a duration that is not one");
        continue;
      }
      if (left <= 0) continue; // ended already
      const origin = sanitize(String(d.origin ?? ""), 40).replace(/[()\s]/g, "_");
      const scenario = sanitize(String(d.scenario ?? ""), 80).replace(/[()\s]/g, "_");
      if (ipStatus(ctx, ip) === "allowed") {
        // The fleet never locks out what this server allows (allow/, ALLOW_IPS, loopback).
        res.conflicts++;
        logDecision(ctx, ip, "fleet-refused", `${origin}/${scenario}: the fleet blocks it, this server allows it`);
        try {
          withRoot(ctx, () => writeNoFollow(ctx.sys.fs, path.join(ctx.cfg.ROOT_DIR, FLEET_CONFLICTS), `${isoTime(now)} ${ip} ${origin}/${scenario}\n`, O_APPEND_NOFOLLOW | fs.constants.O_WRONLY));
        } catch (e) {
          ctx.sys.warn(ioError("append to", path.join(ctx.cfg.ROOT_DIR, FLEET_CONFLICTS), e).message);
        }
        continue;
      }
      const old = readBlockFile(ctx, ip);
      if (old !== null && !isFleetBlock(old)) continue; // a local block stands as decided here
      if (old === null && held >= ctx.cfg.CROWDSEC_MAX_BLOCKS) {
        refuse(`more than CROWDSEC_MAX_BLOCKS=${ctx.cfg.CROWDSEC_MAX_BLOCKS} fleet blocks`);
        continue;
      }
      const ms = Math.min(left, maxMs);
      const until = `until ${isoTime(now + ms)} (${lengthText(ms)}; fleet decision${left > maxMs ? `, cut to CROWDSEC_MAX_DAYS=${ctx.cfg.CROWDSEC_MAX_DAYS}` : ""})`;
      const id = Number.isSafeInteger(d.id) ? ` ${d.id}` : "";
      writeAtomic(ctx, statePath(ctx, "block", ip), `${isoTime(now)} block by fleet (${origin}/${scenario}): decision${id} from ${ctx.cfg.CROWDSEC_URL.replace(/\/\/[^@/]*@/, "//")}\n${until}\n`);
      removeFile(ctx, statePath(ctx, "allow", ip));
      expiryDueBy(ctx, now + ms);
      if (old === null) {
        held++;
        res.added++;
        logDecision(ctx, ip, "block", `fleet (${origin}/${scenario}); ${until}`);
        changedAdd.push(ip);
      } else res.renewed++;
    }
    if ((changedAdd.length || changedLift.length) && ctx.cfg.ADD_TO_TCPWRAPPERS) writeHostsDeny(ctx);
    for (const b of enabledBackends(ctx)) {
      for (const ip of changedAdd) {
        const r = b.add(ip, ctx.cfg, ctx.sys);
        if (!r.ok) backendFailed(ctx, ip, b.name, "add", r.error);
      }
      for (const ip of changedLift) {
        const r = b.remove(ip, ctx.cfg, ctx.sys);
        if (!r.ok) backendFailed(ctx, ip, b.name, "remove", r.error);
      }
    }
  });
  for (const [why, n] of refused) res.refused.push(`${n} × ${why}`);
  return res;
}

/**
 * Pulls the decision stream with this server's bouncer key: startup=true the
 * first time, when fleet.pulled is gone (local state lost), and every
 * CROWDSEC_FULL_PULL_MINUTES. The last, because an incremental pull returns
 * decisions created since the key's previous pull, and a decision whose row
 * was dated before that pull but committed after it (a busy SQLite LAPI) is
 * never returned to that key (the likely cause: in the fleet bench, under
 * load, 13 of 1,000 addresses missed some servers; one full pull brought 10).
 */
async function fleetPull(ctx: Ctx, fc: FleetConf): Promise<PullResult> {
  const marker = path.join(ctx.cfg.ROOT_DIR, FLEET_PULLED);
  const last = ctx.sys.fs.lstatSync(marker, { throwIfNoEntry: false });
  const every = ctx.cfg.CROWDSEC_FULL_PULL_MINUTES * 60_000;
  const startup = !last || (every > 0 && ctx.sys.now() - last.mtimeMs >= every);
  const q = new URLSearchParams({ scopes: "ip,range" });
  if (fc.origins.length) q.set("origins", fc.origins.join(","));
  if (startup) q.set("startup", "true");
  const r = await lapiRequest(ctx, fc, "GET", `/v1/decisions/stream?${q}`, fc.cert ? {} : { "X-Api-Key": fc.apiKey });
  if (r.status !== 200)
    throw new SentryError(`the CrowdSec LAPI at ${fc.url.origin} refused this server's bouncer pull: ${replyText(r)}${r.status === 403 ? " (check CROWDSEC_API_KEY; cscli bouncers list)" : ""}`, 2);
  let stream: unknown;
  try {
    stream = JSON.parse(r.body);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e; // JSON.parse throws nothing else
    throw new SentryError(`the CrowdSec LAPI at ${fc.url.origin} sent a decision stream that is not JSON: ${sanitize(r.body, 100)}`, 2);
  }
  if (typeof stream !== "object" || stream === null) throw new SentryError(`the CrowdSec LAPI sent a decision stream that is not an object`, 2);
  const res = applyStream(ctx, stream as { new?: unknown; deleted?: unknown });
  if (startup) withRoot(ctx, () => writeNoFollow(ctx.sys.fs, marker, `${isoTime(ctx.sys.now())} startup pull applied\n`, O_WRITE_NOFOLLOW));
  return res;
}

/** --sync: push the outbox, pull the stream. Exit 2 if either failed; what was not pushed stays queued. */
export async function syncCommand(ctx: Ctx, verbose: boolean): Promise<number> {
  if (!fleetConfigured(ctx.cfg)) throw new SentryError("--sync: no fleet is configured (CROWDSEC_URL is empty; see README, Fleet)", 1);
  const fc = fleetConf(ctx);
  return withSyncLock(ctx, async () => {
    const errors: string[] = [];
    let push: PushResult | null = null;
    let pull: PullResult | null = null;
    if (ctx.cfg.CROWDSEC_PUSH) {
      try {
        push = await fleetPush(ctx, fc);
      } catch (e) {
        if (!(e instanceof SentryError)) throw e;
        errors.push(`push: ${e.message}`);
      }
    }
    if (ctx.cfg.CROWDSEC_PULL) {
      try {
        pull = await fleetPull(ctx, fc);
      } catch (e) {
        if (!(e instanceof SentryError)) throw e;
        errors.push(`pull: ${e.message}`);
      }
    }
    if (pull && pull.refused.length) ctx.sys.warn(`sync: refused from the fleet: ${pull.refused.join("; ")}`);
    const parts: string[] = [];
    if (push) parts.push(`pushed ${push.pushed} blocks, ${push.deleted} deletions (${push.skipped} expired or allowlisted)`);
    if (pull) parts.push(`pulled ${pull.added} new fleet blocks, ${pull.renewed} renewed, ${pull.lifted} lifted, ${pull.conflicts} refused as allowed here`);
    const summary = `sync: ${parts.join("; ")}`;
    if (verbose || (push && (push.pushed || push.deleted)) || (pull && (pull.added || pull.lifted || pull.conflicts))) ctx.sys.out(summary);
    for (const e of errors) ctx.sys.warn(`sync: ${e}`);
    if (errors.length > 0) return 2;
    try {
      writeNoFollow(ctx.sys.fs, path.join(ctx.cfg.ROOT_DIR, FLEET_STAMP), `${isoTime(ctx.sys.now())} ${summary}\n`, O_WRITE_NOFOLLOW);
    } catch (e) {
      ctx.sys.warn(ioError("write", path.join(ctx.cfg.ROOT_DIR, FLEET_STAMP), e).message);
    }
    return 0;
  });
}

/** --doctor's fleet block: the LAPI answers, the machine logs in, the bouncer key pulls, the last sync is recent. */
export async function fleetChecks(ctx: Ctx): Promise<Check[]> {
  if (!fleetConfigured(ctx.cfg)) return [];
  const out: Check[] = [];
  const add = (severity: Severity, text: string) => out.push({ severity, text });
  let fc: FleetConf;
  try {
    fc = fleetConf(ctx);
  } catch (e) {
    if (!(e instanceof SentryError)) throw e;
    add(2, `fleet: ${e.message}`);
    return out;
  }
  try {
    const h = await lapiRequest(ctx, fc, "GET", "/health", {});
    if (h.status !== 200) add(2, `fleet: the CrowdSec LAPI at ${fc.url.origin} answers /health with ${replyText(h)}`);
    else add(0, `fleet: the CrowdSec LAPI at ${fc.url.origin} is up`);
  } catch (e) {
    if (!(e instanceof SentryError)) throw e;
    add(2, `fleet: ${e.message}`);
    return out;
  }
  if (ctx.cfg.CROWDSEC_PUSH) {
    try {
      await machineToken(ctx, fc, true);
      add(0, "fleet: the machine login works (push)");
    } catch (e) {
      if (!(e instanceof SentryError)) throw e;
      add(2, `fleet: ${e.message}`);
    }
  }
  if (ctx.cfg.CROWDSEC_PULL) {
    // A plain query, not the stream: the stream's position must move only when --sync applies it.
    const r = await lapiRequest(ctx, fc, "GET", "/v1/decisions?ip=192.0.2.1", fc.cert ? {} : { "X-Api-Key": fc.apiKey }).catch((e: unknown) => {
      if (e instanceof SentryError) return { status: 0, body: e.message };
      throw e;
    });
    if (r.status === 200) add(0, "fleet: the bouncer key works (pull)");
    else add(2, `fleet: the LAPI refused this server's bouncer: ${replyText(r)}${r.status === 403 ? " (CROWDSEC_API_KEY)" : ""}`);
  }
  const st = ctx.sys.fs.lstatSync(path.join(ctx.cfg.ROOT_DIR, FLEET_STAMP), { throwIfNoEntry: false });
  const every = ctx.cfg.CROWDSEC_SYNC_MINUTES * 60_000;
  if (!st) add(1, "fleet: no --sync has succeeded yet: run sentry --sync from a timer (README, Fleet)");
  else {
    const age = ctx.sys.now() - st.mtimeMs;
    const text = `fleet: the last successful --sync was ${lengthText(Math.max(age, 0))} ago (CROWDSEC_SYNC_MINUTES=${ctx.cfg.CROWDSEC_SYNC_MINUTES})`;
    add(age > 30 * every ? 2 : age > 3 * every ? 1 : 0, text);
  }
  let queued = 0;
  for (const f of [FLEET_OUTBOX, FLEET_SENDING]) {
    try {
      queued += readStateFile(ctx, path.join(ctx.cfg.ROOT_DIR, f)).split("\n").filter((l) => l !== "").length;
    } catch (e) {
      if (errCode(e) !== "ENOENT") add(1, `fleet: ${ioError("read", path.join(ctx.cfg.ROOT_DIR, f), e).message}`);
    }
  }
  if (queued > 0) add(st && ctx.sys.now() - st.mtimeMs > 3 * every ? 1 : 0, `fleet: ${queued} blocks or deletions wait to be pushed`);
  return out;
}

/** For --report: how many blocks came from the fleet, and the latest refusals of allowed addresses. */
export function fleetSummary(ctx: Ctx): { blocks: number; conflicts: string[] } | undefined {
  if (!fleetConfigured(ctx.cfg)) return undefined;
  let blocks = 0;
  for (const ip of listDir(ctx, "block")) if (isFleetBlock(readBlockFile(ctx, ip) ?? "")) blocks++;
  let conflicts: string[] = [];
  try {
    conflicts = readStateFile(ctx, path.join(ctx.cfg.ROOT_DIR, FLEET_CONFLICTS)).split("\n").filter((l) => l !== "").slice(-10);
  } catch (e) {
    if (errCode(e) !== "ENOENT") throw ioError("read", path.join(ctx.cfg.ROOT_DIR, FLEET_CONFLICTS), e);
  }
  return { blocks, conflicts };
}

// ==== 10. Report ============================================================
//
//   sentry --report
//        4 unique IPs have connected 12 times
//        1 IPs are allowed
//        1 IPs are blocked
//
// Every seen line sentry writes is exactly 11 bytes ("1795262400\n": ten
// digits until the year 2286), so a seen file whose size is a multiple of 11
// holds size/11 connections and costs one stat, not a read; any other file
// (edited by hand, imported) is read and its lines counted.

export interface IpRecord {
  ip: string;
  connections: number;
  status: Status;
  allow: string | null; // contents of allow/IP
  block: string | null; // contents of block/IP
  firstSeen: string | null; // ISO time of the first seen line
  lastSeen: string | null;
  evidence: Tallies | null; // from the evidence index, if there is one
  history: string | null; // contents of history/IP: how many of its blocks ran out (section 8.5.1)
  ranges: string[]; // the blocked or allowed ranges that hold it: "block 2001:db8:1:2::/64", "allow 10.0.0.0/8" (section 8.4)
  admitted: string | null; // why its count stopped: tcpd admits it from hosts.allowed without spawning sentry (section 9.1.2)
}

/** --report --ip=RANGE: a range's files, and the blocked addresses inside it (what led to an aggregated /64). */
export interface RangeRecord {
  range: string;
  allow: string | null; // contents of allow/NET_LEN
  block: string | null; // contents of block/NET_LEN
  blockedInside: string[];
}

/** The record of range `net` for --report. */
export function rangeRecord(ctx: Ctx, net: Cidr): RangeRecord {
  const read = (dir: "allow" | "block"): string | null => {
    try {
      return readStateFile(ctx, netPath(ctx, dir, net));
    } catch (e) {
      if (errCode(e) === "ENOENT") return null;
      throw ioError("read", netPath(ctx, dir, net), e);
    }
  };
  return { range: net.text, allow: read("allow"), block: read("block"), blockedInside: listDir(ctx, "block").filter((ip) => inRanges(ip, [net])).sort() };
}

/** The text of a RangeRecord. */
export function formatRangeRecord(r: RangeRecord): string {
  const out = [`${r.range}${r.block !== null ? " is blocked" : r.allow !== null ? " is allowed" : " is neither blocked nor allowed"}`];
  if (r.allow !== null) out.push(`     allow: ${r.allow.trimEnd().replace(/\n/g, "\n            ")}`);
  if (r.block !== null) out.push(`     block: ${r.block.trimEnd().replace(/\n/g, "\n            ")}`);
  out.push(`     ${r.blockedInside.length} blocked address${r.blockedInside.length === 1 ? "" : "es"} inside it${r.blockedInside.length ? `: ${r.blockedInside.slice(0, 50).join(", ")}${r.blockedInside.length > 50 ? ", …" : ""}` : ""}`);
  return out.join("\n");
}

export interface Report {
  uniqueIps: number;
  connections: number;
  allowed: number;
  blocked: number;
  top?: { ip: string; connections: number; status: Status }[];
  recent?: string[]; // latest lines of sentry.log
  backendFailures?: string[]; // sentry.log lines of firewalls that failed lately
  notes?: string[]; // the evidence index's latest notes (first reads, caps, unreadable logs)
  withheld: Withheld[]; // blocks that wait for a complete read of the logs (section 8.3.2)
  heldBack?: string[]; // sentry.log lines of the last 7 days that say decisions were held back
  attention: ListEntry[]; // allowed after failures, or held for review (section 8.3.1): a brute force that succeeded?
  logAddresses: number | null; // where no connect is counted (a --scan-only server): the addresses the logs show
  admittedByTcpd: number | null; // entries of hosts.allowed, when hosts.allow has its line: their connections are not counted (section 9.1.2)
  fleet?: { blocks: number; conflicts: string[] }; // section 9.5: blocks learned from the fleet; its latest bans of addresses allowed here
  ip?: IpRecord;
}

/**
 * Totals and the ten busiest addresses of seen/, walked without an index:
 * only the ten are kept, so a million addresses cost no more memory than ten.
 */
function seenWalk(ctx: Ctx): { ips: number; connections: number; top: [string, number][] } {
  const busier = (a: [string, number], b: [string, number]) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1);
  const out = { ips: 0, connections: 0, top: [] as [string, number][] };
  forEachSeen(ctx, (ip, n) => {
    out.ips++;
    out.connections += n;
    if (out.top.length === 10 && busier([ip, n], out.top[9]) >= 0) return;
    out.top.push([ip, n]);
    out.top.sort(busier);
    if (out.top.length > 10) out.top.pop();
  });
  return out;
}

/**
 * Directory entries fs.Dir reads from the kernel at once while seen/ is
 * walked. Walked synchronously (Dir.readSync), a million entries took a
 * quarter of the time of one readdirSync of them all (1.5–2 s against 6–7 s
 * on a loaded 2-core machine; the async walk was the slow one), and memory
 * stays flat: readdirSync's array of a million names peaked at 209 MB, the
 * walk at 58 MB, alike from 32 to 4,096 entries a read (issue 15).
 */
const SEEN_DIR_BUFFER = 256;

/** Calls `fn` with each address in seen/ and its count, walking the folder (never all of its names in memory at once). */
function forEachSeen(ctx: Ctx, fn: (ip: string, n: number) => void): void {
  const where = path.join(ctx.cfg.ROOT_DIR, "seen");
  // A stat of "IP" from inside seen/ walks one path component, one of
  // ROOT_DIR/seen/IP walks them all: over a million files the walk took
  // 2.9 s instead of 3.9 s (`find seen -printf`, which stats relative to the
  // folder too: 2.8 s). So the walk runs from inside seen/ when it can.
  const back = enterDir(where); // null: seen/ missing or not enterable, whole paths then
  let dir: import("node:fs").Dir | null = null;
  try {
    // A big seen/ is listed by a second thread, and stat'ed by both (section
    // 10.1.1), while this one weighs the names and fills the index.
    if (seenIsBig(ctx, where) && walkSeenInThread(ctx, where, back !== null, fn)) return;
    try {
      dir = ctx.sys.fs.opendirSync(where, { bufferSize: SEEN_DIR_BUFFER });
    } catch (e) {
      if (errCode(e) === "ENOENT") return; // nobody has connected yet
      throw ioError("list", where, e);
    }
    for (let e = dir.readSync(); e !== null; e = dir.readSync()) visitSeen(ctx, e.name, back !== null, fn);
  } finally {
    if (back !== null) leaveDir(back);
    dir?.closeSync();
  }
}

/**
 * Makes `dir` the working directory and returns the one to go back to, or
 * null if it could not (the working directory is gone, `dir` cannot be
 * entered): then nothing changed and the caller uses whole paths. Only a
 * walk of seen/ uses this; every other path sentry opens is absolute, so
 * nothing else depends on where the process stands.
 */
function enterDir(dir: string): string | null {
  let back: string;
  try {
    back = process.cwd();
    process.chdir(dir);
  } catch {
    return null; // handled: whole paths work from anywhere
  }
  return back;
}

/** Goes back to where enterDir was called; if that folder is gone, to "/" (never left inside ROOT_DIR). */
function leaveDir(back: string): void {
  try {
    process.chdir(back);
  } catch {
    process.chdir("/"); // handled: the folder was removed meanwhile; "/" always exists
  }
}

/** The non-empty lines of the last `bytes` of a file (the first, cut one dropped). Throws what the file system throws. */
export function tailLines(fsys: FsTable, file: string, bytes: number): string[] {
  const fd = fsys.openSync(file, "r");
  try {
    const size = fsys.fstatSync(fd).size;
    const len = Math.min(size, bytes);
    const buf = Buffer.alloc(len);
    fsys.readSync(fd, buf, 0, len, size - len);
    const lines = buf.toString("utf8").split("\n");
    if (len < size) lines.shift(); // begins inside a line
    return lines.filter((l) => l.trim() !== "");
  } finally {
    fsys.closeSync(fd);
  }
}

/** The last `n` lines of sentry.log (reads at most its last 256 KiB). */
function tailLog(ctx: Ctx, n: number): string[] {
  const file = path.join(ctx.cfg.ROOT_DIR, "sentry.log");
  try {
    return tailLines(ctx.sys.fs, file, 256 * 1024).slice(-n);
  } catch (e) {
    if (errCode(e) === "ENOENT") return [];
    throw ioError("read", file, e);
  }
}

/** Reads a small state file, or null if it is not there. */
function readState(ctx: Ctx, dir: Dir, ip: string): string | null {
  const file = statePath(ctx, dir, ip);
  try {
    // A block file's second line is its end ("until ..."): one line, "; " between.
    return sanitize(ctx.sys.fs.readFileSync(file, "utf8").trim().split("\n").join("; "), 2000);
  } catch (e) {
    if (errCode(e) === "ENOENT") return null;
    throw ioError("read", file, e);
  }
}

/**
 * hosts.allowed's text when tcpd reads it: ALLOWED_TO_TCPWRAPPERS on, the
 * file there, and HOSTS_ALLOW holding its line. Else null: the allowed
 * spawn sentry, and are counted, as before.
 */
function admittedByTcpd(ctx: Ctx): string | null {
  if (!ctx.cfg.ALLOWED_TO_TCPWRAPPERS) return null;
  const text = readHostsAllowed(ctx);
  if (text === null) return null;
  let allow: string;
  try {
    allow = readPolicyFile(ctx, ctx.cfg.HOSTS_ALLOW);
  } catch (e) {
    if (!(e instanceof SentryError)) throw e;
    return null; // a report by a user who cannot read hosts.allow: it cannot tell, and says nothing
  }
  const line = allow.split("\n").some((l) => isSentryAllowedLine(l) && l.includes(`${ctx.cfg.ROOT_DIR}/hosts.allowed`));
  return line ? text : null;
}

/** Why the connections of allowed `ip` are no longer counted, or null if they are. */
function admittedText(admitted: string | null, ip: string): string | null {
  if (admitted === null || !hostsAllowedHas(admitted, ip)) return null;
  return "counts stop at the allow: tcpd admits it via hosts.allowed without spawning sentry";
}

/** Everything known of one address. */
export function ipRecord(ctx: Ctx, ip: string): IpRecord {
  const file = statePath(ctx, "seen", ip);
  let first: string | null = null;
  let last: string | null = null;
  const connections = countConnections(ctx, ip);
  // The first and the last line only, from the file's two ends: it can hold millions.
  const fsys = ctx.sys.fs;
  let fd: number | null = null;
  try {
    fd = fsys.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const size = fsys.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(size, 64));
    const lines = (at: number) => buf.toString("latin1", 0, fsys.readSync(fd as number, buf, 0, buf.length, at)).split("\n").filter((l) => l !== "");
    const when = (l: string | undefined) => (l && /^\d{1,12}$/.test(l) ? isoTime(Number(l) * 1000) : null);
    first = when(lines(0)[0]);
    const tail = lines(size - buf.length);
    last = when(tail[tail.length - 1]);
  } catch (e) {
    if (errCode(e) !== "ENOENT") throw ioError("read", file, e);
  } finally {
    if (fd !== null) fsys.closeSync(fd);
  }
  return {
    ip,
    connections,
    status: ipStatus(ctx, ip),
    allow: readState(ctx, "allow", ip),
    block: readState(ctx, "block", ip),
    firstSeen: first,
    lastSeen: last,
    evidence: readEvidence(ctx, ip),
    history: (() => {
      const f = path.join(ctx.cfg.ROOT_DIR, HISTORY_DIR, ip);
      try {
        return readStateFile(ctx, f).trimEnd();
      } catch (e) {
        if (errCode(e) === "ENOENT" || errCode(e) === "ENOTDIR") return null;
        throw ioError("read", f, e);
      }
    })(),
    ranges: [
      ...listNets(ctx, "block").filter((n) => inRanges(ip, [n])).map((n) => `block ${n.text}`),
      ...listNets(ctx, "allow").filter((n) => inRanges(ip, [n])).map((n) => `allow ${n.text}`),
    ],
    admitted: admittedText(admittedByTcpd(ctx), ip),
  };
}

// ---- 10.1 The report's index -------------------------------------------------
//
//   connections.log  "1795262400 203.0.113.9\n"   ──▶  report_ips (203.0.113.9, 7)
//                                                       meta report_ips=…, report_connections=…
//
// Listing and stating a million seen/ files takes seconds; --report should
// not. So sentry.db keeps each address's count and the totals, and each
// report first catches up with connections.log, the change feed every
// connect and delist appends to (noteChange): only the addresses named
// since the last report are looked at again, and their count is read from
// seen/IP itself, so the feed says what changed and the files say how much.
// A feed that was rotated is finished by inode, like a log (7.2). The index
// is rebuilt from seen/ when it is new, when the feed cannot be followed,
// and at least every REPORT_REBUILD_HOURS, which also catches files an
// administrator removed by hand. Without a writable sentry.db (a read-only
// ROOT_DIR, another user) the report lists seen/ directly.

/** Connections in seen/IP from its size (one stat), or by reading it; null if there is no such file. */
function seenCount(ctx: Ctx, ip: string, file = statePath(ctx, "seen", ip)): number | null {
  const st = ctx.sys.fs.statSync(file, { throwIfNoEntry: false });
  if (!st || !st.isFile()) return null;
  return countOfSize(ctx, ip, st.size);
}

/** Connections of seen/IP whose size is `size`: size/SEEN_LINE_BYTES, or by reading it when a line is torn. */
function countOfSize(ctx: Ctx, ip: string, size: number): number {
  return size % SEEN_LINE_BYTES === 0 ? size / SEEN_LINE_BYTES : countConnections(ctx, ip);
}

/**
 * One name of a walk of seen/: an address and its count go to `fn`; any
 * other name, and a name that is not a file, is passed over, as in listDir.
 * `inside`: the walk stands in seen/ (enterDir), so the stat is relative.
 */
function visitSeen(ctx: Ctx, name: string, inside: boolean, fn: (ip: string, n: number) => void): void {
  if (parseIp(name) !== name) return;
  const n = seenCount(ctx, name, inside ? name : undefined);
  if (n !== null) fn(name, n);
}

interface FeedPos {
  ident: string; // "dev:ino" of connections.log, "" if there is none
  offset: number;
}

/** Reads complete feed lines of an open file from `start`; adds their addresses; returns where it stopped. */
function readFeedLines(ctx: Ctx, fd: number, start: number, size: number, into: Set<string>): number {
  return readLines(ctx.sys.fs, fd, { start, size, skipping: false }, (line) => {
    const ip = line === null ? undefined : line.split(" ")[1];
    if (ip !== undefined && parseIp(ip) === ip) into.add(ip);
  }).offset; // a line still being written is read next time
}

/** Addresses named in the feed since `cur`, and the new position; null if the feed cannot be followed. */
function readFeed(ctx: Ctx, cur: FeedPos): { ips: Set<string>; pos: FeedPos } | null {
  const feed = path.join(ctx.cfg.ROOT_DIR, CONNECTIONS_LOG);
  const fsys = ctx.sys.fs;
  const ips = new Set<string>();
  let fd: number | null = null;
  try {
    fd = fsys.openSync(feed, "r");
  } catch (e) {
    // Missing: nothing appended yet. Unreadable: null, and the index is
    // rebuilt from seen/ instead (syncReportIndex), which is always right.
    if (errCode(e) !== "ENOENT") return null;
  }
  try {
    const st = fd === null ? null : fsys.fstatSync(fd);
    const ident = st ? `${st.dev}:${st.ino}` : "";
    if (cur.ident !== "" && cur.ident !== ident) {
      // Rotated since: finish the old file first, found beside it by inode.
      const old = findRotated(ctx, feed, cur.ident);
      if (typeof old !== "string") return null; // the report rebuilds its index from seen/ instead
      const ofd = fsys.openSync(old, "r");
      try {
        const ost = fsys.fstatSync(ofd);
        if (ost.size < cur.offset) return null;
        readFeedLines(ctx, ofd, cur.offset, ost.size, ips);
      } finally {
        fsys.closeSync(ofd);
      }
      cur = { ident, offset: 0 };
    }
    if (fd === null || st === null) return { ips, pos: { ident: "", offset: 0 } };
    if (st.size < cur.offset) return null; // truncated: start again from seen/
    const offset = readFeedLines(ctx, fd, cur.offset, st.size, ips);
    return { ips, pos: { ident, offset } };
  } finally {
    if (fd !== null) fsys.closeSync(fd);
  }
}

/** Where the feed ends now (taken before a rebuild lists seen/, so nothing in between is missed). */
function feedEnd(ctx: Ctx): FeedPos {
  const st = ctx.sys.fs.statSync(path.join(ctx.cfg.ROOT_DIR, CONNECTIONS_LOG), { throwIfNoEntry: false });
  return st ? { ident: `${st.dev}:${st.ino}`, offset: st.size } : { ident: "", offset: 0 };
}

/** Addresses between two progress lines of the report index's build (on a terminal). */
const INDEX_PROGRESS_EVERY = 10_000;

/** The index's totals, kept in its meta rows beside report_ips. */
interface IndexTotals {
  ips: number;
  connections: number;
}

/** Rows of seen/ one INSERT adds while the index is built (SQLite allows 32,766 parameters). */
const WALK_ROWS = 32;

/**
 * Mode one: the index made again from seen/ (new, past REPORT_REBUILD_HOURS,
 * or a feed that cannot be followed). Returns the totals. In the caller's
 * transaction; the feed's end is taken first, so a connect in between is
 * read by the next catch-up, at worst once more.
 */
function rebuildReportIndex(ctx: Ctx, db: Db): IndexTotals {
  // seen/ is walked in the order of its directory (a hash): a million rows
  // put straight into report_ips landed each on a random page of its B-tree,
  // and with SQLite's 2 MB page cache that was a read and a write of a page
  // per row (strace: 1.5 pread+pwrite per row; CPU 8 times `find -printf`'s).
  // Appended to a plain table instead, then copied over sorted (SQLite's
  // sorter, bounded memory) and the count index made once at the end, every
  // page is written once, in order.
  db.exec("DELETE FROM report_ips");
  db.exec("DROP INDEX IF EXISTS report_ips_n");
  db.exec("CREATE TEMP TABLE IF NOT EXISTS seen_walk (ip TEXT NOT NULL, n INTEGER NOT NULL)");
  db.exec("DELETE FROM seen_walk");
  // Rows go in WALK_ROWS at a time: over a million addresses the build took
  // 6.6-7.2 s instead of 7.8 s (128 at a time: no faster, 17 MiB more peak RSS).
  const putMany = db.prepare(`INSERT INTO seen_walk (ip, n) VALUES ${Array(WALK_ROWS).fill("(?, ?)").join(", ")}`);
  const putOne = db.prepare("INSERT INTO seen_walk (ip, n) VALUES (?, ?)");
  const rows: (string | number)[] = [];
  const t: IndexTotals = { ips: 0, connections: 0 };
  // A million addresses take seconds to list: on a terminal, say how far it is.
  const shown = ctx.sys.errTty === true;
  forEachSeen(ctx, (ip, n) => {
    rows.push(ip, n);
    if (rows.length === 2 * WALK_ROWS) {
      putMany.run(...rows);
      rows.length = 0;
    }
    t.ips++;
    t.connections += n;
    if (shown && t.ips % INDEX_PROGRESS_EVERY === 0) ctx.sys.err(`\rsentry: building the report index of seen/: ${t.ips} addresses\x1b[K`);
  });
  for (let i = 0; i < rows.length; i += 2) putOne.run(rows[i], rows[i + 1]);
  db.exec("INSERT INTO report_ips (ip, n) SELECT ip, n FROM seen_walk ORDER BY ip");
  db.exec("DROP TABLE seen_walk");
  db.exec("CREATE INDEX report_ips_n ON report_ips (n)");
  if (shown && t.ips >= INDEX_PROGRESS_EVERY) ctx.sys.err(`\rsentry: building the report index of seen/: ${t.ips} addresses, done\x1b[K\n`);
  return t;
}

/**
 * Mode two: the index caught up with the addresses the feed named since the
 * last report: each one's count is read again from seen/IP (the feed says
 * what changed, the file how much). Returns the new totals.
 */
function catchUpReportIndex(ctx: Ctx, db: Db, named: Set<string>, t: IndexTotals): IndexTotals {
  const get = db.prepare("SELECT n FROM report_ips WHERE ip = ?");
  const put = db.prepare("INSERT INTO report_ips (ip, n) VALUES (?, ?) ON CONFLICT(ip) DO UPDATE SET n = excluded.n");
  const del = db.prepare("DELETE FROM report_ips WHERE ip = ?");
  let { ips, connections } = t;
  for (const ip of named) {
    const row = get.get(ip);
    const before = row ? Number(row.n) : null;
    const n = seenCount(ctx, ip);
    if (before !== null) {
      ips--;
      connections -= before;
    }
    if (n !== null) {
      put.run(ip, n);
      ips++;
      connections += n;
    } else if (before !== null) del.run(ip);
  }
  return { ips, connections };
}

/**
 * Brings the index up to date (rebuilt, or caught up with the feed) and
 * returns the totals and the ten busiest addresses. One BEGIN IMMEDIATE
 * transaction: two reports do not both rebuild, and a connect never waits
 * for it (connects do not open sentry.db).
 */
export function syncReportIndex(ctx: Ctx, db: Db): { ips: number; connections: number; top: [string, number][]; rebuilt: boolean } {
  const getMeta = db.prepare("SELECT value FROM meta WHERE key = ?");
  const setMeta = db.prepare("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  const meta = (k: string): string | null => {
    const r = getMeta.get(k);
    return r ? String(r.value) : null;
  };
  db.exec("BEGIN IMMEDIATE");
  try {
    const now = ctx.sys.now();
    const builtAt = Number(meta("report_built_at") ?? 0);
    const fresh = builtAt > 0 && now - builtAt < ctx.cfg.REPORT_REBUILD_HOURS * 3_600_000;
    const cur: FeedPos = { ident: meta("report_feed_ident") ?? "", offset: Number(meta("report_feed_offset") ?? 0) };
    const caught = fresh ? readFeed(ctx, cur) : null;
    let pos: FeedPos;
    let t: IndexTotals;
    if (caught === null) {
      pos = feedEnd(ctx);
      t = rebuildReportIndex(ctx, db);
      setMeta.run("report_built_at", String(now));
    } else {
      pos = caught.pos;
      t = catchUpReportIndex(ctx, db, caught.ips, { ips: Number(meta("report_ips") ?? 0), connections: Number(meta("report_connections") ?? 0) });
    }
    setMeta.run("report_ips", String(t.ips));
    setMeta.run("report_connections", String(t.connections));
    setMeta.run("report_feed_ident", pos.ident);
    setMeta.run("report_feed_offset", String(pos.offset));
    const top = db
      .prepare("SELECT ip, n FROM report_ips ORDER BY n DESC, ip LIMIT 10")
      .all()
      .map((r) => [String(r.ip), Number(r.n)] as [string, number]);
    db.exec("COMMIT");
    return { ...t, top, rebuilt: caught === null };
  } catch (e) {
    throw rollbackAfter(db, e); // the original error wins over a failing ROLLBACK
  }
}

/** Totals and the ten busiest addresses of seen/: from the index, or by listing seen/ where there can be none. */
function seenSummary(ctx: Ctx): { ips: number; connections: number; top: [string, number][] } {
  // A report never creates ROOT_DIR, and works without write access to it.
  const st = ctx.sys.fs.statSync(ctx.cfg.ROOT_DIR, { throwIfNoEntry: false });
  if (st && st.isDirectory()) {
    try {
      return withIndex(ctx, (db) => syncReportIndex(ctx, db));
    } catch (e) {
      ctx.sys.warn(`the report's index in sentry.db cannot be used (${errText(e)}): listing seen/ instead`);
    }
  }
  return seenWalk(ctx);
}

/** Builds the report: the summary, plus detail when verbose, plus one address. */
export function buildReport(ctx: Ctx, opts: { verbose: boolean; ip: string | null }): Report {
  const summary = seenSummary(ctx);
  const r: Report = {
    uniqueIps: summary.ips,
    connections: summary.connections,
    allowed: listDir(ctx, "allow").length,
    blocked: listDir(ctx, "block").length,
    withheld: withheldBlocks(ctx),
    attention: buildList(ctx, { states: ["allowed", "pending"], net: null, newerMs: null, olderMs: null, sort: "time", utc: false }).filter(
      (e) => (e.state === "allowed" && ALLOWED_AFTER.test(e.reason)) || (e.state === "pending" && e.by !== "withheld"),
    ),
    // A server where nothing spawns --connect (no libwrap, a timer's --scan) counts no connects: say what it does count.
    admittedByTcpd: (() => {
      const text = admittedByTcpd(ctx);
      return text === null ? null : text.split("\n").filter((l) => l !== "").length;
    })(),
    logAddresses: summary.connections === 0 ? ifIndex<number | null>(ctx, null, (db) => Number(db.prepare("SELECT COUNT(DISTINCT ip) AS n FROM tallies").get()?.n ?? 0)) : null,
  };
  const fleet = fleetSummary(ctx);
  if (fleet) r.fleet = fleet;
  if (opts.verbose) {
    r.top = summary.top.map(([ip, n]) => ({ ip, connections: n, status: ipStatus(ctx, ip) }));
    const log = tailLog(ctx, 2000);
    r.recent = log.filter((l) => !/ (backend-failed|withheld) /.test(l)).slice(-10);
    const weekAgo = isoTime(ctx.sys.now() - 7 * 86_400_000);
    r.backendFailures = log.filter((l) => / backend-failed /.test(l) && l >= weekAgo).slice(-10);
    r.heldBack = log.filter((l) => / withheld /.test(l) && l >= weekAgo).slice(-10);
    r.notes = indexNotes(ctx);
  }
  if (opts.ip !== null) r.ip = ipRecord(ctx, opts.ip);
  return r;
}

/** The report as the old scripts printed it, with detail below. */
export function formatReport(r: Report): string {
  const out: string[] = [];
  if (r.ip) {
    const x = r.ip;
    out.push(recordLine(x.connections, x.ip, x.status));
    if (x.firstSeen) out.push(`     first seen ${x.firstSeen}, last seen ${x.lastSeen}`);
    if (x.allow) out.push(`     allow/${x.ip}: ${x.allow}`);
    if (x.block) out.push(`     block/${x.ip}: ${x.block}`);
    if (x.history) out.push(`     history/${x.ip}: ${x.history}`);
    if (x.admitted) out.push(`     ${x.admitted}`);
    for (const rg of x.ranges ?? []) out.push(`     inside the range: ${rg}`);
    if (x.evidence) {
      for (const s of SERVICES) {
        const t = x.evidence[s];
        if (!t) continue;
        out.push(`     ${tallyText(s, t)}`);
        if (t.sample) out.push(`       e.g. ${t.sample}`);
      }
    }
    out.push("");
  }
  // sentry.pl's and sentry.sh's header above the counts: scripts and habits look for it.
  out.push("   -------- summary ---------");
  if (r.logAddresses)
    out.push(
      `${String(r.logAddresses).padStart(4)} IPs are in the logs --scan reads (no connect is counted here: nothing spawns sentry --connect)`,
    );
  else out.push(`${String(r.uniqueIps).padStart(4)} unique IPs have connected ${r.connections} times`);
  out.push(`${String(r.allowed).padStart(4)} IPs are allowed`);
  if (r.admittedByTcpd)
    out.push(`       tcpd admits ${r.admittedByTcpd} entr${r.admittedByTcpd === 1 ? "y" : "ies"} of hosts.allowed without spawning sentry: their counts stop at the allow`);
  out.push(`${String(r.blocked).padStart(4)} IPs are blocked`);
  if (r.fleet) {
    out.push(`${String(r.fleet.blocks).padStart(4)} of them by the fleet (CrowdSec), ${r.blocked - r.fleet.blocks} decided here`);
    if (r.fleet.conflicts.length) out.push(`       the fleet blocks addresses this server allows (kept allowed; fleet.conflicts):`, ...r.fleet.conflicts.map((l) => `       ${l}`));
  }
  if (r.withheld.length) {
    // Protection is off while these wait: say it in the summary, not only with --verbose.
    out.push(`${String(r.withheld.length).padStart(4)} IPs wait to be blocked: a log could not be read, or not to its end (sentry --doctor)`);
    for (const w of r.withheld.slice(0, 20)) out.push(`       ${w.ip.padEnd(15)} since ${w.since}: ${w.why}`);
    if (r.withheld.length > 20) out.push(`       … and ${r.withheld.length - 20} more (--report --json lists them all)`);
  }
  if (r.attention.length) {
    // The brute force that succeeded must be impossible to miss: above the detail, with what to do.
    out.push("", `ATTENTION: ${r.attention.length} IPs logged in after failed attempts (a password guesser that found one?):`);
    for (const e of r.attention.slice(0, 20)) out.push(`  ${e.ip.padEnd(15)} ${e.state} ${e.since === null ? "" : isoTime(e.since)} by ${e.by}: ${shortReason(e.reason)}`);
    if (r.attention.length > 20) out.push(`  … and ${r.attention.length - 20} more (sentry --list --state=allowed)`);
    out.push("  check them; sentry --allow --ip=IP keeps one (and clears this), sentry --block --ip=IP --force shuts it out");
  }
  if (r.top) {
    out.push("", "most active:");
    for (const t of r.top) out.push(recordLine(t.connections, t.ip, t.status));
  }
  if (r.recent) {
    out.push("", "latest decisions (sentry.log):");
    if (r.recent.length === 0) out.push("  none yet");
    for (const l of r.recent) out.push(`  ${l}`);
  }
  if (r.notes && r.notes.length) {
    out.push("", "reading the logs (sentry.db):");
    for (const l of r.notes) out.push(`  ${l}`);
  }
  if (r.heldBack && r.heldBack.length) {
    out.push("", "decisions held back in the last 7 days, a log unread (sentry.log):");
    for (const l of r.heldBack) out.push(`  ${l}`);
  }
  if (r.backendFailures && r.backendFailures.length) {
    out.push("", "firewall backends that failed in the last 7 days:");
    for (const l of r.backendFailures) out.push(`  ${l}`);
  }
  return out.join("\n");
}

// ---- 10.1.1 A big seen/, walked with a second thread ------------------------
//
//   this thread                               the walker (node:worker_threads)
//   ─────────────────────────────────────     ──────────────────────────────────
//   enterDir(seen/), start the walker   ──▶   opendir, readSync 1,024 names
//   receiveMessageOnPort; Atomics.wait  ◀──   {names: "a\nb\n…", sizes}  (this
//   parseIp each name, count = size/11        thread busy: the walker stats them)
//   (sizes null: stat them here, as the ◀──   {names, sizes: null}  (this thread
//   one-thread walk does)                     idle: the stats are left to it)
//   fn(ip, n): the report's INSERTs     ◀──   {done} or {error}
//
// Over a million addresses the walk is most of the index build: a stat of
// each file (2.2 µs) and the listing, beside SQLite's inserts and the parsing
// of each name. In one thread the build took 2.4 times `find seen -printf`
// (7.1 s against 2.96). The walker lists seen/ and, batch by batch, stats the
// names itself when this thread still has work, or hands them over unstat'ed
// when this thread is idle: the stats are shared by whichever thread is free
// (45,000 addresses: about 25,000 and 20,000). This thread waits synchronously
// (the report is synchronous code): the walker bumps a shared counter after
// each message, and Atomics.wait sleeps until it moves. The walker runs only
// Node's fs (its code is the string below, evaluated: a single executable
// has no file to start a worker from); every decision about a name stays
// here, in parseIp and seenCount's rule.

/**
 * From this directory size on (bytes, the folder's own st_size) seen/ is
 * walked with a second thread: about 30,000 addresses on ext4 (~34 bytes
 * an entry), 40,000 on btrfs (twice the names' length), 50,000 on tmpfs
 * (20 an entry). Below it the thread saves under a tenth of a second and
 * costs its start and ~20 MiB of memory (a report of 10,000 addresses: 76
 * MiB with it, 58 without). Only speed depends on it: both walks give the
 * same result.
 */
const SEEN_THREAD_FROM_BYTES = 1024 * 1024;

/** Names the walker sends in one message. */
const SEEN_THREAD_BATCH = 1024;

/** Messages the walker may be ahead of this thread (the rest of seen/ waits in the directory, not in memory). */
const SEEN_THREAD_AHEAD = 4;

/** How long this thread waits for the walker's first sign of life before it walks seen/ itself. */
const SEEN_THREAD_START_MS = 30_000;

/** The walker: lists `dir` and stats each entry, posting names and sizes (-1: not a file, or gone). Plain JavaScript, Node's built-ins only. */
const SEEN_WALKER = `"use strict";
const { workerData: w } = process.getBuiltinModule("node:worker_threads");
const fs = process.getBuiltinModule("node:fs");
const post = (m, transfer) => {
  // Never more than w.ahead messages unread: a walker faster than the
  // inserts would otherwise queue all of seen/ in memory.
  for (let taken; Atomics.load(w.sig, 0) - (taken = Atomics.load(w.sig, 2)) >= w.ahead; ) Atomics.wait(w.sig, 2, taken);
  w.port.postMessage(m, transfer);
  Atomics.add(w.sig, 0, 1);
  Atomics.notify(w.sig, 0);
};
Atomics.store(w.sig, 1, 1);
let dir = null;
try {
  try {
    dir = fs.opendirSync(w.dir, { bufferSize: w.buffer });
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  // A batch goes out as names alone when the other thread has nothing left
  // to do (it stats them itself), else with each one's size: the stats,
  // most of the walk's time, are shared by whichever thread is free.
  const send = (names) => {
    if (Atomics.load(w.sig, 0) === Atomics.load(w.sig, 2)) return post({ names: names.join("\\n"), sizes: null });
    const sizes = new Float64Array(names.length);
    for (let i = 0; i < names.length; i++) {
      const st = fs.statSync(w.rel ? names[i] : w.dir + "/" + names[i], { throwIfNoEntry: false });
      sizes[i] = st && st.isFile() ? st.size : -1;
    }
    post({ names: names.join("\\n"), sizes }, [sizes.buffer]);
  };
  let names = [];
  for (let e = dir && dir.readSync(); e; e = dir.readSync()) {
    names.push(e.name);
    if (names.length === w.batch) {
      send(names);
      names = [];
    }
  }
  if (names.length) send(names);
  post({ done: true });
} catch (e) {
  post({ error: { code: String(e && e.code || ""), message: String(e && e.message || e) } });
} finally {
  if (dir) dir.closeSync();
}
`;

/** True when seen/ is big enough for the walker (SEEN_THREAD_FROM_BYTES), and the real file system is in use (a test's table stays in this thread). */
function seenIsBig(ctx: Ctx, where: string): boolean {
  if (ctx.sys.fs !== realFs) return false;
  const st = fs.statSync(where, { throwIfNoEntry: false });
  return st !== undefined && st.isDirectory() && st.size >= SEEN_THREAD_FROM_BYTES;
}

/**
 * Walks seen/ with the walker, calling `fn` as the in-thread walk does.
 * `rel`: the working directory is seen/ (enterDir), so the walker stats
 * names relative to it. Returns false, having called nothing, when no
 * thread could be started: the caller walks seen/ itself. A walker that
 * fails (seen/ unreadable) throws as the in-thread walk would.
 */
function walkSeenInThread(ctx: Ctx, where: string, rel: boolean, fn: (ip: string, n: number) => void): boolean {
  const wt = process.getBuiltinModule("node:worker_threads") as typeof import("node:worker_threads");
  const sig = new Int32Array(new SharedArrayBuffer(12)); // [0] messages posted, [1] 1 once the walker runs, [2] messages taken
  const { port1, port2 } = new wt.MessageChannel();
  let walker: import("node:worker_threads").Worker;
  try {
    walker = new wt.Worker(SEEN_WALKER, {
      eval: true,
      workerData: { dir: where, rel, sig, port: port2, buffer: SEEN_DIR_BUFFER, batch: SEEN_THREAD_BATCH, ahead: SEEN_THREAD_AHEAD },
      transferList: [port2],
      stdout: true, // the walker prints nothing; if Node ever did, it is not sentry's output
      stderr: true,
    });
  } catch {
    port1.close(); // handled: no thread (a limit on threads, memory): the caller walks seen/ itself
    port2.close();
    return false;
  }
  walker.unref(); // never keeps the process alive: it has posted its last message when this returns
  let done = false;
  try {
    for (;;) {
      const seq = Atomics.load(sig, 0);
      const got = wt.receiveMessageOnPort(port1);
      if (got === undefined) {
        if (Atomics.wait(sig, 0, seq, SEEN_THREAD_START_MS) === "timed-out" && Atomics.load(sig, 1) === 0) {
          void walker.terminate(); // never started: walk in this thread
          return false;
        }
        continue;
      }
      Atomics.add(sig, 2, 1);
      Atomics.notify(sig, 2);
      const m = got.message as { done?: true; error?: { code: string; message: string }; names?: string; sizes?: Float64Array | null };
      if (m.done) return (done = true);
      if (m.error) throw ioError("list", where, Object.assign(new Error(m.error.message), { code: m.error.code }));
      const names = (m.names as string).split("\n");
      const sizes = m.sizes ?? null; // null: the walker found this thread idle, and left the stats to it
      for (let i = 0; i < names.length; i++) {
        const ip = names[i];
        if (sizes === null) visitSeen(ctx, ip, rel, fn);
        else if (sizes[i] >= 0 && parseIp(ip) === ip) fn(ip, countOfSize(ctx, ip, sizes[i])); // visitSeen's rule, the stat done by the walker
      }
    }
  } finally {
    port1.close();
    if (!done) void walker.terminate(); // this thread stopped early (an error): so does the walker
  }
}

// ---- 10.2 --list: who is blocked, why, since and until when --------------------
//
//   block/203.0.113.9  "2026-11-29T10:00:00Z block by connect: ssh: 0 success, 3 naughty, …
//                       until 2026-11-29T10:10:00Z (10 minutes; thin evidence: …)"
//     → 203.0.113.9  blocked  2026-11-29 11:00 CET, 3h ago  until 2026-11-29 11:10 CET, in 7m
//                    by connect  ssh  0 ok/2 failed/3 naughty/1 probe  0 success, 3 naughty, …
//
// An administrator's first questions (fail2ban-client status, cscli
// decisions list): who, which state, since, until, by whom, which service,
// why, how many attempts of each kind. One line per address, read from the
// files (they are the truth), the attempts from the evidence index in one
// query. 100,000 blocks cost one open, fstat and read each (npm run bench).
// pending: blocks withheld for want of a complete read of the logs (8.3.2),
// and addresses held for review (8.3.1).

export type ListState = "blocked" | "allowed" | "pending";

export interface ListFilter {
  states: ListState[] | null; // null = every state
  net: Cidr | null; // only addresses in this range
  newerMs: number | null; // only entries whose since is at most this old
  olderMs: number | null; // only entries whose since is at least this old
  sort: "time" | "ip";
  utc: boolean;
}

/** One address of --list (and of --list --json, as it is). Times are epoch ms. */
export interface ListEntry {
  ip: string;
  state: ListState;
  since: number | null;
  until: number | null; // a block's end; null = never (an allow, a block that does not expire, a pending one)
  by: string; // connect, scan, admin, expiry, fleet …: who decided
  operator: string | null; // the administrator, where the record names one: "by admin (alice)"
  service: string | null; // the service with the most evidence
  reason: string;
  attempts: { success: number; failed: number; naughty: number; probe: number } | null; // null: no evidence index
}

/** "90m", "3h", "2d", "1w" (or plain seconds) → ms; null if it is not one. */
export function parseAge(text: string): number | null {
  const m = /^(\d{1,9})([smhdw]?)$/.exec(text.trim());
  if (!m) return null;
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[m[2] as "" | "s" | "m" | "h" | "d" | "w"];
  return Number(m[1]) * unit * 1000;
}

/** Applies one --list option to `f`; throws SentryError(1) naming a bad value. */
export function parseListOption(f: ListFilter, flag: string, value: string): void {
  const bad = (what: string) => new SentryError(`${flag}=${JSON.stringify(value)}: expected ${what}`, 1);
  if (flag === "--utc") f.utc = true;
  else if (flag === "--state") {
    const states = value.split(",");
    if (!states.every((x) => x === "blocked" || x === "allowed" || x === "pending")) throw bad("blocked, allowed or pending (or several, comma-separated)");
    f.states = states as ListState[];
  } else if (flag === "--net") {
    f.net = parseCidr(value);
    if (f.net === null) throw bad("an address or a CIDR range (192.0.2.0/24, 2001:db8::/32)");
  } else if (flag === "--newer" || flag === "--older") {
    const ms = parseAge(value);
    if (ms === null) throw bad("an age: a number with s, m, h, d or w (90m, 2d)");
    if (flag === "--newer") f.newerMs = ms;
    else f.olderMs = ms;
  } else if (flag === "--sort") {
    if (value !== "time" && value !== "ip") throw bad("time or ip");
    f.sort = value;
  }
}

/** The fields of an allow/, block/ or review/ record: "AT WHAT by WHO: REASON" and an optional "until ISO (LENGTH; why)". */
export function parseRecord(text: string): { at: number | null; by: string; operator: string | null; reason: string; until: number | null; length: string | null } {
  const first = text.split("\n")[0];
  const m = /^(\S+) \S+ by ([^:]*?)(?:: (.*))?$/.exec(first);
  const u = /^until (\S+)(?: \((.*)\))?$/m.exec(text);
  const at = m ? Date.parse(m[1]) : NaN;
  const until = u ? Date.parse(u[1]) : NaN;
  const who = m ? m[2] : "unknown";
  const op = /^(\S+) \(([^)]*)\)$/.exec(who);
  return {
    at: Number.isFinite(at) ? at : null,
    by: op ? op[1] : who,
    operator: op ? op[2] : null,
    reason: m ? (m[3] ?? "") : sanitize(first, 300),
    until: Number.isFinite(until) ? until : null,
    length: u ? (u[2] ?? null) : null,
  };
}

/** A record file's text and modification time (no symlink followed), or null if it is gone. */
function readRecord(ctx: Ctx, file: string): { text: string; mtimeMs: number } | null {
  const fsys = ctx.sys.fs;
  let fd: number;
  try {
    fd = fsys.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    if (errCode(e) === "ENOENT") return null; // lifted while we listed
    throw ioError("read", file, e);
  }
  try {
    return { mtimeMs: fsys.fstatSync(fd).mtimeMs, text: fsys.readFileSync(fd, "utf8") };
  } catch (e) {
    throw ioError("read", file, e);
  } finally {
    fsys.closeSync(fd);
  }
}

/** The evidence index's attempts per address and its busiest service, in one query. */
function allAttempts(ctx: Ctx): Map<string, { service: string; top: number; attempts: NonNullable<ListEntry["attempts"]> }> {
  const out = new Map<string, { service: string; top: number; attempts: NonNullable<ListEntry["attempts"]> }>();
  ifIndex(ctx, undefined, (db) => {
    for (const r of db.prepare("SELECT ip, service, success, failed, naughty, probe FROM tallies").iterate()) {
      const ip = String(r.ip);
      const x = { success: Number(r.success), failed: Number(r.failed), naughty: Number(r.naughty), probe: Number(r.probe) };
      const weight = x.success + x.failed + x.naughty + x.probe;
      const e = out.get(ip) ?? { service: String(r.service), top: -1, attempts: { success: 0, failed: 0, naughty: 0, probe: 0 } };
      if (weight > e.top) {
        e.top = weight;
        e.service = String(r.service);
      }
      e.attempts.success += x.success;
      e.attempts.failed += x.failed;
      e.attempts.naughty += x.naughty;
      e.attempts.probe += x.probe;
      out.set(ip, e);
    }
  });
  return out;
}

/** Every entry --list shows with filter `f`, sorted as asked. */
export function buildList(ctx: Ctx, f: ListFilter): ListEntry[] {
  const now = ctx.sys.now();
  const want = (s: ListState) => f.states === null || f.states.includes(s);
  const inNet = (ip: string) => f.net === null || inRanges(ip, [f.net]);
  const attempts = allAttempts(ctx);
  const out: ListEntry[] = [];
  const add = (ip: string, state: ListState, rec: ReturnType<typeof parseRecord>, since: number | null, until: number | null) => {
    const a = attempts.get(ip);
    const svc = /(?:^|: |; )(ssh|ftp|smtp|mua): /.exec(rec.reason); // decide()'s reason names it

    out.push({ ip, state, since, until, by: rec.by, operator: rec.operator, service: a ? a.service : svc ? svc[1] : null, reason: rec.reason, attempts: a ? a.attempts : null });
  };
  const fromDir = (dir: string, state: ListState) => {
    const where = path.join(ctx.cfg.ROOT_DIR, dir);
    for (const ip of folderNames(ctx, dir)) {
      if (parseIp(ip) !== ip || !inNet(ip)) continue;
      if (dir === REVIEW_DIR && ipStatus(ctx, ip) !== null) continue; // decided since by an administrator
      const r = readRecord(ctx, path.join(where, ip));
      if (r === null) continue;
      const rec = parseRecord(r.text);
      const until = dir === "block" ? blockEnd(r.text, r.mtimeMs, ctx.cfg.EXPIRE_BLOCK_DAYS) : null;
      add(ip, state, rec, rec.at ?? r.mtimeMs, until);
    }
  };
  if (want("blocked")) fromDir("block", "blocked");
  if (want("allowed")) fromDir("allow", "allowed");
  if (want("pending")) {
    fromDir(REVIEW_DIR, "pending");
    for (const w of withheldBlocks(ctx))
      if (inNet(w.ip)) add(w.ip, "pending", { at: null, by: "withheld", operator: null, reason: `block withheld: ${w.why}`, until: null, length: null }, Date.parse(w.since), null);
  }
  const kept = out.filter((e) => {
    const age = e.since === null ? null : now - e.since;
    if (f.newerMs !== null && (age === null || age > f.newerMs)) return false;
    if (f.olderMs !== null && (age === null || age < f.olderMs)) return false;
    return true;
  });
  if (f.sort === "ip") {
    const key = new Map(kept.map((e) => [e.ip, (ipFamily(e.ip) === 4 ? 0n : 1n << 130n) + ipToBigInt(e.ip)]));
    kept.sort((a, b) => {
      const x = key.get(a.ip) as bigint;
      const y = key.get(b.ip) as bigint;
      return x < y ? -1 : x > y ? 1 : 0;
    });
  } else kept.sort((a, b) => (a.since ?? 0) - (b.since ?? 0) || (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
  return kept;
}

/** "3h ago", "in 7m", "2d ago": the distance from `now`, in its largest whole unit. */
export function relativeAge(ms: number, now: number): string {
  const d = Math.abs(now - ms) / 1000;
  const [n, u] = d < 60 ? [Math.floor(d), "s"] : d < 3600 ? [Math.floor(d / 60), "m"] : d < 86_400 ? [Math.floor(d / 3600), "h"] : [Math.floor(d / 86_400), "d"];
  return ms <= now ? `${n}${u} ago` : `in ${n}${u}`;
}

const zoneByOffset = new Map<number, string>(); // minutes west of UTC → the local zone's short name

/** "2026-11-29 12:34 CET" in the local time zone (TZ), or "2026-11-29 11:34 UTC" with `utc`. */
export function humanTime(ms: number, utc: boolean): string {
  const d = new Date(ms);
  const two = (n: number) => String(n).padStart(2, "0");
  if (utc) return `${d.getUTCFullYear()}-${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())} UTC`;
  // en-US names American zones (EST), en-GB European ones (CET); each says GMT+1 for the other's.
  // Asking Intl costs tens of microseconds, so a list of 100,000 asks once
  // per UTC offset (one zone's names differ only with its offset: CET, CEST).
  const offset = d.getTimezoneOffset();
  let zone = zoneByOffset.get(offset);
  if (zone === undefined) {
    const name = (locale: string) => new Intl.DateTimeFormat(locale, { timeZoneName: "short" }).formatToParts(d).find((p) => p.type === "timeZoneName")?.value ?? "";
    const us = name("en-US");
    zone = us.startsWith("GMT") ? name("en-GB") : us;
    zoneByOffset.set(offset, zone);
  }
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())} ${zone}`;
}

/** The short reason of a list line: the decision's reason without its sample log line. */
export function shortReason(reason: string): string {
  const r = reason.replace(/;? ?e\.g\. ".*$/, "");
  return r.length > 100 ? `${r.slice(0, 99)}…` : r;
}

/** --list as text: one line per address, a header and a count. */
export function formatList(entries: ListEntry[], now: number, utc: boolean): string {
  const when = (ms: number | null, none: string) => (ms === null ? none : `${humanTime(ms, utc)}, ${relativeAge(ms, now)}`);
  const rows = entries.map((e) => [
    e.ip,
    e.state,
    when(e.since, "-"),
    e.state === "blocked" ? when(e.until, "never") : "-",
    e.operator ? `${e.by} (${e.operator})` : e.by,
    e.service ?? "-",
    e.attempts ? `${e.attempts.success}/${e.attempts.failed}/${e.attempts.naughty}/${e.attempts.probe}` : "-",
    shortReason(e.reason),
  ]);
  const head = ["ADDRESS", "STATE", "SINCE", "UNTIL", "BY", "SERVICE", "OK/FAIL/NAUGHTY/PROBE", "REASON"];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(width[i]))).join("  ");
  const count = new Map<string, number>();
  for (const e of entries) count.set(e.state, (count.get(e.state) ?? 0) + 1);
  const total = entries.length === 0 ? "no address matches" : [...count].map(([s, n]) => `${n} ${s}`).join(", ");
  return [line(head), ...rows.map(line), total].join("\n");
}

/** --list: prints the list (or its JSON); exit 0. */
export function listCommand(ctx: Ctx, f: ListFilter, json: boolean): number {
  const entries = buildList(ctx, f);
  const now = ctx.sys.now();
  if (json) {
    const iso = (ms: number | null) => (ms === null ? null : isoTime(ms));
    ctx.sys.out(JSON.stringify({ schema: JSON_SCHEMA_VERSION, kind: "list", generated: iso(now), entries: entries.map((e) => ({ ...e, since: iso(e.since), until: iso(e.until) })) }, null, 1));
  } else ctx.sys.out(formatList(entries, now, f.utc));
  return 0;
}

// ---- 10.3 --json: structured, versioned ---------------------------------------
//
//   "2026-11-29T10:00:00Z 203.0.113.9 block connect: ssh: …"  → { at, ip, action: "block", reason: "connect: ssh: …" }
//   "2026-11-29T10:00:00Z block by admin: --block\nuntil …"    → { at, by: "admin", operator: null, reason: "--block", until, length }
//
// Scripts read --json, so it holds objects, never record strings to parse
// again, and carries "schema": 1; sentry.schema.json (at the top of the
// repository) writes the shape down, and the tests validate every --json
// output against it.

/** One sentry.log line as fields. */
export function logLineJson(line: string): { at: string | null; ip: string; action: string; reason: string } {
  const m = /^(\S+) (\S+) (\S+) ?(.*)$/.exec(line);
  if (!m) return { at: null, ip: "-", action: "unknown", reason: line };
  const at = Date.parse(m[1]);
  return { at: Number.isFinite(at) ? isoTime(at) : null, ip: m[2], action: m[3], reason: m[4] };
}

/** An allow/block/review record as fields, or null. */
function recordJson(text: string | null): Record<string, string | null> | null {
  if (text === null) return null;
  const r = parseRecord(text.split("; until ").join("\nuntil "));
  const iso = (ms: number | null) => (ms === null ? null : isoTime(ms));
  return { at: iso(r.at), by: r.by, operator: r.operator, reason: r.reason, until: iso(r.until), length: r.length };
}

/** The report as the JSON document of sentry.schema.json. */
export function reportJson(r: Report): object {
  const iso = (ms: number | null) => (ms === null ? null : isoTime(ms));
  const entry = (e: ListEntry) => ({ ...e, since: iso(e.since), until: iso(e.until) });
  const out: Record<string, unknown> = {
    schema: JSON_SCHEMA_VERSION,
    kind: "report",
    uniqueIps: r.uniqueIps,
    connections: r.connections,
    allowed: r.allowed,
    blocked: r.blocked,
    logAddresses: r.logAddresses,
    admittedByTcpd: r.admittedByTcpd,
    withheld: r.withheld,
    attention: r.attention.map(entry),
  };
  if (r.top) out.top = r.top;
  if (r.recent) out.recent = r.recent.map(logLineJson);
  if (r.backendFailures) out.backendFailures = r.backendFailures.map(logLineJson);
  if (r.heldBack) out.heldBack = r.heldBack.map(logLineJson);
  if (r.notes) out.notes = r.notes.map((n) => ({ at: n.slice(0, n.indexOf(" ")), text: n.slice(n.indexOf(" ") + 1) }));
  if (r.ip) {
    const x = r.ip;
    out.ip = {
      ip: x.ip, connections: x.connections, status: x.status, firstSeen: x.firstSeen, lastSeen: x.lastSeen,
      allow: recordJson(x.allow), block: recordJson(x.block), evidence: x.evidence,
      history: x.history, // history/IP as written: "blocked N times, last lifted TIME" (section 8.5.1), or null
      ranges: x.ranges, // "block 2001:db8:1:2::/64", "allow 10.0.0.0/8": the ranges that hold it (section 8.4)
      admitted: x.admitted, // why its connections are no longer counted (section 9.1.2), or null
    };
  }
  return out;
}

/** --report --ip=RANGE as the JSON document of sentry.schema.json (kind "range"). */
export function rangeJson(r: RangeRecord): object {
  return { schema: JSON_SCHEMA_VERSION, kind: "range", range: r.range, allow: recordJson(r.allow), block: recordJson(r.block), blockedInside: r.blockedInside };
}

/** The version of every --json document (sentry.schema.json); a change that breaks a reader bumps it. */
export const JSON_SCHEMA_VERSION = 1;

// ==== 11. Install, doctor, update ===========================================
//
// ---- 11.1 --install, --uninstall --------------------------------------------
//
//   $ sentry --install            (run over SSH from 192.0.2.50)
//   allowed 192.0.2.50, the address you are logged in from (SSH_CLIENT)
//   installed /var/db/sentry/sentry
//   add these lines near the top of /etc/hosts.allow, in this order:
//     sshd : /var/db/sentry/hosts.deny : deny
//     sshd : ALL : spawn /var/db/sentry/sentry --connect --ip=%a : allow
//
// The installer's own address is allowed before anything else is done, so a
// mistake in what follows can never lock them out (under sudo, found in utmp;
// else --write waits for it or --force). --write edits hosts.allow only when
// sshd links libwrap: without it the lines do nothing, and a user of
// sentry.pl once read "it doesn't seem to work" as "it works". And only
// where tcpd then grants sshd to no client it refused before (11.1.1).

/**
 * The two hosts.allow lines, deny first: tcpd stops at the first match.
 * The spawn line carries ROOT_DIR=… whenever it is not the default: tcpd
 * runs the command with sshd's environment, so without it the spawned
 * sentry would count and block under /var/db/sentry while tcpd reads the
 * other directory's hosts.deny, and nothing would ever be refused. (The
 * binary could instead derive ROOT_DIR from its own path; an explicit word
 * in the line can be read by the admin and checked by --doctor.)
 */
export function hostsAllowLines(root: string): [string, string] {
  const env = root === DEFAULTS.ROOT_DIR ? "" : `ROOT_DIR=${root} `;
  return [`sshd : ${root}/hosts.deny : deny`, `sshd : ALL : spawn ${env}${root}/sentry --connect --ip=%a : allow`];
}

/**
 * The line between them that lets tcpd admit the allowed without spawning
 * sentry (section 9.1.2). Below the deny line: an address blocked by hand
 * while allow/ still holds it stays refused. Above the spawn line, or it
 * is never reached.
 */
export function hostsAllowedLine(root: string): string {
  return `sshd : ${root}/hosts.allowed : allow`;
}

/**
 * A ROOT_DIR that can be written into hosts.allow: tcpd splits fields at
 * ":" and lists at "," and blanks, expands "%", and runs the spawn command
 * through /bin/sh, so only these characters pass unchanged.
 */
export function checkRootForHostsAllow(root: string): void {
  if (!/^\/[A-Za-z0-9._\/+-]*$/.test(root))
    throw new SentryError(`ROOT_DIR=${JSON.stringify(root)} cannot be written into hosts.allow: use only letters, digits and . _ - + / (tcpd splits at ":" "," and blanks, and the spawn runs through a shell)`, 1);
}

/** True if a hosts.allow line is one sentry (any version) wrote for this ROOT_DIR. */
export function isSentryLine(line: string, root: string): boolean {
  const l = line.trim();
  if (l.startsWith("#")) return false;
  return l.includes(`${root}/hosts.deny`) || l.includes(`${root}/hosts.allowed`) || new RegExp(`spawn\\s.*${root.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/sentry\\S*\\s`).test(l);
}

/** hosts.allow with sentry's lines at the top (the hosts.allowed line when `allowed`) and any older ones of sentry removed. */
export function withSentryLines(text: string, root: string, allowed = false): string {
  const rest = text.split("\n").filter((l) => !isSentryLine(l, root));
  while (rest.length && rest[rest.length - 1] === "") rest.pop();
  // Keep a leading comment block (the file's own header) above our lines.
  let i = 0;
  while (i < rest.length && rest[i].trim().startsWith("#")) i++;
  const [deny, spawn] = hostsAllowLines(root);
  const out = [...rest.slice(0, i), deny, ...(allowed ? [hostsAllowedLine(root)] : []), spawn, ...rest.slice(i)];
  return `${out.join("\n")}\n`;
}

// ---- 11.1.1 Never widen who may connect: tcpd's answer before and after ----
//
//   /etc/hosts.allow  sshd: 10.0.0.0/255.0.0.0        /etc/hosts.deny  sshd: ALL
//   tcpdmatch sshd 203.0.113.50                         → access: denied
//   the same with "sshd : ALL : spawn … : allow" on top → access: granted
//
// tcpd stops at the first rule that matches, so sentry's spawn line, which
// ends in ": allow", grants sshd to every client it matches. On a host whose
// own policy is an allowlist that line would open sshd to the world. So
// before anything is written, and on every --doctor, sentry asks what tcpd
// decides for sshd with and without its lines, for a set of clients chosen
// so the answer is exact for address patterns: every address and network
// named in a rule that can apply to sshd cuts the address space into
// intervals on which each pattern matches all or nothing, and the first and
// last address of every interval is asked (plus the documentation addresses,
// loopback and the administrator's own address). tcpdmatch -d, run on copies
// of the candidate files, is the authority where it is installed; sentry's
// own reading of hosts_access(5) below is used otherwise, and always to know
// whether a verdict depends on something an address does not decide (a host
// name, .domain, @netgroup, KNOWN, UNKNOWN, PARANOID, LOCAL, a /file list,
// user@host, a wildcard, a daemon@host): then the answer is "cannot tell"
// and --install writes nothing.
//
// sentry's hosts.allowed line (section 9.1.2) is compared as what tcpd would
// read through it: the addresses the file lists, put inline on lines of the
// same rule (policyPair). Its guarantee is what it lists, not where it is.
//
// Where the admin's policy denies clients, the lines that keep it restrict
// the spawn to exactly the clients the policy grants: above each hosts.allow
// rule that grants sshd, the same client list with sentry's spawn and
// ": allow" (tcpd reaches it exactly when it would have reached that rule),
// and, when hosts.deny leaves some clients to tcpd's default "grant", one
// line at the end of hosts.allow for ALL EXCEPT the clients hosts.deny names.

export type AccessVerdict = "granted" | "denied";
type Tri = "yes" | "no" | "maybe";

/** One rule of hosts.allow or hosts.deny, as tcpd reads it. */
export interface AccessRule {
  where: string; // "FILE line N", for messages
  text: string; // the rule as written (continuations joined)
  line: number; // first line of the rule, 0-based
  daemons: string[];
  clients: string[];
  clientsText: string; // the client field as written, to copy into a spawn line
  verdict: AccessVerdict; // twist counts as denied: the client never reaches sshd
  plainAllow: boolean; // no option but (at most) "allow": a spawn line above it changes nothing else
}

/** The option keywords of hosts_options(5); any other word in the option field is an error to tcpd. */
const TCPD_OPTIONS = new Set(["allow", "deny", "twist", "spawn", "severity", "umask", "user", "group", "setenv", "banners", "nice", "keepalive", "linger", "rfc931"]);
const TCPD_VALUE_OPTIONS = new Set(["twist", "spawn", "severity", "umask", "user", "group", "setenv", "banners", "linger"]);

/** Splits at the first `sep` outside [brackets] (tcpd's split_at, which IPv6 patterns need). */
function splitAtOutsideBrackets(s: string, sep: string): [string, string] | null {
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "[") depth++;
    else if (s[i] === "]") depth--;
    else if (depth === 0 && s[i] === sep) return [s.slice(0, i), s.slice(i + 1)];
  }
  return null;
}

/**
 * The rules of one tcpwrappers file. As tcpd does: a line ending in "\" goes
 * on with the next, a line whose first character is "#" or that is blank is
 * skipped, a line without ":" is skipped, and so is a last line without its
 * newline ("missing newline": tcpd ignores it, so an admin's last rule may
 * not be in force). With options, the first of allow/deny/twist decides.
 */
export function parseAccessFile(text: string, name: string, isAllow: boolean): AccessRule[] {
  const out: AccessRule[] = [];
  const raw = text.split("\n").slice(0, -1); // the piece after the last "\n" is never read
  for (let i = 0; i < raw.length; i++) {
    const first = i;
    let buf = raw[i];
    while (buf.endsWith("\\") && i + 1 < raw.length) buf = buf.slice(0, -1) + raw[++i];
    if (buf.startsWith("#") || buf.trim() === "") continue;
    const a = splitAtOutsideBrackets(buf, ":");
    if (!a) continue;
    const b = splitAtOutsideBrackets(a[1], ":");
    const clientsText = (b ? b[0] : a[1]).trim();
    const options = b ? b[1].split(/(?<!\\):/).map((o) => o.trim()) : [];
    // tcpd runs the options in order. An unknown keyword, a missing value, or allow/deny before the
    // last option is an error, which ends the match as "deny" (tcpd_jump); so is a bare IPv6 in a
    // rule, whose colons tcpd reads as field separators ("sshd: 2001:db8::1" has options "db8", "", "1").
    let verdict: AccessVerdict = isAllow ? "granted" : "denied";
    for (let k = 0; k < options.length; k++) {
      const [word, ...value] = options[k].split(/\s+/);
      const key = word.toLowerCase();
      if (!TCPD_OPTIONS.has(key) || (TCPD_VALUE_OPTIONS.has(key) && value.join("") === "") || key === "twist") {
        verdict = "denied"; // twist too: the client gets the command, never sshd
        break;
      }
      if (key === "allow" || key === "deny") {
        verdict = key === "allow" && k === options.length - 1 ? "granted" : "denied";
        break;
      }
    }
    const words = (s: string) => s.split(/[,\s]+/).filter((w) => w !== "");
    out.push({
      where: `${name} line ${first + 1}`,
      text: buf.trim(),
      line: first,
      daemons: words(a[0]),
      clients: words(clientsText),
      clientsText,
      verdict,
      plainAllow: verdict === "granted" && (options.length === 0 || (options.length === 1 && options[0].toLowerCase() === "allow")),
    });
  }
  return out;
}

const and3 = (a: Tri, b: Tri): Tri => (a === "no" || b === "no" ? "no" : a === "yes" && b === "yes" ? "yes" : "maybe");
const not3 = (a: Tri): Tri => (a === "yes" ? "no" : a === "no" ? "yes" : "maybe");

/** tcpd's list_match: any pattern matches, then "EXCEPT list" takes some back (nests to the right). */
function listMatch(words: string[], match: (w: string) => Tri): Tri {
  const ex = words.findIndex((w) => w.toUpperCase() === "EXCEPT");
  const head = ex === -1 ? words : words.slice(0, ex);
  const results = head.map(match);
  const any: Tri = results.includes("yes") ? "yes" : results.includes("maybe") ? "maybe" : "no";
  if (any === "no" || ex === -1) return any;
  return and3(any, not3(listMatch(words.slice(ex + 1), match)));
}

/** A daemon pattern against "sshd" (what libwrap in sshd asks about). */
function matchDaemon(w: string): Tri {
  const at = w.indexOf("@");
  if (at !== -1) return matchDaemon(w.slice(0, at)) === "no" ? "no" : "maybe"; // sshd@host: the server address decides
  const u = w.toUpperCase();
  if (u === "ALL") return "yes";
  if (/[*?]/.test(w)) return "maybe";
  if (w.endsWith(".")) return "sshd".startsWith(w.toLowerCase()) ? "yes" : "no";
  return w.toLowerCase() === "sshd" ? "yes" : "no";
}

/** A v4 or v6 network a client pattern names: [first, last] as numbers, or null. */
interface Span {
  family: Family;
  lo: bigint;
  hi: bigint;
}

/** The addresses an address-only client pattern matches, or "host" if names/lookups decide, or null for none. */
export function patternSpan(w: string): Span | "host" | null {
  const u = w.toUpperCase();
  if (u === "ALL") return { family: 4, lo: 0n, hi: (1n << 32n) - 1n }; // (and all of v6: see clientMatches)
  if (w.includes("@") || w.startsWith("/") || ["KNOWN", "UNKNOWN", "PARANOID", "LOCAL"].includes(u)) return "host";
  if (/[*?]/.test(w) || w.startsWith(".")) return "host";
  const v6 = /^\[([0-9a-fA-F:.]+)\](?:\/(\d{1,3}))?$/.exec(w);
  if (v6) {
    const g = parseV6Groups(v6[1]);
    const bits = v6[2] === undefined ? 128 : Number(v6[2]);
    if (!g || bits > 128) return null; // tcpd warns and matches nothing
    const value = g.reduce((acc, x) => (acc << 16n) | BigInt(x), 0n);
    const size = 1n << BigInt(128 - bits);
    const lo = (value / size) * size; // tcpd masks the pattern's own host bits for v6
    return { family: 6, lo, hi: lo + size - 1n };
  }
  if (w.includes("/")) {
    const [net, mask, extra] = w.split("/");
    const n = parseV4Bytes(net);
    if (!n || extra !== undefined) return null;
    let bits: number | null = null;
    if (/^\d{1,2}$/.test(mask) && Number(mask) <= 32) bits = Number(mask);
    else {
      const m = parseV4Bytes(mask);
      if (m) {
        const mv = m.reduce((acc, b) => acc * 256 + b, 0).toString(2).padStart(32, "0");
        if (/^1*0*$/.test(mv)) bits = mv.indexOf("0") === -1 ? 32 : mv.indexOf("0");
      }
    }
    if (bits === null) return "host"; // a mask with holes: not an interval, compare by hand
    const value = BigInt(n.reduce((acc, b) => acc * 256 + b, 0));
    const size = 1n << BigInt(32 - bits);
    if (value % size !== 0n) return null; // host bits set: tcpd matches nothing (checked with tcpdmatch)
    return { family: 4, lo: value, hi: value + size - 1n };
  }
  if (/^[0-9.]+$/.test(w)) {
    if (w.endsWith(".")) {
      // "10.1." is a prefix of the dotted quad: 10.1.0.0/16.
      const parts = w.slice(0, -1).split(".");
      if (parts.length > 3 || parts.some((p) => !/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255)) return null;
      const lo = parts.reduce((acc, p) => acc * 256n + BigInt(p), 0n) << BigInt(8 * (4 - parts.length));
      return { family: 4, lo, hi: lo + (1n << BigInt(8 * (4 - parts.length))) - 1n };
    }
    const ip = parseIp(w);
    if (!ip || ip !== w) return null; // "010.0.0.1" never equals tcpd's spelling of a client
    const value = ipToBigInt(ip);
    return { family: 4, lo: value, hi: value };
  }
  if (w.includes(":") && /^[0-9a-fA-F:.]+$/.test(w)) {
    // A bare IPv6 is compared as a string with tcpd's (RFC 5952) spelling.
    const ip = parseIp(w);
    if (!ip || ip !== w.toLowerCase() || ipFamily(ip) !== 6) return null;
    const value = ipToBigInt(ip);
    return { family: 6, lo: value, hi: value };
  }
  return "host"; // a host name
}

/** A rule ready to be asked about many clients: a hosts.deny of thousands of rules meets thousands of clients. */
interface CompiledRule {
  daemon: Tri; // does its daemon list take sshd
  clients: (Span | "all" | "host" | null)[][]; // its client list split at EXCEPT, each pattern as a span
  verdict: AccessVerdict;
}

function compileRules(rules: AccessRule[]): CompiledRule[] {
  return rules.map((r) => {
    const clients: CompiledRule["clients"] = [[]];
    for (const w of r.clients) {
      const u = w.toUpperCase();
      if (u === "EXCEPT") clients.push([]);
      else clients[clients.length - 1].push(u === "ALL" ? "all" : patternSpan(w));
    }
    return { daemon: listMatch(r.daemons, matchDaemon), clients, verdict: r.verdict };
  });
}

/** list_match over compiled client patterns for one address. */
function clientsMatch(parts: CompiledRule["clients"], at: number, family: Family, v: bigint): Tri {
  let any: Tri = "no";
  for (const s of parts[at]) {
    if (s === "all" || (s !== null && s !== "host" && s.family === family && v >= s.lo && v <= s.hi)) {
      any = "yes";
      break;
    }
    if (s === "host") any = "maybe";
  }
  if (any === "no" || at + 1 >= parts.length) return any;
  return and3(any, not3(clientsMatch(parts, at + 1, family, v)));
}

/** What tcpd may decide for sshd from `ip`: one verdict, or both when names or lookups decide. */
function compiledVerdicts(rules: CompiledRule[], ip: string): Set<AccessVerdict> {
  return compiledVerdictsAt(rules, ipFamily(ip), ipToBigInt(ip));
}

/** compiledVerdicts for the address of value `v` (a range's first or last, section 9.1.2, need not be a client's spelling). */
function compiledVerdictsAt(rules: CompiledRule[], family: Family, v: bigint): Set<AccessVerdict> {
  const possible = new Set<AccessVerdict>();
  for (const r of rules) {
    if (r.daemon === "no") continue;
    const m = and3(r.daemon, clientsMatch(r.clients, 0, family, v));
    if (m === "no") continue;
    possible.add(r.verdict);
    if (m === "yes") return possible;
  }
  possible.add("granted"); // no rule matched: tcpd grants
  return possible;
}

/** What tcpd may decide for sshd from `ip` under hosts.allow's and hosts.deny's rules. */
export function accessVerdicts(allow: AccessRule[], deny: AccessRule[], ip: string): Set<AccessVerdict> {
  return compiledVerdicts(compileRules([...allow, ...deny]), ip);
}

/** Whether a rule can apply to sshd at all. */
function forSshd(r: AccessRule): boolean {
  return listMatch(r.daemons, matchDaemon) !== "no";
}

/**
 * The clients to ask about: the first and last address of every interval
 * the address patterns of `rules` cut the v4 and v6 spaces into, plus
 * documentation addresses, loopback and `extra` (the admin's address).
 */
export function sampleClients(rules: AccessRule[], extra: string[]): string[] {
  const cuts: Record<Family, Set<bigint>> = { 4: new Set([0n]), 6: new Set([0n]) };
  for (const r of rules.filter(forSshd)) {
    for (const w of r.clients) {
      const s = patternSpan(w);
      if (s === null || s === "host") continue;
      cuts[s.family].add(s.lo);
      cuts[s.family].add(s.hi + 1n);
    }
  }
  const out = new Set<string>(["192.0.2.1", "198.51.100.1", "203.0.113.50", "127.0.0.1", "2001:db8::1", "::1"]);
  for (const fam of [4, 6] as Family[]) {
    const top = fam === 4 ? 1n << 32n : 1n << 128n;
    const sorted = [...cuts[fam]].filter((c) => c < top).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    sorted.push(top);
    for (let i = 0; i + 1 < sorted.length; i++) {
      for (const v of [sorted[i], sorted[i + 1] - 1n]) {
        const ip = bigIntToIp(fam, v);
        if (ip !== null) out.add(ip);
      }
    }
  }
  for (const e of extra) out.add(e);
  return [...out];
}

/** The canonical spelling of a number in `family`, or null where no client can have it. */
function bigIntToIp(family: Family, v: bigint): string | null {
  if (family === 4) return parseIp([24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join("."));
  const g: number[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) g.push(Number((v >> s) & 0xffffn));
  return parseIp(formatV6(g));
}

/** A policy to ask about: the text of hosts.allow and hosts.deny. */
export interface Policy {
  allow: string;
  deny: string;
}

export interface PolicyComparison {
  by: string; // "tcpdmatch" or "sentry's reading of hosts_access(5)"
  clients: number; // how many addresses were compared
  gained: string[]; // denied before, granted after
  lost: string[]; // granted before, denied after
  unsure: string[]; // rules whose patterns an address does not decide, where they could change a verdict
}

/** Asks tcpdmatch -d in a private temporary directory; null when tcpdmatch is not installed. */
function tcpdmatchVerdicts(ctx: Ctx, policy: Policy, clients: string[]): Map<string, AccessVerdict> | null {
  const probe = ctx.sys.run("tcpdmatch", [], { timeoutMs: ctx.cfg.COMMAND_TIMEOUT_SECONDS * 1000 });
  if (probe.error === "not found") return null;
  const fsys = ctx.sys.fs;
  const tmp = path.join(ctx.sys.env.TMPDIR || "/tmp", `sentry-policy-${process.pid}-${ctx.sys.now()}`);
  try {
    fsys.mkdirSync(tmp, { mode: 0o700 }); // fails if it exists: no one else's directory is used
  } catch (e) {
    throw ioError("create", tmp, e);
  }
  try {
    fsys.writeFileSync(path.join(tmp, "hosts.allow"), policy.allow);
    fsys.writeFileSync(path.join(tmp, "hosts.deny"), policy.deny);
    const out = new Map<string, AccessVerdict>();
    for (const ip of clients) {
      const r = ctx.sys.run("tcpdmatch", ["-d", "sshd", ip], { cwd: tmp, timeoutMs: ctx.cfg.COMMAND_TIMEOUT_SECONDS * 1000 });
      const m = /^access:\s+(granted|denied|delegated)\s*$/m.exec(r.stdout);
      if (r.error !== "" || !m) throw new SentryError(`tcpdmatch -d sshd ${ip} gave no verdict: ${r.error || r.stderr.trim() || r.stdout.trim()}`, 2);
      out.set(ip, m[1] === "granted" ? "granted" : "denied"); // delegated: twist, the client never reaches sshd
    }
    return out;
  } finally {
    fsys.rmSync(tmp, { recursive: true, force: true });
  }
}

/** What tcpd decides for sshd under `before` and `after`, client by client. */
export function comparePolicies(ctx: Ctx, before: Policy, after: Policy, extra: string[]): PolicyComparison {
  const files = (p: Policy) => ({
    allow: parseAccessFile(p.allow, ctx.cfg.HOSTS_ALLOW, true),
    deny: parseAccessFile(p.deny, ctx.cfg.HOSTS_DENY, false),
  });
  const b = files(before);
  const a = files(after);
  const clients = sampleClients([...b.allow, ...b.deny, ...a.allow, ...a.deny], extra);
  // tcpdmatch costs a process per client and rereads both files each time: a hosts.deny of
  // thousands of addresses (the old scripts wrote one rule each) is left to sentry's own reading.
  const many = clients.length > ctx.cfg.POLICY_TCPDMATCH_MAX;
  const tb = many ? null : tcpdmatchVerdicts(ctx, before, clients);
  const ta = tb === null ? null : tcpdmatchVerdicts(ctx, after, clients);
  const by = tb !== null ? "tcpdmatch" : `sentry's reading of hosts_access(5)${many ? ` (more than POLICY_TCPDMATCH_MAX=${ctx.cfg.POLICY_TCPDMATCH_MAX} clients for tcpdmatch)` : ""}`;
  const res: PolicyComparison = { by, clients: clients.length, gained: [], lost: [], unsure: [] };
  let anyUnsure = false;
  const cb = compileRules([...b.allow, ...b.deny]);
  const ca = compileRules([...a.allow, ...a.deny]);
  for (const ip of clients) {
    const vb = compiledVerdicts(cb, ip);
    const va = compiledVerdicts(ca, ip);
    if (vb.size > 1 || va.size > 1) anyUnsure = true;
    const before1 = tb?.get(ip) ?? (vb.size === 1 ? [...vb][0] : null);
    const after1 = ta?.get(ip) ?? (va.size === 1 ? [...va][0] : null);
    if (before1 === "denied" && after1 === "granted") res.gained.push(ip);
    if (before1 === "granted" && after1 === "denied") res.lost.push(ip);
  }
  if (anyUnsure) {
    for (const r of [...b.allow, ...b.deny, ...a.allow, ...a.deny]) {
      if (!forSshd(r)) continue;
      const why = r.daemons.find((w) => matchDaemon(w) === "maybe") ?? r.clients.find((w) => patternSpan(w) === "host");
      const text = `${r.where} ("${r.text}") uses ${why}`;
      if (why !== undefined && !res.unsure.includes(text)) res.unsure.push(text);
    }
  }
  return res;
}

/** A hosts.allow line of sentry's deny pair (any ROOT_DIR): it only ever denies. */
function isSentryDenyLine(line: string): boolean {
  return !line.trim().startsWith("#") && /^\s*sshd\s*:\s*\/\S*\/hosts\.deny\s*:\s*deny\s*$/.test(line);
}

/** A hosts.allow line of sentry's hosts.allowed (any ROOT_DIR): it grants only what the host's policy grants (section 9.1.2). */
function isSentryAllowedLine(line: string): boolean {
  return !line.trim().startsWith("#") && /^\s*sshd\s*:\s*\/\S*\/hosts\.allowed\s*:\s*allow\s*$/.test(line);
}

/** A hosts.allow line that spawns sentry --connect (any ROOT_DIR, any version). */
function isSentrySpawnLine(line: string): boolean {
  return !line.trim().startsWith("#") && /\bspawn\s.*\/sentry\S*\s.*(--connect|\s-c)\b/.test(line);
}

/**
 * hosts.allow with sentry's lines placed so that tcpd grants sshd to
 * exactly the clients it granted before (see the top of 11.1.1), or null
 * when the policy's shape does not allow that to be done exactly.
 */
export function keepPolicyLines(allowText: string, denyText: string, root: string, allowed = false): string | null {
  const [denyLine] = hostsAllowLines(root);
  const spawn = (clients: string) => hostsAllowLines(root)[1].replace(" : ALL : ", ` : ${clients} : `);
  const lines = allowText.split("\n").filter((l) => !isSentryLine(l, root) && !isSentryDenyLine(l) && !isSentryAllowedLine(l) && !isSentrySpawnLine(l));
  while (lines.length && lines[lines.length - 1] === "") lines.pop();
  const text = lines.length ? `${lines.join("\n")}\n` : "";
  const rules = parseAccessFile(text, "hosts.allow", true);
  const grantAt = new Map<number, AccessRule>();
  for (const r of rules) {
    if (listMatch(r.daemons, matchDaemon) === "no" || r.verdict !== "granted") continue;
    if (listMatch(r.daemons, matchDaemon) === "maybe" || !r.plainAllow) return null; // sshd@host, or options sentry cannot repeat
    grantAt.set(r.line, r);
  }
  // Clients that no hosts.allow rule takes reach hosts.deny; those it leaves to the default are granted.
  const denyRules = parseAccessFile(denyText, "hosts.deny", false).filter(forSshd);
  let tail: string | null = null;
  const denyAll = denyRules.some((r) => listMatch(r.daemons, matchDaemon) === "yes" && r.verdict === "denied" && r.clients.length > 0 && r.clients[0].toUpperCase() === "ALL" && !r.clients.some((w) => w.toUpperCase() === "EXCEPT"));
  if (!denyAll) {
    if (denyRules.some((r) => listMatch(r.daemons, matchDaemon) !== "yes" || r.verdict !== "denied" || r.clients.some((w) => w.toUpperCase() === "EXCEPT"))) return null;
    const denied = denyRules.flatMap((r) => r.clients);
    tail = spawn(denied.length ? `ALL EXCEPT ${denied.join(" ")}` : "ALL");
  }
  let i = 0;
  while (i < lines.length && lines[i].trim().startsWith("#")) i++;
  // hosts.allowed lists only what the policy grants (section 9.1.2): it may stand above every rule.
  const out = [...lines.slice(0, i), denyLine, ...(allowed ? [hostsAllowedLine(root)] : [])];
  for (let j = i; j < lines.length; j++) {
    const r = grantAt.get(j);
    if (r) out.push(spawn(r.clientsText));
    out.push(lines[j]);
  }
  if (tail !== null) out.push(tail);
  // tcpd reads a line into 2048 bytes (BUFLEN): a longer one is skipped and its rest read as a new rule.
  if (out.some((l) => l.length >= 2000)) return null;
  return `${out.join("\n")}\n`;
}

/**
 * The policy without sentry's lines, and with its lines minus the deny line
 * (which only narrows). In `after`, the hosts.allowed line is replaced by
 * the addresses `allowed` (the file's text) lists, on lines of the same
 * rule: a /file pattern is something sentry's reading cannot decide, and
 * tcpdmatch, run on copies, must see what tcpd would read.
 */
export function policyPair(allowText: string, denyText: string, allowed = ""): { before: Policy; after: Policy } {
  const lines = allowText.split("\n");
  const words = allowed.split(/\s+/).filter((w) => w !== "");
  const inline: string[] = [];
  for (let i = 0; i < words.length; i += 40) inline.push(`sshd : ${words.slice(i, i + 40).join(" ")} : allow`); // 40 words of at most 46 characters: under tcpd's 2048-byte line
  return {
    before: { allow: lines.filter((l) => !isSentryDenyLine(l) && !isSentryAllowedLine(l) && !isSentrySpawnLine(l)).join("\n"), deny: denyText },
    after: { allow: lines.filter((l) => !isSentryDenyLine(l)).flatMap((l) => (isSentryAllowedLine(l) ? inline : [l])).join("\n"), deny: denyText },
  };
}

/** Reads a tcpwrappers file; a missing one is empty, as for tcpd. */
function readPolicyFile(ctx: Ctx, file: string): string {
  try {
    return ctx.sys.fs.readFileSync(file, "utf8");
  } catch (e) {
    if (errCode(e) === "ENOENT") return "";
    throw ioError("read", file, e);
  }
}

/** The ROOT_DIR a spawn line hands to sentry: its ROOT_DIR=… word, else the default. */
export function spawnedRoot(line: string): string {
  const words = line.replace(/^.*?\bspawn\s+/, "").split(/\s+/);
  for (const w of words) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(w);
    if (!m) break;
    if (m[1] === "ROOT_DIR") return m[2];
  }
  return DEFAULTS.ROOT_DIR;
}

// ---- 11.1.2 The installer's own address, also under sudo --------------------
//
// sudo's env_reset drops SSH_CLIENT, so "sudo sentry --install" saw no
// address and allowed nobody, silently. The login records know it: utmp
// (struct utmp, 384 bytes a record on Linux) holds one USER_PROCESS record
// per login session, with the terminal, the user and the client's address.
// As `who -m` does, the session on this process's terminal is taken first;
// else the one address SUDO_USER's sessions come from. Several, or none:
// the admin is told the exact command to allow theirs.

export interface UtmpEntry {
  type: number;
  line: string; // "pts/0"
  user: string;
  host: string;
  addr: string | null; // ut_addr_v6, or the host field when it is an address
}

const UTMP_FILES = ["/run/utmp", "/var/run/utmp"]; // glibc's _PATH_UTMP (and its older name)
const UTMP_RECORD = 384; // sizeof(struct utmp) on Linux (x86_64, aarch64; 32-bit time fields)
const USER_PROCESS = 7;

/** The records of a utmp file (Linux glibc layout). */
export function parseUtmp(buf: Buffer): UtmpEntry[] {
  const out: UtmpEntry[] = [];
  const str = (off: number, len: number) => {
    const b = buf.subarray(off, off + len);
    const z = b.indexOf(0);
    return b.subarray(0, z === -1 ? len : z).toString("latin1");
  };
  for (let off = 0; off + UTMP_RECORD <= buf.length; off += UTMP_RECORD) {
    const type = buf.readInt16LE(off);
    const host = str(off + 76, 256);
    const a = buf.subarray(off + 348, off + 364);
    let addr: string | null = null;
    if (a.subarray(4).every((x) => x === 0) && a.readUInt32BE(0) !== 0) addr = parseIp([...a.subarray(0, 4)].join("."));
    else if (!a.every((x) => x === 0)) addr = parseIp(Array.from({ length: 8 }, (_, i) => a.readUInt16BE(i * 2).toString(16)).join(":"));
    out.push({ type, line: str(off + 8, 32), user: str(off + 44, 32), host, addr: addr ?? parseIp(host) });
  }
  return out;
}

/** Where the installing administrator is logged in from, and how that was found. */
export function installerAddress(ctx: Ctx): { ip: string | null; how: string; candidates: string[] } {
  const env = ctx.sys.env;
  const ssh = (env.SSH_CLIENT || env.SSH_CONNECTION || "").split(" ")[0];
  if (ssh) {
    const ip = parseIp(ssh);
    return { ip, how: ip ? "SSH_CLIENT" : `SSH_CLIENT starts with ${JSON.stringify(ssh)}, not an address`, candidates: [] };
  }
  let entries: UtmpEntry[] = [];
  let file = UTMP_FILES[0];
  for (const f of UTMP_FILES) {
    try {
      entries = parseUtmp(ctx.sys.fs.readFileSync(f)).filter((e) => e.type === USER_PROCESS && e.addr !== null);
      file = f;
      break;
    } catch (e) {
      if (errCode(e) !== "ENOENT") ctx.sys.warn(`cannot read ${f}: ${errText(e)}`);
    }
  }
  let tty = "";
  try {
    tty = ctx.sys.fs.readlinkSync("/proc/self/fd/0").replace(/^\/dev\//, "");
  } catch (e) {
    if (errCode(e) !== "ENOENT") ctx.sys.warn(`cannot tell this terminal: ${errText(e)}`);
  }
  const onTty = entries.find((e) => tty !== "" && e.line === tty);
  if (onTty) return { ip: onTty.addr, how: `the login session on ${tty} in ${file}`, candidates: [] };
  const user = env.SUDO_USER ?? "";
  const mine = [...new Set(entries.filter((e) => user !== "" && e.user === user).map((e) => e.addr as string))];
  if (mine.length === 1) return { ip: mine[0], how: `the login session of ${user} (SUDO_USER) in ${file}`, candidates: [] };
  return { ip: null, how: user ? `SUDO_USER=${user} has ${mine.length} login sessions with an address in ${file}` : `no SSH_CLIENT, and no login session on this terminal in ${file}`, candidates: mine };
}

/** Where sshd is: SSHD_PATH, else the usual places. */
export function findSshd(ctx: Ctx): string | null {
  if (ctx.cfg.SSHD_PATH) return ctx.cfg.SSHD_PATH;
  for (const p of ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd", "/usr/bin/sshd"]) {
    if (ctx.sys.fs.existsSync(p)) return p;
  }
  return null;
}

/**
 * Whether `bin` links libwrap: `ldd` where there is one, else the ELF's
 * dynamic string table (a NEEDED entry is the name as a NUL-ended string).
 */
export function linksLibwrap(ctx: Ctx, bin: string): boolean {
  const r = ctx.sys.run("ldd", [bin]);
  if (r.error === "") return /libwrap\.so/.test(r.stdout);
  try {
    return ctx.sys.fs.readFileSync(bin).includes("libwrap.so");
  } catch (e) {
    throw ioError("read", bin, e);
  }
}

/**
 * What sshd's MaxAuthTries costs, from `sshd -T` (the configuration sshd
 * would run with). Every connection a bot opens before sentry decides gets
 * MaxAuthTries guesses: OpenSSH's default 6 gave a bot 18 against a real
 * sshd 9.2 (issue 16), MaxAuthTries 3 halves that, and a person with ssh's
 * 3 password prompts or an agent with 3 keys loses nothing. Advice, not a
 * fault (the line is OK either way): sshd's default is what most servers run.
 */
export function maxAuthTriesAdvice(ctx: Ctx, sshd: string): string {
  const r = ctx.sys.run(sshd, ["-T"]);
  const n = /^maxauthtries (\d+)$/m.exec(r.stdout)?.[1];
  if (r.error !== "" || r.status !== 0 || n === undefined)
    return `cannot ask ${sshd} -T for MaxAuthTries (${(r.error || r.stderr.trim().split("\n")[0] || `exit ${r.status}`).slice(0, 120)}): with more than ${SUGGESTED_MAX_AUTH_TRIES}, a bot gets that many guesses per connection`;
  if (Number(n) > SUGGESTED_MAX_AUTH_TRIES)
    return `sshd allows MaxAuthTries ${n}: each connection a bot opens before sentry decides gets ${n} guesses; "MaxAuthTries ${SUGGESTED_MAX_AUTH_TRIES}" in sshd_config cuts them (ssh asks 3 passwords, so people lose nothing)`;
  return `sshd allows MaxAuthTries ${n} (at most ${SUGGESTED_MAX_AUTH_TRIES}: few guesses per connection)`;
}

/** The MaxAuthTries --doctor suggests: ssh's own NumberOfPasswordPrompts. */
const SUGGESTED_MAX_AUTH_TRIES = 3;

/** The text shown when tcpwrappers cannot work: the two other ways to run sentry. */
function alternativesText(root: string): string {
  return [
    "Without libwrap, /etc/hosts.allow is ignored by sshd. Instead, either:",
    `  run "${root}/sentry --scan" every minute (cron: * * * * * ${root}/sentry --scan,`,
    "  or the systemd service and timer shown in README.md), or",
    "  add to the top of /etc/pam.d/sshd:",
    `    auth optional pam_exec.so quiet ${root}/sentry --connect`,
  ].join("\n");
}

/** Copies the running binary to ROOT_DIR/sentry, atomically; nothing if it is that file. */
function installBinary(ctx: Ctx): string {
  const target = path.join(ctx.cfg.ROOT_DIR, "sentry");
  const fsys = ctx.sys.fs;
  const src = fsys.statSync(ctx.sys.execPath);
  const dst = fsys.statSync(target, { throwIfNoEntry: false });
  if (dst && dst.ino === src.ino && dst.dev === src.dev) return `${target} is this binary already`;
  const tmp = path.join(ctx.cfg.ROOT_DIR, `.sentry.tmp-${process.pid}`);
  try {
    fsys.copyFileSync(ctx.sys.execPath, tmp);
    fsys.chmodSync(tmp, 0o755);
    const fd = fsys.openSync(tmp, "r");
    try {
      fsys.fsyncSync(fd);
    } finally {
      fsys.closeSync(fd);
    }
    fsys.renameSync(tmp, target); // a running copy keeps its old inode: no ETXTBSY
  } catch (e) {
    try {
      fsys.unlinkSync(tmp);
    } catch (e2) {
      if (errCode(e2) !== "ENOENT") ctx.sys.warn(`cannot remove ${tmp}: ${errText(e2)}`);
    }
    throw ioError("install the binary as", target, e);
  }
  return `installed ${target}`;
}

/** Writes a backup of `file` beside it and returns its name. */
function backup(ctx: Ctx, file: string, text: string): string {
  const name = `${file}.sentry-backup-${isoTime(ctx.sys.now()).replace(/[-:]/g, "")}`;
  writeAtomic(ctx, name, text, 0o644);
  return name;
}

/** --install [--write] [--force]. */
export function install(ctx: Ctx, write: boolean, force = false, timer = false): number {
  const root = ctx.cfg.ROOT_DIR;
  checkRootForHostsAllow(root);
  ensureRoot(ctx);
  // 1. The installer's own address, before anything can lock them out.
  const who = installerAddress(ctx);
  const me = who.ip;
  const self = `${root === DEFAULTS.ROOT_DIR ? "" : `ROOT_DIR=${root} `}${path.join(root, "sentry")}`;
  if (me) {
    if (ipStatus(ctx, me) === "allowed") ctx.sys.out(`${me}, the address you are logged in from, is allowed`);
    else {
      withLock(ctx, () => setAllowed(ctx, me, "install", `the installing administrator's address (${who.how})`));
      ctx.sys.out(`allowed ${me}, the address you are logged in from (${who.how})`);
    }
  } else {
    const cmds = who.candidates.length ? who.candidates.map((ip) => `  ${self} --ip=${ip} --allow`) : [`  ${self} --ip=YOUR.ADDRESS --allow`];
    ctx.sys.warn(
      [
        `WARNING: could not tell the address you are logged in from (${who.how}; sudo drops SSH_CLIENT), so none was allowed.`,
        "Once sentry runs, a few failed logins can block you. Allow your address first:",
        ...cmds,
        `(your address: the first word of $SSH_CLIENT in your SSH session, or run: sudo --preserve-env=SSH_CLIENT ${path.join(root, "sentry")} --install)`,
      ].join("\n"),
    );
  }
  // hosts.allowed before the plan: the plan checks what tcpd would admit from it (section 9.1.2).
  withLock(ctx, () => writeHostsAllowed(ctx));
  // 2. The binary, its manual and its completion.
  ctx.sys.out(installBinary(ctx));
  const docs = installDocs(ctx);
  // 3. The first read of the logs (up to FIRST_SCAN_MB each) happens now,
  //    not inside the first login that crosses the threshold.
  const res = withIndex(ctx, (db) => scanLogs(ctx, db, ctx.cfg.SCAN_RUN_SECONDS));
  for (const n of res.notes) ctx.sys.warn(n);
  ctx.sys.out(`read ${res.readable} of ${res.sources} logs once (${res.bytes} bytes): from now on a connect reads only new lines`);
  // 4. The hosts.allow lines, placed so that no client gains access (11.1.1).
  const fw = firewallBackends.filter((b) => b.enabled(ctx.cfg));
  for (const b of fw) ctx.sys.out(`\n${b.name}: sentry fills the set; load this rule yourself:\n${b.rules(ctx.cfg)}`);
  const nftOffer = nftablesOffer(ctx);
  if (nftOffer !== null) ctx.sys.out(`\n${nftOffer}`);
  const file = ctx.cfg.HOSTS_ALLOW;
  const text = readPolicyFile(ctx, file);
  const plan = planHostsAllow(ctx, text, readPolicyFile(ctx, ctx.cfg.HOSTS_DENY), me);
  const next = plan.text;
  const nextSteps = "\nnext: sentry --test-log on your auth log shows what sentry reads; then sentry --doctor checks the whole chain";
  if (!write) {
    if (next === null) {
      ctx.sys.out(`\n${plan.why}`);
      return 2;
    }
    if (plan.why === "") {
      const lines = withSentryLines("", root, ctx.cfg.ALLOWED_TO_TCPWRAPPERS).trimEnd().split("\n");
      ctx.sys.out(`\nadd these lines near the top of ${file}, in this order (or run --install --write):\n${lines.map((l) => `  ${l}`).join("\n")}`);
    } else ctx.sys.out(`\n${plan.why}\n${file} would then read (+ marks sentry's lines; or run --install --write):\n${markAdded(text, next, root)}`);
    ctx.sys.out(nextSteps);
    return docs;
  }
  if (!me && !force) {
    ctx.sys.warn(`not editing ${file}: no address of yours is allowed (see above); allow it first, or run --install --write --force`);
    return 1;
  }
  const sshd = findSshd(ctx);
  if (sshd === null || !linksLibwrap(ctx, sshd)) {
    ctx.sys.warn(`not editing ${file}: ${sshd === null ? "no sshd found (set SSHD_PATH)" : `${sshd} does not link libwrap`}`);
    // hosts.allow would do nothing: the timer is what protects this server.
    const code = Math.max(docs, installTimer(ctx));
    ctx.sys.out(`(to decide at login instead of every minute, add to the top of /etc/pam.d/sshd:\n  auth optional pam_exec.so quiet ${path.join(root, "sentry")} --connect)`);
    return code;
  }
  const timerCode = timer ? installTimer(ctx) : 0;
  if (next === null) {
    ctx.sys.warn(`not editing ${file}: it would let in clients your policy denies, and sentry cannot place its lines exactly`);
    ctx.sys.out(plan.why);
    return 2;
  }
  if (next === text) {
    ctx.sys.out(`${file} already has sentry's lines, in the right order`);
    ctx.sys.out(nextSteps);
    return Math.max(docs, timerCode);
  }
  if (plan.why !== "") ctx.sys.out(plan.why);
  if (text !== "") ctx.sys.out(`backup: ${backup(ctx, file, text)}`);
  writeAtomic(ctx, file, next, 0o644);
  ctx.sys.out(`added to ${file}:\n${markAdded(text, next, root).split("\n").filter((l) => l.startsWith("+")).map((l) => `  ${l.slice(2)}`).join("\n")}`);
  ctx.sys.out(`checked with ${plan.by}: no client gains access to sshd that it did not have (${plan.clients} addresses compared)`);
  ctx.sys.out(nextSteps);
  return Math.max(docs, timerCode);
}

/**
 * Where sentry's lines go in hosts.allow. The usual pair at the top when
 * that grants no client the policy denies; else the lines that keep the
 * policy (keepPolicyLines), verified to give every client the verdict it had;
 * else null, and why. `why` is "" for the usual pair.
 */
function planHostsAllow(ctx: Ctx, allowText: string, denyText: string, me: string | null): { text: string | null; why: string; by: string; clients: number } {
  const root = ctx.cfg.ROOT_DIR;
  const extra = me ? [me] : [];
  const before = policyPair(allowText, denyText).before;
  const allowed = ctx.cfg.ALLOWED_TO_TCPWRAPPERS;
  const listed = readHostsAllowed(ctx) ?? "";
  const plain = withSentryLines(allowText, root, allowed);
  const c = comparePolicies(ctx, before, policyPair(plain, denyText, listed).after, extra);
  if (c.gained.length === 0 && c.unsure.length === 0) return { text: plain, why: "", by: c.by, clients: c.clients };
  const files = `${ctx.cfg.HOSTS_ALLOW} and ${ctx.cfg.HOSTS_DENY}`;
  const shown = (ips: string[]) => `${ips.slice(0, 5).join(", ")}${ips.length > 5 ? `, and ${ips.length - 5} more` : ""}`;
  if (c.unsure.length) {
    return {
      text: null,
      by: c.by,
      clients: c.clients,
      why: [
        `${files} decide sshd access by more than addresses: ${c.unsure.join("; ")}.`,
        `sentry compares what tcpd decides for addresses only, so it cannot be sure its spawn line ("... : allow") lets in no one your policy denies, and writes nothing.`,
        `Add by hand, at the top: ${hostsAllowLines(root)[0]}`,
        `and above each of your rules that grants sshd, the same client list with: spawn ${path.join(root, "sentry")} --connect --ip=%a : allow`,
      ].join("\n"),
    };
  }
  const why = `${files} deny sshd to some clients (${shown(c.gained)}: ${c.by}, ${c.clients} addresses compared), and the usual line "${hostsAllowLines(root)[1]}" would let them in. sentry spawns only for the clients your own rules grant.`;
  const keep = keepPolicyLines(allowText, denyText, root, allowed);
  if (keep === null) return { text: null, by: c.by, clients: c.clients, why: `${why}\nsentry cannot place its lines exactly for these rules (an option other than allow, a daemon@host pattern, EXCEPT in ${ctx.cfg.HOSTS_DENY}, or more addresses than one tcpd line holds): add its spawn (": spawn ${path.join(root, "sentry")} --connect --ip=%a : allow") above each rule that grants sshd, with that rule's clients, by hand.` };
  const k = comparePolicies(ctx, before, policyPair(keep, denyText, listed).after, extra);
  // tcpd ignores a last line without its newline; sentry's file has one, which would switch that rule on.
  const unended = allowText !== "" && !allowText.endsWith("\n") ? ` (the last line of ${ctx.cfg.HOSTS_ALLOW} has no newline, so tcpd ignores it today: end it, or remove it)` : "";
  if (k.gained.length || k.lost.length || k.unsure.length)
    return { text: null, by: k.by, clients: k.clients, why: `${why}\nThe lines below would still change who gets in (${shown([...k.gained, ...k.lost])})${unended}, so sentry writes nothing:\n${markAdded(allowText, keep, root)}` };
  return { text: keep, why, by: k.by, clients: k.clients };
}

/** `after` line by line, "+ " before the lines `before` does not have (after only inserts lines). */
function markAdded(before: string, after: string, root: string): string {
  const old = before.split("\n");
  let i = 0;
  const out: string[] = [];
  for (const l of after.replace(/\n$/, "").split("\n")) {
    while (i < old.length && old[i] !== l && (isSentryLine(old[i], root) || isSentryDenyLine(old[i]) || isSentryAllowedLine(old[i]) || isSentrySpawnLine(old[i]))) i++;
    if (i < old.length && old[i] === l) {
      out.push(`  ${l}`);
      i++;
    } else out.push(`+ ${l}`);
  }
  return out.join("\n");
}

// ---- 11.1.3 The manual, the completion and the scan timer ---------------------
//
//   $ sentry --install --write          (sshd without libwrap)
//   wrote /usr/local/share/man/man8/sentry.8
//   wrote /etc/systemd/system/sentry-scan.service and sentry-scan.timer; enabled: systemctl enable --now sentry-scan.timer
//
// Where sshd does not link libwrap, hosts.allow does nothing and no connect
// ever runs sentry: a timer running --scan every minute is then the only
// thing that decides. The service runs with the least the scan needs: it
// writes only ROOT_DIR (ProtectSystem=strict with ReadWritePaths=), gets no
// new privileges, its own /tmp, and the idle I/O class, so a scan of a large
// log never slows the services it protects. Without systemd as PID 1 (a
// container, a SysV init) the same is one line in CRON_FILE.

/** sentry-scan.service and sentry-scan.timer for ROOT_DIR `root`. */
export function scanUnits(root: string): { service: string; timer: string } {
  const env = root === DEFAULTS.ROOT_DIR ? "" : `Environment=ROOT_DIR=${root}\n`;
  const service = [
    "[Unit]",
    "Description=sentry: read the logs and block brute-force attackers",
    "Documentation=man:sentry(8)",
    "",
    "[Service]",
    "Type=oneshot",
    `${env}ExecStart=${path.join(root, "sentry")} --scan`,
    "ProtectSystem=strict",
    `ReadWritePaths=${root}`,
    "PrivateTmp=yes",
    "NoNewPrivileges=yes",
    "Nice=19",
    "IOSchedulingClass=idle",
    "",
  ].join("\n");
  const timer = [
    "[Unit]",
    "Description=sentry: run sentry --scan every minute",
    "Documentation=man:sentry(8)",
    "",
    "[Timer]",
    "OnBootSec=1min",
    "OnUnitActiveSec=1min",
    "AccuracySec=10s",
    "",
    "[Install]",
    "WantedBy=timers.target",
    "",
  ].join("\n");
  return { service, timer };
}

/** The cron line of the same timer, where systemd does not run. */
export function scanCronLine(root: string): string {
  const env = root === DEFAULTS.ROOT_DIR ? "" : `ROOT_DIR=${root} `;
  return `# sentry: read the logs and block brute-force attackers (written by sentry --install)\n* * * * * root ${env}nice -n 19 ${path.join(root, "sentry")} --scan >/dev/null 2>&1\n`;
}

/** True where PID 1 is systemd: it creates /run/systemd/system at boot (sd_booted(3)). */
function systemdRuns(ctx: Ctx): boolean {
  return ctx.sys.fs.existsSync("/run/systemd/system");
}

/** Where the timer lives, if --install wrote one: the unit, or the cron file. */
export function installedTimer(ctx: Ctx): string | null {
  const unit = path.join(ctx.cfg.UNIT_DIR, "sentry-scan.timer");
  if (ctx.sys.fs.existsSync(unit)) return unit;
  if (ctx.sys.fs.existsSync(ctx.cfg.CRON_FILE)) return ctx.cfg.CRON_FILE;
  return null;
}

/** Writes the units and enables the timer (systemd), or the cron line. Returns the exit code. */
function installTimer(ctx: Ctx): number {
  const root = ctx.cfg.ROOT_DIR;
  if (systemdRuns(ctx)) {
    const { service, timer } = scanUnits(root);
    const dir = ctx.cfg.UNIT_DIR;
    writeAtomic(ctx, path.join(dir, "sentry-scan.service"), service, 0o644);
    writeAtomic(ctx, path.join(dir, "sentry-scan.timer"), timer, 0o644);
    ctx.sys.out(`wrote ${path.join(dir, "sentry-scan.service")} and sentry-scan.timer`);
    for (const args of [["daemon-reload"], ["enable", "--now", "sentry-scan.timer"]]) {
      const r = ctx.sys.run("systemctl", args, { timeoutMs: ctx.cfg.COMMAND_TIMEOUT_SECONDS * 1000 });
      if (r.status !== 0) {
        ctx.sys.warn(`systemctl ${args.join(" ")} failed (${r.status}): ${(r.stderr || r.stdout).trim()}; run it yourself`);
        return 2;
      }
    }
    ctx.sys.out("enabled: systemctl enable --now sentry-scan.timer (sentry --scan every minute)");
    return 0;
  }
  writeAtomic(ctx, ctx.cfg.CRON_FILE, scanCronLine(root), 0o644);
  ctx.sys.out(`systemd is not running here: wrote ${ctx.cfg.CRON_FILE} (sentry --scan every minute from cron)`);
  return 0;
}

/** The manual and the bash completion, where man and bash find them. Returns the exit code. */
function installDocs(ctx: Ctx): number {
  let code = 0;
  const put = (dir: string, name: string, text: string, setting: string) => {
    if (dir === "") return;
    const file = path.join(dir, name);
    try {
      ctx.sys.fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
      writeAtomic(ctx, file, text, 0o644);
      ctx.sys.out(`wrote ${file}`);
    } catch (e) {
      ctx.sys.warn(`${e instanceof SentryError ? e.message : errText(e)} (set ${setting}, or empty to skip it)`);
      code = 2;
    }
  };
  put(ctx.cfg.MAN_DIR, "sentry.8", manPage(), "MAN_DIR");
  put(ctx.cfg.COMPLETION_DIR, "sentry", completionScript("bash"), "COMPLETION_DIR");
  return code;
}

/** What --uninstall removes besides the hosts.allow lines: manual, completion, timer. */
function uninstallFiles(ctx: Ctx): number {
  let code = 0;
  const timerUnit = path.join(ctx.cfg.UNIT_DIR, "sentry-scan.timer");
  if (ctx.sys.fs.existsSync(timerUnit) && systemdRuns(ctx)) {
    const r = ctx.sys.run("systemctl", ["disable", "--now", "sentry-scan.timer"], { timeoutMs: ctx.cfg.COMMAND_TIMEOUT_SECONDS * 1000 });
    if (r.status !== 0) {
      ctx.sys.warn(`systemctl disable --now sentry-scan.timer failed (${r.status}): ${(r.stderr || r.stdout).trim()}`);
      code = 2;
    }
  }
  const files = [
    ctx.cfg.MAN_DIR && path.join(ctx.cfg.MAN_DIR, "sentry.8"),
    ctx.cfg.COMPLETION_DIR && path.join(ctx.cfg.COMPLETION_DIR, "sentry"),
    path.join(ctx.cfg.UNIT_DIR, "sentry-scan.service"),
    timerUnit,
    ctx.cfg.CRON_FILE,
  ];
  for (const f of files) {
    if (!f) continue;
    try {
      ctx.sys.fs.unlinkSync(f);
      ctx.sys.out(`removed ${f}`);
    } catch (e) {
      if (errCode(e) !== "ENOENT") {
        ctx.sys.warn(ioError("remove", f, e).message);
        code = 2;
      }
    }
  }
  return code;
}

/**
 * The nftables backend, offered where `nft` runs and it is off. Under tcpd
 * alone a refused connection still holds one of sshd's pre-login slots for
 * the 5 s libwrap sleeps before closing it, so a blocked bot reconnecting
 * twice a second pushes sshd past MaxStartups (Debian: 10:30:100), where
 * sshd drops connections at random, the admin's included (issue 16). The
 * kernel drops a blocked address's packets before sshd sees them. Text only:
 * sentry never loads a firewall rule itself.
 */
export function nftablesOffer(ctx: Ctx): string | null {
  if (ctx.cfg.ADD_TO_NFTABLES) return null;
  const r = ctx.sys.run("nft", ["--version"]);
  if (r.error !== "" || r.status !== 0) return null;
  return [
    `nftables is here (${r.stdout.trim()}): it refuses a blocked address for free, where a tcpd refusal holds an sshd login slot for 5 s`,
    "(enough of them push sshd past MaxStartups, which then drops connections at random, yours too). To use it,",
    `set ADD_TO_NFTABLES=1 in ${path.join(ctx.cfg.ROOT_DIR, "sentry.conf")}, load this rule, then run sentry --resync:`,
    nftablesBackend.rules({ ...ctx.cfg, ADD_TO_NFTABLES: true }),
  ].join("\n");
}

/** --uninstall: sentry's lines out of hosts.allow (after a backup); ROOT_DIR is left for the admin. */
export function uninstall(ctx: Ctx): number {
  const file = ctx.cfg.HOSTS_ALLOW;
  let text: string;
  try {
    text = ctx.sys.fs.readFileSync(file, "utf8");
  } catch (e) {
    if (errCode(e) === "ENOENT") text = "";
    else throw ioError("read", file, e);
  }
  const kept = text.split("\n").filter((l) => !isSentryLine(l, ctx.cfg.ROOT_DIR));
  const next = kept.join("\n");
  if (next === text) ctx.sys.out(`${file} has no lines of sentry`);
  else {
    ctx.sys.out(`backup: ${backup(ctx, file, text)}`);
    writeAtomic(ctx, file, next, 0o644);
    ctx.sys.out(`removed sentry's lines from ${file}`);
  }
  const code = uninstallFiles(ctx);
  ctx.sys.out(
    `sentry's files are still in ${ctx.cfg.ROOT_DIR}. To remove them: rm -r ${ctx.cfg.ROOT_DIR}` +
      (firewallBackends.some((b) => b.enabled(ctx.cfg)) ? "\nand remove the firewall rule that refers to its sets" : ""),
  );
  return code;
}

// ---- 11.2 --doctor ------------------------------------------------------------
//
//   $ sentry --doctor
//   SENTRY CRITICAL - 2 critical, 1 warning: ssh: /var/log/auth.log does not exist; until it can be…
//   OK: configuration is valid (ROOT_DIR=/var/db/sentry)
//   CRITICAL: ssh: /var/log/auth.log does not exist; until it can be read, sentry blocks nobody (or set SSH_LOG)
//   …
//
// Every link of the chain, one line each with what to do, and the exit code
// and first line of a Nagios plugin, so it replaces the old check_sentry.
// The first line is what a monitoring screen shows: the counts and the
// first of the worst problems, cut at DOCTOR_HEAD_MAX characters; the
// details follow. A check says OK only where it saw protection working:
// no line of the daemons (sentry is blind), a set no firewall rule uses or
// a hosts.deny that lacks a block (sentry is toothless), a log that cannot
// be read (every block is held back) are never OK. A configuration that
// cannot be loaded is UNKNOWN (3): nothing could be judged.

export type Severity = 0 | 1 | 2 | 3; // OK, WARNING, CRITICAL, UNKNOWN
const SEVERITY = ["OK", "WARNING", "CRITICAL", "UNKNOWN"];

export interface Check {
  severity: Severity;
  text: string;
}

/** Runs every check; the caller prints them. */
export function doctorChecks(ctx: Ctx): Check[] {
  const out: Check[] = [];
  const add = (severity: Severity, text: string) => out.push({ severity, text });
  const root = ctx.cfg.ROOT_DIR;
  const fsys = ctx.sys.fs;
  add(0, `configuration is valid (ROOT_DIR=${root})`);

  // ROOT_DIR writable: a real write, since root passes every permission check.
  const probe = path.join(root, `.doctor-${process.pid}`);
  try {
    fsys.writeFileSync(probe, "x");
    fsys.unlinkSync(probe);
    add(0, `${root} is writable`);
  } catch (e) {
    if (errCode(e) === "ENOENT") add(2, `${root} does not exist: sentry --install creates it`);
    else add(2, `${root} is not writable: ${errText(e)}: sentry cannot count or block; fix the folder or the mount`);
  }

  // hosts.allow: both lines, deny first, and the spawned path executable.
  if (ctx.cfg.ADD_TO_TCPWRAPPERS) {
    const file = ctx.cfg.HOSTS_ALLOW;
    let text = "";
    try {
      text = fsys.readFileSync(file, "utf8");
    } catch (e) {
      add(2, `cannot read ${file}: ${errText(e)}`);
    }
    const lines = text.split("\n").map((l) => l.trim());
    const denyAt = lines.findIndex((l) => !l.startsWith("#") && l.includes(`${root}/hosts.deny`) && /:\s*deny\s*$/.test(l));
    const spawnAt = lines.findIndex((l) => !l.startsWith("#") && /\bspawn\b.*--connect/.test(l) && /sentry/.test(l));
    const [denyLine, spawnLine] = hostsAllowLines(root);
    if (denyAt === -1) add(2, `${file}: no line "${denyLine}": add it near the top (sentry --install --write does)`);
    if (spawnAt === -1) add(2, `${file}: no line "${spawnLine}": add it below the deny line`);
    if (denyAt !== -1 && spawnAt !== -1) {
      if (denyAt > spawnAt) add(2, `${file}: the deny line (line ${denyAt + 1}) comes after the spawn line (line ${spawnAt + 1}): tcpd stops at the spawn line's "allow", so blocked addresses get in; move the deny line up`);
      else add(0, `${file} has the deny line (line ${denyAt + 1}) before the spawn line (line ${spawnAt + 1})`);
      // The spawned program: the first word after "spawn" that is not a VAR=value.
      const words = lines[spawnAt].replace(/^.*?\bspawn\s+/, "").split(/\s+/);
      const bin = words.find((w) => !/^[A-Za-z_][A-Za-z0-9_]*=/.test(w)) ?? "";
      const st = fsys.statSync(bin, { throwIfNoEntry: false });
      if (!st || !st.isFile() || (st.mode & 0o111) === 0) add(2, `${file} spawns ${bin}, which is not an executable file: sentry --install puts it there`);
      else add(0, `${bin} is executable`);
      // One ROOT_DIR for the whole chain: every spawned sentry (--install may write one spawn line per
      // rule of the admin's) must block into the hosts.deny the deny line makes tcpd read, ROOT_DIR's.
      const roots = [...new Set(lines.filter(isSentrySpawnLine).map(spawnedRoot))];
      const wrong = roots.filter((r) => r !== root);
      for (const spawned of wrong)
        add(2, `${file}: the spawned sentry uses ROOT_DIR=${spawned}${spawned === DEFAULTS.ROOT_DIR ? " (the line sets no ROOT_DIR=)" : ""} but the deny line reads ${root}/hosts.deny: its blocks never reach tcpd; run ROOT_DIR=${root} sentry --install --write`);
      if (wrong.length === 0) add(0, `${file}: the spawned sentry and the deny line agree on ROOT_DIR=${root}`);
    }
    // The hosts.allowed line (section 9.1.2): between the two, or allowed addresses keep spawning sentry.
    const allowedLine = hostsAllowedLine(root);
    const allowedAt = lines.findIndex((l) => !l.startsWith("#") && l.includes(`${root}/hosts.allowed`) && /:\s*allow\s*$/.test(l));
    if (ctx.cfg.ALLOWED_TO_TCPWRAPPERS && denyAt !== -1 && spawnAt !== -1) {
      // (Only once both lines are there: a chain that lacks one has a CRITICAL above, and --install --write adds all three.)
      if (allowedAt === -1) add(1, `${file}: no line "${allowedLine}": allowed addresses spawn sentry at every connection; sentry --install --write adds it between the deny and the spawn line`);
      else if (denyAt !== -1 && allowedAt < denyAt) add(1, `${file}: the hosts.allowed line (line ${allowedAt + 1}) comes before the deny line (line ${denyAt + 1}): an address blocked while allow/ still holds it gets in; move it below`);
      else if (allowedAt > spawnAt) add(1, `${file}: the hosts.allowed line (line ${allowedAt + 1}) comes after the spawn line (line ${spawnAt + 1}): tcpd never reaches it; move it above`);
      else add(0, `${file} has the hosts.allowed line (line ${allowedAt + 1}) between the deny and the spawn line: tcpd admits the allowed without spawning sentry`);
    } else if (!ctx.cfg.ALLOWED_TO_TCPWRAPPERS && allowedAt !== -1) add(0, `${file} has the hosts.allowed line, and ALLOWED_TO_TCPWRAPPERS=0 keeps the file empty`);
    // sentry's lines grant no client the rest of the policy denies (section 11.1.1).
    if (spawnAt !== -1) {
      try {
        const pair = policyPair(text, readPolicyFile(ctx, ctx.cfg.HOSTS_DENY), readHostsAllowed(ctx) ?? "");
        const c = comparePolicies(ctx, pair.before, pair.after, []);
        const more = c.gained.length > 3 ? `, and ${c.gained.length - 3} more` : "";
        if (c.gained.length) add(2, `${file}: sentry's spawn line lets in clients the rest of the policy denies (${c.gained.slice(0, 3).join(", ")}${more}; ${c.by}, ${c.clients} addresses compared): run sentry --install to see the lines that keep the policy (or sentry --resync, where hosts.allowed lists them)`);
        else if (c.unsure.length) add(1, `${file}: cannot tell whether sentry's lines let in clients the policy denies: ${c.unsure[0]}, which an address alone does not decide`);
        else add(0, `${file}: sentry's lines let in no client the rest of the policy denies (${c.by}, ${c.clients} addresses compared)`);
      } catch (e) {
        if (!(e instanceof SentryError)) throw e;
        add(1, `cannot compare the tcpwrappers policy with and without sentry's lines: ${e.message}`);
      }
    }
    const sshd = findSshd(ctx);
    const scanStamp = fsys.statSync(path.join(root, "scan.stamp"), { throwIfNoEntry: false });
    const scanRecent = scanStamp !== undefined && ctx.sys.now() - scanStamp.mtimeMs < 3_600_000;
    // A timer --install wrote is what protects a server without libwrap: it must have fired lately.
    const timerAt = installedTimer(ctx);
    if (timerAt !== null) {
      const age = scanStamp === undefined ? null : Math.floor((ctx.sys.now() - scanStamp.mtimeMs) / 60_000);
      if (age !== null && age <= ctx.cfg.SCAN_STALE_MINUTES) add(0, `the timer (${timerAt}) ran sentry --scan ${age} minutes ago`);
      else add(2, `the timer (${timerAt}) has not run sentry --scan ${age === null ? "yet (no scan.stamp)" : `for ${age} minutes`} (SCAN_STALE_MINUTES=${ctx.cfg.SCAN_STALE_MINUTES}): check systemctl status sentry-scan.timer, or cron`);
    }
    if (sshd === null) add(1, "no sshd found (set SSHD_PATH): cannot check that it links libwrap");
    else if (!fsys.existsSync(sshd)) add(1, `SSHD_PATH=${sshd} does not exist: set it to sshd's path, so that libwrap can be checked`);
    else if (linksLibwrap(ctx, sshd)) add(0, `${sshd} links libwrap`);
    else if (scanRecent) add(0, `${sshd} does not link libwrap, but sentry --scan ran within the hour`);
    else add(2, `${sshd} does not link libwrap: ${file} is ignored and sentry is never run. ${alternativesText(root).replace(/\n\s*/g, " ")}`);
    if (sshd !== null && fsys.existsSync(sshd)) add(0, maxAuthTriesAdvice(ctx, sshd));
  }

  // What sentry decided: hosts.deny and every firewall set are compared with it.
  let blockDir: string[] | null = null;
  try {
    blockDir = listDir(ctx, "block");
  } catch (e) {
    // A --doctor that cannot see block/ (not root) cannot judge the lists: UNKNOWN, not OK.
    add(3, `${errText(e)}: hosts.deny and the firewall sets not compared (run as root)`);
  }

  // ROOT_DIR/hosts.deny is what tcpd reads; block/ is what sentry decided.
  // They part when an admin edits one by hand, a write failed, or a backup
  // restored one of them: an address recorded as blocked that is missing
  // from hosts.deny is let in by tcpd, while --report calls it blocked.
  if (ctx.cfg.ADD_TO_TCPWRAPPERS && blockDir !== null) {
    const file = path.join(root, "hosts.deny");
    const want = hostsDenyText(blockDir, ctx.allowRanges, listNets(ctx, "block"));
    let have: string | null = null;
    let readable = true;
    try {
      have = fsys.readFileSync(file, "utf8");
    } catch (e) {
      if (errCode(e) !== "ENOENT") {
        readable = false;
        add(2, `cannot read ${file}: ${errText(e)}: tcpd cannot read it either`);
      }
    }
    if (readable) {
      const words = (t: string) => t.split(/\s+/).filter((w) => w !== "");
      const haveWords = new Set(words(have ?? ""));
      const wantWords = words(want);
      const letIn = wantWords.filter((w) => !haveWords.has(w));
      const extra = [...haveWords].filter((w) => !wantWords.includes(w));
      const eg = (list: string[]) => `${list.length} (${list.slice(0, 3).join(", ")}${list.length > 3 ? ", …" : ""})`;
      if (letIn.length) add(2, `${file} lacks ${eg(letIn)} of the addresses block/ holds: tcpd lets them in; run sentry --resync`);
      else if (extra.length) add(1, `${file} holds ${eg(extra)} that block/ does not: run sentry --resync`);
      else if (have !== null && have !== want) add(1, `${file} is not as sentry writes it (order, spelling): run sentry --resync`);
      else add(0, `${file} agrees with block/ (${wantWords.length} addresses)`);
    }
  }

  // ROOT_DIR/hosts.allowed admits without sentry (section 9.1.2): an entry
  // it should not hold lets in an address no longer allowed, or one the
  // host's policy now denies; a missing one only costs a spawn.
  if (ctx.cfg.ALLOWED_TO_TCPWRAPPERS) {
    const file = hostsAllowedPath(ctx);
    try {
      const have = readHostsAllowed(ctx);
      const want = hostsAllowedWanted(ctx, readHostPolicy(ctx));
      const words = (t: string) => t.split(/\s+/).filter((w) => w !== "");
      const wantWords = words(want.text);
      const extra = words(have ?? "").filter((w) => !wantWords.includes(w));
      const missing = wantWords.filter((w) => !words(have ?? "").includes(w));
      const eg = (list: string[]) => `${list.length} (${list.slice(0, 3).join(", ")}${list.length > 3 ? ", …" : ""})`;
      const leftOut = want.left.length ? `; ${eg(want.left)} allowed but not listed: your tcpd policy does not surely admit them, so they still spawn sentry` : "";
      if (extra.length) add(2, `${file} admits ${eg(extra)} that allow/, ALLOW_IPS or the host's tcpd policy no longer grant: tcpd lets them in without sentry; run sentry --resync`);
      else if (missing.length) add(1, `${file} lacks ${eg(missing)} that are allowed: they spawn sentry at every connection; run sentry --resync`);
      else add(0, `${file} agrees with allow/ and ALLOW_IPS (${wantWords.length} entries${leftOut})`);
    } catch (e) {
      if (!(e instanceof SentryError)) throw e;
      add(3, `cannot check ${file}: ${e.message}`); // as for block/ above: what cannot be read cannot be judged
    }
  }

  // Each protected service: a readable log, and recent lines understood.
  for (const g of LOG_GROUPS) {
    if (!g.on(ctx.cfg)) continue;
    const key = g.setting;
    const family = g.name;
    // The source that carries this family's services (two families may share one file).
    const wanted = g.services;
    const src = logSources(ctx.cfg, fsys).find((s) => s.services.some((x) => wanted.includes(x)));
    const sev: Severity = family === "ssh" ? 2 : 1;
    if (!src) {
      add(sev, `${family}: no log found in the usual places and no journal: set ${key}${family !== "ssh" ? ` or ${g.off}` : ""}`);
      continue;
    }
    const sample = recentLines(ctx, src);
    if ("error" in sample) {
      // Every source logSources names is read before a block, and one that
      // cannot be read holds back EVERY block (incomplete(), connect()):
      // sentry then protects nothing, whatever the service.
      add(2, `${family}: ${sample.error}; until it can be read, sentry blocks nobody (or set ${key})`);
      continue;
    }
    const { ours, understood, where } = sample;
    const text = `${family}: ${where}: ${ours} lines of its daemons among the latest, ${understood} understood`;
    // No line of the daemons at all: the wrong file, or a daemon that logs
    // elsewhere or too little (sshd LogLevel QUIET/ERROR) — sentry is blind.
    if (ours === 0) add(1, `${family}: ${where}: no lines of ${g.daemons} among the latest: ${g.hint}, or set ${key}`);
    else if (ours >= 10 && understood === 0) add(sev, `${text}: sentry does not understand this log; check it with sentry --test-log`);
    else add(0, text);
  }

  // Firewalls: each enabled one answers, a rule refers to its set (without
  // one, sentry fills a set that drops nothing), and it holds what block/ says.
  const blocked = (blockDir ?? []).filter((ip) => !inRanges(ip, ctx.allowRanges));
  for (const b of firewallBackends.filter((x) => x.enabled(ctx.cfg))) {
    const have = b.list(ctx.cfg, ctx.sys);
    if (have === null) {
      add(2, `${b.name}: cannot list ${ctx.cfg.FIREWALL_TABLE}: is the tool installed and the set loaded? The rule:\n${b.rules(ctx.cfg)}`);
      continue;
    }
    add(0, `${b.name}: ${ctx.cfg.FIREWALL_TABLE} holds ${have.length} addresses`);
    const rule = firewallRuleProblem(ctx, b.name);
    if (rule !== null) add(2, `${b.name}: ${rule}: nothing drops the blocked addresses; load the rule:\n${b.rules(ctx.cfg)}`);
    else if (b.name === "pf" || b.name === "ipfw") add(0, `${b.name}: not checked whether a rule uses ${ctx.cfg.FIREWALL_TABLE} (sentry --install shows the rule)`);
    if (blockDir === null) continue; // said above: block/ cannot be read
    const missing = blocked.filter((ip) => !have.includes(ip));
    const extra = have.filter((ip) => !blocked.includes(ip));
    if (missing.length || extra.length) {
      const eg = (list: string[]) => `${list.length}${list.length ? ` (${list.slice(0, 3).join(", ")}${list.length > 3 ? ", …" : ""})` : ""}`;
      add(1, `${b.name}: ${ctx.cfg.FIREWALL_TABLE} differs from block/: ${eg(missing)} blocked addresses missing, ${eg(extra)} not in block/: run sentry --resync`);
    } else add(0, `${b.name}: ${ctx.cfg.FIREWALL_TABLE} agrees with block/`);
  }
  return out;
}

/**
 * Why no rule of the firewall refers to sentry's set, or null if one does.
 * sentry only fills the set (section 9.2); a set no rule names drops nothing,
 * and the admin who switched ADD_TO_NFTABLES on believes the opposite.
 *   nftables: a set is local to its table, so a rule using @v4/@v6 must sit
 *             in table inet FIREWALL_TABLE (`nft list table` shows its chains).
 *   iptables: `iptables -S` / `ip6tables -S` of the tables a drop can sit in,
 *             with `--match-set FIREWALL_TABLE-4|-6`.
 *   pf, ipfw: not checked (they do not run on Linux, where this was built).
 */
export function firewallRuleProblem(ctx: Ctx, backend: Backend["name"]): string | null {
  const T = ctx.cfg.FIREWALL_TABLE;
  const timeoutMs = ctx.cfg.COMMAND_TIMEOUT_SECONDS * 1000;
  if (backend === "nftables") {
    const r = ctx.sys.run("nft", ["list", "table", "inet", T], { timeoutMs });
    if (r.error !== "" || r.status !== 0) return `cannot list table inet ${T} (${r.error || r.stderr.trim().split("\n")[0]})`;
    // Rules, not the set definitions: "ip saddr @v4 drop" in a chain block.
    let inChain = false;
    const found = new Set<string>();
    for (const line of r.stdout.split("\n")) {
      if (/^\s*chain \S+ \{/.test(line)) inChain = true;
      else if (/^\s*(set|map) \S+ \{/.test(line)) inChain = false;
      if (!inChain) continue;
      for (const m of line.matchAll(/@(v4|v6)\b/g)) found.add(m[1]);
    }
    const lack = ["v4", "v6"].filter((s) => !found.has(s));
    return lack.length ? `no rule in table inet ${T} uses ${lack.map((s) => `@${s}`).join(" or ")}` : null;
  }
  if (backend === "iptables") {
    const lack: string[] = [];
    for (const [tool, set] of [["iptables", `${T}-4`], ["ip6tables", `${T}-6`]]) {
      let seen = false;
      for (const table of ["filter", "raw", "mangle"]) {
        const r = ctx.sys.run(tool, ["-t", table, "-S"], { timeoutMs });
        if (r.error !== "") return `cannot run ${tool} -S: ${r.error}`;
        if (r.status !== 0) continue; // a table this kernel does not have
        if (r.stdout.split("\n").some((l) => l.split(/\s+/).join(" ").includes(`--match-set ${set} src`))) seen = true;
      }
      if (!seen) lack.push(`${tool} (--match-set ${set})`);
    }
    return lack.length ? `no rule of ${lack.join(" or ")}` : null;
  }
  return null;
}

/** The latest lines of a source: how many are its daemons', how many understood; or why it cannot be read. */
function recentLines(ctx: Ctx, src: LogSource): { ours: number; understood: number; where: string } | { error: string } {
  if (src.kind === "journal") {
    const where = src.path ? `the journal ${src.path}` : "the journal";
    if (src.path && !ctx.sys.fs.existsSync(src.path)) return { error: `${src.path} does not exist` };
    // JSON, like the scanner (scanJournal): each entry keeps its
    // SYSLOG_IDENTIFIER, so a postfix/smtpd or vchkpw-pop3 line is read as
    // that program's, and the same writers are trusted (journalWriterOk).
    const args = ["-o", "json", "--output-fields=MESSAGE,SYSLOG_IDENTIFIER,_UID", "--no-pager", "-q", "-n", "500"];
    if (src.path) args.push(`--file=${src.path}`);
    for (const id of src.idents) args.push("-t", id);
    const r = ctx.sys.run("journalctl", args, { timeoutMs: ctx.cfg.COMMAND_TIMEOUT_SECONDS * 1000 });
    if (r.error !== "" || r.status !== 0) return { error: `cannot read ${where}: journalctl ${r.error || `exited ${r.status}: ${r.stderr.trim().split("\n")[0]}`}` };
    let ours = 0;
    let understood = 0;
    const state = newClassifierState();
    for (const line of r.stdout.split("\n")) {
      if (line === "") continue;
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch (e) {
        if (!(e instanceof SyntaxError)) throw e; // JSON.parse throws nothing else: anything else is a bug, said by main()
        return { error: `cannot read ${where}: journalctl printed a line that is not JSON (${e.message})` };
      }
      const ident = typeof entry.SYSLOG_IDENTIFIER === "string" ? entry.SYSLOG_IDENTIFIER : "";
      const msg = typeof entry.MESSAGE === "string" ? entry.MESSAGE : "";
      if (ident === "" || familyOf(ident) === null || !journalWriterOk(entry, ident, ctx.cfg)) continue;
      ours++;
      if (classifyLine(msg, ident, state)) understood++;
    }
    return { ours, understood, where };
  }
  let lines: string[];
  try {
    lines = tailLines(ctx.sys.fs, src.path, 512 * 1024);
  } catch (e) {
    const code = errCode(e);
    if (code === "ENOENT") return { error: `${src.path} does not exist` };
    if (code === "EACCES" || code === "EPERM") {
      // Under tcpd sentry runs as root; a non-root --doctor cannot judge the log.
      const root = typeof process.getuid === "function" && process.getuid() === 0;
      return { error: root ? `cannot read ${src.path}: permission denied even to root (${code}: an ACL, SELinux, a root-squashed mount?)` : `cannot read ${src.path}: permission denied: run sentry --doctor as root, as tcpd runs sentry` };
    }
    return { error: `cannot read ${src.path}: ${errText(e)}` };
  }
  let ours = 0;
  let understood = 0;
  const state = newClassifierState();
  for (const l of lines) {
    const parts = splitLine(l, src.program);
    if (!parts || familyOf(parts.program) === null) continue;
    ours++;
    if (classifyLine(l, src.program, state)) understood++;
  }
  return { ours, understood, where: src.path };
}

/** The Nagios status line's longest length: what a monitoring screen shows of it. */
export const DOCTOR_HEAD_MAX = 100;

/** "SENTRY CRITICAL - 2 critical, 1 warning: FIRST PROBLEM", cut to DOCTOR_HEAD_MAX characters. */
export function doctorHead(checks: Check[]): { worst: Severity; head: string } {
  // CRITICAL outranks UNKNOWN: a check that could not judge one link must
  // not hide another link that is known broken.
  const rank = (sev: Severity) => [0, 1, 3, 2][sev];
  const worst = checks.reduce<Severity>((w, c) => (rank(c.severity) > rank(w) ? c.severity : w), 0);
  let head: string;
  if (worst === 0) head = `SENTRY OK - ${checks.length} checks passed`;
  else {
    const counts = ([[3, "unknown"], [2, "critical"], [1, "warning"]] as const)
      .map(([sev, word]) => [checks.filter((c) => c.severity === sev).length, word, sev] as const)
      .filter(([k]) => k > 0)
      .map(([k, word, sev]) => `${k} ${word}${sev === 1 && k > 1 ? "s" : ""}`)
      .join(", ");
    const first = (checks.find((c) => c.severity === worst) as Check).text.split("\n")[0];
    head = `SENTRY ${SEVERITY[worst]} - ${counts}: ${first}`;
  }
  if (head.length > DOCTOR_HEAD_MAX) head = `${head.slice(0, DOCTOR_HEAD_MAX - 1)}…`;
  return { worst, head };
}

/** --doctor: prints the Nagios first line, then one line per check; exits with the worst severity. */
export function doctor(ctx: Ctx, fleet: Check[] = []): number {
  const checks = [...doctorChecks(ctx), ...fleet];
  const { worst, head } = doctorHead(checks);
  ctx.sys.out(head);
  for (const c of checks) ctx.sys.out(`${SEVERITY[c.severity]}: ${c.text}`);
  return worst;
}

// ---- 11.3 --update, --rollback: a signed release replaces the binary -------------
//
//   UPDATE_URL ──fetch──▶ manifest.json ──Ed25519──▶ version newer? ──fetch──▶
//   .sentry.tmp-new-PID-RAND (size, SHA-256) ──run --version──▶ rename over
//   sentry, the old one kept as sentry.prev
//
// WHY EACH STEP
//
//   sentry runs as root and replaces itself, so whoever can change the bytes
//   it installs owns the machine. The only thing trusted is the Ed25519
//   public key in the configuration block (UPDATE_PUBLIC_KEY, baked in by the
//   release build). The manifest carries the SHA-256 and size of the binary
//   and is signed; the binary is accepted only if it hashes to that value.
//   HTTPS is required anyway (plain HTTP only to a loopback address, for
//   tests and local mirrors), redirects included: each hop is checked, since
//   fetch would otherwise follow https → http.
//
//   A replayed older manifest verifies too (it was signed once), so a
//   version not newer than the running one is refused unless --force.
//
//   The binary is ~125 MB and running: writing over it fails with ETXTBSY,
//   and a half-written one would break every connection tcpd spawns it for.
//   So the download goes to a temporary file beside it (same file system, so
//   rename is atomic), is checked, run once with an empty environment to see
//   it answers "sentry <the manifest's version>", and only then renamed over
//   the installed one. At every instant the installed path holds a whole,
//   working binary; a failed step removes its temporary file and says which
//   step failed and why.
//
// THE MANIFEST (format 1)
//
//   {
//     "format": 1,
//     "version": "3.1.0",
//     "released": "2026-11-21T12:00:00.000Z",
//     "platforms": {
//       "linux-x64": {
//         "url": "sentry-3.1.0-linux-x64",
//         "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
//         "size": 125081240
//       }
//     },
//     "signature": "q1w2…(base64 of 64 bytes)…=="
//   }
//
//   - platforms is keyed by `${process.platform}-${process.arch}`.
//   - url is absolute, or relative to the manifest's final URL (after
//     redirects), like a link in a web page.
//   - signature is Ed25519 over the CANONICAL bytes of the manifest without
//     its "signature" member: JSON with object keys sorted (JavaScript's
//     default sort, by UTF-16 code unit; the keys are ASCII), no whitespace,
//     strings as JSON.stringify writes them, numbers only whole (safe
//     integers). The example above signs exactly these bytes (UTF-8):
//
//     {"format":1,"platforms":{"linux-x64":{"sha256":"9f86…0a08","size":125081240,"url":"sentry-3.1.0-linux-x64"}},"released":"2026-11-21T12:00:00.000Z","version":"3.1.0"}
//
//     So the file itself may be pretty-printed, and the signature covers
//     what is parsed and used, not the whitespace. Members this version does
//     not know ("released", anything added later) are signed and ignored.
//   - The public key (UPDATE_PUBLIC_KEY) is the SPKI DER of the Ed25519 key,
//     base64 (44 bytes → 60 characters, "MCowBQYDK2VwAyEA…").
//
// ROLLBACK
//
//   --update keeps the replaced binary as sentry.prev. --rollback SWAPS the
//   two: sentry.prev becomes sentry and the one it replaces becomes
//   sentry.prev, so a second --rollback goes forward again. sentry.prev must
//   answer --version as sentry first, or nothing is changed.

/** One binary of a release. */
export interface ManifestBinary {
  url: string; // absolute, or relative to the manifest URL
  sha256: string; // 64 lower-case hex digits
  size: number; // bytes, 1 … BINARY_MAX_BYTES
  compressed?: ManifestCompressed; // the same binary, zstd-compressed: what --update downloads
}

/**
 * A compressed copy of a binary ("compressed" in a platform's entry). The
 * binary's own sha256 and size stay the entry's: the download is checked
 * against these, the decompressed bytes against the entry's, so both hashes
 * are signed. Decompression stops at the entry's size: a small file that
 * inflates to fill the disk (a decompression bomb) is refused, not written.
 */
export interface ManifestCompressed {
  format: "zstd";
  url: string;
  sha256: string;
  size: number;
}

/** A verified manifest: only what this version uses. */
export interface Manifest {
  format: 1;
  version: string; // x.y.z
  platforms: Record<string, ManifestBinary>;
}

// Limits (not tunables: nothing legitimate comes near them).
export const MANIFEST_MAX_BYTES = 1024 * 1024; // a manifest is a few hundred bytes
export const BINARY_MAX_BYTES = 512 * 1024 * 1024; // the binary is ~125 MB
export const MAX_REDIRECTS = 5; // GitHub release assets take 1–2
export const DOWNLOAD_TOTAL_FACTOR = 20; // a whole download may last 20 × UPDATE_TIMEOUT_SECONDS
const STALE_TEMP_MS = 60 * 60 * 1000; // a temp file untouched this long is a crash's leftover

/**
 * node:crypto, loaded on first use: loading it costs about 2 ms, and the
 * connect path, which never needs it, must not pay for it.
 */
function lazyCrypto(): typeof Crypto {
  return process.getBuiltinModule("node:crypto");
}

/** Where this process runs, as a manifest platform key: "linux-x64". */
export function platformKey(): string {
  return `${process.platform}-${process.arch}`;
}

// ---- 11.3.1 Versions --------------------------------------------------------------
//
//   isNewer("3.10.0", "3.9.2") → true   (numbers, not text)
//   isNewer("3.1.0", "3.1.0")  → false

const SEMVER = /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$/;

/** [major, minor, patch] of "x.y.z", or null. Pre-release tags are not used by sentry. */
export function parseVersion(v: string): [number, number, number] | null {
  const m = SEMVER.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

/** True if version a is newer than b. Throws SentryError(2) if either is not x.y.z. */
export function isNewer(a: string, b: string): boolean {
  const x = parseVersion(a);
  const y = parseVersion(b);
  if (!x || !y) throw new SentryError(`not a version (x.y.z): ${JSON.stringify(x ? b : a)}`, 2);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] > y[i];
  return false;
}

// ---- 11.3.2 The signed manifest -----------------------------------------------------
//
//   verifyManifest(text, key) → Manifest, or SentryError naming what is wrong.
//   The signature is checked before anything else is looked at, so a forged
//   manifest is reported as forged, not as "bad field".

/** The canonical JSON of a parsed value (see THE MANIFEST above). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    // Whole numbers only: every language prints them the same way.
    if (!Number.isSafeInteger(value)) throw new SentryError(`manifest: ${value} is not a whole number`, 2);
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") return canonicalObject(value as Record<string, unknown>, null);
  throw new SentryError(`manifest: cannot canonicalise a ${typeof value}`, 2);
}

function canonicalObject(obj: Record<string, unknown>, skip: string | null): string {
  const keys = Object.keys(obj)
    .filter((k) => k !== skip)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(",")}}`;
}

/** The bytes the signature covers: the canonical manifest without "signature". */
export function manifestSignedBytes(doc: Record<string, unknown>): Buffer {
  return Buffer.from(canonicalObject(doc, "signature"), "utf8");
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Strict base64 (the standard alphabet, padded): bytes, or null. */
function decodeBase64(s: string): Buffer | null {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
  const b = Buffer.from(s, "base64");
  return b.toString("base64") === s ? b : null;
}

/** UPDATE_PUBLIC_KEY as a key object. Throws SentryError(1): it is configuration. */
export function parsePublicKey(publicKeyB64: string): Crypto.KeyObject {
  const text = publicKeyB64.trim();
  if (text === "")
    throw new SentryError(
      "UPDATE_PUBLIC_KEY is not set: --update needs the Ed25519 public key releases are signed with (SPKI DER, base64; a release build bakes it in)",
      1,
    );
  const der = decodeBase64(text);
  let key: Crypto.KeyObject | null = null;
  if (der) {
    try {
      key = lazyCrypto().createPublicKey({ key: der, format: "der", type: "spki" });
    } catch {
      // createPublicKey throws several kinds (ASN.1, unsupported type, …),
      // all meaning "not an SPKI key": reported below, with what was expected.
      key = null;
    }
  }
  if (!key || key.asymmetricKeyType !== "ed25519")
    throw new SentryError(
      `UPDATE_PUBLIC_KEY is not an Ed25519 public key (expected SPKI DER in base64, "MCowBQYDK2VwAyEA…", 60 characters)`,
      1,
    );
  return key;
}

/**
 * Parses and verifies a manifest. Pure: no I/O. Throws SentryError(1) for a
 * bad public key (configuration), SentryError(2) for a manifest that is not
 * valid JSON, not signed by that key, or signed but malformed.
 */
export function verifyManifest(text: string, publicKeyB64: string): Manifest {
  const key = parsePublicKey(publicKeyB64);
  const bad = (why: string) => new SentryError(`the manifest ${why}`, 2);
  if (Buffer.byteLength(text, "utf8") > MANIFEST_MAX_BYTES) throw bad(`is larger than ${MANIFEST_MAX_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw bad(`is not JSON (${errText(e)})`);
  }
  if (!isPlainObject(doc)) throw bad("is not a JSON object");
  if (typeof doc.signature !== "string") throw bad('has no "signature"');
  const sig = decodeBase64(doc.signature);
  if (!sig || sig.length !== 64) throw bad('"signature" is not an Ed25519 signature (64 bytes, base64)');
  const signed = manifestSignedBytes(doc); // throws on a fractional number
  let ok = false;
  try {
    ok = lazyCrypto().verify(null, signed, key, sig);
  } catch (e) {
    throw bad(`signature could not be checked (${errText(e)})`);
  }
  if (!ok) throw bad("signature does not verify with UPDATE_PUBLIC_KEY: it was altered, or signed by another key");

  // Signed by us from here on; still checked, since the code trusts the shape.
  if (doc.format !== 1)
    throw bad(`has format ${JSON.stringify(doc.format)}; this sentry ${VERSION} reads format 1 (install the new one by hand)`);
  if (typeof doc.version !== "string" || !parseVersion(doc.version))
    throw bad(`"version" is not x.y.z: ${JSON.stringify(doc.version)}`);
  if (!isPlainObject(doc.platforms)) throw bad('has no "platforms" object');
  const platforms: Record<string, ManifestBinary> = {};
  for (const [name, e] of Object.entries(doc.platforms)) {
    const where = `platforms.${name}`;
    if (!isPlainObject(e)) throw bad(`${where} is not an object`);
    if (typeof e.url !== "string" || e.url === "" || e.url.length > 4096) throw bad(`${where}.url is not a URL`);
    if (typeof e.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(e.sha256))
      throw bad(`${where}.sha256 is not 64 lower-case hex digits`);
    if (typeof e.size !== "number" || !Number.isSafeInteger(e.size) || e.size < 1 || e.size > BINARY_MAX_BYTES)
      throw bad(`${where}.size is not a byte count from 1 to ${BINARY_MAX_BYTES}`);
    let compressed: ManifestCompressed | undefined;
    if (e.compressed !== undefined) {
      const c = e.compressed;
      const cw = `${where}.compressed`;
      if (!isPlainObject(c)) throw bad(`${cw} is not an object`);
      if (c.format !== "zstd") throw bad(`${cw}.format is ${JSON.stringify(c.format)}; this sentry reads "zstd"`);
      if (typeof c.url !== "string" || c.url === "" || c.url.length > 4096) throw bad(`${cw}.url is not a URL`);
      if (typeof c.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(c.sha256)) throw bad(`${cw}.sha256 is not 64 lower-case hex digits`);
      if (typeof c.size !== "number" || !Number.isSafeInteger(c.size) || c.size < 1 || c.size > BINARY_MAX_BYTES)
        throw bad(`${cw}.size is not a byte count from 1 to ${BINARY_MAX_BYTES}`);
      compressed = { format: "zstd", url: c.url, sha256: c.sha256, size: c.size };
    }
    Object.defineProperty(platforms, name, {
      value: { url: e.url, sha256: e.sha256, size: e.size, ...(compressed ? { compressed } : {}) },
      enumerable: true,
    }); // defineProperty: a key "__proto__" stays a plain key
  }
  return { format: 1, version: doc.version, platforms };
}

// ---- 11.3.3 Transport ----------------------------------------------------------------
//
//   https://example.org/sentry/manifest.json   → allowed
//   http://127.0.0.1:8080/manifest.json        → allowed (loopback: tests, a local mirror)
//   http://example.org/manifest.json           → refused before any connection
//
// "localhost" is refused over http: it is a name, and names resolve.

/** Why `url` may not be fetched, or null if it may. */
export function transportProblem(url: URL): string | null {
  if (url.protocol === "https:") return null;
  if (url.protocol === "http:") {
    const ip = parseIp(url.hostname.replace(/^\[(.*)\]$/, "$1"));
    if (ip !== null && (ip === "::1" || ip.startsWith("127."))) return null;
    return `${url.href} is plain http: only https is allowed (http only to a loopback address such as 127.0.0.1)`;
  }
  return `${url.href}: only https URLs are allowed`;
}

/** UPDATE_URL as a URL. Throws SentryError(1): it is configuration. */
function configuredUrl(cfg: Config): URL {
  if (cfg.UPDATE_URL === "")
    throw new SentryError(
      "--update is not configured: set UPDATE_URL (the release manifest, https://…/manifest.json) in sentry.conf",
      1,
    );
  let url: URL;
  try {
    url = new URL(cfg.UPDATE_URL);
  } catch (e) {
    if (errCode(e) !== "ERR_INVALID_URL") throw e; // the one error new URL() throws
    throw new SentryError(`UPDATE_URL is not a URL: ${JSON.stringify(cfg.UPDATE_URL)}`, 1);
  }
  const problem = transportProblem(url);
  if (problem) throw new SentryError(`UPDATE_URL: ${problem}`, 1);
  return url;
}

/**
 * A timer pair for one network step: `first` until the answer starts (and,
 * re-armed by kick(), between chunks of a download), `total` for the whole
 * step. Whichever fires aborts the fetch, and reason() says which.
 */
function deadline(firstMs: number, totalMs: number) {
  const ctl = new AbortController();
  let why = "";
  const fire = (w: string) => {
    why = w;
    ctl.abort(new Error(w));
  };
  let idle = setTimeout(fire, firstMs, `no answer within ${firstMs / 1000} s`);
  const total = setTimeout(fire, totalMs, `not finished within ${totalMs / 1000} s`);
  return {
    signal: ctl.signal,
    reason: () => why,
    kick(ms: number) {
      clearTimeout(idle);
      idle = setTimeout(fire, ms, `no data for ${ms / 1000} s`);
    },
    done() {
      clearTimeout(idle);
      clearTimeout(total);
    },
  };
}

/** A network error as one line: fetch's "fetch failed" hides the reason in .cause. */
function netText(e: unknown, timerReason: string): string {
  if (timerReason) return timerReason;
  const cause = e instanceof Error && e.cause instanceof Error ? ` (${e.cause.message})` : "";
  return errText(e) + cause;
}

/** GET, following at most MAX_REDIRECTS redirects, each hop checked by transportProblem. */
async function fetchChecked(
  start: URL,
  signal: AbortSignal,
  extraHeaders: Record<string, string> = {},
): Promise<{ res: Response; url: URL }> {
  let url = start;
  for (let hop = 0; ; hop++) {
    const problem = transportProblem(url);
    if (problem) throw new Error(hop === 0 ? problem : `redirected to ${problem}`);
    const res = await fetch(url, {
      redirect: "manual",
      signal,
      headers: { "user-agent": `sentry/${VERSION}`, "cache-control": "no-cache", ...extraHeaders },
    });
    if ([301, 302, 303, 307, 308].includes(res.status)) {
      await res.body?.cancel();
      const location = res.headers.get("location");
      if (!location) throw new Error(`HTTP ${res.status} from ${url.href} without a Location`);
      if (hop >= MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects`);
      try {
        url = new URL(location, url);
      } catch (e) {
        if (errCode(e) !== "ERR_INVALID_URL") throw e; // the one error new URL() throws
        throw new Error(`${url.href} redirects to a bad URL: ${JSON.stringify(location)}`);
      }
      continue;
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`HTTP ${res.status} ${res.statusText} from ${url.href}`);
    }
    return { res, url };
  }
}

/** Reads a body chunk by chunk; more than `limit` bytes is an error. */
async function readBody(res: Response, limit: number, onChunk: (chunk: Uint8Array) => void): Promise<number> {
  if (!res.body) return 0;
  const reader = res.body.getReader();
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return received;
    received += value.length;
    if (received > limit) {
      await reader.cancel();
      throw new Error(`more than the expected ${limit} bytes`);
    }
    onChunk(value);
  }
}

/** The manifest's text and final URL (relative binary URLs resolve against it). */
async function fetchManifest(url: URL, timeoutMs: number): Promise<{ text: string; url: URL }> {
  const dl = deadline(timeoutMs, timeoutMs);
  try {
    const { res, url: finalUrl } = await fetchChecked(url, dl.signal);
    dl.kick(timeoutMs); // it answered: what is left is "not finished within"
    const chunks: Uint8Array[] = [];
    await readBody(res, MANIFEST_MAX_BYTES, (c) => chunks.push(c));
    return { text: Buffer.concat(chunks).toString("utf8"), url: finalUrl };
  } catch (e) {
    throw new Error(netText(e, dl.reason()));
  } finally {
    dl.done();
  }
}

/**
 * Streams `url` into the open file `fd`, hashing as it goes. Checks the
 * announced length, the received length and the SHA-256 against `want`.
 */
async function downloadTo(sys: Sys, fd: number, url: URL, want: ManifestBinary, timeoutMs: number): Promise<void> {
  const dl = deadline(timeoutMs, timeoutMs * DOWNLOAD_TOTAL_FACTOR);
  const hash = lazyCrypto().createHash("sha256");
  let received = 0;
  try {
    // identity: the bytes on the wire are the bytes hashed, and Content-Length counts them.
    const { res } = await fetchChecked(url, dl.signal, { "accept-encoding": "identity" });
    const announced = res.headers.get("content-encoding") ? null : res.headers.get("content-length");
    if (announced !== null && Number(announced) !== want.size) {
      await res.body?.cancel();
      throw new Error(`the server announces ${announced} bytes, the manifest says ${want.size}`);
    }
    dl.kick(timeoutMs);
    await readBody(res, want.size, (chunk) => {
      received += chunk.length;
      hash.update(chunk);
      for (let off = 0; off < chunk.length; ) off += sys.fs.writeSync(fd, chunk, off, chunk.length - off);
      dl.kick(timeoutMs);
    });
  } catch (e) {
    const got = received > 0 ? ` after ${received} of ${want.size} bytes` : "";
    throw new Error(netText(e, dl.reason()) + got);
  } finally {
    dl.done();
  }
  if (received !== want.size) throw new Error(`got ${received} bytes, the manifest says ${want.size} (truncated)`);
  const sum = hash.digest("hex");
  if (sum !== want.sha256) throw new Error(`SHA-256 is ${sum}, the manifest says ${want.sha256}`);
}

/**
 * Decompresses the zstd file `from` into the open file `fd`, at most
 * `want.size` bytes (more is a bomb: refused as soon as it shows), and
 * checks the result's size and SHA-256 against `want`, the binary's entry.
 */
async function decompressTo(sys: Sys, from: string, fd: number, want: ManifestBinary): Promise<void> {
  const zlib = process.getBuiltinModule("node:zlib");
  const { Readable } = process.getBuiltinModule("node:stream");
  const { pipeline } = process.getBuiltinModule("node:stream/promises");
  const hash = lazyCrypto().createHash("sha256");
  let written = 0;
  const zfd = sys.fs.openSync(from, "r");
  try {
    function* chunks(): Generator<Buffer> {
      const buf = Buffer.alloc(1 << 20);
      for (let n; (n = sys.fs.readSync(zfd, buf, 0, buf.length, null)) > 0; ) yield Buffer.from(buf.subarray(0, n));
    }
    await pipeline(Readable.from(chunks()), zlib.createZstdDecompress(), async function (source: AsyncIterable<Buffer>) {
      for await (const piece of source) {
        written += piece.length;
        if (written > want.size) throw new Error(`it decompresses to more than the ${want.size} bytes the manifest says (a decompression bomb?)`);
        hash.update(piece);
        for (let off = 0; off < piece.length; ) off += sys.fs.writeSync(fd, piece, off, piece.length - off);
      }
    });
  } finally {
    sys.fs.closeSync(zfd);
  }
  if (written !== want.size) throw new Error(`it decompresses to ${written} bytes, the manifest says ${want.size}`);
  const sum = hash.digest("hex");
  if (sum !== want.sha256) throw new Error(`the decompressed binary's SHA-256 is ${sum}, the manifest says ${want.sha256}`);
}

// ---- 11.3.4 The files beside the binary ----------------------------------------------

/**
 * The installed binary to replace, symbolic links followed (renaming over
 * a link would replace the link). The default, this program, must be the
 * compiled binary: under `node sentry.ts` it is node itself.
 */
function resolveTarget(sys: Sys, given: string | undefined, action: string): string {
  if (given === undefined && !(process.getBuiltinModule("node:sea") as typeof import("node:sea")).isSea())
    throw new SentryError(
      `${action} works on the compiled sentry binary; this is ${sys.execPath} running sentry.ts as a script`,
      1,
    );
  let p = path.resolve(given ?? sys.execPath);
  for (let hops = 0; ; hops++) {
    let st: Stats;
    try {
      st = sys.fs.lstatSync(p);
    } catch (e) {
      throw new SentryError(`${action}: cannot find the installed binary ${p}: ${errText(e)}`, 2);
    }
    if (st.isSymbolicLink() && hops < 16) {
      p = path.resolve(path.dirname(p), sys.fs.readlinkSync(p, "utf8"));
      continue;
    }
    if (!st.isFile()) throw new SentryError(`${action}: ${p} is not a regular file`, 2);
    return p;
  }
}

/** Hidden temporary names beside the binary: .sentry.tmp-KIND-PID-RANDOM */
function tempPrefix(target: string): string {
  return `.${path.basename(target)}.tmp-`;
}

function tempName(target: string, kind: string): string {
  const name = `${tempPrefix(target)}${kind}-${process.pid}-${lazyCrypto().randomBytes(4).toString("hex")}`;
  return path.join(path.dirname(target), name);
}

/**
 * Removes temporary files a killed --update left (a failed step removes its
 * own). A live download writes at least every UPDATE_TIMEOUT_SECONDS, so an
 * untouched file older than an hour (or two timeouts) belongs to nobody.
 */
function removeStaleTemps(sys: Sys, target: string, timeoutMs: number): void {
  const dir = path.dirname(target);
  const prefix = tempPrefix(target);
  let names: string[];
  try {
    names = sys.fs.readdirSync(dir);
  } catch (e) {
    throw new SentryError(`cannot list ${dir}: ${errText(e)}`, 2);
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const p = path.join(dir, name);
    if (removeIfStale(sys, p, Math.max(STALE_TEMP_MS, 2 * timeoutMs))) sys.warn(`removed ${p}, left by an interrupted update`);
  }
}

/**
 * Removes `file` if nobody has touched it for `ageMs` (a killed run's
 * leftover); true if it did. Gone already (another run was first) is no
 * news; any other failure is said on stderr. Used by --update's sweep
 * beside the binary and --scan's in ROOT_DIR (sweepTemps).
 */
function removeIfStale(sys: Sys, file: string, ageMs: number): boolean {
  try {
    if (sys.now() - sys.fs.lstatSync(file).mtimeMs < ageMs) return false;
    sys.fs.unlinkSync(file);
    return true;
  } catch (e) {
    if (errCode(e) !== "ENOENT") sys.warn(`cannot remove ${file}: ${errText(e)}`);
    return false;
  }
}

/** Removes a temporary file if it is there; a failure to is reported, not hidden. */
function removeTemp(sys: Sys, p: string): void {
  try {
    sys.fs.unlinkSync(p);
  } catch (e) {
    if (errCode(e) !== "ENOENT") sys.warn(`cannot remove the temporary file ${p}: ${errText(e)}`);
  }
}

/** fsync of a path (a file, or a directory so a rename is on disk). */
function fsyncPath(sys: Sys, p: string): void {
  const fd = sys.fs.openSync(p, "r");
  try {
    sys.fs.fsyncSync(fd);
  } finally {
    sys.fs.closeSync(fd);
  }
}

function syncDir(sys: Sys, dir: string): void {
  try {
    fsyncPath(sys, dir);
  } catch (e) {
    sys.warn(`cannot fsync ${dir} (the rename is done, but may not survive a power cut): ${errText(e)}`);
  }
}

/** Copies a file to a new name (a reflink where the file system can), on disk before it returns. */
function copyBeside(sys: Sys, from: string, to: string): void {
  sys.fs.copyFileSync(from, to, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE);
  fsyncPath(sys, to);
}

/**
 * Runs `file --version` with an empty environment (nothing of ours, such as
 * NODE_OPTIONS, reaches it), in /, killed after timeoutMs. Returns the
 * version it printed as "sentry X.Y.Z", or why it did not.
 * Not Sys.run: that passes our environment on, and takes no other.
 */
export function runVersion(file: string, timeoutMs: number): { version: string } | { why: string } {
  const r = childProcess().spawnSync(file, ["--version"], {
    env: {},
    cwd: "/",
    encoding: "utf8",
    timeout: timeoutMs,
    killSignal: "SIGKILL",
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: 1024 * 1024,
  });
  const stderr = (r.stderr ?? "").trim().split("\n")[0].slice(0, 200);
  if (r.error) {
    const code = errCode(r.error);
    return { why: code === "ETIMEDOUT" ? `no answer within ${timeoutMs / 1000} s` : `cannot run it: ${errText(r.error)}` };
  }
  if (r.signal) return { why: `it was killed by ${r.signal}` };
  if (r.status !== 0) return { why: `it exited with status ${r.status}${stderr ? `: ${stderr}` : ""}` };
  const m = /^sentry (\d+\.\d+\.\d+)$/.exec(r.stdout.trim());
  if (!m) return { why: `it printed ${JSON.stringify(r.stdout.trim().slice(0, 80))}, not "sentry X.Y.Z"` };
  return { version: m[1] };
}

function timeoutMsOf(cfg: Config): number {
  if (cfg.UPDATE_TIMEOUT_SECONDS < 1) throw new SentryError("UPDATE_TIMEOUT_SECONDS must be 1 or more", 1);
  return cfg.UPDATE_TIMEOUT_SECONDS * 1000;
}

// ---- 11.3.5 --update ---------------------------------------------------------------

/**
 * `sentry --update [--check | --force]`. Returns the exit code: 0 updated,
 * up to date, or (--check) reported. Throws SentryError(1) for missing or bad
 * configuration, SentryError(2) naming the failed step; on any throw the
 * installed binary is byte-for-byte what it was and no temporary file is left.
 * `target` (tests) defaults to this binary.
 */
export async function update(
  cfg: Config,
  sys: Sys,
  opts: { check: boolean; force: boolean; target?: string },
): Promise<number> {
  const manifestUrl = configuredUrl(cfg);
  parsePublicKey(cfg.UPDATE_PUBLIC_KEY); // a configuration error before any connection
  const timeoutMs = timeoutMsOf(cfg);
  const target = opts.check ? null : resolveTarget(sys, opts.target, "--update");
  const unchanged = target ? `; ${target} is unchanged` : "; nothing was changed";
  const fail = (step: string, why: string) => new SentryError(`update failed ${step}: ${why}${unchanged}`, 2);

  // 1. The manifest, and its signature.
  let fetched: { text: string; url: URL };
  try {
    fetched = await fetchManifest(manifestUrl, timeoutMs);
  } catch (e) {
    throw fail(`fetching the manifest ${manifestUrl.href}`, errText(e));
  }
  let m: Manifest;
  try {
    m = verifyManifest(fetched.text, cfg.UPDATE_PUBLIC_KEY);
  } catch (e) {
    throw fail(`checking the manifest ${fetched.url.href}`, errText(e));
  }

  // 2. Is it newer? A replayed old manifest verifies too.
  const plat = platformKey();
  const entry = Object.hasOwn(m.platforms, plat) ? m.platforms[plat] : null;
  const newer = isNewer(m.version, VERSION);
  if (opts.check) {
    if (newer)
      sys.out(
        entry
          ? `sentry ${m.version} is available (this is ${VERSION}): sentry --update installs it`
          : `sentry ${m.version} is available (this is ${VERSION}), but not for ${plat}`,
      );
    else sys.out(`sentry ${VERSION} is up to date (the release is ${m.version})`);
    return 0;
  }
  if (!newer && !opts.force) {
    if (m.version === VERSION) sys.out(`sentry ${VERSION} is up to date; nothing to do (--force reinstalls it)`);
    else
      sys.warn(
        `the release at ${fetched.url.href} is ${m.version}, older than this sentry ${VERSION}: nothing done (--update --force installs it)`,
      );
    return 0;
  }
  if (!entry)
    throw fail(
      "choosing the binary",
      `release ${m.version} has no binary for ${plat} (it has: ${Object.keys(m.platforms).join(", ") || "none"})`,
    );
  // The compressed copy when there is one: a fraction of the bytes.
  const packed = entry.compressed ?? null;
  let binUrl: URL;
  try {
    binUrl = new URL(packed ? packed.url : entry.url, fetched.url);
  } catch (e) {
    if (errCode(e) !== "ERR_INVALID_URL") throw e; // the one error new URL() throws
    throw fail("choosing the binary", `bad URL ${JSON.stringify(packed ? packed.url : entry.url)}`);
  }
  const problem = transportProblem(binUrl);
  if (problem) throw fail("choosing the binary", problem);

  // 3. Download beside the installed binary, check, test-run, rename over it.
  const installed = target as string;
  const dir = path.dirname(installed);
  removeStaleTemps(sys, installed, timeoutMs);
  const tmp = tempName(installed, "new");
  const tmpZ = packed ? tempName(installed, "zst") : null;
  let fd: number | null = null;
  try {
    fd = sys.fs.openSync(tmp, "wx", 0o700);
  } catch (e) {
    throw fail(`creating a temporary file in ${dir}`, errText(e));
  }
  try {
    const mb = (n: number) => (n / 1e6).toFixed(1);
    sys.out(`downloading sentry ${m.version} for ${plat} (${packed ? `${mb(packed.size)} MB, zstd of ${mb(entry.size)} MB` : `${mb(entry.size)} MB`}) from ${binUrl.href}`);
    try {
      if (packed && tmpZ) {
        const zfd = sys.fs.openSync(tmpZ, "wx", 0o600);
        try {
          await downloadTo(sys, zfd, binUrl, { url: packed.url, sha256: packed.sha256, size: packed.size }, timeoutMs);
        } finally {
          sys.fs.closeSync(zfd);
        }
        try {
          await decompressTo(sys, tmpZ, fd, entry);
        } catch (e) {
          throw new Error(`decompressing it: ${errText(e)}`);
        }
      } else await downloadTo(sys, fd, binUrl, entry, timeoutMs);
      sys.fs.fsyncSync(fd);
    } catch (e) {
      throw fail(`downloading ${binUrl.href}`, errText(e));
    } finally {
      const open = fd;
      fd = null;
      sys.fs.closeSync(open); // closed before it runs: an open writer is ETXTBSY
    }

    const ran = runVersion(tmp, timeoutMs);
    if ("why" in ran) throw fail("test-running the new binary with --version", ran.why);
    if (ran.version !== m.version)
      throw fail("test-running the new binary with --version", `it is ${ran.version}, the manifest says ${m.version}`);

    // sentry.prev first, then the new binary: at every instant both names
    // hold a whole binary, and a crash leaves the installed one working.
    const prev = `${installed}.prev`;
    const prevTmp = tempName(installed, "prev");
    try {
      copyBeside(sys, installed, prevTmp);
      sys.fs.renameSync(prevTmp, prev);
    } catch (e) {
      removeTemp(sys, prevTmp);
      throw fail(`keeping the installed binary as ${prev}`, errText(e));
    }
    try {
      sys.fs.chmodSync(tmp, 0o755);
      sys.fs.renameSync(tmp, installed);
    } catch (e) {
      throw fail(`renaming the new binary over ${installed}`, errText(e));
    }
    syncDir(sys, dir);
    sys.out(
      `updated ${installed} from sentry ${VERSION} to sentry ${m.version}; the previous binary is ${prev} (sentry --rollback restores it)`,
    );
    return 0;
  } finally {
    if (fd !== null) sys.fs.closeSync(fd);
    removeTemp(sys, tmp); // gone already after the rename
    if (tmpZ) removeTemp(sys, tmpZ);
  }
}

// ---- 11.3.6 --rollback ---------------------------------------------------------------

/**
 * `sentry --rollback`: swaps the binary and sentry.prev, so a second
 * --rollback goes forward again. sentry.prev must answer --version as sentry
 * first. Returns 0; throws SentryError(2) with nothing changed otherwise.
 */
export function rollback(cfg: Config, sys: Sys, opts: { target?: string }): number {
  const target = resolveTarget(sys, opts.target, "--rollback");
  const timeoutMs = timeoutMsOf(cfg);
  const prev = `${target}.prev`;
  const refuse = (why: string) => new SentryError(`rollback refused: ${why}; nothing was changed`, 2);
  try {
    if (!sys.fs.lstatSync(prev).isFile()) throw refuse(`${prev} is not a regular file`);
  } catch (e) {
    if (e instanceof SentryError) throw e;
    throw refuse(
      errCode(e) === "ENOENT"
        ? `there is no ${prev} to go back to (a successful --update keeps one)`
        : `cannot read ${prev}: ${errText(e)}`,
    );
  }
  const back = runVersion(prev, timeoutMs);
  if ("why" in back) throw refuse(`${prev} does not answer --version as sentry: ${back.why}`);
  // The current one may be broken (that is why one rolls back): its version is only for the message.
  const now = runVersion(target, timeoutMs);
  const nowText = "version" in now ? `sentry ${now.version}` : "the current binary";

  removeStaleTemps(sys, target, timeoutMs);
  // current → temp copy; prev → target (atomic); temp → prev. target always holds a whole binary.
  const tmp = tempName(target, "rollback");
  try {
    copyBeside(sys, target, tmp);
    sys.fs.renameSync(prev, target);
  } catch (e) {
    removeTemp(sys, tmp);
    throw refuse(`cannot swap ${target} and ${prev}: ${errText(e)}`);
  }
  try {
    sys.fs.renameSync(tmp, prev);
  } catch (e) {
    removeTemp(sys, tmp);
    throw new SentryError(
      `rolled back ${target} to sentry ${back.version}, but could not keep ${nowText} as ${prev}: ${errText(e)}`,
      2,
    );
  }
  syncDir(sys, path.dirname(target));
  sys.out(
    `rolled back ${target} to sentry ${back.version}; ${prev} now holds ${nowText} (sentry --rollback again returns to it)`,
  );
  return 0;
}

// ==== 12. main() ============================================================

/**
 * The usage text (--help, and the manual's source). A function, not a
 * constant: its settings list is wrapped at call time, so a connect, which
 * never shows it, does not build it (issue 15: ~0.4 ms of every start).
 */
export function usage(): string {
  return `NAME
    sentry - safe and effective protection against bruteforce attacks
    version ${VERSION}

SYNOPSIS
    sentry --ip=IP [ --connect | -c | --allow | --block [ --force ] [ --for LENGTH ] | --delist ] [ --reason TEXT ]
    sentry --report | -r [ --verbose | -v ] [ --ip=IP ] [ --json ]
    sentry --list [ --state=S ] [ --net=CIDR | --ip=IP ] [ --newer=AGE ] [ --older=AGE ]
                  [ --sort=time|ip ] [ --utc ] [ --json ]
    sentry --scan | --resync | --sync | --test-log FILE|- [ --missed ]
    sentry --install [ --write ] [ --timer ] | --uninstall | --doctor
    sentry --update [ --check | --force ] | --rollback | --version | --help | -h
    sentry --man | --completion bash|zsh

DESCRIPTION
    sentry limits brute-force attacks on SSH, FTP and mail logins. It is not a
    daemon: tcpwrappers spawns it for every new connection, it counts the
    connection, and once an address has connected ${DEFAULTS.CONNECT_THRESHOLD} times (CONNECT_THRESHOLD;
    ${DEFAULTS.STRONG_CONNECT_THRESHOLD} for a bot's evidence, STRONG_CONNECT_THRESHOLD) it reads the logs
    of the protected services. Any successful login allows the address for
    good; an invalid user, an attempt on root, an exceeded attempts limit or a
    failed mail login blocks it, as do more than ${DEFAULTS.FAIL_THRESHOLD} failed attempts
    (FAIL_THRESHOLD). The numbers here are the defaults. Blocked
    addresses go to ROOT_DIR/hosts.deny, which tcpd reads on every connection,
    and to any firewall table that is switched on. Logs that cannot be read
    decide nothing: sentry never blocks on a guess.

ACTIONS
    --ip=IP, --ip IP   the address to act on (IPv4 or IPv6); --allow, --block and
                       --delist also take a range (--ip=10.0.0.0/8)
    --connect, -c      count a connection from IP and decide (tcpwrappers, PAM)
    --allow            allow IP for good, lifting any block (alias --whitelist)
    --block            block IP everywhere, lifting any allow (alias --blacklist)
    --delist           forget IP: no allow, no block, no count, old evidence set aside
    --report, -r       summary; with --ip, that address's record and evidence
    --list             one line per blocked, allowed or pending address: since,
                       until, by whom, service, attempts by kind, short reason
    --scan             read all logs since the last run and decide for every address
                       they show (cron or a systemd timer, for daemons without libwrap)
    --resync           re-apply block/ to every enabled backend (after a reboot)
    --sync             fleet (CROWDSEC_URL): push this server's new blocks to the
                       CrowdSec Local API and apply the fleet's blocks (a timer;
                       --scan runs it too)
    --test-log FILE    show how each line of FILE (- for stdin) is understood and
                       what --scan and --connect would do with each address, with
                       totals per kind of line and per daemon
    --install          copy this binary to ROOT_DIR/sentry and show the hosts.allow
                       lines
    --uninstall        remove sentry's lines from /etc/hosts.allow
    --doctor           check every link of the chain (Nagios exit codes)
    --update           fetch, verify and install a newer signed release
    --rollback         go back to the binary --update replaced
    --version          print the version (with --verbose, the bundle's SHA-256)
    --help, -h         this text
    --man              this text as a man page (roff), for man -l -
    --completion SHELL the tab completion script for bash or zsh

OPTIONS
    --verbose, -v      --report: add the most active addresses, the latest
                       decisions and notes; --scan, --sync: print the summary always
    --json             --report, --list: the same as JSON ("schema": 1,
                       described by sentry.schema.json)
    --state=S          --list: blocked, allowed or pending (comma-separated)
    --net=CIDR         --list: only addresses in this range (--ip: one address)
    --newer=AGE, --older=AGE
                       --list: decided at most / at least AGE ago (90m, 3h, 2d, 1w)
    --sort=time|ip     --list: oldest first (default), or numerically
    --utc              --list: times in UTC instead of the local time zone
    --for LENGTH       --block: how long, e.g. 30m, 4h, 2d, 1w (else EXPIRE_BLOCK_DAYS);
                       the block ends by itself and sentry.log says so
    --reason TEXT      --block, --allow, --delist: why, recorded with the operator
                       (SUDO_USER, else USER) in block/IP or allow/IP and sentry.log
    --force            --block: block an address even though the logs show
                       successful logins from it; --update: allow the same or
                       an older version
    --write            --install: add the lines to /etc/hosts.allow itself, and
                       where sshd lacks libwrap write and enable the timer
    --timer            --install --write: write and enable the timer that runs
                       --scan even where sshd links libwrap
    --check            --update: only report whether a newer release exists
    --missed           --test-log: print only the lines of known daemons that
                       were not understood (the totals go to stderr)

CONNECT
    In /etc/hosts.allow, near the top, in this order (the deny line first):

        sshd : /var/db/sentry/hosts.deny : deny
        sshd : /var/db/sentry/hosts.allowed : allow
        sshd : ALL : spawn /var/db/sentry/sentry --connect --ip=%a : allow

    tcpd admits the addresses in hosts.allowed (allowed ones your own policy
    admits) without spawning sentry; their connections are no longer counted.
    sshd waits for the spawned command, so a connect does little: it appends a
    line to seen/IP and, for an address seen CONNECT_THRESHOLD times and not yet
    decided, reads only the log lines written since the last decision (at most
    SCAN_SECONDS). Once a block's end has come (and at least every
    EXPIRE_CHECK_MINUTES), a connect also lifts the blocks that have ended,
    EXPIRE_PER_CONNECT at a time; --scan lifts them all.
    Without libwrap, run "sentry --scan" from a timer, or add to /etc/pam.d/sshd:
        auth optional pam_exec.so quiet /var/db/sentry/sentry --connect

FILES
    ROOT_DIR/seen/IP       one line per connection (epoch seconds)
    ROOT_DIR/allow/IP      present while IP is allowed: when and why
    ROOT_DIR/block/IP      present while IP is blocked: when and why, and
                           "until TIME (LENGTH; why)"; the length runs from
                           its modification time: touch renews the block
    ROOT_DIR/hosts.deny    blocked addresses for tcpd, one per line
    ROOT_DIR/hosts.allowed  allowed addresses tcpd admits without spawning
                           sentry (only those the host's own policy admits)
    ROOT_DIR/sentry.log    one line per decision: time, address, action, reason;
                           rotated at SENTRY_LOG_ROTATE_KB to sentry.log.1 … .N
    ROOT_DIR/review/IP     held for review (ALLOW_AFTER_FAILURES_HOLD=1)
    ROOT_DIR/sentry.db     index of log cursors and evidence; may be deleted
    ROOT_DIR/sentry.lock   the lock writers take (a SQLite file)
    ROOT_DIR/sentry.conf   optional settings, KEY=value lines
    ROOT_DIR/fleet.*       fleet (--sync): outbox of blocks to push, the machine's
                           token (0600), the time of the last good sync
    ROOT_DIR/delisted/IP   when IP was last delisted or expired: older log lines
                           about it are never counted again, even by a new sentry.db
    ROOT_DIR/block/NET_LEN  a range blocked as one entry (allow/NET_LEN:
                            allowed); 2001:db8:1:2::_64 is 2001:db8:1:2::/64
    ROOT_DIR/history/IP    how many of IP's blocks ran out (the next is longer)
    ROOT_DIR/connections.log  "EPOCH IP" per connect: the feed that keeps
                              --report's index current; rotates itself to
                              connections.log.1 at 16 MiB
    ROOT_DIR/looked        addresses whose last look at the logs found nothing
    ROOT_DIR/expire.stamp  its modification time: when the next block ends
    ROOT_DIR/scan.stamp    when --scan last ran (--doctor reads it)
    ROOT_DIR/sentry.prev   the binary --update replaced, for --rollback
    ROOT_DIR/*.corrupt-TIME  a sentry.db or sentry.lock that was not a
                             usable SQLite file, moved aside and made anew
    MAN_DIR/sentry.8       this manual, written by --install
    COMPLETION_DIR/sentry  the bash completion, written by --install
    UNIT_DIR/sentry-scan*  sentry-scan.service and .timer run --scan every
                           minute where systemd runs (--install --write);
                           elsewhere CRON_FILE holds the same as a cron line
    ROOT_DIR, its folders and sentry.conf must be owned by root (or the user
    running sentry) and not writable by group or others, like sshd's
    StrictModes; sentry follows no symbolic link inside ROOT_DIR.

CONFIGURATION
    Defaults are in the configuration block at the top of sentry.ts; each can be
    set in ROOT_DIR/sentry.conf and then overridden by an environment variable
    (ROOT_DIR only from the environment). Booleans are 1/0 (yes/no, true/false,
    on/off). The settings (sentry --man describes each, with its default):
${wrapWords(Object.keys(DEFAULTS), 4, 80)}

EXIT STATUS
    0 done, 1 bad usage or input, 2 could not do it (I/O, permissions, a backend).
    --doctor: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

EXAMPLES
    sentry --report --verbose
    sentry --list --state=blocked --newer=1d
    sentry --list --net=203.0.113.0/24 --sort=ip --json
    sentry --ip=203.0.113.7 --block
    sentry --ip 2001:db8::7 --delist
    sentry --test-log /var/log/auth.log
    sentry --test-log /var/log/auth.log --missed
    ROOT_DIR=/tmp/sentry-test sentry --ip=192.0.2.1 --connect

SEE ALSO
    hosts_access(5), sshd(8), tcpdmatch(8)
`;
}

// ---- 12.1 The manual: usage() as roff, and the tab completion ---------------
//
//   usage() ("NAME\n    sentry - …\n\nSYNOPSIS\n    sentry --ip=IP …")
//     → manPage() → ".TH SENTRY 8 …\n.SH NAME\nsentry \\- …\n.SH SYNOPSIS\n.nf …"
//
// --help and the man page are one text: a heading at column 0 becomes .SH,
// an indented "TERM   description" line (two or more spaces between) a
// tagged paragraph, lines indented deeper than their paragraph a literal
// block, anything else running text. CONFIGURATION gets one entry per key
// of DEFAULTS with the comment it carries in section 1 (build.mjs hands the
// comments over, since bundling drops them), so a new setting is in the
// manual the day it is added.

/** `words` joined by ", " and wrapped at `width` columns, each line indented by `indent` spaces. */
export function wrapWords(words: readonly string[], indent: number, width: number): string {
  const lines: string[] = [];
  let line = "";
  for (const [i, w] of words.entries()) {
    const word = i < words.length - 1 ? `${w},` : w;
    if (line !== "" && indent + line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  if (line !== "") lines.push(line);
  return lines.map((l) => `${" ".repeat(indent)}${l}`).join("\n");
}

/** Text safe in a roff line: backslashes and hyphens escaped, no control character at its start. */
export function roffText(text: string): string {
  const t = text.replace(/\\/g, "\\e").replace(/-/g, "\\-");
  return /^[.']/.test(t) ? `\\&${t}` : t;
}

/** The comment each setting carries in DEFAULTS, as the build handed it over ({} when run as a script). */
export function settingsDoc(): Record<string, string> {
  return typeof SENTRY_BUILD_SETTINGS_DOC === "object" && SENTRY_BUILD_SETTINGS_DOC !== null ? SENTRY_BUILD_SETTINGS_DOC : {};
}

/** How a default reads in the manual: booleans as 1/0 (as in sentry.conf), text quoted, empty as "". */
function defaultText(v: string | number | boolean): string {
  if (typeof v === "boolean") return v ? "1" : "0";
  if (typeof v === "number") return String(v);
  return JSON.stringify(v);
}

/** The man page sentry.8: usage() in roff, with CONFIGURATION generated from DEFAULTS and `doc`. */
export function manPage(text: string = usage(), doc: Record<string, string> = settingsDoc(), date: string = typeof SENTRY_BUILD_DATE === "string" ? SENTRY_BUILD_DATE : ""): string {
  const out: string[] = [`.TH SENTRY 8 ${JSON.stringify(date)} ${JSON.stringify(`sentry ${VERSION}`)} "System Manager's Manual"`];
  const sections = text.replace(/\n+$/, "").split(/\n(?=[A-Z])/);
  for (const sec of sections) {
    const [head, ...body] = sec.split("\n");
    out.push(`.SH ${head}`);
    if (head === "NAME") {
      // man's NAME line: "name \- one line", which whatis and lexgrog read.
      out.push(`sentry \\- ${roffText(body[0].trim().replace(/^sentry - /, ""))}`);
      continue;
    }
    if (head === "SYNOPSIS" || head === "EXAMPLES") {
      out.push(".nf", ...body.filter((l) => l.trim() !== "").map((l) => roffText(l.trim())), ".fi");
      continue;
    }
    if (head === "SEE ALSO") {
      const refs = body.join(" ").trim().split(/,\s*/);
      refs.forEach((r, i) => {
        const m = /^(\S+)\((\d)\)$/.exec(r);
        out.push(m ? `.BR ${roffText(m[1])} (${m[2]})${i < refs.length - 1 ? "," : ""}` : roffText(r));
      });
      continue;
    }
    out.push(...roffBody(body));
    if (head === "CONFIGURATION") {
      for (const key of Object.keys(DEFAULTS) as ConfigKey[]) {
        // .br: a name shorter than the indent (SYSLOG) would otherwise run into its text.
        out.push(".TP", `.B ${key}`, ".br");
        out.push(roffText(`Default: ${defaultText(DEFAULTS[key])}.`));
        if (doc[key]) out.push(...roffWrap(roffText(/[.)]$/.test(doc[key]) ? doc[key] : `${doc[key]}.`)));
        if (key === "ROOT_DIR") out.push(roffText("Only from the environment."));
        if (EXEC_SETTINGS.includes(key)) out.push(roffText("Only from a sentry.conf owned by root or the environment of root."));
      }
    }
  }
  return `${out.join("\n")}\n`;
}

/** A long roff text line cut at spaces into lines of at most 80 bytes (mandoc -T lint asks for that). */
function roffWrap(line: string): string[] {
  const out: string[] = [];
  let cur = "";
  for (const w of line.split(" ")) {
    if (cur !== "" && cur.length + 1 + w.length > 80) {
      out.push(cur);
      cur = w;
    } else cur = cur === "" ? w : `${cur} ${w}`;
  }
  if (cur !== "") out.push(cur);
  // A word that now starts a line must not read as a request.
  return out.map((l) => (/^[.']/.test(l) ? `\\&${l}` : l));
}

/** The indented lines of one usage() section as roff: paragraphs, tagged paragraphs, literal blocks. */
function roffBody(lines: string[]): string[] {
  const out: string[] = [];
  let para = 4; // indentation of the current paragraph's text
  let literal = false;
  const endLiteral = () => {
    if (literal) out.push(".fi", ".RE");
    literal = false;
  };
  for (const line of lines) {
    if (line.trim() === "") {
      if (literal) out.push("");
      continue;
    }
    const ind = line.length - line.trimStart().length;
    const text = line.trim();
    const tag = ind === 4 ? /^(\S.*?\S)\s{2,}(\S.*)$/.exec(text) : null;
    if (tag) {
      endLiteral();
      para = line.indexOf(tag[2]);
      out.push(".TP", `.B ${roffText(tag[1])}`, roffText(tag[2]));
    } else if (ind === 4) {
      endLiteral();
      if (para !== 4) out.push(".PP");
      para = 4;
      out.push(roffText(text));
    } else if (ind >= para && ind <= para + 1 && !literal) {
      out.push(roffText(text)); // the continuation of a paragraph or a tagged one
    } else {
      if (!literal) out.push(".RS", ".nf");
      literal = true;
      out.push(roffText(line.slice(Math.min(ind, para + 4))));
    }
  }
  endLiteral();
  return out;
}

/** Every option the command line takes, for the completion: the actions, then the modifiers. */
export function allOptions(): string[] {
  return [...Object.keys(ACTION_FLAGS), ...OPTION_FLAGS];
}

/** The completion script for `shell` (bash or zsh), offering allOptions(). */
export function completionScript(shell: string): string {
  const words = allOptions().join(" ");
  if (shell === "bash")
    return [
      "# bash completion for sentry (sentry --completion bash)",
      "_sentry() {",
      '  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
      '  case "$prev" in',
      '    --test-log) COMPREPLY=($(compgen -f -- "$cur")); return ;;',
      '    --completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return ;;',
      "  esac",
      `  COMPREPLY=($(compgen -W "${words}" -- "$cur"))`,
      "}",
      "complete -F _sentry sentry",
      "",
    ].join("\n");
  if (shell === "zsh")
    return [
      "#compdef sentry",
      "# zsh completion for sentry (sentry --completion zsh > a directory of $fpath, as _sentry)",
      `_arguments '*:option:(${words})'`,
      "",
    ].join("\n");
  throw new SentryError(`--completion takes bash or zsh, not ${JSON.stringify(shell)}`, 1);
}

/** Runs one command line; returns the exit code. The one place errors are caught. */
export async function main(argv: string[], sys: Sys = realSys()): Promise<number> {
  try {
    const a = parseArgs(argv, sys.env);
    if (a.action === "help") {
      // Plain `sentry` is a usage error, `sentry --help` is not.
      if (argv.length === 0) {
        sys.warn("no action given");
        sys.err(usage());
        return 1;
      }
      sys.out(usage());
      return 0;
    }
    if (a.action === "version") {
      sys.out(`sentry ${VERSION}`);
      // The hash anyone can recompute from the source: npm run verify-release.
      if (a.verbose) sys.out(`bundle sha256 ${typeof SENTRY_BUILD_BUNDLE_SHA256 === "string" ? SENTRY_BUILD_BUNDLE_SHA256 : "none (not a build: sentry.ts run as a script)"}`);
      return 0;
    }
    if (a.action === "man") {
      sys.out(manPage().replace(/\n$/, ""));
      return 0;
    }
    if (a.action === "completion") {
      sys.out(completionScript(a.shell).replace(/\n$/, ""));
      return 0;
    }
    let cfg: Config;
    try {
      cfg = loadConfig(sys.env, sys.fs, sys.uid ?? (process.geteuid ? process.geteuid() : 0));
    } catch (e) {
      // --doctor answers a monitoring system: its first line and exit code stay Nagios'.
      // A configuration it cannot read leaves it unable to judge anything:
      // Nagios' UNKNOWN (3), the short message first, the whole one below.
      // But strict modes refusing ROOT_DIR is known, not unknown: every
      // connect refuses to act, so protection is off: CRITICAL (2).
      if (a.action === "doctor" && e instanceof SentryError) {
        const severity: Severity = e.message.startsWith("strict modes:") ? 2 : 3;
        sys.out(doctorHead([{ severity, text: `configuration: ${e.message}` }]).head);
        sys.out(`${SEVERITY[severity]}: configuration: ${e.message}`);
        return severity;
      }
      throw e;
    }
    const ctx = makeCtx(cfg, sys);
    try {
      return await run(ctx, a);
    } finally {
      flushOutbox(ctx); // syslog and notifications: started detached, not waited for (section 9.4)
    }
  } catch (e) {
    if (e instanceof SentryError) {
      sys.warn(e.message);
      return e.exitCode;
    }
    // Not expected: a bug. Say everything, exit as "could not do it".
    sys.warn(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 2;
  }
}

// ---- 12.2 Manual actions say what they did ------------------------------------
//
//   $ sentry --ip=192.0.2.200 --block
//      0 connections from 192.0.2.200 and it is blocked
//   blocked 192.0.2.200 (was: not decided)
//   $ sentry --ip=192.0.2.200 --delist
//      0 connections from 192.0.2.200
//   delisted 192.0.2.200 (was: blocked since 2026-11-29T13:00:00Z by admin)
//
// The record line admins grep shows the state after the action (it showed
// the state before, which read as "nothing happened"); the second line says
// what changed.

/** "not decided", "blocked since T by connect", "allowed (ALLOW_IPS or loopback)": an address's state, for "(was: …)". */
export function stateText(status: Status, record: string | null, inAllowList: boolean): string {
  if (status === null) return "not decided";
  if (status === "allowed" && inAllowList && record === null) return "allowed (ALLOW_IPS or loopback)";
  // allow/IP and block/IP start "2026-11-29T13:00:00Z block by connect: reason".
  const m = record === null ? null : /^(\d{4}-\d\d-\d\dT[\d:.]+Z) \S+ by ([^:\s]+)/.exec(record);
  return m ? `${status} since ${m[1]} by ${m[2]}` : status;
}

/** The state of `ip` for "(was: …)": from allow/IP or block/IP, whichever decides ipStatus. */
function describeState(ctx: Ctx, ip: string): string {
  const status = ipStatus(ctx, ip);
  let record: string | null = null;
  if (status !== null) {
    const file = statePath(ctx, status === "allowed" ? "allow" : "block", ip);
    try {
      record = ctx.sys.fs.readFileSync(file, "utf8");
    } catch (e) {
      if (errCode(e) !== "ENOENT") throw ioError("read", file, e);
    }
  }
  return stateText(status, record, inRanges(ip, ctx.allowRanges));
}

/**
 * Why --block must not go ahead without --force, or null: the evidence
 * index holds successful logins from `ip`. An admin blocking "that noisy
 * address" may be blocking their own office, or the user who phoned.
 */
export function loginsBlockingBlock(ip: string, t: Tallies | null): string | null {
  if (t === null) return null;
  const found = SERVICES.flatMap((s) => (t[s] && t[s].success > 0 ? [[s, t[s]] as const] : []));
  if (found.length === 0) return null;
  const n = found.reduce((acc, [, x]) => acc + x.success, 0);
  const where = found.map(([s, x]) => `${s}: ${x.success}`).join(", ");
  // The sample is the most telling line seen, and a success outranks every other kind.
  const sample = found[0][1].sample;
  return (
    `not blocking ${ip}: the logs show ${n} successful login${n === 1 ? "" : "s"} from it (${where})` +
    (sample ? `, e.g. ${JSON.stringify(sample)}` : "") +
    `; it may be you or one of your users. Add --force to block it anyway`
  );
}

/** What a manual action records as its reason: the flags and the admin's words (the operator is in "by": byText). */
export function manualReason(flags: string, reason: string | null): string {
  return `${flags}${reason !== null ? `: ${reason}` : ""}`;
}

/** --allow, --block, --delist by hand: do it under the lock, then say what the state is and what it was. */
export function manualAction(
  ctx: Ctx,
  action: "allow" | "block" | "delist",
  ip: string,
  force: boolean,
  opts: { forMs?: number | null; forText?: string | null; reason?: string | null } = {},
): number {
  if (action === "block" && !force) {
    const why = loginsBlockingBlock(ip, readEvidence(ctx, ip));
    if (why !== null) throw new SentryError(why, 1);
  }
  const forFlag = opts.forMs ? ` --for ${opts.forText ?? lengthText(opts.forMs)}` : "";
  const reason = manualReason(`--${action}${action === "block" && force ? " --force" : ""}${forFlag}`, opts.reason ?? null);
  let was = "";
  const code = withLock(ctx, () => {
    was = describeState(ctx, ip);
    if (action === "allow") return setAllowed(ctx, ip, "admin", reason);
    if (action === "block")
      return setBlocked(ctx, ip, "admin", reason, opts.forMs ? { ms: opts.forMs, why: `--for ${opts.forText ?? lengthText(opts.forMs)}` } : defaultBlockLength(ctx.cfg));
    return setDelisted(ctx, ip, "admin", reason);
  });
  ctx.sys.out(recordLine(countConnections(ctx, ip), ip, ipStatus(ctx, ip)));
  const done = action === "allow" ? "allowed" : action === "block" ? "blocked" : "delisted";
  ctx.sys.out(`${done} ${ip} (was: ${was})${code !== 0 ? "; a backend failed, see above" : ""}`);
  return code;
}

/** The actions that need the configuration: main() answers the others before reading it. */
export type ConfiguredAction = Exclude<Action, { action: "help" | "version" | "man" | "completion" }>;

/** Dispatches a parsed command line (every case returns: the compiler checks none is missing). */
export async function run(ctx: Ctx, a: ConfiguredAction): Promise<number> {
  switch (a.action) {
    case "connect":
      return connect(ctx, a.ip);
    case "allow":
    case "delist":
    case "block": {
      const opts = a.action === "block" ? { forMs: a.forMs, forText: a.forText, reason: a.reason } : { reason: a.reason };
      if (a.net !== null) return manualNetAction(ctx, a.action, a.net, opts);
      return manualAction(ctx, a.action, a.ip, a.action === "block" && a.force, opts);
    }
    case "report": {
      if (a.net !== null) {
        const rr = rangeRecord(ctx, a.net);
        ctx.sys.out(a.json ? JSON.stringify(rangeJson(rr), null, 2) : formatRangeRecord(rr));
        return 0;
      }
      const r = buildReport(ctx, { verbose: a.verbose, ip: a.ip });
      ctx.sys.out(a.json ? JSON.stringify(reportJson(r), null, 2) : formatReport(r));
      return 0;
    }
    case "list":
      return listCommand(ctx, a.list, a.json);
    case "scan": {
      const code = scanCommand(ctx, a.verbose);
      return fleetConfigured(ctx.cfg) ? Math.max(code, await syncCommand(ctx, a.verbose)) : code; // section 9.5
    }
    case "sync":
      return syncCommand(ctx, a.verbose);
    case "resync":
      return resync(ctx);
    case "test-log":
      return testLog(ctx, a.file, a.missed);
    case "install":
      return install(ctx, a.write, a.force, a.timer);
    case "uninstall":
      return uninstall(ctx);
    case "doctor":
      return doctor(ctx, await fleetChecks(ctx));
    case "update":
      return update(ctx.cfg, ctx.sys, { check: a.check, force: a.force });
    case "rollback":
      return rollback(ctx.cfg, ctx.sys, {});
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = outputFailed ? Math.max(code, 2) : code;
  });
}
