// The pure parts and the state layer, through the module with a Sys of the test's own.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import {
  decide, hostsDenyText, parseAllowList, parseArgs, parseNet, loadConfig, DEFAULTS, recordLine, makeCtx,
  setBlocked, withLock, expireIfDue, listDir, realFs, type Sys, type Config, type FsTable, SentryError,
  connect, writeAtomic, statePath, rollbackAfter,
} from "../sentry.ts";
import { DatabaseSync } from "node:sqlite";
import { tempDir } from "./lib/run.ts";

const tally = (o: Partial<{ success: number; failed: number; naughty: number; probe: number }>) => ({
  success: 0, failed: 0, naughty: 0, probe: 0, sample: "", ...o,
});

t.test("the rules, in their order", async (t) => {
  t.equal(decide({}).action, "none");
  t.equal(decide({ ssh: tally({ success: 1, naughty: 5, failed: 50 }) }).action, "allow", "a success wins over everything");
  t.equal(decide({ ssh: tally({ naughty: 1 }), mua: tally({ success: 1 }) }).action, "allow", "on any service");
  t.equal(decide({ ssh: tally({ naughty: 1 }) }).action, "block");
  t.equal(decide({ ssh: tally({ failed: 10 }) }).action, "none", "10 attempts are not more than 10");
  t.equal(decide({ ssh: tally({ failed: 11 }) }).action, "block");
  t.equal(decide({ ssh: tally({ failed: 6 }), ftp: tally({ failed: 5 }) }).action, "block", "attempts add up across services");
  t.equal(decide({ ssh: tally({ failed: 3 }) }, 2).action, "block", "the limit is a setting");
  t.equal(decide({ ssh: tally({ failed: 9, probe: 3 }) }).action, "none", "probes (closing lines) are not attempts");
  t.equal(decide({ ssh: tally({ probe: 500 }) }).action, "none", "a scanner that never tried a password is not blocked by the logs");
  t.match(decide({ ssh: { ...tally({ naughty: 1 }), sample: "Invalid user x" } }).reason, /ssh: .*1 naughty.*Invalid user x/);
});

t.test("hosts.deny holds addresses and nothing else", async (t) => {
  const allow = parseAllowList("198.51.100.0/24");
  const text = hostsDenyText(["203.0.113.7", "2001:db8::7", "ALL", "#x", "198.51.100.9", "127.0.0.1", "1.2.3.4 "], allow);
  t.equal(text, "203.0.113.7\n[2001:db8::7]\n");
  t.equal(hostsDenyText([], allow), "", "no blocks: an empty file, which matches nothing");
  for (const line of text.trim().split("\n")) t.match(line, /^(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\])$/);
});

t.test("the record line admins grep", async (t) => {
  t.equal(recordLine(3, "192.0.2.1", null), "   3 connections from 192.0.2.1");
  t.equal(recordLine(12, "192.0.2.1", "allowed"), "  12 connections from 192.0.2.1 and it is allowed");
  t.equal(recordLine(12345, "2001:db8::1", "blocked"), "12345 connections from 2001:db8::1 and it is blocked");
});

t.test("command line", async (t) => {
  // Each action's record holds its own options and nothing else (t.strictSame: no extra field).
  t.strictSame(parseArgs(["--ip", "::ffff:192.0.2.7", "-c"]), { action: "connect", ip: "192.0.2.7" });
  t.strictSame(parseArgs(["-c", "--ip=::ffff:192.0.2.7"]), { action: "connect", ip: "192.0.2.7" });
  t.strictSame(parseArgs(["--whitelist", "--ip=192.0.2.1"]), { action: "allow", ip: "192.0.2.1", net: null, reason: null });
  t.strictSame(parseArgs(["--blacklist", "--ip=192.0.2.1"]), { action: "block", ip: "192.0.2.1", net: null, force: false, forMs: null, forText: null, reason: null });
  t.strictSame(parseArgs(["--delist", "--ip=10.0.0.0/8"]), { action: "delist", ip: null, net: parseNet("10.0.0.0/8"), reason: null }, "a range");
  t.strictSame(parseArgs(["--ip=192.0.2.1"]), { action: "report", ip: "192.0.2.1", net: null, verbose: false, json: false }, "an address alone shows it");
  t.strictSame(parseArgs(["-r", "-v", "--json"]), { action: "report", ip: null, net: null, verbose: true, json: true });
  t.strictSame(parseArgs(["--test-log", "-"]), { action: "test-log", file: "-", missed: false });
  t.strictSame(parseArgs(["--install", "--write", "--timer"]), { action: "install", write: true, force: false, timer: true });
  t.strictSame(parseArgs(["--update", "--check"]), { action: "update", check: true, force: false });
  t.strictSame(parseArgs(["--completion=zsh"]), { action: "completion", shell: "zsh" });
  t.strictSame(parseArgs(["--doctor"]), { action: "doctor" });
  t.strictSame(parseArgs([]), { action: "help" });
  const list = parseArgs(["--list", "--ip=192.0.2.1", "--net=10.0.0.0/8"]);
  t.equal(list.action === "list" && list.list.net?.text, "192.0.2.1/32", "--list: --ip narrows like --net, and wins");
  t.strictSame(parseArgs(["--connect"], { PAM_RHOST: "192.0.2.9" }), { action: "connect", ip: "192.0.2.9" }, "pam_exec hands over PAM_RHOST");
  t.throws(() => parseArgs(["--block"]), /--block needs an address/);
  t.throws(() => parseArgs(["--connect"], { PAM_RHOST: "host.example.com" }), /not a valid IP address: "host.example.com"/);
  t.throws(() => parseArgs(["--frob"]), /Unknown option: --frob/);
  t.throws(() => parseArgs(["--connect"]), /needs an address/);
  t.throws(() => parseArgs(["--block", "--allow", "--ip=192.0.2.1"]), /choose one action/);
  t.throws(() => parseArgs(["--ip"]), /--ip needs a value/);
  t.throws(() => parseArgs(["--connect=1"]), /Unknown option: --connect=1/);
  t.throws(() => parseArgs(["--write", "--report"]), /--write goes with --install/);
  try {
    parseArgs(["--ip=1.2.3.4;reboot", "--block"]);
    t.fail("must throw");
  } catch (e) {
    t.ok(e instanceof SentryError && e.exitCode === 1, "bad input is exit 1");
  }
});

