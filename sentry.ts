#!/usr/bin/env node
/*
 * sentry — safe and effective protection against brute-force attacks on SSH,
 * FTP and mail logins.
 *
 * sentry is not a daemon. tcpwrappers spawns it for every new connection:
 *
 *     sshd : /var/db/sentry/hosts.deny : deny
 *     sshd : ALL : spawn /var/db/sentry/sentry --connect --ip=%a : allow
 *
 * and it decides, in a few milliseconds of work, whether that address is a
 * legitimate user, an attacker, or not known yet. This is the TypeScript
 * rewrite of sentry.pl (1.06) and sentry.sh (2.00); the command line and the
 * files under /var/db/sentry are a superset of both.
 *
 * HOW A CONNECTION FLOWS THROUGH IT
 *
 *   1. tcpd hands over the client's socket address (%a). It is parsed into
 *      one canonical spelling, or refused: the address becomes a file name.
 *   2. One line is appended to seen/IP (a single O_APPEND write, so a botnet
 *      connecting 40 times at once is counted 40 times).
 *   3. An address already in allow/ or block/ is done. So is one seen fewer
 *      than 3 times: most clients never cost more than steps 1–3.
 *   4. Otherwise the logs of each protected service are read, only the bytes
 *      written since the last decision, and tallied per address in sentry.db.
 *      Any successful login allows the address for good; a naughty attempt
 *      (invalid user, root, an exceeded limit) or more than 10 failures
 *      blocks it. Logs that cannot be read decide nothing.
 *   5. A block is written to block/IP, to hosts.deny (which tcpd reads on
 *      the next connection) and to any firewall table that is switched on.
 *
 * ERROR POLICY
 *
 *   Expected outcomes (an address not known yet, a log that is missing, a
 *   firewall tool that is not installed) are values and warnings. Everything
 *   that stops a command is one error type, SentryError, carrying its exit
 *   code (1 bad usage or input, 2 could not do it), thrown where the problem
 *   is found and caught once, in main(). Nothing is swallowed silently.
 *
 * CONTENTS (the banners below carry these numbers; keep the structure of
 * this file intact, in the order data flows)
 *
 *    1. Configuration            defaults, sentry.conf, environment
 *    2. Errors and the system    SentryError; the one table of system calls
 *    3. Addresses                parse, canonicalise, match CIDR ranges
 *    4. Command line             options into an Action
 *    5. State files              seen/, allow/, block/, sentry.log, the lock
 *    6. Evidence                 log lines into success/failed/naughty/probe
 *    7. Log sources              files, rotation, the journal, the index
 *    8. Decision                 the rules; connect, allow, block, delist
 *    9. Backends                 hosts.deny, nftables, iptables, pf, ipfw
 *   10. Report                   summary, verbose, one address, JSON
 *   11. Install, doctor, update  hosts.allow, checks, signed self-update
 *   12. main()                   usage text, dispatch, the one catch
 */

import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";

// ==== 1. Configuration ======================================================
//
// Every default lives here, one knob per line. A compiled binary cannot be
// edited and --update replaces it, so each knob can be overridden, in this
// order, by ROOT_DIR/sentry.conf (KEY=value lines, # comments) and then by an
// environment variable of the same name. A bad value is an error naming the
// key, never a silent default.

export const VERSION = "3.0.0";

