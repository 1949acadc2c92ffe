// State that heals and cannot be subverted (issue 9): loopback in every
// spelling, bounds of number settings, hosts.deny healing, strict modes,
// a delist that survives the loss of sentry.db, a corrupt lock.
import t from "tap";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";
import { parseIp, parseAllowList, inRanges, loadConfig, CONFIG_MAX, DEFAULTS, nftablesBackend, realSys } from "../sentry.ts";
import { createNetns, netnsUnavailable, CLIENTS4 } from "./lib/netns.ts";
import { requireBinary, sentry, envFor, tempDir, state, sentryLog, SENTRY } from "./lib/run.ts";

requireBinary();

t.test("loopback in every spelling is never blocked", async (t) => {
  const ranges = parseAllowList("");
  for (const a of ["127.0.0.1", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::127.9.9.9", "::ffff:0:127.0.0.1", "::1"]) {
    const ip = parseIp(a);
    t.ok(ip !== null && inRanges(ip, ranges), `${a} is loopback`);
  }
  t.notOk(inRanges(parseIp("64:ff9b::8.8.8.8") as string, ranges), "NAT64 of a public address is not");
  const root = join(tempDir(t), "root");
  for (const a of ["::127.0.0.1", "64:ff9b::7f00:1"]) {
    const r = sentry(["--block", `--ip=${a}`], envFor(root));
    t.equal(r.status, 1, `--block ${a} is refused`);
    t.match(r.stderr, /never blocked/);
    t.equal(state(root, parseIp(a) as string), "none");
  }
});

t.test("unspecified, multicast and broadcast addresses are no clients", async (t) => {
  for (const a of ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "239.255.255.250", "ff02::1", "ff05::1:3", "::ffff:224.0.0.251"]) {
    t.equal(parseIp(a), null, a);
  }
  t.equal(parseIp("223.255.255.255"), "223.255.255.255", "the last unicast /8 below multicast is a client");
  const root = join(tempDir(t), "root");
  const r = sentry(["--connect", "--ip=224.0.0.1"], envFor(root));
  t.equal(r.status, 1);
  t.notOk(fs.existsSync(join(root, "seen", "224.0.0.1")), "nothing recorded");
});

t.test("every number setting has an upper bound that names itself", async (t) => {
  const root = tempDir(t);
  for (const [key, max] of Object.entries(CONFIG_MAX)) {
    t.equal(typeof DEFAULTS[key as keyof typeof DEFAULTS], "number", `${key} is a number setting`);
    t.ok(max < 2147483, `${key}'s bound is below what wraps a millisecond timer`);
    t.doesNotThrow(() => loadConfig({ ROOT_DIR: root, [key]: String(max) }), `${key}=${max} is accepted`);
    t.throws(() => loadConfig({ ROOT_DIR: root, [key]: String(max + 1) }), new RegExp(`${key}.*0 to ${max}`), `${key}=${max + 1} is refused`);
  }
  for (const k of Object.keys(DEFAULTS)) if (typeof DEFAULTS[k as keyof typeof DEFAULTS] === "number") t.ok(k in CONFIG_MAX, `${k} has a bound`);
  // The two values the issue found, through the binary and through sentry.conf.
  fs.writeFileSync(join(root, "sentry.conf"), "LOCK_TIMEOUT_SECONDS=2147484\n");
  let r = sentry(["--block", "--ip=192.0.2.9"], envFor(root));
  t.equal(r.status, 1);
  t.match(r.stderr, /sentry\.conf line 1: LOCK_TIMEOUT_SECONDS="2147484" is not valid: expected a whole number from 0 to 3600/);
  t.equal(state(root, "192.0.2.9"), "none");
  fs.rmSync(join(root, "sentry.conf"));
  r = sentry(["--update", "--check"], envFor(root, { UPDATE_TIMEOUT_SECONDS: "999999999" }));
  t.equal(r.status, 1);
  t.match(r.stderr, /UPDATE_TIMEOUT_SECONDS/);
});

