// Issue 15, a resource ceiling under attack: a connect never queues on a
// lock another process holds (the convoy), expiry rewrites hosts.deny once
// per pass. Through the built binary; the locks are held by this process
// with node:sqlite exactly as a busy sentry holds them.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { DatabaseSync } from "node:sqlite";
import { SENTRY, requireBinary, tempDir, envFor, sentry, sentryAsync, parallel, state, sentryLog, decisions } from "./lib/run.ts";
import type { TT } from "./lib/run.ts";

requireBinary();

const IP = "203.0.113.7";
const fail = (ip: string) => `Nov 29 10:00:01 host sshd[124]: Failed password for bob from ${ip} port 5000 ssh2\n`;

/** A ROOT_DIR whose sentry.db exists (an empty --scan made it), and a log with 12 failures of IP. */
function setup(t: TT) {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  fs.writeFileSync(log, "");
  // LOCK_TIMEOUT_SECONDS long: a connect that waited for it would hang the test, not pass.
  // The connection threshold alone (STRONG_CONNECT_THRESHOLD=3): this test is about the lock, not the early decision.
  const env = envFor(root, { SSH_LOG: log, LOCK_TIMEOUT_SECONDS: "40", CONNECT_WAIT_MS: "100", STRONG_CONNECT_THRESHOLD: "3" });
  const s = sentry(["--scan"], env);
  t.equal(s.status, 0, `--scan made sentry.db: ${s.stderr}`);
  fs.writeFileSync(log, fail(IP).repeat(12));
  return { root, log, env };
}

/** Holds `file` the way a reading or deciding sentry does (BEGIN IMMEDIATE) until release(). */
function hold(file: string): { release(): void } {
  const db = new DatabaseSync(file);
  db.exec("BEGIN IMMEDIATE");
  return {
    release() {
      db.exec("ROLLBACK");
      db.close();
    },
  };
}

const seenLines = (root: string, ip: string) => fs.readFileSync(join(root, "seen", ip), "utf8").split("\n").filter(Boolean).length;

t.test("a connect past the threshold while another process reads the logs (sentry.db locked) exits 0 at once, counted; the next decides", async (t) => {
  const { root, env } = setup(t);
  for (let k = 0; k < 2; k++) t.equal(sentry(["--connect", `--ip=${IP}`], env).status, 0);
  const h = hold(join(root, "sentry.db"));
  let r;
  try {
    r = sentry(["--connect", `--ip=${IP}`], env);
  } finally {
    h.release();
  }
  t.equal(r.status, 0, `exit 0 with sentry.db busy (was: waited LOCK_TIMEOUT_SECONDS, then failed): ${r.stderr}`);
  t.equal(r.stderr, "", "nothing to say: the reader counts its lines");
  t.match(r.stdout, /^ {3}3 connections from 203\.0\.113\.7\n$/);
  t.equal(seenLines(root, IP), 3, "its connection is recorded");
  t.equal(state(root, IP), "none", "no decision without the read");
  const next = sentry(["--connect", `--ip=${IP}`], env);
  t.equal(next.status, 0, next.stderr);
  t.equal(state(root, IP), "blocked", "the next connect decides");
  t.equal(decisions(root, IP).length, 1);
});

t.test("a connect that finds the state lock held (a decision, an expiry) does not wait for it", async (t) => {
  const { root, env } = setup(t);
  for (let k = 0; k < 2; k++) t.equal(sentry(["--connect", `--ip=${IP}`], env).status, 0);
  fs.rmSync(join(root, "expire.stamp"), { force: true }); // an expiry look is due: it wants the lock too
  const h = hold(join(root, "sentry.lock"));
  let r;
  const before = Date.now();
  try {
    r = sentry(["--connect", `--ip=${IP}`], env);
  } finally {
    h.release();
  }
  const after = Date.now();
  t.equal(r.status, 0, `exit 0 with sentry.lock busy: ${r.stderr}`);
  t.equal(r.stderr, "");
  t.equal(state(root, IP), "none", "the decision is left to the next look");
  const stamp = fs.statSync(join(root, "expire.stamp")).mtimeMs;
  // Measured from the connect, not from now: a slow machine does not move it.
  t.ok(stamp >= before + 60_000 - 1 && stamp <= after + 60_000 + 1, `the skipped expiry look is due again a minute after the connect, not in EXPIRE_CHECK_MINUTES (${stamp - before} ms after its start)`);
  // The tallies were read: --scan (or the next connect) decides on them without the log growing.
  const s = sentry(["--scan"], env);
  t.equal(s.status, 0, s.stderr);
  t.equal(state(root, IP), "blocked");
});