export const DEFAULTS = {
  ROOT_DIR: "/var/db/sentry", // where every file of sentry lives
  ADD_TO_TCPWRAPPERS: true, // write blocked addresses to ROOT_DIR/hosts.deny
  ADD_TO_PF: false, // pfctl table FIREWALL_TABLE (BSD, macOS)
  ADD_TO_IPFW: false, // ipfw table FIREWALL_TABLE (FreeBSD)
  ADD_TO_IPTABLES: false, // ipset sets FIREWALL_TABLE-4/-6 for iptables rules
  ADD_TO_NFTABLES: false, // nft sets ip4/ip6 in table inet FIREWALL_TABLE
  FIREWALL_TABLE: "sentry_blocklist", // name of the table or set sentry fills
  EXPIRE_BLOCK_DAYS: 90, // days a block lasts; 0 = never expire
  PROTECT_FTP: true, // read FTP logs (vsftpd, ProFTPD, Pure-FTPd, ftpd)
  PROTECT_SMTP: false, // read Postfix SASL failures (mail submission)
  PROTECT_MUA: true, // read Dovecot and vpopmail (IMAP/POP3) logins
  SSH_LOG: "", // a file, or "journal"; empty = look in the usual places
  FTP_LOG: "", // a file, or "journal"; empty = look in the usual places
  MAIL_LOG: "", // a file, or "journal"; empty = look in the usual places
  ALLOW_IPS: "", // addresses and CIDR ranges never blocked (space or comma)
  UPDATE_URL: "", // release manifest (https://…/manifest.json); empty = --update is off
  UPDATE_PUBLIC_KEY: "", // Ed25519 key releases are signed with (SPKI DER, base64)
  HOSTS_ALLOW: "/etc/hosts.allow", // the tcpwrappers file --install edits
  SSHD_PATH: "", // sshd binary --doctor inspects; empty = search PATH and sbin
  CONNECT_THRESHOLD: 3, // connections before the logs are consulted
  FAIL_THRESHOLD: 10, // more failed attempts than this blocks (no naughty needed)
  SCAN_SECONDS: 2, // longest a --connect spends reading logs (sshd waits)
  FIRST_SCAN_MB: 50, // the first read of a log starts this far from its end
  EXPIRE_CHECK_MINUTES: 60, // how often a --connect looks for expired blocks
  COMMAND_TIMEOUT_SECONDS: 5, // longest a firewall tool or journalctl may run
  UPDATE_TIMEOUT_SECONDS: 30, // longest one network step of --update may take
  LOCK_TIMEOUT_SECONDS: 10, // longest a writer waits for the state lock
};

export type Config = { -readonly [K in keyof typeof DEFAULTS]: (typeof DEFAULTS)[K] };
export type ConfigKey = keyof Config;

/**
 * Reads one value for `key` from text, typed like its default.
 * Booleans are 0/1 (as in sentry.sh) or yes/no/true/false; numbers are
 * whole and not negative. Throws SentryError(1) naming the key and origin.
 */
export function parseConfigValue(key: ConfigKey, raw: string, origin: string): Config[ConfigKey] {
  const text = raw.trim();
  const def = DEFAULTS[key];
  const bad = (what: string) =>
    new SentryError(`${origin}: ${key}=${JSON.stringify(raw)} is not valid: expected ${what}`, 1);
  if (typeof def === "boolean") {
    if (/^(1|yes|true|on)$/i.test(text)) return true;
    if (/^(0|no|false|off)$/i.test(text)) return false;
    throw bad("1 or 0");
  }
  if (typeof def === "number") {
    if (!/^\d{1,9}$/.test(text)) throw bad("a whole number, 0 or more");
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
export function loadConfig(env: Record<string, string | undefined>, fsys: FsTable = realFs): Config {
  const cfg: Config = { ...DEFAULTS };
  const set = (key: ConfigKey, raw: string, origin: string) => {
    (cfg as Record<ConfigKey, unknown>)[key] = parseConfigValue(key, raw, origin);
  };
  if (env.ROOT_DIR !== undefined) set("ROOT_DIR", env.ROOT_DIR, "environment");
  if (!path.isAbsolute(cfg.ROOT_DIR))
    throw new SentryError(`ROOT_DIR must be an absolute path, not ${JSON.stringify(cfg.ROOT_DIR)}`, 1);
  const confPath = path.join(cfg.ROOT_DIR, "sentry.conf");
  let text: string | null = null;
  try {
    text = fsys.readFileSync(confPath, "utf8");
  } catch (e) {
    const code = errCode(e);
    // No file is the normal case; a ROOT_DIR that does not exist yet too.
    if (code !== "ENOENT" && code !== "ENOTDIR")
      throw new SentryError(`cannot read ${confPath}: ${errText(e)}`, 2);
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
      // Allow the value to be quoted, as in a shell file.
      set(key, m[2].replace(/^"(.*)"$|^'(.*)'$/, "$1$2"), where);
    });
  }
  for (const key of Object.keys(DEFAULTS) as ConfigKey[]) {
    if (key === "ROOT_DIR") continue;
    const v = env[key];
    if (v !== undefined) set(key, v, "environment");
  }
  // ALLOW_IPS is checked now, so a typo fails every command, not the first block.
  parseAllowList(cfg.ALLOW_IPS);
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
  | "renameSync"
  | "unlinkSync"
  | "rmSync"
  | "chmodSync"
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
  warn(text: string): void; // one line to stderr
  /** Runs cmd with an argument vector, never a shell, killed after timeoutMs. */
  run(cmd: string, args: string[], opts?: { timeoutMs?: number; input?: string }): RunResult;
  execPath: string; // this program (the binary itself when compiled)
}