t.test("configuration: defaults, sentry.conf, environment, errors naming the key", async (t) => {
  const root = tempDir(t);
  t.same(loadConfig({ ROOT_DIR: root }), { ...DEFAULTS, ROOT_DIR: root });
  fs.writeFileSync(join(root, "sentry.conf"), "# comment\nEXPIRE_BLOCK_DAYS=7\nPROTECT_FTP = 0\nFIREWALL_TABLE=\"blocked\"\n\n");
  const c = loadConfig({ ROOT_DIR: root, EXPIRE_BLOCK_DAYS: "3" });
  t.equal(c.EXPIRE_BLOCK_DAYS, 3, "environment over file");
  t.equal(c.PROTECT_FTP, false, "file over default");
  t.equal(c.FIREWALL_TABLE, "blocked", "quotes removed");
  t.throws(() => loadConfig({ ROOT_DIR: root, PROTECT_MUA: "maybe" }), /environment: PROTECT_MUA="maybe" is not valid/);
  t.throws(() => loadConfig({ ROOT_DIR: root, EXPIRE_BLOCK_DAYS: "-1" }), /EXPIRE_BLOCK_DAYS/);
  t.throws(() => loadConfig({ ROOT_DIR: root, ALLOW_IPS: "192.0.2.0/24 bogus" }), /ALLOW_IPS: "bogus"/);
  t.throws(() => loadConfig({ ROOT_DIR: "relative/dir" }), /ROOT_DIR must be an absolute path/);
  fs.writeFileSync(join(root, "sentry.conf"), "PROTECT_FPT=0\n");
  t.throws(() => loadConfig({ ROOT_DIR: root }), /line 1: unknown setting PROTECT_FPT/);
  fs.writeFileSync(join(root, "sentry.conf"), "just words\n");
  t.throws(() => loadConfig({ ROOT_DIR: root }), /line 1: expected KEY=value/);
});

/** A Sys for module-level tests: a settable clock, captured output, real files. */
function testSys(fsys: FsTable = realFs): Sys & { clock: number; outs: string[]; warns: string[]; runs: string[][] } {
  const s = {
    clock: Date.parse("2026-11-21T10:00:00Z"),
    outs: [] as string[],
    warns: [] as string[],
    runs: [] as string[][],
    now: () => s.clock,
    env: {},
    fs: fsys,
    out: (x: string) => void s.outs.push(x),
    warn: (x: string) => void s.warns.push(x),
    err: (x: string) => void s.warns.push(x),
    run: (cmd: string, args: string[]) => {
      s.runs.push([cmd, ...args]);
      return { status: 0, stdout: "", stderr: "", error: "" };
    },
    execPath: process.execPath,
  };
  return s;
}

const cfgFor = (root: string, extra: Partial<Config> = {}): Config => ({ ...DEFAULTS, ROOT_DIR: root, PROTECT_FTP: false, PROTECT_MUA: false, SSH_LOG: join(root, "none.log"), ...extra });

