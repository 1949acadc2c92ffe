// Decisions from the logs, through the built binary: DESIGN.md "Connect: the
// decision" and "Evidence: reading logs safely". Every test writes its own
// log under a temporary ROOT_DIR, points SSH_LOG (or MAIL_LOG/FTP_LOG) at it,
// and looks at what an administrator would: block/, allow/, hosts.deny,
// sentry.log and --report. Addresses are TEST-NET ones: loopback is never
// blocked by design, so it would prove nothing.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { DatabaseSync } from "node:sqlite";
import { blockEnd } from "../sentry.ts";
import { SENTRY, requireBinary, tempDir, envFor, sentry, sentryAsync, parallel, state, sentryLog, decisions, evidence } from "./lib/run.ts";
import type { Ran, TT } from "./lib/run.ts";

requireBinary();

const FIXTURES = join(import.meta.dirname, "fixtures");

// ---- helpers ---------------------------------------------------------------

interface Box {
  root: string;
  log: string;
  env: Record<string, string>;
}

/** A fresh ROOT_DIR with SSH_LOG pointing at ROOT_DIR/auth.log (not created yet). */
function box(t: TT, extra: Record<string, string> = {}): Box {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  return { root, log, env: envFor(root, { SSH_LOG: log, ...extra }) };
}

function connect(env: Record<string, string>, ip: string): Ran {
  return sentry(["--connect", `--ip=${ip}`], env);
}

/** `n` connects of `ip`; returns the last run. Every one must exit 0. */
function connects(t: TT, env: Record<string, string>, ip: string, n = 3): Ran {
  let r: Ran = { status: null, stdout: "", stderr: "" };
  for (let i = 0; i < n; i++) {
    r = connect(env, ip);
    if (r.status !== 0) t.fail(`connect ${ip} #${i + 1} exited ${r.status}: ${r.stderr}`);
  }
  return r;
}

const rep = (line: string, n: number) => line.repeat(n);
const failed = (ip: string, user = "alice", port = 40000) => `Failed password for ${user} from ${ip} port ${port} ssh2\n`;

// A syslog prefix of each shape DESIGN.md names.
const CLASSIC = "Nov 21 10:00:00 host sshd[123]: ";
const RFC3339 = "2026-11-21T10:00:00.123456+00:00 host sshd[123]: ";

// ---- decisions ---------------------------------------------------------------

