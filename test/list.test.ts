// issue 10: `sentry --list` (who is blocked, why, since and until when), the
// versioned --json of report and list (every --json output of the test
// suite is validated against sentry.schema.json in lib/run.ts), the brute
// force that succeeded ("allowed after N failures"), a scan-only server's
// report, and sentry.log rotating itself under parallel writers. Through the
// built binary, on state and logs each test writes.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { checkJson, envFor, parallel, requireBinary, sentry, sentryAsync, sentryLog, state, tempDir } from "./lib/run.ts";
import type { TT } from "./lib/run.ts";

requireBinary();

const H = 3_600_000;
const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

/** A record file written as sentry writes it, with its modification time at `at`. */
function record(root: string, dir: string, ip: string, at: number, text: string): void {
  fs.mkdirSync(join(root, dir), { recursive: true });
  const file = join(root, dir, ip);
  fs.writeFileSync(file, text);
  fs.utimesSync(file, at / 1000, at / 1000);
}

/** Three blocks, one allow after failures, and tallies for one of them (from a log read by --scan). */
function scene(t: TT) {
  const root = tempDir(t);
  const now = Math.floor(Date.now() / 1000) * 1000;
  const at = { thin: now - 3 * H, admin: now - 28 * H, allow: now - 9 * 24 * H };
  record(root, "block", "203.0.113.9", at.thin,
    `${iso(at.thin)} block by connect: ssh: 0 success, 3 naughty, 1 failed, 0 probe; e.g. "Invalid user admin from 203.0.113.9 port 40001"\n` +
      `until ${iso(at.thin + 4 * H)} (4 hours; thin evidence: 3 naughty lines, 1 name tried on them, 1 failed)\n`);
  // Written before 3.1 (no until line): it lasts EXPIRE_BLOCK_DAYS from its modification time.
  record(root, "block", "2001:db8::7", at.admin, `${iso(at.admin)} block by admin (alice): --block\n`);
  record(root, "allow", "192.0.2.1", at.allow, `${iso(at.allow)} allow by connect: allowed after 7 failures (users: admin, oracle): ssh: 1 success, 0 naughty, 7 failed, 0 probe\n`);
  return { root, now, at, env: envFor(root, { TZ: "UTC" }) };
}

