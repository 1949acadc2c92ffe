// Issue 16 items 1, 2: blocks with their own length, reason and operator; repeat offenders.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import {
  DEFAULTS, makeCtx, parseArgs, parseDuration, repeatLength, parseHistory, historyText, manualAction, expireBlocks,
  blockEnd, listDir, statePath, realFs, type Sys, type Config,
} from "../sentry.ts";
import { envFor, requireBinary, sentry, sentryLog, state, tempDir } from "./lib/run.ts";

requireBinary();

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

/** A Sys with a settable clock, captured output, real files, and no firewall tool run. */
function testSys(env: Record<string, string> = {}): Sys & { clock: number; outs: string[]; warns: string[] } {
  const s = {
    clock: Date.parse("2026-11-29T10:00:00Z"),
    outs: [] as string[],
    warns: [] as string[],
    now: () => s.clock,
    env,
    fs: realFs,
    out: (x: string) => void s.outs.push(x),
    warn: (x: string) => void s.warns.push(x),
    err: (x: string) => void s.warns.push(x),
    run: () => ({ status: 0, stdout: "", stderr: "", error: "" }),
    execPath: process.execPath,
  };
  return s;
}
const cfgFor = (root: string, extra: Partial<Config> = {}): Config => ({ ...DEFAULTS, ROOT_DIR: root, PROTECT_FTP: false, PROTECT_MUA: false, SSH_LOG: join(root, "none.log"), ...extra });

t.test("--for takes m h d w, nothing else; --reason one line", async (t) => {
  t.equal(parseDuration("30m"), 30 * MIN);
  t.equal(parseDuration("4h"), 4 * HOUR);
  t.equal(parseDuration("2d"), 2 * DAY);
  t.equal(parseDuration("1w"), 7 * DAY);
  for (const bad of ["0h", "4", "h", "4H", "4 h", "-4h", "4.5h", "04h", "1y", "99999999d", "36501d"]) t.equal(parseDuration(bad), null, `${bad} refused`);
  t.equal(parseDuration("36500d"), 36500 * DAY, "the bound of EXPIRE_BLOCK_DAYS");
  t.strictSame(parseArgs(["--block", "--ip=192.0.2.1", "--for", "4h", "--reason", "looking into it"]), {
    action: "block", ip: "192.0.2.1", net: null, force: false, forMs: 4 * HOUR, forText: "4h", reason: "looking into it",
  });
  t.strictSame(parseArgs(["--allow", "--ip=192.0.2.1", "--reason=office"]), { action: "allow", ip: "192.0.2.1", net: null, reason: "office" });
  t.throws(() => parseArgs(["--block", "--ip=192.0.2.1", "--for=4x"]), /--for "4x" is not a length/);
  t.throws(() => parseArgs(["--allow", "--ip=192.0.2.1", "--for=4h"]), /--for goes with --block/);
  t.throws(() => parseArgs(["--report", "--reason=x"]), /--reason goes with --block, --allow or --delist/);
  t.throws(() => parseArgs(["--block", "--ip=192.0.2.1", "--reason", "a\n2026-11-29T10:00:00Z 10.0.0.1 allow admin"]), /one line/);
  t.throws(() => parseArgs(["--block", "--ip=192.0.2.1", "--reason", "x".repeat(301)]), /at most 300/);
});