t.test("three connects and the logs: allowed, blocked, untouched, in every line shape and IPv6", async (t) => {
  const b = box(t);
  const lines =
    // allowed: a success (classic prefix) wins over failures
    `${CLASSIC}${failed("198.51.100.10")}` +
    `${CLASSIC}Accepted password for u from 198.51.100.10 port 50001 ssh2\n` +
    // blocked: an invalid user (no prefix)
    `Invalid user admin from 203.0.113.10 port 4242\n` +
    // blocked: a root attempt (RFC 3339)
    `${RFC3339}Failed password for root from 203.0.113.11 port 4243 ssh2\n` +
    // blocked: 11 ordinary failures, more than FAIL_THRESHOLD=10: strong evidence, so at the second connect
    rep(`${CLASSIC}${failed("203.0.113.12")}`, 11) +
    // untouched: 3 failures; and exactly 10 (the limit) is not more than 10
    // (failed keys: 10 password guesses would be more than GUESS_THRESHOLD, 4)
    rep(failed("203.0.113.13"), 3) +
    rep(`${RFC3339}Failed publickey for alice from 203.0.113.14 port 40000 ssh2: ED25519 SHA256:abc\n`, 10) +
    // IPv6: one blocked (RFC 3339), one allowed (no prefix, non-canonical spelling in the log)
    `${RFC3339}Invalid user oracle from 2001:db8::10 port 4244\n` +
    `Accepted publickey for u from 2001:DB8:0:0::11 port 50002 ssh2: ED25519 SHA256:abc\n`;
  fs.writeFileSync(b.log, lines);
  const want: Record<string, ReturnType<typeof state>> = {
    "198.51.100.10": "allowed",
    "203.0.113.10": "blocked",
    "203.0.113.11": "blocked",
    "203.0.113.12": "blocked",
    "203.0.113.13": "none",
    "203.0.113.14": "none",
    "2001:db8::10": "blocked",
    "2001:db8::11": "allowed",
  };
  const early = new Set(["203.0.113.12"]);
  for (const ip of Object.keys(want)) {
    connects(t, b.env, ip, 2);
    t.equal(state(b.root, ip), early.has(ip) ? "blocked" : "none", `${ip}: ${early.has(ip) ? "strong evidence blocked" : "nothing decided"} after 2 connects`);
  }
  for (const [ip, s] of Object.entries(want)) {
    if (early.has(ip)) continue;
    const r = connect(b.env, ip);
    t.equal(r.status, 0);
    t.equal(r.stdout, `   3 connections from ${ip}\n`, `${ip}: record line`);
    t.equal(state(b.root, ip), s, `${ip} is ${s}`);
    t.equal(decisions(b.root, ip).length, s === "none" ? 0 : 1, `${ip}: ${s === "none" ? "no" : "one"} decision in sentry.log`);
  }
  // A fourth connect of a decided address says so and decides nothing again.
  t.equal(connect(b.env, "203.0.113.10").stdout, "   4 connections from 203.0.113.10 and it is blocked\n");
  t.equal(connect(b.env, "198.51.100.10").stdout, "   4 connections from 198.51.100.10 and it is allowed\n");
  t.equal(decisions(b.root, "203.0.113.10").length, 1);

  // The reasons name the service, the counts and a sample line.
  const blk = fs.readFileSync(join(b.root, "block", "203.0.113.10"), "utf8");
  t.match(blk, /block by connect: ssh: 0 success, 1 naughty, 0 failed, 0 probe; e\.g\. "Invalid user admin from 203\.0\.113\.10 port 4242"/);
  t.match(decisions(b.root, "203.0.113.11")[0], /block connect: ssh: 0 success, 1 naughty, 0 failed, 0 probe; e\.g\. ".*Failed password for root from 203\.0\.113\.11 port 4243 ssh2"/);
  t.match(decisions(b.root, "203.0.113.12")[0], /block connect: 11 (?:failed )?attempts \(more than 10\); ssh: 0 success, 0 naughty, 11 failed, 0 probe; e\.g\. "Nov 21 10:00:00 host sshd\[123\]: Failed password for alice from 203\.0\.113\.12/);
  t.match(fs.readFileSync(join(b.root, "allow", "198.51.100.10"), "utf8"), /allow by connect: ssh: 1 success, 0 naughty, 1 failed, 0 probe; e\.g\. ".*Accepted password for u from 198\.51\.100\.10 port 50001 ssh2"/);
  t.match(decisions(b.root, "2001:db8::11")[0], /allow connect: ssh: 1 success/);
  // hosts.deny holds exactly the blocked ones, IPv6 in brackets.
  const deny = fs.readFileSync(join(b.root, "hosts.deny"), "utf8").trim().split("\n").sort();
  t.same(deny, ["203.0.113.10", "203.0.113.11", "203.0.113.12", "[2001:db8::10]"]);

  // --report --verbose --ip shows the per-service tallies, decided or not.
  const r13 = sentry(["--report", "--verbose", "--ip=203.0.113.13"], b.env);
  t.equal(r13.status, 0);
  t.match(r13.stdout, /^   3 connections from 203\.0\.113\.13\n/);
  t.match(r13.stdout, /\n     ssh: 0 success, 0 naughty, 3 failed, 0 probe\n       e\.g\. Failed password for alice from 203\.0\.113\.13 port 40000 ssh2\n/);
  const r12 = sentry(["--report", "--verbose", "--ip=203.0.113.12"], b.env);
  t.match(r12.stdout, /and it is blocked/);
  t.match(r12.stdout, /ssh: 0 success, 0 naughty, 11 failed, 0 probe/);
  t.same(evidence(t, b.env, "2001:db8::11").ssh, [1, 0, 0, 0], "the IPv6 success is filed under the canonical address");
});

t.test("fail safe: no log, an unreadable log, a directory → nothing decided, a warning", async (t) => {
  // No log at all.
  const b = box(t);
  const r = connects(t, b.env, "203.0.113.20");
  t.equal(state(b.root, "203.0.113.20"), "none");
  t.match(r.stderr, /cannot read .*auth\.log: .*ENOENT|no such file/i, "names the missing log");
  t.match(r.stderr, /no log could be read for 203\.0\.113\.20; nothing decided/);

  // A directory where the log should be.
  const d = box(t);
  fs.mkdirSync(d.log);
  const rd = connects(t, d.env, "203.0.113.21");
  t.equal(state(d.root, "203.0.113.21"), "none");
  t.match(rd.stderr, /not a regular file/);

  // A log this user cannot read (EACCES): run as nobody, since root reads anything.
  const u = box(t);
  fs.chownSync(u.root, 65534, 65534); // ROOT_DIR belongs to the user sentry runs as (strict modes refuse a 0777 one)
  fs.writeFileSync(u.log, "Invalid user admin from 203.0.113.22 port 1\n", { mode: 0o600 });
  let last: ReturnType<typeof spawnSync> | null = null;
  for (let i = 0; i < 3; i++) {
    last = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", SENTRY, "--connect", "--ip=203.0.113.22"], {
      // Settings that decide what root runs (EXEC_SETTINGS) are refused from a non-root environment.
      env: Object.fromEntries(Object.entries(u.env).filter(([k]) => k !== "UNIT_DIR" && k !== "CRON_FILE")),
      encoding: "utf8",
    });
    if (last.error) t.fail(`setpriv is needed to run as nobody: ${last.error.message}`);
  }
  t.equal(last?.status, 0, String(last?.stderr));
  t.equal(state(u.root, "203.0.113.22"), "none", "an unreadable log decides nothing");
  t.match(String(last?.stderr), /EACCES|permission denied/i);
  t.match(String(last?.stderr), /nothing decided/);
});

t.test("a success on mail or FTP allows even with ssh failures", async (t) => {
  const b = box(t, { PROTECT_MUA: "1", PROTECT_FTP: "1" });
  const mail = join(b.root, "mail.log");
  const ftp = join(b.root, "vsftpd.log");
  b.env.MAIL_LOG = mail;
  b.env.FTP_LOG = ftp;
  fs.writeFileSync(b.log, `Invalid user admin from 198.51.100.30 port 1\n${rep(failed("198.51.100.31"), 12)}Invalid user x from 203.0.113.30 port 1\n`);
  fs.writeFileSync(mail, "Nov 21 10:00:00 mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=198.51.100.30, lip=192.0.2.1, mpid=4242, TLS, session=<x0Aa1>\n");
  fs.writeFileSync(ftp, 'Thu Sep  8 00:41:00 2016 [pid 15021] [alice] OK LOGIN: Client "198.51.100.31"\n');
  connects(t, b.env, "198.51.100.30");
  connects(t, b.env, "198.51.100.31");
  connects(t, b.env, "203.0.113.30");
  t.equal(state(b.root, "198.51.100.30"), "allowed", "a Dovecot login wins over an ssh invalid user");
  t.match(decisions(b.root, "198.51.100.30")[0], /allow connect: mua: 1 success/);
  t.equal(state(b.root, "198.51.100.31"), "allowed", "a vsftpd login wins over 12 ssh failures");
  t.match(decisions(b.root, "198.51.100.31")[0], /allow connect: allowed after 12 failures \(users: alice\): ftp: 1 success/);
  t.equal(state(b.root, "203.0.113.30"), "blocked", "the ssh evidence still blocks the others");
  const e = evidence(t, b.env, "198.51.100.30");
  t.same(e.ssh, [0, 1, 0, 0]);
  t.same(e.mua, [1, 0, 0, 0]);
});