t.test("a corrupt sentry.lock is moved aside and recreated", async (t) => {
  const root = join(tempDir(t), "root");
  t.equal(sentry(["--block", "--ip=192.0.2.1"], envFor(root)).status, 0);
  fs.writeFileSync(join(root, "sentry.lock"), "this is not a database, it is a note an admin left here\n".repeat(20));
  const r = sentry(["--block", "--ip=192.0.2.2"], envFor(root));
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /sentry\.lock was not a usable lock: moved to .*sentry\.lock\.corrupt-/);
  t.equal(state(root, "192.0.2.2"), "blocked");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "192.0.2.1\n192.0.2.2\n");
  const aside = fs.readdirSync(root).filter((n) => n.startsWith("sentry.lock.corrupt-"));
  t.equal(aside.length, 1, "the old file is kept");
  t.match(fs.readFileSync(join(root, aside[0]), "utf8"), /an admin left here/);
  t.match(sentryLog(root), /^\S+ - repair .*sentry\.lock was not a usable lock/m);
  // And the next one works without a word.
  const r2 = sentry(["--block", "--ip=192.0.2.3"], envFor(root));
  t.equal(r2.status, 0);
  t.equal(r2.stderr, "");
});

/** Waits until `cond` holds (polling a file system state a child process makes). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gave up waiting for ${what}`);
}

t.test("kill -9 between block/IP and hosts.deny: the next connect of the address heals it", async (t) => {
  const root = join(tempDir(t), "root");
  const env = envFor(root);
  t.equal(sentry(["--block", "--ip=192.0.2.1"], env).status, 0);
  // sentry.log as a FIFO holds the blocker between its two writes: block/IP
  // is written, then the decision is appended to sentry.log (the open waits
  // for a reader), then hosts.deny. It is killed right there.
  fs.rmSync(join(root, "sentry.log"));
  t.equal(spawnSync("mkfifo", [join(root, "sentry.log")]).status, 0);
  const { spawn } = await import("node:child_process");
  const p = spawn(SENTRY, ["--block", "--ip=198.51.100.7"], { env, stdio: "ignore" });
  const closed = new Promise((r) => p.on("close", r));
  await until(() => fs.existsSync(join(root, "block", "198.51.100.7")), "block/198.51.100.7");
  p.kill("SIGKILL");
  await closed;
  fs.rmSync(join(root, "sentry.log"));
  t.equal(state(root, "198.51.100.7"), "blocked", "the kill left block/IP");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "192.0.2.1\n", "and hosts.deny without it");
  // tcpd let it in, so sentry ran: that connect heals.
  let r = sentry(["--connect", "--ip=198.51.100.7"], env);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /connections from 198\.51\.100\.7 and it is blocked/);
  t.match(r.stderr, /hosts\.deny lacked it and was rewritten/);
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "192.0.2.1\n198.51.100.7\n");
  t.match(sentryLog(root), /^\S+ 198\.51\.100\.7 heal connected although block\/198\.51\.100\.7 says blocked/m);
  // A blocked address that reaches sentry although listed (pam_exec) costs a read, no rewrite.
  const ino = fs.statSync(join(root, "hosts.deny")).ino;
  r = sentry(["--connect", "--ip=198.51.100.7"], env);
  t.equal(r.stderr, "");
  t.equal(fs.statSync(join(root, "hosts.deny")).ino, ino, "hosts.deny is not rewritten when it holds the address");
  t.equal(sentryLog(root).match(/ heal /g)?.length, 1);
});

t.test("with ADD_TO_TCPWRAPPERS=0 a blocked address's connect writes no hosts.deny", async (t) => {
  const root = join(tempDir(t), "root");
  const env = envFor(root, { ADD_TO_TCPWRAPPERS: "0" });
  t.equal(sentry(["--block", "--ip=198.51.100.8"], env).status, 0);
  const r = sentry(["--connect", "--ip=198.51.100.8"], env);
  t.equal(r.status, 0);
  t.equal(r.stderr, "");
  t.notOk(fs.existsSync(join(root, "hosts.deny")));
});

t.test("--scan and --resync compare hosts.deny with block/ and repair it", async (t) => {
  const root = join(tempDir(t), "root");
  const env = envFor(root);
  t.equal(sentry(["--block", "--ip=192.0.2.1"], env).status, 0);
  t.equal(sentry(["--block", "--ip=2001:db8::1"], env).status, 0);
  const deny = join(root, "hosts.deny");
  const good = "192.0.2.1\n[2001:db8::1]\n";
  t.equal(fs.readFileSync(deny, "utf8"), good);
  // A full disk left it empty; someone's edit added a word tcpd reads as a pattern.
  fs.writeFileSync(deny, "ALL\n");
  let r = sentry(["--scan"], env);
  t.match(r.stderr, /hosts\.deny differed from block\/ and was rewritten: 2 \(192\.0\.2\.1, 2001:db8::1\) missing, 0 left over/);
  t.equal(fs.readFileSync(deny, "utf8"), good);
  t.match(sentryLog(root), / - heal scan: hosts\.deny differed/);
  r = sentry(["--scan"], env);
  t.notMatch(r.stderr, /differed/, "a second scan finds nothing to repair");
  fs.writeFileSync(deny, "192.0.2.1\n203.0.113.50\n");
  r = sentry(["--resync"], env);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /hosts\.deny: 2 addresses; hosts\.deny differed from block\/ and was rewritten: 1 \(2001:db8::1\) missing, 1 \(203\.0\.113\.50\) left over/);
  t.equal(fs.readFileSync(deny, "utf8"), good);
});

t.test("a delist survives the loss of sentry.db", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const log = join(dir, "auth.log");
  const env = envFor(root, { SSH_LOG: log });
  const ip = "203.0.113.20";
  const connect = () => sentry(["--connect", `--ip=${ip}`], env);
  fs.writeFileSync(log, `Invalid user a from ${ip} port 1\n`.repeat(3));
  for (let i = 0; i < 3; i++) connect();
  t.equal(state(root, ip), "blocked", "blocked on its evidence");
  t.equal(sentry(["--delist", `--ip=${ip}`], env).status, 0);
  t.ok(fs.existsSync(join(root, "delisted", ip)), "the files remember the delist");
  // The manual says sentry.db may be deleted.
  for (const f of fs.readdirSync(root)) if (f.startsWith("sentry.db")) fs.rmSync(join(root, f));
  for (let i = 0; i < 4; i++) connect();
  t.ok(fs.existsSync(join(root, "sentry.db")), "the index was rebuilt");
  t.equal(state(root, ip), "none", "the rebuilt index does not count the forgiven lines");
  // Lines written after the delist (these have no timestamp: their place in the file tells) count.
  fs.appendFileSync(log, `Invalid user b from ${ip} port 2\n`);
  connect();
  t.equal(state(root, ip), "blocked", "new evidence blocks it again");
});

t.test("a delist and RFC 3339 stamps: the stamp, not the place, tells old from new", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const log = join(dir, "auth.log");
  const env = envFor(root, { SSH_LOG: log });
  const ip = "203.0.113.21";
  const at = (ms: number) => new Date(ms).toISOString().replace("Z", "+00:00");
  const line = (ms: number, user: string) => `${at(ms)} host sshd[7]: Invalid user ${user} from ${ip} port 1\n`;
  const connect = () => sentry(["--connect", `--ip=${ip}`], env);
  fs.writeFileSync(log, line(Date.now() - 3_600_000, "a"));
  for (let i = 0; i < 3; i++) connect();
  t.equal(state(root, ip), "blocked");
  t.equal(sentry(["--delist", `--ip=${ip}`], env).status, 0);
  for (const f of fs.readdirSync(root)) if (f.startsWith("sentry.db")) fs.rmSync(join(root, f));
  // Appended after the delist but stamped before it (a relay's late delivery): old.
  fs.appendFileSync(log, line(Date.now() - 1_800_000, "b"));
  for (let i = 0; i < 4; i++) connect();
  t.equal(state(root, ip), "none", "lines stamped before the delist are not counted");
  fs.appendFileSync(log, line(Date.now() + 1_000, "c"));
  connect();
  t.equal(state(root, ip), "blocked", "a line stamped after it is");
});

// ---- strict modes: run as root against folders and files another user can write

const NOBODY = 65534;

/** A ROOT_DIR with one block made (so every folder and file exists), and a victim file outside it. */
function made(t: Parameters<typeof tempDir>[0]): { root: string; env: Record<string, string>; victim: string } {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const env = envFor(root);
  const r = sentry(["--block", "--ip=192.0.2.1"], env);
  if (r.status !== 0) throw new Error(r.stderr);
  sentry(["--connect", "--ip=192.0.2.50"], env);
  const victim = join(dir, "victim");
  fs.writeFileSync(victim, "precious\n");
  return { root, env, victim };
}