t.test("--block --for 4h --reason: recorded with the operator, ends by itself at its time", async (t) => {
  const root = tempDir(t);
  const sys = testSys({ SUDO_USER: "alice", USER: "root" });
  const ctx = makeCtx(cfgFor(root), sys);
  t.equal(manualAction(ctx, "block", "203.0.113.40", false, { forMs: 4 * HOUR, forText: "4h", reason: "ticket 42" }), 0);
  const text = fs.readFileSync(statePath(ctx, "block", "203.0.113.40"), "utf8");
  t.equal(text, "2026-11-29T10:00:00Z block by admin (alice): --block --for 4h: ticket 42\nuntil 2026-11-29T14:00:00Z (4 hours; --for 4h)\n");
  t.match(fs.readFileSync(join(root, "sentry.log"), "utf8"), /^2026-11-29T10:00:00Z 203\.0\.113\.40 block admin \(alice\): --block --for 4h: ticket 42; until 2026-11-29T14:00:00Z/m);
  const mtime = fs.statSync(statePath(ctx, "block", "203.0.113.40")).mtimeMs;
  t.equal(blockEnd(text, mtime, 90), mtime + 4 * HOUR, "blockEnd reads the file's own length");
  sys.clock += 4 * HOUR - 1000;
  // The file was written now (real clock): age it so that its mtime is the test clock's start.
  const start = Date.parse("2026-11-29T10:00:00Z") / 1000;
  fs.utimesSync(statePath(ctx, "block", "203.0.113.40"), start, start);
  t.equal(expireBlocks(ctx), 0, "one second before its end it stays");
  t.same(listDir(ctx, "block"), ["203.0.113.40"]);
  sys.clock += 1000;
  t.equal(expireBlocks(ctx), 1, "at its end it is lifted");
  t.same(listDir(ctx, "block"), []);
  t.match(fs.readFileSync(join(root, "sentry.log"), "utf8"), /^2026-11-29T14:00:00Z 203\.0\.113\.40 delist expiry: blocked since 2026-11-29T10:00:00Z, ended 2026-11-29T14:00:00Z/m);
  // --allow --reason, operator from USER when there is no sudo.
  const ctx2 = makeCtx(cfgFor(root), testSys({ USER: "bob" }));
  t.equal(manualAction(ctx2, "allow", "198.51.100.7", false, { reason: "the office" }), 0);
  t.match(fs.readFileSync(statePath(ctx2, "allow", "198.51.100.7"), "utf8"), /^\S+ allow by admin \(bob\): --allow: the office\n$/);
});

t.test("expiry counts what it lifted everywhere: a firewall that failed to lift a block is not counted", async (t) => {
  const root = tempDir(t);
  const sys = testSys();
  const ctx = makeCtx(cfgFor(root, { EXPIRE_BLOCK_DAYS: 1 }), sys);
  for (const ip of ["203.0.113.41", "203.0.113.42"]) t.equal(manualAction(ctx, "block", ip, false), 0);
  const start = Date.parse("2026-11-29T10:00:00Z") / 1000;
  for (const ip of ["203.0.113.41", "203.0.113.42"]) fs.utimesSync(statePath(ctx, "block", ip), start, start);
  sys.clock += DAY;
  // ipset refuses every removal (the set was destroyed under it, say).
  const failing = makeCtx(cfgFor(root, { EXPIRE_BLOCK_DAYS: 1, ADD_TO_IPTABLES: true }), {
    ...sys,
    run: () => ({ status: 1, stdout: "", stderr: "ipset v7.19: The set with the given name does not exist", error: "" }),
  });
  t.equal(expireBlocks(failing), 0, "nothing was lifted from every list");
  t.same(listDir(ctx, "block"), [], "block/ and hosts.deny no longer hold them (sentry.log says which backend failed)");
  t.match(sentryLog(root), /203\.0\.113\.41 backend-failed iptables remove: /);
  t.match(sys.warns.join("\n"), /iptables: could not remove 203\.0\.113\.42: .*does not exist/);
});

t.test("the binary: --block --for and --reason, operator SUDO_USER", async (t) => {
  const root = join(tempDir(t), "root");
  const env = envFor(root, { SUDO_USER: "carol" });
  const r = sentry(["--block", "--ip=2001:db8::40", "--for=90m", "--reason", "port scan"], env);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /blocked 2001:db8::40 \(was: not decided\)/);
  t.match(fs.readFileSync(join(root, "block", "2001:db8::40"), "utf8"), /^\S+ block by admin \(carol\): --block --for 90m: port scan\nuntil \S+ \(90 minutes; --for 90m\)\n$/);
  t.match(sentryLog(root), /2001:db8::40 block admin \(carol\): --block --for 90m: port scan; until/);
  const bad = sentry(["--block", "--ip=2001:db8::41", "--for=4years"], env);
  t.equal(bad.status, 1);
  t.notOk(fs.existsSync(join(root, "block", "2001:db8::41")), "a bad --for blocks nothing");
});