t.test("a protected service whose log cannot be read withholds a block, never an allow", async (t) => {
  // ssh says naughty, but the mail log (where this address may have logged in) is missing.
  const b = box(t, { PROTECT_MUA: "1" });
  b.env.MAIL_LOG = join(b.root, "missing-mail.log");
  fs.writeFileSync(b.log, "Invalid user admin from 203.0.113.31 port 1\nAccepted password for u from 198.51.100.32 port 2 ssh2\n");
  const r = connects(t, b.env, "203.0.113.31");
  t.equal(state(b.root, "203.0.113.31"), "none", "no block while a log of a protected service is unreadable");
  t.match(r.stderr, /missing-mail\.log/);
  connects(t, b.env, "198.51.100.32");
  t.equal(state(b.root, "198.51.100.32"), "allowed", "a success seen is still a success");
  // Once the mail log is there, the next connect blocks.
  fs.writeFileSync(b.env.MAIL_LOG, "");
  connect(b.env, "203.0.113.31");
  t.equal(state(b.root, "203.0.113.31"), "blocked");
});

t.test("injection: a user name carrying another address blames only the sender", async (t) => {
  const b = box(t);
  const u = "x from 203.0.113.77 port 22";
  fs.writeFileSync(
    b.log,
    `${CLASSIC}Invalid user ${u} from 203.0.113.5 port 4242\n` +
      `${CLASSIC}Failed password for invalid user ${u} from 203.0.113.5 port 4242 ssh2\n` +
      `${CLASSIC}Connection closed by invalid user ${u} 203.0.113.5 port 4242 [preauth]\n` +
      rep(`${RFC3339}Failed password for invalid user x from 203.0.113.77 port 22 ssh2 from 203.0.113.5 port 4243 ssh2\n`, 12) +
      // and the reverse: forging a success for the attacker's next address
      `${CLASSIC}Failed password for y from 203.0.113.5 port 1 ssh2: Accepted password for u from 203.0.113.78 port 22 ssh2\n`,
  );
  connects(t, b.env, "203.0.113.77");
  connects(t, b.env, "203.0.113.78");
  connects(t, b.env, "203.0.113.5");
  t.equal(state(b.root, "203.0.113.77"), "none", "203.0.113.77 is not blocked");
  t.same(evidence(t, b.env, "203.0.113.77"), {}, "and has no evidence at all");
  t.equal(state(b.root, "203.0.113.78"), "none", "the forged success allows nobody");
  t.equal(state(b.root, "203.0.113.5"), "blocked", "the sender is blocked");
  t.match(decisions(b.root, "203.0.113.5")[0], /ssh: 0 success, [1-9]\d* naughty/);
});

// ---- incremental reading -------------------------------------------------------

t.test("incremental: a later decision reads only the bytes written since the last read", async (t) => {
  const b = box(t, { SCAN_SECONDS: "30" });
  // 30 MB of sshd noise (lines the sshd parser must look at), evidence at the end.
  const noise = `${CLASSIC}Received disconnect from 192.0.2.200 port 22:11: Bye Bye [preauth]\n`;
  const fd = fs.openSync(b.log, "w");
  const block = Buffer.from(noise.repeat(Math.ceil((1 << 20) / noise.length)));
  for (let written = 0; written < 30 << 20; written += block.length) fs.writeSync(fd, block);
  fs.writeSync(fd, `${CLASSIC}Invalid user a from 203.0.113.40 port 1\n`);
  fs.closeSync(fd);
  connects(t, b.env, "203.0.113.40", 2);
  connects(t, b.env, "203.0.113.41", 2);
  connects(t, b.env, "203.0.113.42", 2);
  let t0 = Date.now();
  connect(b.env, "203.0.113.40");
  const first = Date.now() - t0;
  t.equal(state(b.root, "203.0.113.40"), "blocked", "the first decision reads the 30 MB");

  // Overwrite a line in the middle of the already-read part, in place (same
  // inode, same size, same first bytes): had sentry read it again,
  // 203.0.113.42 would be blocked. (A change to the first bytes is a
  // copytruncate, which is read again on purpose: see the test below.)
  const forged = Buffer.from(`Invalid user z from 203.0.113.42 port 1\n`);
  const wfd = fs.openSync(b.log, "r+");
  fs.writeSync(wfd, forged, 0, forged.length, noise.length * 1000);
  fs.closeSync(wfd);
  fs.appendFileSync(b.log, `${CLASSIC}Invalid user b from 203.0.113.41 port 1\n`);
  t0 = Date.now();
  connect(b.env, "203.0.113.41");
  const second = Date.now() - t0;
  t.equal(state(b.root, "203.0.113.41"), "blocked", "the second decision sees the new line");
  t.comment(`second decision ${second} ms; the first took ${first} ms (timing: npm run bench)`);
  connect(b.env, "203.0.113.42");
  t.equal(state(b.root, "203.0.113.42"), "none", "bytes already read are never read again");
  t.same(evidence(t, b.env, "203.0.113.42"), {});
  t.same(evidence(t, b.env, "203.0.113.40").ssh, [0, 1, 0, 0], "counted once");
});