t.test("strict modes: ROOT_DIR, its folders and the folders above it", async (t) => {
  const cases: [string, (root: string) => string, RegExp][] = [
    ["ROOT_DIR o+w", (root) => (fs.chmodSync(root, 0o757), root), /is writable by others \(mode 0757\).*run chmod go-w /],
    ["ROOT_DIR g+w", (root) => (fs.chmodSync(root, 0o770), root), /is writable by group \(mode 0770\).*run chmod go-w /],
    ["ROOT_DIR owned by nobody", (root) => (fs.chownSync(root, NOBODY, NOBODY), root), /is owned by uid 65534, not by root.*run chown root /],
    ["block/ o+w", (root) => (fs.chmodSync(join(root, "block"), 0o777), join(root, "block")), /writable by group and others.*chmod go-w /],
    ["allow/ owned by nobody", (root) => (fs.chownSync(join(root, "allow"), NOBODY, NOBODY), join(root, "allow")), /owned by uid 65534/],
    ["seen/ o+w", (root) => (fs.chmodSync(join(root, "seen"), 0o753), join(root, "seen")), /writable by others/],
    ["the folder above ROOT_DIR o+w", (root) => (fs.chmodSync(join(root, ".."), 0o777), join(root, "..")), /writable by group and others/],
    ["seen/ a symlink", (root) => {
      fs.renameSync(join(root, "seen"), join(root, "seen.real"));
      fs.symlinkSync(join(root, "seen.real"), join(root, "seen"));
      return join(root, "seen");
    }, /is a symbolic link/],
  ];
  for (const [what, spoil, msg] of cases) {
    const { root, env } = made(t);
    const p = spoil(root);
    const seenFile = join(root, fs.existsSync(join(root, "seen.real")) ? "seen.real" : "seen", "192.0.2.50");
    const before = fs.readFileSync(seenFile, "utf8");
    for (const args of [["--connect", "--ip=192.0.2.50"], ["--block", "--ip=192.0.2.60"], ["--scan"], ["--report"]]) {
      const r = sentry(args, env);
      t.equal(r.status, 2, `${what}: ${args[0]} refuses`);
      t.match(r.stderr, msg, `${what}: ${args[0]} says why`);
      t.ok(r.stderr.includes(p), `${what}: names ${p}`);
    }
    t.equal(state(root, "192.0.2.60"), "none", `${what}: nothing blocked`);
    t.equal(fs.readFileSync(seenFile, "utf8"), before, `${what}: nothing recorded`);
    const d = sentry(["--doctor"], env);
    t.equal(d.status, 2, `${what}: --doctor is CRITICAL`);
    t.match(d.stdout, /^SENTRY CRITICAL/);
  }
});