t.test("40 parallel connects of one address past the threshold: all exit 0, every one counted, exactly one decision", async (t) => {
  const { root, env } = setup(t);
  for (let k = 0; k < 2; k++) t.equal(sentry(["--connect", `--ip=${IP}`], env).status, 0);
  const runs = await parallel(40, 40, () => sentryAsync(["--connect", `--ip=${IP}`], env));
  t.same(runs.filter((r) => r.status !== 0 || r.stderr !== "").map((r) => `${r.status} ${r.stderr}`), []);
  t.equal(seenLines(root, IP), 42);
  // Every connect may have been turned away by the reader; then the next look decides.
  if (state(root, IP) === "none") t.equal(sentry(["--connect", `--ip=${IP}`], env).status, 0);
  t.equal(state(root, IP), "blocked");
  t.equal(decisions(root, IP).length, 1, sentryLog(root));
});

t.test("an expiry pass lifting many blocks rewrites hosts.deny once, and lifts every one", async (t) => {
  const root = tempDir(t);
  const env = envFor(root, { EXPIRE_PER_CONNECT: "1000" });
  const ips = Array.from({ length: 30 }, (_, k) => `198.51.100.${k + 1}`);
  for (const ip of ips) t.equal(sentry(["--block", `--ip=${ip}`], env).status, 0);
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8").split("\n").filter((l) => l.includes("198.51.100.")).length, 30);
  // Their time has come: made 100 days ago, each lasting EXPIRE_BLOCK_DAYS (90).
  const old = Date.now() / 1000 - 100 * 86_400;
  for (const ip of ips) fs.utimesSync(join(root, "block", ip), old, old);
  fs.rmSync(join(root, "expire.stamp"), { force: true });
  // hosts.deny is written atomically (a temporary file renamed over it): strace counts the renames onto it.
  const trace = join(root, "strace.out");
  const r = spawnSync("strace", ["-f", "-qq", "-e", "trace=rename,renameat,renameat2", "-o", trace, SENTRY, "--connect", "--ip=192.0.2.200"], {
    env,
    encoding: "utf8",
    timeout: 60_000,
  });
  t.equal(r.status, 0, r.stderr);
  for (const ip of ips) t.equal(state(root, ip), "none", `${ip} expired`);
  t.notOk(fs.readFileSync(join(root, "hosts.deny"), "utf8").includes("198.51.100."), "hosts.deny lists none of them");
  const onto = fs.readFileSync(trace, "utf8").split("\n").filter((l) => /rename.*hosts\.deny"/.test(l) && !/= -1/.test(l));
  t.equal(onto.length, 1, `hosts.deny rewritten once for 30 expired blocks (was once per block):\n${onto.join("\n")}`);
  t.equal(sentryLog(root).split("\n").filter((l) => / delist expiry/.test(l)).length, 30, "each expiry is in sentry.log");
});

t.test("an address past the threshold whose last look found nothing, logs unchanged: no sentry.db, no read of the log; a grown log gets a real look", async (t) => {
  const { root, log, env } = setup(t);
  fs.writeFileSync(log, fail(IP).repeat(3));
  for (let k = 0; k < 3; k++) t.equal(sentry(["--connect", `--ip=${IP}`], env).status, 0);
  t.equal(state(root, IP), "none", "3 failures decide nothing");
  const opened = (tag: string): string[] => {
    const trace = join(root, `strace-${tag}.out`);
    const r = spawnSync("strace", ["-f", "-qq", "-e", "trace=open,openat", "-o", trace, SENTRY, "--connect", `--ip=${IP}`], { env, encoding: "utf8", timeout: 60_000 });
    t.equal(r.status, 0, r.stderr);
    return fs.readFileSync(trace, "utf8").split("\n").filter((l) => l.includes(root) && !/= -1 ENOENT/.test(l));
  };
  const quiet = opened("quiet");
  t.same(quiet.filter((l) => /sentry\.db|auth\.log"/.test(l)), [], "the 4th connect opens neither sentry.db nor the log");
  t.equal(state(root, IP), "none");
  fs.appendFileSync(log, fail(IP).repeat(9)); // 12 failures now
  const grown = opened("grown");
  t.ok(grown.some((l) => /auth\.log"/.test(l)), "a grown log is read");
  t.equal(state(root, IP), "blocked", "and decides");
});

t.test("the connect whose read took the lock decides for the addresses it turned away", async (t) => {
  const { root, log, env } = setup(t);
  const B = "198.51.100.77";
  const A = "192.0.2.55";
  fs.appendFileSync(log, fail(B).repeat(12) + fail(A).repeat(3));
  const h = hold(join(root, "sentry.db"));
  try {
    for (let k = 0; k < 3; k++) t.equal(sentry(["--connect", `--ip=${B}`], env).status, 0);
  } finally {
    h.release();
  }
  t.equal(state(root, B), "none", "turned away three times: nothing decided yet");
  for (let k = 0; k < 3; k++) t.equal(sentry(["--connect", `--ip=${A}`], env).status, 0);
  t.equal(state(root, A), "none", "A's 3 failures decide nothing for A");
  t.equal(state(root, B), "blocked", "A's read, which found B's 12 failures and B's 3 connections, blocked B");
  t.match(decisions(root, B)[0] ?? "", / block connect: /);
});