// ---- hostile logs ----------------------------------------------------------------

t.test("hostile logs: binary garbage, invalid UTF-8, 10 MB lines", async (t) => {
  const b = box(t);
  const garbage = Buffer.alloc(256 * 1024);
  for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 7919 + (i >> 3) * 31) & 0xff; // every byte value, NULs and newlines included
  const tenMB = Buffer.alloc(10 << 20, 0x41);
  fs.writeFileSync(
    b.log,
    Buffer.concat([
      garbage,
      Buffer.from("\n"),
      Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0x0a]), // invalid UTF-8 alone on a line
      Buffer.from("Invalid user "),
      Buffer.from([0xc3, 0x28, 0xff]), // invalid UTF-8 inside a user name
      Buffer.from(" from 203.0.113.60 port 22\n"),
      tenMB,
      Buffer.from("\n"),
      // a 10 MB line whose tail looks like a success: never read as one
      tenMB,
      Buffer.from(" sshd[1]: Accepted password for root from 203.0.113.66 port 22 ssh2\n"),
      Buffer.from("Invalid user admin from 203.0.113.66 port 22\n"),
      Buffer.from("Failed password for alice from 203.0.113.61 port 22 ssh2\n"),
    ]),
  );
  connects(t, b.env, "203.0.113.60");
  connects(t, b.env, "203.0.113.66");
  connects(t, b.env, "203.0.113.61");
  t.equal(state(b.root, "203.0.113.60"), "blocked", "a line with invalid UTF-8 in the user name still counts");
  t.equal(state(b.root, "203.0.113.66"), "blocked", "the forged tail of a 10 MB line did not allow 203.0.113.66");
  t.same(evidence(t, b.env, "203.0.113.66").ssh, [0, 1, 0, 0]);
  t.same(evidence(t, b.env, "203.0.113.61").ssh, [0, 0, 1, 0], "lines after the garbage are read");

  // The same forged tail arriving after the read stopped inside the long line.
  const c = box(t);
  fs.writeFileSync(c.log, Buffer.concat([Buffer.from("Failed password for alice from 203.0.113.62 port 1 ssh2\n"), tenMB]));
  connects(t, c.env, "203.0.113.62"); // the read stops inside the unfinished 10 MB line
  fs.appendFileSync(c.log, " sshd[1]: Accepted password for root from 203.0.113.67 port 22 ssh2\nInvalid user q from 203.0.113.67 port 1\n");
  connects(t, c.env, "203.0.113.67");
  t.equal(state(c.root, "203.0.113.67"), "blocked", "a long line's tail written later is skipped too");
  t.same(evidence(t, c.env, "203.0.113.67").ssh, [0, 1, 0, 0]);

  // A short start of a line, then the rest making it 10 MB with a success at its end.
  const d = box(t);
  fs.writeFileSync(d.log, "Failed password for alice from 203.0.113.63 port 1 ssh2\nAAAA");
  connects(t, d.env, "203.0.113.63");
  fs.appendFileSync(d.log, Buffer.concat([tenMB, Buffer.from(" sshd[1]: Accepted password for root from 203.0.113.68 port 22 ssh2\n")]));
  connects(t, d.env, "203.0.113.68");
  t.equal(state(d.root, "203.0.113.68"), "none", "no success read out of a line that grew past the limit");
  t.same(evidence(t, d.env, "203.0.113.68"), {});
});

t.test("rotation: the old file's unread tail is read before the new file", async (t) => {
  for (const rotated of ["auth.log.1", "auth.log-20261121"]) {
    await t.test(rotated, async (t) => {
      const b = box(t);
      fs.writeFileSync(b.log, rep(failed("203.0.113.70"), 3));
      connects(t, b.env, "203.0.113.70"); // the last read: the cursor is at the end of the old file
      connects(t, b.env, "203.0.113.71", 2);
      fs.appendFileSync(b.log, "Invalid user z from 203.0.113.71 port 1\n"); // written after the last read
      fs.renameSync(b.log, join(b.root, rotated));
      fs.writeFileSync(b.log, `${failed("203.0.113.71")}${failed("203.0.113.70")}`);
      connect(b.env, "203.0.113.71");
      t.equal(state(b.root, "203.0.113.71"), "blocked", "the evidence at the end of the old file counts");
      t.same(evidence(t, b.env, "203.0.113.71").ssh, [0, 1, 1, 0], "old tail + new file, each line once");
      t.same(evidence(t, b.env, "203.0.113.70").ssh, [0, 0, 4, 0], "nothing of the old file read twice");
    });
  }
});

t.test("rotation: a rotated tail that cannot be found makes that read incomplete: it holds back blocks, the next read decides", async (t) => {
  const b = box(t);
  fs.writeFileSync(b.log, rep(failed("203.0.113.74"), 3));
  connects(t, b.env, "203.0.113.74"); // the cursor is at the end of the old file
  connects(t, b.env, "203.0.113.75", 2);
  // Written after the last read, then compressed at once (no delaycompress):
  // no uncompressed copy of the old inode is left to finish. It might have
  // held 203.0.113.75's success.
  fs.appendFileSync(b.log, failed("203.0.113.75"));
  fs.renameSync(b.log, join(b.root, "auth.log.1.gz"));
  fs.writeFileSync(b.log, "Invalid user z from 203.0.113.75 port 1\n");
  const r = connect(b.env, "203.0.113.75");
  t.equal(state(b.root, "203.0.113.75"), "none", "not blocked on a read that missed the old file's tail");
  t.match(r.stderr, /auth\.log was rotated and the rest of the old file cannot be read: no uncompressed copy of it is beside it/);
  t.match(r.stderr, /not blocking 203\.0\.113\.75 yet: .*auth\.log was rotated/);
  t.match(sentryLog(b.root), /203\.0\.113\.75 withheld not blocking it yet: .*auth\.log was rotated/, "said where the admin looks");
  // The next read starts in the new file: complete, it decides.
  connect(b.env, "203.0.113.75");
  t.equal(state(b.root, "203.0.113.75"), "blocked", "the next, complete read blocks");
});