t.test("strict modes: a sentry.conf another user can write is not obeyed", async (t) => {
  // nobody's sentry.conf switching blocking off.
  let { root, env } = made(t);
  const conf = join(root, "sentry.conf");
  fs.writeFileSync(conf, "ALLOW_IPS=0.0.0.0/0 ::/0\n");
  fs.chownSync(conf, NOBODY, NOBODY);
  let r = sentry(["--block", "--ip=198.51.100.1"], env);
  t.equal(r.status, 2);
  t.match(r.stderr, new RegExp(`${conf} is owned by uid 65534, not by root.*run chown root ${conf}`));
  t.equal(state(root, "198.51.100.1"), "none");
  r = sentry(["--doctor"], env);
  t.equal(r.status, 2);
  t.match(r.stdout, /^SENTRY CRITICAL - 1 critical: configuration: strict modes: .*\nCRITICAL: configuration: strict modes: .*sentry\.conf is owned by uid 65534/);
  // root's, but writable by everyone.
  fs.chownSync(conf, 0, 0);
  fs.chmodSync(conf, 0o646);
  r = sentry(["--connect", "--ip=198.51.100.1"], env);
  t.equal(r.status, 2);
  t.match(r.stderr, /sentry\.conf is writable by others \(mode 0646\).*chmod go-w/);
  // a symlink to a file elsewhere.
  ({ root, env } = made(t));
  const elsewhere = join(root, "..", "other.conf");
  fs.writeFileSync(elsewhere, "ALLOW_IPS=0.0.0.0/0\n");
  fs.symlinkSync(elsewhere, join(root, "sentry.conf"));
  r = sentry(["--block", "--ip=198.51.100.1"], env);
  t.equal(r.status, 2);
  t.match(r.stderr, /sentry\.conf is a symbolic link/);
  t.equal(state(root, "198.51.100.1"), "none");
  // root's own, 0644: obeyed.
  fs.rmSync(join(root, "sentry.conf"));
  fs.writeFileSync(join(root, "sentry.conf"), "ALLOW_IPS=198.51.100.0/24\n", { mode: 0o644 });
  r = sentry(["--block", "--ip=198.51.100.1"], env);
  t.equal(r.status, 1);
  t.match(r.stderr, /never blocked/);
});