t.test("a failed transaction: its own error wins over a ROLLBACK that fails too, which is recorded in it", async (t) => {
  const db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE x (n INTEGER)");
  db.exec("BEGIN");
  db.exec("INSERT INTO x VALUES (1)");
  const first = new Error("disk full while writing the tallies");
  t.equal(rollbackAfter(db, first), first, "the original error, the same object");
  t.equal(first.message, "disk full while writing the tallies", "unchanged when the ROLLBACK works");
  t.equal(db.prepare("SELECT COUNT(*) AS n FROM x").get()?.n, 0, "and the insert is undone");
  db.exec("BEGIN");
  db.close(); // a handle gone under the transaction: its ROLLBACK throws
  const second = new SentryError("cannot update the evidence index: disk I/O error", 2);
  const out = rollbackAfter(db, second);
  t.equal(out, second, "still the original error, not SQLite's 'database is not open'");
  t.match(second.message, /^cannot update the evidence index: disk I\/O error; the ROLLBACK that followed failed too: .*not open/);
  t.equal(second.exitCode, 2);
  const odd = rollbackAfter(db, "a thrown string");
  t.ok(odd instanceof Error && /^a thrown string; the ROLLBACK that followed failed too/.test(odd.message), "a non-Error is kept in the message");

  // The lock: fn's error comes out as thrown, and the lock is free after it.
  const root = tempDir(t);
  const ctx = makeCtx(cfgFor(root, { LOCK_TIMEOUT_SECONDS: 1 }), testSys());
  const boom = new SentryError("cannot write block/203.0.113.9: EROFS", 2);
  t.throws(() => withLock(ctx, () => {
    throw boom;
  }), boom);
  t.equal(withLock(ctx, () => "again"), "again", "the lock was released after the failure");
});

t.test("expiry: at most once per EXPIRE_CHECK_MINUTES, lifting old blocks everywhere", async (t) => {
  const root = tempDir(t);
  const sys = testSys();
  const ctx = makeCtx(cfgFor(root, { EXPIRE_BLOCK_DAYS: 2 }), sys);
  withLock(ctx, () => {
    setBlocked(ctx, "203.0.113.1", "test", "old");
    setBlocked(ctx, "203.0.113.2", "test", "new");
  });
  const old = (sys.clock - 3 * 86_400_000) / 1000;
  fs.utimesSync(statePath(ctx, "block", "203.0.113.1"), old, old);
  expireIfDue(ctx);
  t.same(listDir(ctx, "block"), ["203.0.113.2"], "the 3-day-old block is lifted");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "203.0.113.2\n");
  t.match(fs.readFileSync(join(root, "sentry.log"), "utf8"), /203\.0\.113\.1 delist expiry: blocked since/);
  // A second block that is now old is not looked at again within the hour...
  fs.utimesSync(statePath(ctx, "block", "203.0.113.2"), old, old);
  sys.clock += 30 * 60_000;
  expireIfDue(ctx);
  t.same(listDir(ctx, "block"), ["203.0.113.2"], "not due yet: one stat, nothing else");
  sys.clock += 31 * 60_000;
  expireIfDue(ctx);
  t.same(listDir(ctx, "block"), [], "due after the hour");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "");
});

t.test("EXPIRE_BLOCK_DAYS=0 never expires", async (t) => {
  const root = tempDir(t);
  const sys = testSys();
  const ctx = makeCtx(cfgFor(root, { EXPIRE_BLOCK_DAYS: 0 }), sys);
  withLock(ctx, () => setBlocked(ctx, "203.0.113.1", "test", "x"));
  const old = (sys.clock - 3000 * 86_400_000) / 1000;
  fs.utimesSync(statePath(ctx, "block", "203.0.113.1"), old, old);
  expireIfDue(ctx);
  t.same(listDir(ctx, "block"), ["203.0.113.1"]);
});

t.test("a failing write leaves no partial file and names the path", async (t) => {
  const root = tempDir(t);
  const failing: FsTable = { ...realFs, fsyncSync: () => { throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" }); } };
  const ctx = makeCtx(cfgFor(root), testSys(failing));
  fs.mkdirSync(join(root, "block"), { recursive: true });
  t.throws(() => writeAtomic(ctx, join(root, "hosts.deny"), "203.0.113.1\n"), /cannot write .*hosts\.deny: ENOSPC/);
  t.same(fs.readdirSync(root).sort(), ["block"], "no temporary file left behind");
  const err = (() => { try { writeAtomic(ctx, join(root, "x"), "y"); } catch (e) { return e; } })();
  t.ok(err instanceof SentryError && err.exitCode === 2, "exit 2: could not do it");
});

t.test("a full disk on connect: exit 2 naming seen/IP", async (t) => {
  const root = tempDir(t);
  const failing: FsTable = { ...realFs, writeSync: () => { throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }); } };
  const ctx = makeCtx(cfgFor(root), testSys(failing));
  t.throws(() => connect(ctx, "192.0.2.1"), /cannot record the connection in .*seen\/192\.0\.2\.1: ENOSPC/);
});

t.test("loopback and ALLOW_IPS are refused by the one blocking path", async (t) => {
  const root = tempDir(t);
  const ctx = makeCtx(cfgFor(root, { ALLOW_IPS: "198.51.100.0/24" }), testSys());
  for (const ip of ["127.0.0.1", "::1", "198.51.100.20"]) {
    t.throws(() => withLock(ctx, () => setBlocked(ctx, ip, "test", "x")), /never blocked/, ip);
  }
  t.same(listDir(ctx, "block"), []);
});