t.test("truncation: a log cut to nothing between two connects is read from its start", async (t) => {
  const b = box(t);
  fs.writeFileSync(b.log, rep(failed("203.0.113.72"), 50));
  connects(t, b.env, "203.0.113.72");
  connects(t, b.env, "203.0.113.73", 2);
  fs.truncateSync(b.log, 0);
  fs.appendFileSync(b.log, "Invalid user z from 203.0.113.73 port 1\n");
  const r = connect(b.env, "203.0.113.73");
  t.equal(state(b.root, "203.0.113.73"), "blocked");
  t.match(r.stderr, /was truncated; reading it from the start/);
  t.same(evidence(t, b.env, "203.0.113.72").ssh, [0, 0, 50, 0]);
});

t.test("copytruncate: a log emptied in place and grown past the old offset is read from its start", async (t) => {
  const b = box(t);
  fs.writeFileSync(b.log, `${CLASSIC}Server listening on 0.0.0.0 port 22.\n${rep(failed("203.0.113.80"), 20)}`);
  connects(t, b.env, "203.0.113.81", 3); // reads the log to its end
  const readTo = fs.statSync(b.log).size;
  // logrotate's copytruncate: same inode, emptied, then written again past where sentry stopped.
  fs.truncateSync(b.log, 0);
  const again = `${RFC3339}Invalid user z from 203.0.113.81 port 1\n${rep(`${RFC3339}Connection closed by 198.51.100.1 port 2 [preauth]\n`, 40)}`;
  fs.appendFileSync(b.log, again);
  t.ok(fs.statSync(b.log).size > readTo, "the new content is longer than what was read");
  const r = connect(b.env, "203.0.113.81");
  t.match(r.stderr, /emptied and written again \(copytruncate\)/);
  t.equal(state(b.root, "203.0.113.81"), "blocked", "the line at the start of the new content was read");
});

t.test("a FIFO named as the log does not hang a connect", async (t) => {
  const b = box(t);
  const fifo = join(b.root, "auth.fifo");
  const mk = spawnSync("mkfifo", [fifo]);
  t.equal(mk.status, 0, "mkfifo");
  const env = { ...b.env, SSH_LOG: fifo };
  const started = Date.now();
  connects(t, env, "203.0.113.82", 2);
  const r = connect(env, "203.0.113.82");
  t.not(r.status, null, `returned by itself, not killed by the runner's timeout (${Date.now() - started} ms)`);
  t.match(r.stderr, /not a regular file/);
  t.equal(state(b.root, "203.0.113.82"), "none");
});

t.test("a log growing while it is read: no line counted twice or lost", async (t) => {
  const b = box(t);
  fs.writeFileSync(b.log, "");
  const K = 3000;
  const ips = Array.from({ length: 10 }, (_, i) => `198.51.100.${100 + i}`);
  for (const ip of ips) connects(t, b.env, ip, 2);
  // A writer in its own process: each line in two writes, so readers see half lines.
  const writer = `
    const fs = require("fs");
    const fd = fs.openSync(${JSON.stringify(b.log)}, "a");
    for (let i = 0; i < ${K}; i++) {
      const l = "Failed password for alice from 203.0.113.90 port " + (10000 + i) + " ssh2\\n";
      const cut = 5 + (i % 40);
      fs.writeSync(fd, l.slice(0, cut));
      if (i % 10 === 0) { const until = Date.now() + 2; while (Date.now() < until); }
      fs.writeSync(fd, l.slice(cut));
    }
    fs.closeSync(fd);`;
  const w = new Promise<number | null>((done) => {
    spawn(process.execPath, ["-e", writer], { stdio: "ignore" }).on("close", (code) => done(code));
  });
  const runs = await parallel(ips.length, 5, (i) => sentryAsync(["--connect", `--ip=${ips[i]}`], b.env));
  t.equal(await w, 0, "the writer finished");
  for (const r of runs) t.equal(r.status, 0, r.stderr);
  connect(b.env, "198.51.100.200");
  connects(t, b.env, "198.51.100.201"); // a last read, after the writer is done
  t.same(evidence(t, b.env, "203.0.113.90").ssh, [0, 0, K, 0], `exactly ${K} failures`);
});

// ---- bounds: the first read, the time cap ---------------------------------------

t.test("the first read of a log starts FIRST_SCAN_MB from its end", async (t) => {
  const b = box(t, { FIRST_SCAN_MB: "1" });
  const filler = `${CLASSIC}${failed("192.0.2.250")}`;
  const head = `Invalid user early from 203.0.113.95 port 1\n`;
  const body = filler.repeat(Math.ceil((3 << 20) / filler.length));
  fs.writeFileSync(b.log, head + body + "Invalid user late from 203.0.113.96 port 1\n");
  connects(t, b.env, "203.0.113.95");
  connects(t, b.env, "203.0.113.96");
  t.equal(state(b.root, "203.0.113.95"), "none", "evidence in the first part is not seen");
  t.same(evidence(t, b.env, "203.0.113.95"), {});
  t.equal(state(b.root, "203.0.113.96"), "blocked", "evidence in the last MB is");
  const r = sentry(["--report", "--verbose"], b.env);
  t.match(r.stdout, new RegExp(`reading the logs \\(sentry\\.db\\):\\n.*first read of ${b.log.replace(/[.]/g, "\\.")}: its last 1 MB of 3 MB`));
});