/** envFor's test-only UNIT_DIR and CRON_FILE are root-only settings: a process run as nobody gets neither. */
const rootOnlyOut = (env: Record<string, string>) => Object.fromEntries(Object.entries(env).filter(([k]) => k !== "UNIT_DIR" && k !== "CRON_FILE"));

t.test("strict modes: UPDATE_URL and UPDATE_PUBLIC_KEY only from root's sentry.conf or root's environment", async (t) => {
  const dir = tempDir(t);
  fs.chmodSync(dir, 0o711);
  const root = join(dir, "root");
  fs.mkdirSync(root, { mode: 0o755 });
  fs.chownSync(root, NOBODY, NOBODY);
  const conf = join(root, "sentry.conf");
  fs.writeFileSync(conf, "UPDATE_URL=https://evil.example/manifest.json\n");
  fs.chownSync(conf, NOBODY, NOBODY);
  const asNobody = (args: string[], extra: Record<string, string> = {}) =>
    spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", SENTRY, ...args], { env: rootOnlyOut(envFor(root, extra)), encoding: "utf8" });
  // sentry run by nobody on nobody's ROOT_DIR works, but the update channel is not nobody's to set.
  let r = asNobody(["--update", "--check"]);
  t.equal(r.status, 2, r.stderr);
  t.match(r.stderr, /sentry\.conf line 1: UPDATE_URL is taken only from a sentry\.conf owned by root \(this one is owned by uid 65534\)/);
  fs.writeFileSync(conf, "ALLOW_IPS=192.0.2.0/24\n");
  r = asNobody(["--update", "--check"], { UPDATE_PUBLIC_KEY: "AAAA" });
  t.equal(r.status, 2);
  t.match(r.stderr, /environment: UPDATE_PUBLIC_KEY is taken only from the environment of root \(this process runs as uid 65534\)/);
  r = asNobody(["--connect", "--ip=192.0.2.7"]);
  t.equal(r.status, 0, `other settings of nobody's own sentry.conf are obeyed: ${r.stderr}`);
  t.match(r.stdout, /and it is allowed/);
  // root's environment may set them (the update then fails on the unreachable URL, not on trust).
  const r2 = sentry(["--update", "--check"], envFor(join(dir, "root2"), { UPDATE_URL: "https://127.0.0.1:1/manifest.json", UPDATE_PUBLIC_KEY: "AAAA" }));
  t.notMatch(r2.stderr, /taken only from/);
});