type Entry = { ip: string; state: string; since: string | null; until: string | null; by: string; operator: string | null; service: string | null; reason: string; attempts: unknown };
const list = (args: string[], env: Record<string, string>): Entry[] => {
  const r = sentry(["--list", "--json", ...args], env);
  if (r.status !== 0) throw new Error(`--list --json ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { entries: Entry[] }).entries;
};

t.test("--list --json: every field of a state with known blocks, allows, ends and operators", async (t) => {
  const s = scene(t);
  const doc = JSON.parse(sentry(["--list", "--json"], s.env).stdout);
  t.equal(doc.schema, 1);
  t.equal(doc.kind, "list");
  t.same(doc.entries, [
    { ip: "192.0.2.1", state: "allowed", since: iso(s.at.allow), until: null, by: "connect", operator: null, service: "ssh", reason: "allowed after 7 failures (users: admin, oracle): ssh: 1 success, 0 naughty, 7 failed, 0 probe", attempts: null },
    { ip: "2001:db8::7", state: "blocked", since: iso(s.at.admin), until: iso(s.at.admin + 90 * 24 * H), by: "admin", operator: "alice", service: null, reason: "--block", attempts: null },
    { ip: "203.0.113.9", state: "blocked", since: iso(s.at.thin), until: iso(s.at.thin + 4 * H), by: "connect", operator: null, service: "ssh", reason: `ssh: 0 success, 3 naughty, 1 failed, 0 probe; e.g. "Invalid user admin from 203.0.113.9 port 40001"`, attempts: null },
  ], "oldest first, each record as fields");
  // `touch block/IP` renews a block: its end moves with the file's time.
  fs.utimesSync(join(s.root, "block", "203.0.113.9"), (s.now - H) / 1000, (s.now - H) / 1000);
  t.equal(list(["--ip=203.0.113.9"], s.env)[0].until, iso(s.now - H + 4 * H), "the end follows a touch");
  t.same(list([], { ...s.env, EXPIRE_BLOCK_DAYS: "0" }).find((e) => e.ip === "2001:db8::7")?.until, null, "EXPIRE_BLOCK_DAYS=0: a block without its own end never ends");
});

t.test("--list filters: state, address or CIDR, age; sorted by time or numerically", async (t) => {
  const s = scene(t);
  const ips = (args: string[]) => list(args, s.env).map((e) => e.ip);
  t.same(ips(["--state=blocked"]), ["2001:db8::7", "203.0.113.9"]);
  t.same(ips(["--state=allowed"]), ["192.0.2.1"]);
  t.same(ips(["--state=pending"]), []);
  t.same(ips(["--net=203.0.113.0/24"]), ["203.0.113.9"]);
  t.same(ips(["--net", "2001:db8::/32"]), ["2001:db8::7"]);
  t.same(ips(["--ip=192.0.2.1"]), ["192.0.2.1"]);
  t.same(ips(["--newer=1d"]), ["203.0.113.9"], "decided within a day");
  t.same(ips(["--older=1d"]), ["192.0.2.1", "2001:db8::7"], "decided more than a day ago");
  t.same(ips(["--older=2d", "--state=blocked"]), [], "filters combine");
  t.same(ips(["--sort=ip"]), ["192.0.2.1", "203.0.113.9", "2001:db8::7"], "numerically, IPv4 before IPv6");
  for (const [args, msg] of [
    [["--state=gone"], /--state="gone": expected blocked, allowed or pending/],
    [["--net=10.0.0.0/33"], /--net="10\.0\.0\.0\/33": expected an address or a CIDR range/],
    [["--newer=yesterday"], /--newer="yesterday": expected an age/],
    [["--sort=size"], /--sort="size": expected time or ip/],
  ] as const) {
    const r = sentry(["--list", ...args], s.env);
    t.equal(r.status, 1, `${args[0]}: exit 1`);
    t.match(r.stderr, msg);
  }
  const r = sentry(["--report", "--utc"], s.env);
  t.equal(r.status, 1);
  t.match(r.stderr, /--utc goes with --list/);
});

t.test("--list as text: local time with the zone and a relative age, --utc, never, by whom", async (t) => {
  const s = scene(t);
  const hhmm = (ms: number, offH: number) => iso(ms + offH * H).slice(0, 16).replace("T", " ");
  let out = sentry(["--list"], { ...s.env, TZ: "Europe/Paris" }).stdout;
  const line = (ip: string) => out.split("\n").find((l) => l.startsWith(`${ip} `)) ?? "";
  t.match(out.split("\n")[0], /^ADDRESS\s+STATE\s+SINCE\s+UNTIL\s+BY\s+SERVICE\s+OK\/FAIL\/NAUGHTY\/PROBE\s+REASON$/);
  t.match(line("203.0.113.9"), new RegExp(`^203\\.0\\.113\\.9 +blocked +${hhmm(s.at.thin, 1)} CET, 3h ago +${hhmm(s.at.thin + 4 * H, 1)} CET, in 59m +connect +ssh +- +ssh: 0 success, 3 naughty, 1 failed, 0 probe$`), "Paris in winter: CET; the sample line is left out");
  t.match(line("2001:db8::7"), /blocked .* in 88d +admin \(alice\) +- +- +--block$/);
  t.match(line("192.0.2.1"), /^192\.0\.2\.1 +allowed +\S+ \S+ CET, 9d ago +- +connect +ssh/, "an allow shows no end");
  t.match(out, /\n1 allowed, 2 blocked\n$/);
  out = sentry(["--list", "--utc"], { ...s.env, TZ: "Europe/Paris" }).stdout;
  t.match(line("203.0.113.9"), new RegExp(`${hhmm(s.at.thin, 0)} UTC, 3h ago`), "--utc");
  t.equal(sentry(["--list", "--state=pending"], s.env).stdout, "ADDRESS  STATE  SINCE  UNTIL  BY  SERVICE  OK/FAIL/NAUGHTY/PROBE  REASON\nno address matches\n");
});

/** A classic syslog auth.log line of sshd. */
const L = (msg: string, n = 0) => `Nov 29 10:00:${String(n % 60).padStart(2, "0")} host sshd[${1000 + n}]: ${msg}`;

t.test("a success after many failures: allowed, flagged, in --report under ATTENTION, in --list and the JSON; or held for review", async (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  const ip = "198.51.100.30";
  const lines = [];
  for (let i = 0; i < 6; i++) lines.push(L(`Failed password for ${i % 2 ? "alice" : "oracle"} from ${ip} port ${40000 + i} ssh2`, i));
  lines.push(L(`Accepted password for alice from ${ip} port 40010 ssh2`, 9));
  // A user with two typos is not flagged (ALLOW_AFTER_FAILURES_NOTE=5).
  const typo = "198.51.100.31";
  lines.push(L(`Failed password for bob from ${typo} port 41000 ssh2`, 10), L(`Failed password for bob from ${typo} port 41001 ssh2`, 11), L(`Accepted password for bob from ${typo} port 41002 ssh2`, 12));
  fs.writeFileSync(log, lines.join("\n") + "\n");
  const env = envFor(root, { SSH_LOG: log, SYSLOG: "0" });
  t.equal(sentry(["--scan"], env).status, 0);
  t.equal(state(root, ip), "allowed", "the seed rule stands: a success allows");
  t.match(fs.readFileSync(join(root, "allow", ip), "utf8"), /^\S+ allow by scan: allowed after 6 failures \(users: alice, oracle\): ssh: 1 success/);
  t.match(sentryLog(root), new RegExp(`${ip} allow scan: allowed after 6 failures \\(users: alice, oracle\\)`));
  t.notMatch(fs.readFileSync(join(root, "allow", typo), "utf8"), /allowed after/, "two typos are not flagged");
  let r = sentry(["--report"], env);
  t.match(r.stdout, new RegExp(`\\nATTENTION: 1 IPs logged in after failed attempts \\(a password guesser that found one\\?\\):\\n  ${ip.replace(/\./g, "\\.")} +allowed \\S+ by scan: allowed after 6 failures`));
  const j = checkJson(sentry(["--report", "--json"], env).stdout) as { attention: Entry[] };
  t.same(j.attention.map((e) => [e.ip, e.state, e.service, e.attempts]), [[ip, "allowed", "ssh", { success: 1, failed: 6, naughty: 0, probe: 0 }]]);
  t.same(list(["--state=allowed", "--sort=ip"], env).map((e) => [e.ip, e.attempts]), [
    [ip, { success: 1, failed: 6, naughty: 0, probe: 0 }],
    [typo, { success: 1, failed: 2, naughty: 0, probe: 0 }],
  ], "attempts by kind from the evidence index");
  // The administrator looked: --allow keeps it and clears the heading.
  sentry(["--allow", `--ip=${ip}`], env);
  t.notMatch(sentry(["--report"], env).stdout, /ATTENTION/);

  // ALLOW_AFTER_FAILURES_HOLD: neither allowed nor blocked, said once, pending in --list.
  const root2 = tempDir(t);
  const env2 = envFor(root2, { SSH_LOG: log, SYSLOG: "0", ALLOW_AFTER_FAILURES_HOLD: "1" });
  t.equal(sentry(["--scan"], env2).status, 0);
  t.equal(state(root2, ip), "none", "held: not allowed");
  t.equal(state(root2, typo), "allowed");
  t.match(sentryLog(root2), new RegExp(`${ip} review scan: held for review, not allowed: allowed after 6 failures`));
  fs.appendFileSync(log, L(`Accepted password for alice from ${ip} port 40011 ssh2`, 20) + "\n");
  sentry(["--scan"], env2);
  t.equal(sentryLog(root2).split("\n").filter((l) => l.includes(" review ")).length, 1, "said once");
  t.same(list(["--state=pending"], env2).map((e) => [e.ip, e.by]), [[ip, "scan"]]);
  r = sentry(["--report"], env2);
  t.match(r.stdout, /ATTENTION: 1 IPs/);
  sentry(["--block", "--force", `--ip=${ip}`], env2);
  t.same(list(["--state=pending"], env2), [], "decided by the administrator: no longer pending");
});

t.test("a scan-only server: the report says what it counts, not `0 unique IPs have connected 0 times`", async (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  fs.writeFileSync(log, ["192.0.2.50", "192.0.2.51", "192.0.2.52"].map((ip, i) => L(`Failed password for alice from ${ip} port ${40000 + i} ssh2`, i)).join("\n") + "\n");
  const env = envFor(root, { SSH_LOG: log });
  t.equal(sentry(["--scan"], env).status, 0);
  const r = sentry(["--report"], env);
  t.match(r.stdout, /^   -------- summary ---------\n   3 IPs are in the logs --scan reads \(no connect is counted here: nothing spawns sentry --connect\)\n   0 IPs are allowed\n/);
  t.notMatch(r.stdout, /unique IPs have connected/);
  const j = JSON.parse(sentry(["--report", "--json"], env).stdout);
  t.same([j.uniqueIps, j.connections, j.logAddresses], [0, 0, 3]);
  sentry(["--connect", "--ip=192.0.2.60"], env);
  t.match(sentry(["--report"], env).stdout, /   1 unique IPs have connected 1 times/, "once connects are counted, the usual line");
});

t.test("sentry.log rotates itself under parallel writers and loses no line", async (t) => {
  const root = tempDir(t);
  const env = envFor(root, { SENTRY_LOG_ROTATE_KB: "1", SENTRY_LOG_KEEP: "60", SYSLOG: "0" });
  const ips = Array.from({ length: 40 }, (_, i) => `198.51.100.${100 + i}`);
  const runs = await parallel(ips.length, 8, (i) => sentryAsync(["--block", `--ip=${ips[i]}`], env));
  t.same(runs.filter((r) => r.status !== 0), [], "every block done");
  const files = fs.readdirSync(root).filter((f) => /^sentry\.log(\.\d+)?$/.test(f));
  t.ok(files.length >= 3, `rotated: ${files.join(" ")}`);
  const lines = files.flatMap((f) => fs.readFileSync(join(root, f), "utf8").split("\n").filter(Boolean));
  t.same(lines.map((l) => l.split(" ")[1]).sort(), [...ips].sort(), "each block's line is in exactly one generation");
  // Only SENTRY_LOG_KEEP generations stay: the oldest goes.
  const root2 = tempDir(t);
  const env2 = envFor(root2, { SENTRY_LOG_ROTATE_KB: "1", SENTRY_LOG_KEEP: "2", SYSLOG: "0" });
  for (let i = 0; i < 30; i++) sentry(["--block", `--ip=${ips[i]}`], env2);
  t.same(fs.readdirSync(root2).filter((f) => f.startsWith("sentry.log")).sort(), ["sentry.log", "sentry.log.1", "sentry.log.2"]);
  t.match(fs.readFileSync(join(root2, "sentry.log.2"), "utf8"), /^\S+ 198\.51\.100\.1\d\d block /, "the kept ones hold later lines");
  t.notMatch(fs.readFileSync(join(root2, "sentry.log.2"), "utf8"), / 198\.51\.100\.100 block /, "the first lines went with the oldest generation");
});

t.test("an administrator's --block and --allow name them: SUDO_USER, else USER; only a plain login name", async (t) => {
  const root = tempDir(t);
  const env = envFor(root, { SYSLOG: "0", USER: "root" });
  t.equal(sentry(["--block", "--ip=203.0.113.50"], { ...env, SUDO_USER: "alice" }).status, 0);
  t.equal(sentry(["--allow", "--ip=192.0.2.50"], env).status, 0);
  t.equal(sentry(["--block", "--ip=203.0.113.51"], { ...env, SUDO_USER: "x): forged" }).status, 0);
  t.match(fs.readFileSync(join(root, "block", "203.0.113.50"), "utf8"), /^\S+ block by admin \(alice\): --block\n/);
  t.same(list(["--sort=ip"], env).map((e) => [e.ip, e.by, e.operator]), [
    ["192.0.2.50", "admin", "root"],
    ["203.0.113.50", "admin", "alice"],
    ["203.0.113.51", "admin", "root"],
  ], "a SUDO_USER that is not a login name is not taken");
  t.match(sentry(["--list", "--ip=203.0.113.50"], env).stdout, / admin \(alice\) /);
});