t.test("repeat offenders: base times the factor per earlier block, capped, or for good", async (t) => {
  const cfg = { REPEAT_FACTOR_PERCENT: 200, REPEAT_MAX_DAYS: 365, REPEAT_FOREVER_AFTER: 0 };
  const thin = { ms: 10 * MIN, why: "thin evidence" };
  const strong = { ms: 90 * DAY, why: "strong evidence" };
  const h = (times: number) => ({ times, lifted: Date.parse("2026-11-29T10:00:00Z") });
  t.equal(repeatLength(thin, null, cfg), thin, "a first offender gets the base");
  t.equal(repeatLength(thin, h(1), cfg).ms, 20 * MIN);
  t.equal(repeatLength(thin, h(3), cfg).ms, 80 * MIN);
  t.equal(repeatLength(strong, h(1), cfg).ms, 180 * DAY);
  t.equal(repeatLength(strong, h(2), cfg).ms, 360 * DAY);
  t.equal(repeatLength(strong, h(3), cfg).ms, 365 * DAY, "capped at REPEAT_MAX_DAYS");
  t.match(repeatLength(strong, h(3), cfg).why, /repeat offender: 3 earlier blocks ran out.*capped at REPEAT_MAX_DAYS=365/);
  t.equal(repeatLength(strong, h(50), { ...cfg, REPEAT_MAX_DAYS: 0 }).ms, 36500 * DAY, "no cap: still within the bound of a block");
  t.equal(repeatLength({ ms: 400 * DAY, why: "x" }, h(1), cfg).ms, 400 * DAY, "a base longer than the cap is not shortened");
  t.equal(repeatLength(thin, h(1), { ...cfg, REPEAT_FACTOR_PERCENT: 150 }).ms, 15 * MIN, "sshguard's 1.5");
  const forever = repeatLength(thin, h(2), { ...cfg, REPEAT_FOREVER_AFTER: 2 });
  t.equal(forever.ms, 0);
  t.equal(forever.forGood, true);
  t.equal(repeatLength(thin, h(1), { ...cfg, REPEAT_FOREVER_AFTER: 2 }).ms, 20 * MIN, "before the limit it still grows");
  t.same(parseHistory(historyText(h(2))), h(2), "history round trip");
  t.equal(parseHistory("blocked lots\n"), null);
  t.equal(blockEnd("2026-11-29T10:00:00Z block by connect: x\nuntil never (for good; y)\n", 0, 90), null, "until never never ends");
});

t.test("the binary: a bot back after its block ran out is blocked longer; expiry keeps the history, --delist clears it", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const log = join(dir, "auth.log");
  const env = envFor(root, { SSH_LOG: log });
  const ip = "203.0.113.60";
  const connect = () => sentry(["--connect", `--ip=${ip}`], env);
  const age = (file: string, ms: number) => {
    const at = (Date.now() - ms) / 1000;
    fs.utimesSync(file, at, at);
  };
  fs.writeFileSync(log, `Invalid user a from ${ip} port 1\n`);
  for (let i = 0; i < 3; i++) connect();
  t.equal(state(root, ip), "blocked");
  t.match(fs.readFileSync(join(root, "block", ip), "utf8"), /\nuntil \S+ \(10 minutes; thin evidence: [^;]*\)\n$/, "a first offender on thin evidence: 10 minutes");
  // Its 10 minutes are over: age the file and the stamp instead of sleeping.
  age(join(root, "block", ip), 11 * MIN);
  age(join(root, "expire.stamp"), MIN);
  sentry(["--connect", "--ip=192.0.2.99"], env); // any connect lifts what is due
  t.equal(state(root, ip), "none", "expired");
  t.equal(fs.readFileSync(join(root, "history", ip), "utf8").replace(/\S+Z/, "T"), "blocked 1 time, last lifted T\n", "expiry keeps a history");
  t.match(sentryLog(root), new RegExp(`${ip.replace(/\./g, "\\.")} delist expiry: .*blocked 1 time so far`));
  // It comes back with the same kind of evidence.
  fs.appendFileSync(log, `Invalid user a from ${ip} port 2\n`);
  for (let i = 0; i < 3; i++) connect();
  t.equal(state(root, ip), "blocked", "blocked again");
  t.match(fs.readFileSync(join(root, "block", ip), "utf8"), /\nuntil \S+ \(20 minutes; thin evidence: .*; repeat offender: 1 earlier block ran out, the last lifted \S+: 200% per repeat\)\n$/, "twice as long");
  t.ok(fs.existsSync(join(root, "history", ip)), "the history is still there while blocked");
  t.match(sentry(["--report", `--ip=${ip}`], env).stdout, /history\/203\.0\.113\.60: blocked 1 time, last lifted \S+Z/, "--report shows the history");
  t.equal(sentry(["--delist", `--ip=${ip}`], env).status, 0);
  t.notOk(fs.existsSync(join(root, "history", ip)), "an admin's --delist forgives: no history");
  fs.appendFileSync(log, `Invalid user a from ${ip} port 3\n`);
  for (let i = 0; i < 3; i++) connect();
  t.match(fs.readFileSync(join(root, "block", ip), "utf8"), /\(10 minutes; thin evidence: [^;]*\)\n$/, "after forgiveness a first offender again");
});