t.test("no symlink inside ROOT_DIR is followed", async (t) => {
  // Each file sentry writes, made a link to a file root must not touch.
  const cases: [string, string[], (root: string) => string, number | null][] = [
    ["seen/IP", ["--connect", "--ip=192.0.2.50"], (root) => join(root, "seen", "192.0.2.50"), 2],
    ["sentry.log", ["--block", "--ip=192.0.2.61"], (root) => join(root, "sentry.log"), 0],
    ["connections.log", ["--connect", "--ip=192.0.2.62"], (root) => join(root, "connections.log"), 0],
    ["expire.stamp", ["--connect", "--ip=192.0.2.63"], (root) => join(root, "expire.stamp"), 0],
    ["scan.stamp", ["--scan"], (root) => join(root, "scan.stamp"), null],
    ["sentry.lock", ["--block", "--ip=192.0.2.64"], (root) => join(root, "sentry.lock"), 2],
    ["sentry.db", ["--scan"], (root) => join(root, "sentry.db"), 2],
    ["delisted/IP", ["--scan"], (root) => (fs.mkdirSync(join(root, "delisted"), { recursive: true }), join(root, "delisted", "192.0.2.50")), 0],
  ];
  for (const [what, args, where, code] of cases) {
    const { root, env, victim } = made(t);
    const link = where(root);
    fs.rmSync(link, { force: true });
    if (what === "sentry.db") for (const s of ["-wal", "-shm"]) fs.rmSync(link + s, { force: true });
    fs.symlinkSync(victim, link);
    // A log naming 192.0.2.50, so a --scan reads its delist marker.
    const log = join(root, "..", "auth.log");
    fs.writeFileSync(log, "Invalid user x from 192.0.2.50 port 1\n");
    const r = sentry(args, { ...env, SSH_LOG: log, EXPIRE_CHECK_MINUTES: "0" });
    if (code !== null) t.equal(r.status, code, `${what}: exit ${code}`);
    t.ok(r.stderr.includes(link) && /symbolic link/.test(r.stderr), `${what}: the link is named: ${r.stderr}`);
    t.equal(fs.readFileSync(victim, "utf8"), "precious\n", `${what}: the file it points to is untouched`);
    t.ok(fs.lstatSync(link).isSymbolicLink(), `${what}: the link is left for the admin to look at`);
  }
});

t.test("hosts.deny's temporary file is not followed either", async (t) => {
  const { loadConfig: load, makeCtx, realSys, writeHostsDeny } = await import("../sentry.ts");
  const { root, victim } = made(t);
  fs.symlinkSync(victim, join(root, `.hosts.deny.tmp-${process.pid}`));
  const ctx = makeCtx(load({ ROOT_DIR: root }), { ...realSys(), warn: () => {} });
  t.throws(() => writeHostsDeny(ctx), /\.hosts\.deny\.tmp-\d+: it is a symbolic link/);
  t.equal(fs.readFileSync(victim, "utf8"), "precious\n");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "192.0.2.1\n", "the old hosts.deny stays");
});

t.test("evidence is not for every local user: sentry.db 0600, sentry.log 0640, old ones fixed", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const log = join(dir, "auth.log");
  fs.writeFileSync(log, "Invalid user secret-password from 203.0.113.30 port 1\n".repeat(3));
  const env = envFor(root, { SSH_LOG: log });
  for (let i = 0; i < 3; i++) sentry(["--connect", "--ip=203.0.113.30"], env);
  t.equal(state(root, "203.0.113.30"), "blocked");
  const mode = (f: string) => fs.statSync(join(root, f)).mode & 0o777;
  t.equal(mode("sentry.db"), 0o600, "sentry.db is made 0600");
  t.equal(mode("sentry.log"), 0o640, "sentry.log is made 0640");
  for (const f of fs.readdirSync(root)) if (/^sentry\.db-(wal|shm)$/.test(f)) t.equal(mode(f), 0o600, `${f} too`);
  // As an older sentry (or SQLite's default) left them.
  fs.chmodSync(join(root, "sentry.db"), 0o644);
  fs.chmodSync(join(root, "sentry.log"), 0o644);
  sentry(["--scan"], env);
  sentry(["--block", "--ip=203.0.113.31"], env);
  t.equal(mode("sentry.db"), 0o600, "an existing sentry.db readable by others is made 0600");
  t.equal(mode("sentry.log"), 0o640, "an existing sentry.log readable by others loses that");
});