t.test("SCAN_SECONDS caps a connect's reading; the next connect carries on", async (t) => {
  const b = box(t, { SCAN_SECONDS: "0" });
  const filler = `${CLASSIC}${failed("192.0.2.251")}`;
  fs.writeFileSync(b.log, filler.repeat(Math.ceil((6 << 20) / filler.length)) + "Invalid user late from 203.0.113.97 port 1\n");
  connects(t, b.env, "203.0.113.97");
  t.equal(state(b.root, "203.0.113.97"), "none", "not reached in the first capped read");
  t.match(sentryLog(b.root), /203\.0\.113\.97 scan-capped read \d+ bytes in 0 s; the next read carries on/);
  let n = 3;
  while (state(b.root, "203.0.113.97") === "none" && n < 15) {
    connect(b.env, "203.0.113.97");
    n++;
  }
  t.equal(state(b.root, "203.0.113.97"), "blocked", `later connects carried on and reached it (${n} connects)`);
  t.same(evidence(t, b.env, "192.0.2.251").ssh, [0, 0, Math.ceil((6 << 20) / filler.length), 0], "every line counted once across the capped reads");
});

// ---- concurrency ---------------------------------------------------------------

t.test("20 addresses crossing the threshold at once: each decided exactly once, tallies exact", async (t) => {
  const b = box(t);
  const ips = Array.from({ length: 20 }, (_, i) => `203.0.113.${120 + i}`);
  let log = "";
  for (const [i, ip] of ips.entries()) {
    log += rep(failed(ip), (i % 4) + 1);
    log += i % 5 === 0 ? `Accepted password for u from ${ip} port 1 ssh2\n` : `Invalid user v${i} from ${ip} port 2\n`;
  }
  fs.writeFileSync(b.log, log);
  for (const ip of ips) connects(t, b.env, ip, 2);
  // Two connects of each address at once: the 3rd and the 4th race each other too.
  const runs = await parallel(40, 20, (k) => sentryAsync(["--connect", `--ip=${ips[k % 20]}`], b.env));
  for (const r of runs) t.equal(r.status, 0, r.stderr);
  for (const [i, ip] of ips.entries()) {
    const want = i % 5 === 0 ? "allowed" : "blocked";
    t.equal(state(b.root, ip), want, `${ip} ${want}`);
    t.equal(decisions(b.root, ip).length, 1, `${ip}: exactly one decision line`);
    t.same(evidence(t, b.env, ip).ssh, i % 5 === 0 ? [1, 0, (i % 4) + 1, 0] : [0, 1, (i % 4) + 1, 0], `${ip}: tallies exact`);
  }
  const deny = fs.readFileSync(join(b.root, "hosts.deny"), "utf8").trim().split("\n");
  t.equal(deny.length, 16, "hosts.deny lost no concurrent block");
});

// ---- sentry.db -------------------------------------------------------------------

t.test("a corrupt sentry.db is moved aside and rebuilt; the decision still happens", async (t) => {
  const b = box(t);
  fs.writeFileSync(b.log, "Invalid user admin from 203.0.113.150 port 1\n");
  const junk = Buffer.alloc(8192);
  for (let i = 0; i < junk.length; i++) junk[i] = (i * 131) & 0xff;
  fs.writeFileSync(join(b.root, "sentry.db"), junk);
  // The logs (and sentry.db) are first read at the second connect (STRONG_CONNECT_THRESHOLD).
  const r = { stderr: [1, 2, 3].map(() => connect(b.env, "203.0.113.150").stderr).join("") };
  t.equal(state(b.root, "203.0.113.150"), "blocked");
  t.match(r.stderr, /sentry\.db was corrupt: moved to .*sentry\.db\.corrupt-/);
  const aside = fs.readdirSync(b.root).filter((f) => /^sentry\.db\.corrupt-\d{8}T\d{6}Z$/.test(f));
  t.equal(aside.length, 1, "moved aside once");
  t.same(fs.readFileSync(join(b.root, aside[0])), junk, "the corrupt file is kept as it was");
  const db = new DatabaseSync(join(b.root, "sentry.db"));
  t.ok(db.prepare("SELECT 1 FROM tallies WHERE ip = '203.0.113.150'").get(), "the new index holds the evidence");
  db.close();
});