/** Runs a command without a shell; a missing tool or a timeout is a value. */
export function runCommand(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): RunResult {
  const r = spawnSync(cmd, args, {
    encoding: "utf8",
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

/** The Sys of a real run. */
export function realSys(): Sys {
  return {
    now: () => Date.now(),
    env: process.env,
    fs: realFs,
    out: (t) => void process.stdout.write(t.endsWith("\n") ? t : t + "\n"),
    warn: (t) => void process.stderr.write(`sentry: ${t}\n`),
    run: runCommand,
    execPath: process.execPath,
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
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out.push(n);
  }
  return out;
}

/** Parses an IPv6 text form into 8 16-bit groups, or null. */
function parseV6Groups(s: string): number[] | null {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return null;
  let tail: number[] = [];
  // An embedded IPv4 may end the address (::ffff:1.2.3.4, 64:ff9b::1.2.3.4).
  const lastColon = s.lastIndexOf(":");
  if (s.indexOf(".") !== -1) {
    const v4 = parseV4Bytes(s.slice(lastColon + 1));
    if (!v4) return null;
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]];
    s = s.slice(0, lastColon + 1);
    // "::1.2.3.4" leaves "::"; "ffff:1.2.3.4" would leave "ffff:" — give it its missing group end.
    if (s.endsWith(":") && !s.endsWith("::")) s = s.slice(0, -1);
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (h: string): number[] | null => {
    if (h === "") return [];
    const out: number[] = [];
    for (const g of h.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = groups(halves[0]);
  if (!head) return null;
  if (halves.length === 1) {
    const all = [...head, ...tail];
    return all.length === 8 ? all : null;
  }
  const rest = groups(halves[1]);
  if (!rest) return null;
  const known = head.length + rest.length + tail.length;
  if (known > 7) return null; // "::" stands for at least one zero group
  return [...head, ...new Array<number>(8 - known).fill(0), ...rest, ...tail];
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
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(":");
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/**
 * The canonical spelling of an address, or null if `text` is not exactly
 * one. IPv4-mapped IPv6 becomes IPv4; a zone id (%eth0) is dropped; the
 * unspecified and broadcast addresses, which no client can have, are refused.
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
    const ip = b.join(".");
    return ip === "0.0.0.0" || ip === "255.255.255.255" ? null : ip;
  }
  const g = parseV6Groups(s);
  if (!g) return null;
  if (g.every((x) => x === 0)) return null; // "::" is no client
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
  const mask = bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(max - bits);
  return { family, base: value & mask, bits, text: `${ip}/${bits}` };
}

/** Loopback is never blocked, whatever ALLOW_IPS says. */
export const ALWAYS_ALLOWED = ["127.0.0.0/8", "::1/128"];

/** Parses ALLOW_IPS (space or comma separated) plus loopback; throws naming the bad entry. */
export function parseAllowList(text: string): Cidr[] {
  const out: Cidr[] = [];
  for (const word of [...ALWAYS_ALLOWED, ...text.split(/[\s,]+/)]) {
    if (word === "") continue;
    const c = parseCidr(word);
    if (!c) throw new SentryError(`ALLOW_IPS: ${JSON.stringify(word)} is not an address or CIDR range`, 1);
    out.push(c);
  }
  return out;
}

/** True if canonical `ip` lies in any of `ranges`. */
export function inRanges(ip: string, ranges: Cidr[]): boolean {
  const family = ipFamily(ip);
  const value = ipToBigInt(ip);
  const max = family === 4 ? 32 : 128;
  for (const r of ranges) {
    if (r.family !== family) continue;
    const mask = r.bits === 0 ? 0n : ((1n << BigInt(r.bits)) - 1n) << BigInt(max - r.bits);
    if ((value & mask) === r.base) return true;
  }
  return false;
}

// ==== 12. main() ============================================================

export const USAGE = `sentry ${VERSION}`;

export function main(argv: string[], sys: Sys = realSys()): number {
  if (argv.includes("--version")) {
    sys.out(`sentry ${VERSION}`);
    return 0;
  }
  sys.out(USAGE);
  return 0;
}

if (import.meta.main) {
  process.exitCode = main(process.argv.slice(2));
}