t.test("the healing connect re-adds the address to the firewall (nftables in a namespace)", async (t) => {
  const why = netnsUnavailable();
  if (why) {
    t.fail(`cannot run the namespace test: ${why}`);
    return;
  }
  const ns = createNetns("sentry-heal");
  t.teardown(() => ns.destroy());
  const cfg = { ...DEFAULTS, ADD_TO_NFTABLES: true };
  t.equal(ns.run("nft", ["-f", "-"], { input: nftablesBackend.rules(cfg) }).status, 0, "rules load");
  const root = join(tempDir(t), "root");
  const run = (...args: string[]) => ns.run("env", ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", `ROOT_DIR=${root}`, "ADD_TO_NFTABLES=1", "PROTECT_FTP=0", "PROTECT_MUA=0", `SSH_LOG=${join(root, "none.log")}`, SENTRY, ...args], { timeoutMs: 30_000 });
  const ip = CLIENTS4[0];
  const list = () => nftablesBackend.list(cfg, { ...realSys(), run: ns.run });
  t.equal(run("--block", `--ip=${ip}`).status, 0);
  t.same(list(), [ip]);
  // A reboot emptied the set, and a kill -9 left hosts.deny without the address.
  t.equal(ns.run("nft", ["flush", "set", "inet", DEFAULTS.FIREWALL_TABLE, "v4"]).status, 0);
  fs.writeFileSync(join(root, "hosts.deny"), "");
  const r = run("--connect", `--ip=${ip}`);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /hosts\.deny lacked it and was rewritten; re-added to nftables/);
  t.same(list(), [ip], "back in the set");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), `${ip}\n`, "and in hosts.deny");
});

t.test("a delist and the journal: the entry's own time tells old from new", async (t) => {
  const remote = ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"].find((f) => fs.existsSync(f));
  if (!remote) {
    t.fail("systemd-journal-remote is missing: run `sh test/deps.sh`");
    return;
  }
  const dir = tempDir(t);
  const root = join(dir, "root");
  const journal = join(dir, "remote.journal");
  const env = envFor(root, { SSH_LOG: `journal:${journal}` });
  const ip = "203.0.113.22";
  let mono = 1_000_000;
  // One entry in the Journal Export Format, written at `ms`; journal-remote appends it to the file.
  const write = (ms: number, user: string) => {
    mono += 1000;
    const text = `__REALTIME_TIMESTAMP=${ms * 1000}\n__MONOTONIC_TIMESTAMP=${mono}\n_BOOT_ID=0123456789abcdef0123456789abcdef\nSYSLOG_IDENTIFIER=sshd\n_UID=0\nMESSAGE=Invalid user ${user} from ${ip} port 1\n\n`;
    const r = spawnSync(remote, [`--output=${journal}`, "--split-mode=none", "-"], { input: text, encoding: "utf8" });
    if (r.status !== 0) throw new Error(r.stderr);
  };
  const connect = () => sentry(["--connect", `--ip=${ip}`], env);
  write(Date.now() - 3_600_000, "a");
  for (let i = 0; i < 3; i++) connect();
  t.equal(state(root, ip), "blocked");
  t.equal(sentry(["--delist", `--ip=${ip}`], env).status, 0);
  for (const f of fs.readdirSync(root)) if (f.startsWith("sentry.db")) fs.rmSync(join(root, f));
  write(Date.now() - 1_800_000, "b"); // delivered late, written before the delist
  for (let i = 0; i < 4; i++) connect();
  t.equal(state(root, ip), "none", "entries from before the delist are not counted by the rebuilt index");
  write(Date.now() + 1_000, "c");
  connect();
  t.equal(state(root, ip), "blocked", "an entry from after it is");
});

t.test("an unusable delist marker passes over its own address only, and says so", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const log = join(dir, "auth.log");
  const env = envFor(root, { SSH_LOG: log });
  fs.writeFileSync(log, "Invalid user a from 203.0.113.40 port 1\n".repeat(3) + "Invalid user a from 203.0.113.41 port 1\n".repeat(3));
  sentry(["--connect", "--ip=203.0.113.99"], env);
  fs.mkdirSync(join(root, "delisted"));
  fs.writeFileSync(join(root, "delisted", "203.0.113.40"), "not json\n");
  for (let i = 0; i < 3; i++) {
    sentry(["--connect", "--ip=203.0.113.40"], env);
    sentry(["--connect", "--ip=203.0.113.41"], env);
  }
  t.equal(state(root, "203.0.113.40"), "none", "the address the broken marker names is not blocked");
  t.equal(state(root, "203.0.113.41"), "blocked", "the others still are");
  t.match(sentryLog(root), /203\.0\.113\.40 warning .*delisted\/203\.0\.113\.40 is not a usable delist marker/);
});