t.test("a sentry.sh 2.00 sentry.db is imported once into files", async (t) => {
  const b = box(t);
  const now = Math.floor(Date.now() / 1000);
  const blockedAt = now - 86400;
  const mk = (file: string) => {
    const db = new DatabaseSync(file);
    db.exec("CREATE TABLE ip_records(ip TEXT PRIMARY KEY, seen INTEGER DEFAULT 0, allow INTEGER DEFAULT 0, block INTEGER DEFAULT 0)");
    const ins = db.prepare("INSERT INTO ip_records (ip, seen, allow, block) VALUES (?, ?, ?, ?)");
    ins.run("203.0.113.160", 5, 0, blockedAt);
    ins.run("198.51.100.160", 2, now - 3600, 0);
    ins.run("::ffff:203.0.113.161", 1, 0, 0);
    ins.run("2001:DB8::160", 4, 0, blockedAt);
    ins.run("../../etc/passwd", 9, 0, blockedAt);
    ins.run("127.0.0.1", 3, 0, blockedAt); // loopback is never blocked, by any path
    db.close();
  };
  mk(join(b.root, "sentry.db"));
  fs.writeFileSync(b.log, "");
  const scanStart = Date.now();
  const r = sentry(["--scan"], b.env);
  const scanEnd = Date.now();
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /sentry\.sh 2\.00 import: skipped "\.\.\/\.\.\/etc\/passwd", not an IP address/);
  t.equal(state(b.root, "203.0.113.160"), "blocked");
  t.equal(Math.round(fs.statSync(join(b.root, "block", "203.0.113.160")).mtimeMs / 1000), blockedAt, "the block keeps its age for expiry");
  // Issue 16 item 6: the block ends EXPIRE_BLOCK_DAYS after the import, not after the old block time.
  const text = fs.readFileSync(join(b.root, "block", "203.0.113.160"), "utf8");
  t.match(text, /^\S+ block by sentry\.sh 2\.00 \(imported\)\nuntil (\S+) \(90 days from the import on \S+; EXPIRE_BLOCK_DAYS\)\n$/);
  const until = Date.parse(/^until (\S+)/m.exec(text)?.[1] ?? "");
  // Between the --scan's start and end, 90 days on (the line is written to the second).
  t.ok(until >= Math.floor(scanStart / 1000) * 1000 + 90 * 86_400_000 && until <= scanEnd + 90 * 86_400_000, "until is 90 days from the import", { scanStart, scanEnd, until });
  t.equal(blockEnd(text, fs.statSync(join(b.root, "block", "203.0.113.160")).mtimeMs, 90), until, "and expiry reads it so");
  t.equal(state(b.root, "198.51.100.160"), "allowed");
  t.equal(state(b.root, "2001:db8::160"), "blocked");
  t.equal(state(b.root, "203.0.113.161"), "none");
  t.equal(state(b.root, "127.0.0.1"), "none", "a loopback block row is not imported as a block");
  t.equal(fs.readFileSync(join(b.root, "seen", "203.0.113.160"), "utf8").split("\n").length - 1, 5);
  t.equal(fs.readFileSync(join(b.root, "seen", "203.0.113.161"), "utf8").split("\n").length - 1, 1);
  t.notOk(fs.existsSync(join(b.root, "etc")) || fs.existsSync(join(b.root, "..", "..", "etc", "passwd.sentry")), "nothing written for the bad row");
  t.same(fs.readFileSync(join(b.root, "hosts.deny"), "utf8").trim().split("\n").sort(), ["203.0.113.160", "[2001:db8::160]"]);
  const db = new DatabaseSync(join(b.root, "sentry.db"));
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type='table'").all().map((x) => String(x.name));
  t.ok(tables.includes("ip_records_imported_by_sentry3"), "the table is renamed");
  t.notOk(tables.includes("ip_records"), "not left to be imported again");
  t.equal(db.prepare("SELECT COUNT(*) AS n FROM ip_records_imported_by_sentry3").get()?.n, 6, "not dropped: every row kept");
  db.close();
  // Once only: a second run changes nothing.
  sentry(["--scan"], b.env);
  connect(b.env, "203.0.113.161");
  t.equal(fs.readFileSync(join(b.root, "seen", "203.0.113.160"), "utf8").split("\n").length - 1, 5, "seen not imported twice");
  t.equal(fs.readFileSync(join(b.root, "seen", "203.0.113.161"), "utf8").split("\n").length - 1, 2);
  t.equal(sentryLog(b.root).split("\n").filter((l) => / import /.test(l)).length, 1, "one import line in sentry.log");

  // Ten processes meeting the old table at once: one import, no crash.
  const c = box(t);
  mk(join(c.root, "sentry.db"));
  fs.writeFileSync(c.log, "");
  const runs = await parallel(10, 10, () => sentryAsync(["--scan"], c.env));
  for (const x of runs) t.equal(x.status, 0, `parallel import: ${x.stderr}`);
  t.equal(sentryLog(c.root).split("\n").filter((l) => / import /.test(l)).length, 1, "parallel: one import");
  t.equal(fs.readFileSync(join(c.root, "seen", "203.0.113.160"), "utf8").split("\n").length - 1, 5, "parallel: seen imported once");
});

