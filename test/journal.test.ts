// The systemd journal as a log source, with REAL journal files: each test
// writes entries in the Journal Export Format and has systemd-journal-remote
// (Debian package systemd-journal-remote, see test/deps.sh) turn them into a
// .journal file; sentry then reads it with SSH_LOG=journal:FILE, that is
// `journalctl --file=FILE -o json -t sshd ...`, and keeps the journal's own
// cursor in sentry.db. journal-remote appends to an existing file, so new
// entries arrive the way they do on a live system.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { requireBinary, tempDir, envFor, sentry, evidence } from "./lib/run.ts";
import type { TT } from "./lib/run.ts";

requireBinary();

// Debian 12 ships it in /lib/systemd (merged /usr: also /usr/lib/systemd).
const JOURNAL_REMOTE = ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"].find((f) => fs.existsSync(f));
const JOURNALCTL = ["/usr/bin/journalctl", "/bin/journalctl"].find((f) => fs.existsSync(f));

t.before(() => {
  // A missing prerequisite is a failure, never a skip.
  if (!JOURNAL_REMOTE) throw new Error("systemd-journal-remote is missing: run `sh test/deps.sh` (Debian package systemd-journal-remote)");
  if (!JOURNALCTL) throw new Error("journalctl is missing (Debian package systemd)");
});

// ---- the Journal Export Format ------------------------------------------------
//
// One entry: FIELD=value lines, then a blank line. A value that is not
// text (a newline in it, or any bytes at all) is written as FIELD\n, its
// length as a little-endian 64-bit number, the bytes, and \n.

type Entry = Record<string, string | Buffer>;
const BOOT = randomBytes(16).toString("hex");
let clock = BigInt(Date.now()) * 1000n;
let mono = 1_000_000n;

function entry(ident: string, message: string | Buffer, extra: Record<string, string> = {}): Entry {
  clock += 1000n;
  mono += 1000n;
  return {
    __REALTIME_TIMESTAMP: String(clock),
    __MONOTONIC_TIMESTAMP: String(mono),
    _BOOT_ID: BOOT,
    SYSLOG_IDENTIFIER: ident,
    _PID: "4242",
    ...extra,
    MESSAGE: message,
  };
}

function exportFormat(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    for (const [k, v] of Object.entries(e)) {
      if (typeof v === "string" && !v.includes("\n")) parts.push(Buffer.from(`${k}=${v}\n`));
      else {
        const data = typeof v === "string" ? Buffer.from(v) : v;
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(data.length));
        parts.push(Buffer.from(`${k}\n`), len, data, Buffer.from("\n"));
      }
    }
    parts.push(Buffer.from("\n"));
  }
  return Buffer.concat(parts);
}

/** Appends entries to a .journal file (creating it) through systemd-journal-remote. */
function writeJournal(t: TT, file: string, entries: Entry[]): void {
  const r = spawnSync(JOURNAL_REMOTE as string, [`--output=${file}`, "--split-mode=none", "-"], { input: exportFormat(entries), encoding: "utf8" });
  if (r.status !== 0) throw new Error(`systemd-journal-remote exited ${r.status}: ${r.stderr}`);
  // Check the file holds them, with journalctl itself.
  const n = spawnSync(JOURNALCTL as string, [`--file=${file}`, "-o", "json", "-q"], { encoding: "utf8" }).stdout.split("\n").filter((l) => l).length;
  t.ok(n >= entries.length, `journal file holds ${n} entries`);
}

type State = "allowed" | "blocked" | "none";
function state(root: string, ip: string): State {
  return fs.existsSync(join(root, "allow", ip)) ? "allowed" : fs.existsSync(join(root, "block", ip)) ? "blocked" : "none";
}
function connects(t: TT, env: Record<string, string>, ip: string, n = 3): void {
  for (let i = 0; i < n; i++) {
    const r = sentry(["--connect", `--ip=${ip}`], env);
    if (r.status !== 0 || r.stderr !== "") t.fail(`connect ${ip}: exit ${r.status}, stderr ${r.stderr}`);
  }
}

function setup(t: TT) {
  const root = tempDir(t);
  const journal = join(root, "remote.journal");
  return { root, journal, env: envFor(root, { SSH_LOG: `journal:${journal}` }) };
}

