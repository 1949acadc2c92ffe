// test/lib/bench-gen.mjs — synthetic data for test/bench.mjs.
//
// Everything here is deterministic (seeded), so two runs of the benchmark
// measure the same bytes. All addresses are reserved ones that route nowhere
// and belong to nobody: TEST-NET-1/2/3 (192.0.2.0/24, 198.51.100.0/24,
// 203.0.113.0/24), the benchmarking range 198.18.0.0/15 (RFC 2544) and the
// IPv6 documentation prefix 2001:db8::/32. They are only strings in files:
// nothing here sends a packet anywhere.
//
//   genLog(path, bytes, opts)   a classic-syslog auth.log of about `bytes`,
//                               mostly noise, with given evidence lines
//                               injected at given fractions of the file
//   syslogLine(...)             one `Nov 21 10:00:00 web1 sshd[123]: …` line
//   reportIp(i), reportRecord(i) the synthetic state of the report benchmark
//   genState(root, n, workers)  writes seen/, allow/, block/, hosts.deny for n
//                               IPs, in worker threads (file creation is
//                               kernel-bound: ~35 µs a file on a quiet disk)
//
// This file is also the worker's entry point (see the bottom).

import * as fs from "node:fs";
import { Worker, isMainThread, workerData, parentPort } from "node:worker_threads";

// ---- seeded random numbers (mulberry32) ------------------------------------