t.test("a sentry.sh 2.00 row with a bad number is named and skipped, never imported as 0", async (t) => {
  // Number(x) || 0 read each of these as 0: the block "soon" as no block,
  // -3 connections as none. Each is now named on stderr and in sentry.log.
  const b = box(t);
  const now = Math.floor(Date.now() / 1000);
  const db = new DatabaseSync(join(b.root, "sentry.db"));
  db.exec("CREATE TABLE ip_records(ip TEXT PRIMARY KEY, seen INTEGER DEFAULT 0, allow INTEGER DEFAULT 0, block INTEGER DEFAULT 0)");
  const ins = db.prepare("INSERT INTO ip_records (ip, seen, allow, block) VALUES (?, ?, ?, ?)");
  ins.run("203.0.113.170", 2, 0, "soon");
  ins.run("203.0.113.171", -3, 0, 0);
  ins.run("203.0.113.172", 1, now + 30 * 86400, 0); // a month ahead of the clock
  ins.run("203.0.113.173", 1.5, 0, 0);
  ins.run("203.0.113.174", 3, 0, now - 60); // a good row beside them
  db.close();
  fs.writeFileSync(b.log, "");
  const scanStart = Date.now();
  const r = sentry(["--scan"], b.env);
  const scanEnd = Date.now();
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /sentry\.sh 2\.00 import: skipped "203\.0\.113\.170": block is "soon", not 0 or the time of the block/);
  t.match(r.stderr, /skipped "203\.0\.113\.171": seen is "-3", not a count of connections/);
  t.match(r.stderr, /skipped "203\.0\.113\.172": allow is "\d+", not 0 or the time of the allow \(epoch seconds, not in the future\)/);
  t.match(r.stderr, /skipped "203\.0\.113\.173": seen is "1\.5"/);
  for (const ip of ["203.0.113.170", "203.0.113.171", "203.0.113.172", "203.0.113.173"]) {
    t.equal(state(b.root, ip), "none", `${ip}: nothing decided from a bad row`);
    t.notOk(fs.existsSync(join(b.root, "seen", ip)), `${ip}: no connections made up`);
  }
  t.equal(state(b.root, "203.0.113.174"), "blocked", "the good row is imported");
  const line = sentryLog(b.root).split("\n").find((l) => / import /.test(l)) ?? "";
  t.match(line, /1 addresses from the sentry\.sh 2\.00 table ip_records .*; 4 rows skipped as not valid \("203\.0\.113\.170": block is "soon"/);
  const after = new DatabaseSync(join(b.root, "sentry.db"));
  t.equal(after.prepare("SELECT COUNT(*) AS n FROM ip_records_imported_by_sentry3").get()?.n, 5, "every row kept, the skipped ones too");
  after.close();
});

t.test("--delist sets the old evidence aside: no re-block without new evidence", async (t) => {
  const b = box(t);
  fs.writeFileSync(b.log, "Invalid user admin from 203.0.113.170 port 1\n");
  connects(t, b.env, "203.0.113.170");
  t.equal(state(b.root, "203.0.113.170"), "blocked");
  const d = sentry(["--delist", "--ip=203.0.113.170"], b.env);
  t.equal(d.status, 0, d.stderr);
  t.equal(state(b.root, "203.0.113.170"), "none");
  connects(t, b.env, "203.0.113.170", 4);
  t.equal(state(b.root, "203.0.113.170"), "none", "four connects with no new evidence do not re-block");
  t.equal(fs.readFileSync(join(b.root, "hosts.deny"), "utf8"), "", "hosts.deny is empty");
  fs.appendFileSync(b.log, "Invalid user again from 203.0.113.170 port 2\n");
  connect(b.env, "203.0.113.170");
  t.equal(state(b.root, "203.0.113.170"), "blocked", "new evidence blocks again");
  t.same(evidence(t, b.env, "203.0.113.170").ssh, [0, 1, 0, 0], "only the new line counts");
});

// ---- --test-log ----------------------------------------------------------------------

t.test("--test-log: one line per input line and a summary, on every fixture; stdin; a missing file", async (t) => {
  const root = tempDir(t);
  const env = envFor(root, { PROTECT_FTP: "1", PROTECT_MUA: "1", PROTECT_SMTP: "1" });
  const files = fs.readdirSync(FIXTURES).filter((f) => f.endsWith(".log")).sort();
  t.ok(files.length >= 10, `fixtures found (${files.length})`);
  for (const f of files) {
    const file = join(FIXTURES, f);
    const text = fs.readFileSync(file, "utf8");
    const nLines = text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
    const r = sentry(["--test-log", file], env);
    t.equal(r.status, 0, `${f}: exit 0 ${r.stderr}`);
    const out = r.stdout.split("\n");
    const numbered = out.filter((l) => /^ {0,5}\d+  \S/.test(l));
    t.equal(numbered.length, nLines, `${f}: one output line per input line`);
    t.same(
      numbered.map((l) => Number(l.trim().split(/\s+/)[0])),
      Array.from({ length: nLines }, (_, i) => i + 1),
      `${f}: numbered in order`,
    );
    t.match(r.stdout, new RegExp(`\\ntotals: ${nLines} lines: \\d+ matched`), `${f}: summary`);
    t.match(r.stdout, /→ would (block|allow|decide nothing yet)/, `${f}: per-address verdicts`);
  }
  const ssh = join(FIXTURES, "sshd-openssh8.log");
  const viaStdin = sentry(["--test-log", "-"], { ...env, SSH_LOG: ssh }, { input: fs.readFileSync(ssh, "utf8") });
  t.equal(viaStdin.status, 0);
  t.equal(viaStdin.stdout, sentry(["--test-log", ssh], { ...env, SSH_LOG: ssh }).stdout, "stdin reads the same as the file");
  const mine = sentry(["--test-log", "-"], env, { input: "Invalid user a from 203.0.113.180 port 1\nAccepted password for u from 198.51.100.180 port 2 ssh2\nhello\n" });
  t.match(mine.stdout, /^ +1  naughty +ssh +203\.0\.113\.180 /m);
  t.match(mine.stdout, /^ +3  ignored +sshd line not about authentication$/m);
  t.match(mine.stdout, /^203\.0\.113\.180 +ssh: 0 success, 1 naughty, 0 failed, 0 probe → would block for 10 minutes once seen 3 times$/m);
  t.match(mine.stdout, /^198\.51\.100\.180 +ssh: 1 success, 0 naughty, 0 failed, 0 probe → would allow once seen 3 times$/m);
  const missing = join(root, "nope.log");
  const m = sentry(["--test-log", missing], env);
  t.equal(m.status, 2, "a missing file exits 2");
  t.match(m.stderr, new RegExp(missing.replace(/[.]/g, "\\.")));
  t.equal(m.stdout, "");
});