t.test("a real journal file: 3 connects block and allow as the journal says; the cursor carries over", async (t) => {
  const { root, journal, env } = setup(t);
  writeJournal(t, journal, [
    entry("sshd", "Invalid user admin from 203.0.113.80 port 4242"),
    entry("sshd", "Failed password for invalid user admin from 203.0.113.80 port 4242 ssh2"),
    entry("sshd", "Failed password for alice from 198.51.100.80 port 50000 ssh2"),
    entry("sshd-session", "Accepted password for alice from 198.51.100.80 port 50001 ssh2"),
    entry("sshd", "Failed password for alice from 203.0.113.81 port 1 ssh2"),
    // Not sshd: not read, whatever it says.
    entry("CRON", "Invalid user x from 203.0.113.82 port 1"),
    entry("sshd", "Failed password for alice from 2001:db8::80 port 1 ssh2"),
    entry("sshd", "Failed password for root from 2001:db8::80 port 1 ssh2"),
  ]);
  for (const ip of ["203.0.113.80", "198.51.100.80", "203.0.113.81", "203.0.113.82", "2001:db8::80"]) connects(t, env, ip);
  t.equal(state(root, "203.0.113.80"), "blocked");
  t.equal(state(root, "198.51.100.80"), "allowed", "an sshd-session success allows");
  t.equal(state(root, "203.0.113.81"), "none", "one failure decides nothing");
  t.equal(state(root, "203.0.113.82"), "none", "a CRON line is not sshd's");
  t.equal(state(root, "2001:db8::80"), "blocked", "IPv6, a root attempt");
  t.match(fs.readFileSync(join(root, "block", "203.0.113.80"), "utf8"), /ssh: 0 success, 2 naughty, 0 failed, 0 probe; e\.g\. "sshd: /);
  t.same(evidence(t, env, "203.0.113.81").ssh, [0, 0, 1, 0]);

  // New entries appended to the same file: only they are read.
  writeJournal(t, journal, [
    entry("sshd", "Failed password for alice from 203.0.113.81 port 2 ssh2"),
    entry("sshd", "Invalid user z from 203.0.113.83 port 1"),
  ]);
  connects(t, env, "203.0.113.83");
  t.equal(state(root, "203.0.113.83"), "blocked", "a new entry decides");
  t.same(evidence(t, env, "203.0.113.81").ssh, [0, 0, 2, 0], "old entries were not read again (cursor kept)");
  t.same(evidence(t, env, "203.0.113.80").ssh, [0, 2, 0, 0]);
  const db = spawnSync(process.execPath, ["-e", `const {DatabaseSync}=require("node:sqlite");const d=new DatabaseSync(${JSON.stringify(join(root, "sentry.db"))});console.log(JSON.stringify(d.prepare("SELECT source, ident FROM cursors").all()))`], { encoding: "utf8" });
  const cursors = JSON.parse(db.stdout) as { source: string; ident: string }[];
  t.equal(cursors.length, 1);
  t.equal(cursors[0].source, `journal:${journal}`);
  t.match(cursors[0].ident, /^s=[0-9a-f]{32};i=[0-9a-f]+;b=/, "the journal's own cursor is kept");
});

t.test("--scan twice over a journal: the second run reads nothing", async (t) => {
  const { root, journal, env } = setup(t);
  writeJournal(t, journal, [
    entry("sshd", "Invalid user a from 203.0.113.90 port 1"),
    entry("sshd", "Invalid user b from 203.0.113.90 port 1"),
    entry("sshd", "Invalid user c from 203.0.113.90 port 1"),
  ]);
  const first = sentry(["--scan", "-v"], env);
  t.equal(first.status, 0, first.stderr);
  t.match(first.stdout, /^scan: read \d+ bytes \(3 lines\) from 1 of 1 logs; weighed 1 addresses: 0 allowed, 1 blocked/m);
  t.equal(state(root, "203.0.113.90"), "blocked");
  const second = sentry(["--scan", "-v"], env);
  t.equal(second.status, 0, second.stderr);
  t.match(second.stdout, /^scan: read 0 bytes \(0 lines\) from 1 of 1 logs; weighed 0 addresses/m);
  writeJournal(t, journal, [entry("sshd", "Invalid user d from 203.0.113.90 port 1")]);
  t.match(sentry(["--scan", "-v"], env).stdout, /\(1 lines\)/, "then exactly the one new entry");
  t.same(evidence(t, env, "203.0.113.90").ssh, [0, 4, 0, 0]);
});

t.test("MESSAGE as a byte array (not UTF-8) is read; a missing journal file decides nothing", async (t) => {
  const { root, journal, env } = setup(t);
  writeJournal(t, journal, [
    entry("sshd", Buffer.concat([Buffer.from("Invalid user "), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from(" from 203.0.113.91 port 22")])),
    entry("sshd", Buffer.concat([Buffer.from("Accepted password for "), Buffer.from([0xff]), Buffer.from(" from 198.51.100.91 port 22 ssh2")])),
  ]);
  // journalctl really prints these as arrays of numbers.
  const raw = spawnSync(JOURNALCTL as string, [`--file=${journal}`, "-o", "json", "-q"], { encoding: "utf8" }).stdout;
  t.match(raw, /"MESSAGE":\[73,110,118/, "journalctl -o json gives MESSAGE as bytes");
  connects(t, env, "203.0.113.91");
  connects(t, env, "198.51.100.91");
  t.equal(state(root, "203.0.113.91"), "blocked");
  t.equal(state(root, "198.51.100.91"), "allowed");

  const gone = setup(t);
  for (let i = 0; i < 3; i++) {
    const r = sentry(["--connect", "--ip=203.0.113.92"], gone.env);
    if (i === 2) {
      t.match(r.stderr, /cannot read the journal .*remote\.journal/);
      t.match(r.stderr, /nothing decided/);
    }
  }
  t.equal(state(gone.root, "203.0.113.92"), "none");
});

t.test("an entry a local user wrote with `logger -t sshd` is not sshd's", async (t) => {
  const { root, journal, env } = setup(t);
  // _UID is a trusted field journald adds; an unprivileged user can set SYSLOG_IDENTIFIER but not _UID.
  writeJournal(t, journal, [
    entry("sshd", "Accepted password for root from 203.0.113.95 port 22 ssh2", { _UID: "1000", _COMM: "logger" }),
    entry("sshd", "Invalid user z from 198.51.100.95 port 22", { _UID: "1000", _COMM: "logger" }),
    // a system account (a web server's www-data) is not sshd either
    entry("sshd", "Accepted password for root from 203.0.113.95 port 22 ssh2", { _UID: "33", _COMM: "logger" }),
    entry("sshd", "Invalid user y from 203.0.113.95 port 22", { _UID: "0", _COMM: "sshd" }),
  ]);
  connects(t, env, "203.0.113.95");
  connects(t, env, "198.51.100.95");
  t.equal(state(root, "203.0.113.95"), "blocked", "the forged success did not allow it");
  t.equal(state(root, "198.51.100.95"), "none", "a forged failure blames nobody");
  t.same(evidence(t, env, "203.0.113.95").ssh, [0, 1, 0, 0]);
});

t.test("JOURNAL_LOGIN_UID_MIN: where login users start below 1000, a mail daemon's entry from one is not believed", async (t) => {
  // uid 700 is a system account by Debian's count (the default 1000), a login
  // user on a system whose users start at 500: the same entry decides or not.
  const lines = [
    entry("vpopmail", "vchkpw-pop3: password fail alice@example.com:203.0.113.97", { _UID: "700", _COMM: "logger" }),
    entry("vpopmail", "vchkpw-pop3: vpopmail user not found nobody@example.com:203.0.113.97", { _UID: "700", _COMM: "logger" }),
  ];
  const mail = (journal: string) => ({ MAIL_LOG: `journal:${journal}`, PROTECT_MUA: "1" });
  const a = setup(t);
  writeJournal(t, a.journal, lines);
  connects(t, { ...a.env, ...mail(a.journal) }, "203.0.113.97");
  t.equal(state(a.root, "203.0.113.97"), "blocked", "the default (1000) believes uid 700");
  const b = setup(t);
  writeJournal(t, b.journal, lines);
  connects(t, { ...b.env, ...mail(b.journal), JOURNAL_LOGIN_UID_MIN: "500" }, "203.0.113.97");
  t.equal(state(b.root, "203.0.113.97"), "none", "JOURNAL_LOGIN_UID_MIN=500 does not");
  const r = sentry(["--report"], { ...b.env, JOURNAL_LOGIN_UID_MIN: "70000" });
  t.equal(r.status, 1);
  t.match(r.stderr, /JOURNAL_LOGIN_UID_MIN="70000" is not valid: expected a whole number from 0 to 65536/);
});

t.test("JOURNAL_FIRST_ENTRIES: a first read takes only that many of the latest entries", async (t) => {
  const lines = [
    entry("sshd", "Invalid user old from 203.0.113.98 port 1"),
    entry("sshd", "Invalid user old from 203.0.113.98 port 2"),
    entry("sshd", "Invalid user new from 198.51.100.98 port 1"),
  ];
  const a = setup(t);
  writeJournal(t, a.journal, lines);
  connects(t, { ...a.env, JOURNAL_FIRST_ENTRIES: "1" }, "203.0.113.98");
  t.equal(state(a.root, "203.0.113.98"), "none", "the older entries were before the first read's window");
  connects(t, { ...a.env, JOURNAL_FIRST_ENTRIES: "1" }, "198.51.100.98");
  t.equal(state(a.root, "198.51.100.98"), "blocked", "the latest entry was read");
  const b = setup(t);
  writeJournal(t, b.journal, lines);
  connects(t, b.env, "203.0.113.98");
  t.equal(state(b.root, "203.0.113.98"), "blocked", "by default the same journal is read whole");
});

t.test("a journal read stopped by the time cap keeps what it read and carries on", async (t) => {
  const { root, journal, env } = setup(t);
  const N = 2000;
  const entries: Entry[] = [];
  for (let i = 0; i < N; i++) entries.push(entry("sshd", `Failed password for alice from 192.0.2.${i % 100} port ${1000 + i} ssh2`));
  entries.push(entry("sshd", "Invalid user q from 203.0.113.99 port 22"));
  writeJournal(t, journal, entries);
  // A journalctl that, the first time, prints 500 entries and half of the
  // next, then hangs: the stand-in for a journal too big to read within
  // SCAN_SECONDS (sentry kills it after 1 s at least).
  const bin = join(root, "bin");
  fs.mkdirSync(bin);
  const mark = join(root, "journalctl-was-slow");
  fs.writeFileSync(
    join(bin, "journalctl"),
    `#!/bin/sh\nout=$(mktemp)\n${JOURNALCTL} "$@" > "$out"\nif [ ! -e ${mark} ]; then\n  touch ${mark}\n  head -n 500 "$out"\n  sed -n 501p "$out" | head -c 40\n  rm -f "$out"\n  exec sleep 20\nfi\ncat "$out"\nrm -f "$out"\n`,
    { mode: 0o755 },
  );
  const slow = { ...env, PATH: `${bin}:${env.PATH}`, SCAN_SECONDS: "0" };
  // The second connect is the first to read the logs (STRONG_CONNECT_THRESHOLD): that read is capped.
  for (let i = 0; i < 2; i++) sentry(["--connect", "--ip=203.0.113.99"], slow);
  t.ok(fs.existsSync(mark), "the slow journalctl ran");
  t.match(fs.readFileSync(join(root, "sentry.log"), "utf8"), /203\.0\.113\.99 scan-capped /, "the capped read is in sentry.log");
  t.equal(state(root, "203.0.113.99"), "none", "not reached yet");
  const r = sentry(["--connect", "--ip=203.0.113.99"], slow);
  t.equal(r.stderr, "", "the next read is complete");
  t.equal(state(root, "203.0.113.99"), "blocked", "the next connect carried on to the end");
  const q = spawnSync(process.execPath, ["-e", `const {DatabaseSync}=require("node:sqlite");const d=new DatabaseSync(${JSON.stringify(join(root, "sentry.db"))});console.log(d.prepare("SELECT SUM(failed) AS n, COUNT(*) AS c FROM tallies WHERE ip LIKE '192.0.2.%'").get().n)`], { encoding: "utf8" });
  t.equal(Number(q.stdout.trim()), N, `every entry counted once (${N}) across the capped and the next read`);
});