export function rng(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-bit integer hash of i (for per-index choices without state). */
export function hash32(i, salt = 0) {
  let h = (i ^ Math.imul(salt + 0x9e3779b9, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

// ---- syslog lines ----------------------------------------------------------

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const p2 = (n) => (n < 10 ? "0" + n : String(n));

/** `Nov 21 10:00:00` (classic syslog: local time, day padded with a space). */
export function syslogStamp(epochSeconds) {
  const d = new Date(epochSeconds * 1000);
  const day = d.getDate();
  return `${MONTHS[d.getMonth()]} ${day < 10 ? " " + day : day} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
}

export const HOST = "web1";

export function syslogLine(epochSeconds, prog, pid, msg) {
  return `${syslogStamp(epochSeconds)} ${HOST} ${prog}${pid ? `[${pid}]` : ""}: ${msg}\n`;
}

// Noise: the lines a busy, attacked server really logs, for addresses that are
// never the ones a benchmark decides on (198.18.0.0/15 attackers, legitimate
// users from 2001:db8:ffff::/48).
const USERS = ["admin", "oracle", "test", "ubuntu", "user", "postgres", "git", "pi", "ftpuser", "guest", "support", "deploy1", "hadoop", "mysql", "www"];
const KEYS = ["ED25519 SHA256:Xq3v9xJm2hZl0W8dC5pR1sT7uY4kN6bA0eF2gH3iJ9c", "RSA SHA256:p1Q2w3E4r5T6y7U8i9O0pAsDfGhJkLzXcVbNm1234qw"];

function attackerIp(r, pool) {
  const k = Math.floor(r() * pool);
  return `198.${18 + ((k >> 16) & 1)}.${(k >> 8) & 255}.${(k & 255) === 0 ? 1 : k & 255}`;
}

/**
 * Writes a syslog auth.log of about `bytes` bytes to `path`.
 * opts.seed        PRNG seed
 * opts.spanDays    time the log covers, ending now
 * opts.evidence    [{ frac, lines: [[prog, msg], …] }]: injected when the
 *                  file reaches frac × bytes
 * Returns { bytes, lines }.
 */
export function genLog(path, bytes, opts = {}) {
  const r = rng(opts.seed ?? 1);
  const end = opts.end ?? Math.floor(Date.now() / 1000) - 60;
  const span = Math.max(1, Math.round((opts.spanDays ?? 1) * 86400));
  const start = end - span;
  const pool = Math.max(500, Math.min(50000, Math.floor(bytes / 4000)));
  const estLines = Math.max(1, bytes / 106);
  const evidence = [...(opts.evidence ?? [])].sort((a, b) => a.frac - b.frac);
  const fd = fs.openSync(path, "w");
  let written = 0;
  let nLines = 0;
  let pid = 1000 + Math.floor(r() * 5000);
  let session = 100 + Math.floor(r() * 1000);
  let buf = [];
  let bufLen = 0;
  const out = (s) => {
    buf.push(s);
    bufLen += s.length;
    nLines++;
    if (bufLen > 1 << 20) flush();
  };
  const flush = () => {
    if (!buf.length) return;
    const b = Buffer.from(buf.join(""), "latin1");
    fs.writeSync(fd, b);
    written += b.length;
    buf = [];
    bufLen = 0;
  };
  const now = () => Math.min(end, start + Math.floor((nLines / estLines) * span));
  while (written + bufLen < bytes) {
    while (evidence.length && written + bufLen >= evidence[0].frac * bytes) {
      const ev = evidence.shift();
      for (const [prog, msg] of ev.lines) out(syslogLine(now(), prog, ++pid, msg));
    }
    const t = now();
    const x = r();
    const port = 1024 + Math.floor(r() * 64000);
    if (x < 0.3) {
      // root brute force
      const a = attackerIp(r, pool);
      const p = ++pid;
      out(syslogLine(t, "sshd", p, `pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=${a}  user=root`));
      out(syslogLine(t, "sshd", p, `Failed password for root from ${a} port ${port} ssh2`));
      out(syslogLine(t, "sshd", p, `Received disconnect from ${a} port ${port}:11: Bye Bye [preauth]`));
      out(syslogLine(t, "sshd", p, `Disconnected from authenticating user root ${a} port ${port} [preauth]`));
    } else if (x < 0.6) {
      // invalid users
      const a = attackerIp(r, pool);
      const u = USERS[Math.floor(r() * USERS.length)];
      const p = ++pid;
      out(syslogLine(t, "sshd", p, `Invalid user ${u} from ${a} port ${port}`));
      out(syslogLine(t, "sshd", p, `pam_unix(sshd:auth): check pass; user unknown`));
      out(syslogLine(t, "sshd", p, `Failed password for invalid user ${u} from ${a} port ${port} ssh2`));
      out(syslogLine(t, "sshd", p, `Connection closed by invalid user ${u} ${a} port ${port} [preauth]`));
    } else if (x < 0.7) {
      // scanners
      const a = attackerIp(r, pool);
      const y = r();
      if (y < 0.4) out(syslogLine(t, "sshd", ++pid, `Connection closed by ${a} port ${port} [preauth]`));
      else if (y < 0.7) out(syslogLine(t, "sshd", ++pid, `banner exchange: Connection from ${a} port ${port}: invalid format`));
      else if (y < 0.85) out(syslogLine(t, "sshd", ++pid, `error: kex_exchange_identification: Connection closed by remote host`));
      else out(syslogLine(t, "sshd", ++pid, `Did not receive identification string from ${a} port ${port}`));
    } else if (x < 0.85) {
      // cron
      const p = ++pid;
      out(syslogLine(t, "CRON", p, `pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)`));
      out(syslogLine(t, "CRON", p, `pam_unix(cron:session): session closed for user root`));
    } else if (x < 0.93) {
      // a legitimate login, from addresses no benchmark decides on
      const a = `2001:db8:ffff::${(1 + Math.floor(r() * 40)).toString(16)}`;
      const p = ++pid;
      const s = ++session;
      out(syslogLine(t, "sshd", p, `Accepted publickey for deploy from ${a} port ${port} ssh2: ${KEYS[s & 1]}`));
      out(syslogLine(t, "sshd", p, `pam_unix(sshd:session): session opened for user deploy(uid=1000) by deploy(uid=0)`));
      out(syslogLine(t, "systemd-logind", 412, `New session ${s} of user deploy.`));
      out(syslogLine(t, "systemd", 1, `Started session-${s}.scope - Session ${s} of User deploy.`));
      out(syslogLine(t, "sshd", p, `Received disconnect from ${a} port ${port}:11: disconnected by user`));
      out(syslogLine(t, "sshd", p, `Disconnected from user deploy ${a} port ${port}`));
      out(syslogLine(t, "sshd", p, `pam_unix(sshd:session): session closed for user deploy`));
      out(syslogLine(t, "systemd-logind", 412, `Session ${s} logged out. Waiting for processes to exit.`));
    } else if (x < 0.97) {
      out(syslogLine(t, "kernel", 0, `[UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=${attackerIp(r, pool)} DST=192.0.2.254 LEN=44 TOS=0x00 PREC=0x00 TTL=240 ID=54321 PROTO=TCP SPT=${port} DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0`));
    } else {
      const y = r();
      if (y < 0.5) out(syslogLine(t, "systemd", 1, `Starting apt-daily.service - Daily apt download activities...`));
      else out(syslogLine(t, "sudo", 0, `  deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/systemctl status nginx`));
    }
  }
  for (const ev of evidence) for (const [prog, msg] of ev.lines) out(syslogLine(now(), prog, ++pid, msg));
  flush();
  fs.closeSync(fd);
  return { bytes: written, lines: nLines };
}

// ---- synthetic state for --report ------------------------------------------
//
// IP i: the first 130,048 are 198.18.0.1 … 198.19.255.254 (no .0/.255), the
// rest 2001:db8:G::L (RFC 5952 canonical: G and L never 0, no leading zeros).
// Class from a hash: 1% allowed, 10% blocked, the rest undecided; allowed and
// blocked IPs have 3–8 seen lines, undecided ones 1–5.

const V4 = 512 * 254;

export function reportIp(i) {
  if (i < V4) {
    const third = Math.floor(i / 254);
    return `198.${18 + (third >> 8)}.${third & 255}.${(i % 254) + 1}`;
  }
  const k = i - V4;
  return `2001:db8:${(1 + Math.floor(k / 65535)).toString(16)}::${(1 + (k % 65535)).toString(16)}`;
}

export function reportRecord(i) {
  const h = hash32(i, 7) % 1000;
  const cls = h < 10 ? "allow" : h < 110 ? "block" : "seen";
  const n = cls === "seen" ? 1 + (hash32(i, 11) % 5) : 3 + (hash32(i, 11) % 6);
  return { cls, n };
}

export function reportTotals(n) {
  let lines = 0, allowed = 0, blocked = 0;
  for (let i = 0; i < n; i++) {
    const r = reportRecord(i);
    lines += r.n;
    if (r.cls === "allow") allowed++;
    else if (r.cls === "block") blocked++;
  }
  return { ips: n, lines, allowed, blocked };
}

/** The text of an allow/ or block/ file, as sentry writes it: "ISO-time block by WHO: why". */
export function recordText(cls, epoch, why) {
  return `${new Date(epoch * 1000).toISOString().replace(/\.\d+Z$/, "Z")} ${cls} by bench: ${why}\n`;
}

function writeRange(root, from, to, base, report) {
  let last = Date.now();
  for (let i = from; i < to; i++) {
    const ip = reportIp(i);
    const { cls, n } = reportRecord(i);
    let t = base - (hash32(i, 13) % 86400) - n * 60;
    let s = "";
    for (let k = 0; k < n; k++) s += `${(t += 60)}\n`;
    fs.writeFileSync(`${root}/seen/${ip}`, s);
    if (cls !== "seen") fs.writeFileSync(`${root}/${cls}/${ip}`, recordText(cls, t, "synthetic record (test/bench.mjs)"));
    if (report && (i & 1023) === 0 && Date.now() - last > 1000) {
      last = Date.now();
      report(i - from);
    }
  }
}

/**
 * Writes the state of n IPs under root (seen/, allow/, block/, hosts.deny)
 * with `workers` threads. onProgress(done, n) is called about once a second.
 */
export async function genState(root, n, workers, onProgress) {
  for (const d of ["seen", "allow", "block"]) fs.mkdirSync(`${root}/${d}`, { recursive: true });
  const base = Math.floor(Date.now() / 1000) - 3600;
  const deny = [];
  for (let i = 0; i < n; i++) {
    if (reportRecord(i).cls === "block") {
      const ip = reportIp(i);
      deny.push(ip.includes(":") ? `[${ip}]` : ip);
    }
  }
  fs.writeFileSync(`${root}/hosts.deny`, deny.join("\n") + (deny.length ? "\n" : ""));
  if (workers <= 1 || n < 20000) {
    writeRange(root, 0, n, base, (d) => onProgress?.(d, n));
    return;
  }
  const done = new Array(workers).fill(0);
  await Promise.all(
    Array.from({ length: workers }, (_, w) =>
      new Promise((resolve, reject) => {
        const from = Math.floor((n * w) / workers);
        const to = Math.floor((n * (w + 1)) / workers);
        const wk = new Worker(new URL(import.meta.url), { workerData: { job: "state", root, from, to, base } });
        wk.on("message", (m) => {
          done[w] = m;
          onProgress?.(done.reduce((a, b) => a + b, 0), n);
        });
        wk.on("error", reject);
        wk.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`state worker exited ${code}`))));
      }),
    ),
  );
}

if (!isMainThread && workerData?.job === "state") {
  const { root, from, to, base } = workerData;
  writeRange(root, from, to, base, (d) => parentPort.postMessage(d));
}
