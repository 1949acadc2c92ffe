// test/fleet.test.ts — the fleet (issue 11): two servers and Debian's CrowdSec 1.4.6.
//
// A real LAPI (test/lib/crowdsec.ts: Debian's package, unpacked, never
// installed, started on 127.0.0.1 inside the sshd harness's network
// namespace) joins server A (its own ROOT_DIR, blocks through --connect) and
// server B (another ROOT_DIR, the one the harness's real sshd reads through
// hosts.allow, with a real nftables set in that namespace). Every --sync runs
// inside the namespace, where the LAPI listens. The hostile-stream test is
// the one place a fake LAPI answers: a real one never sends such a stream.

import t from "tap";
import { spawn } from "node:child_process";
import { chmodSync, utimesSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { DAEMON, checkPrerequisites, startHarness } from "./lib/sshd.ts";
import type { Harness } from "./lib/sshd.ts";
import { startLapi } from "./lib/crowdsec.ts";
import type { Lapi } from "./lib/crowdsec.ts";
import { SENTRY, parallel, sentryAsync } from "./lib/run.ts";
import { alertFor, fleetScenario, goDuration, parseGoDuration } from "../sentry.ts";

t.setTimeout(280_000);

const ATTACKER = "192.0.2.50"; // attacks A, never connects to B
const FRIEND = "192.0.2.51"; // allowed on B, blocked by A
const FLUSHED = "192.0.2.52";
const QUEUED = "192.0.2.53";
const FORGIVEN = "192.0.2.54";
const TABLE = "sentry_fleet_test";

let h: Harness;
let lapi: Lapi;
let rootA = "";
let rootB = "";
let logA = "";
let pwA = "";
let keyA = "";
let pwB = "";
let keyB = "";

t.before(async () => {
  checkPrerequisites(SENTRY);
  h = await startHarness({ addresses: [ATTACKER, FRIEND, FLUSHED, QUEUED, FORGIVEN] });
  lapi = await startLapi({ netns: h.ns });
  pwA = lapi.machine("server-a");
  keyA = lapi.bouncer("server-a");
  pwB = lapi.machine("server-b");
  keyB = lapi.bouncer("server-b");
  rootA = join(h.tmp, "root-a");
  rootB = join(h.tmp, "root-b");
  mkdirSync(rootA, { mode: 0o755 });
  mkdirSync(rootB, { mode: 0o755 });
  logA = join(h.tmp, "auth-a.log");
  writeFileSync(logA, "");
  writeFileSync(join(h.tmp, "empty.log"), "");
  // B's sshd refuses what B's hosts.deny lists; B never spawns sentry itself.
  writeFileSync(h.hostsAllow, `${DAEMON} : ${rootB}/hosts.deny : deny\n${DAEMON} : ALL : allow\n`);
});

t.teardown(() => {
  lapi?.stop();
  h?.cleanup();
});

const base = (root: string, log: string): Record<string, string> => ({
  PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ROOT_DIR: root, SSH_LOG: log, PROTECT_FTP: "0", PROTECT_MUA: "0",
});
const envA = (extra: Record<string, string> = {}) => ({
  ...base(rootA, logA), CROWDSEC_URL: lapi.url, CROWDSEC_LOGIN: "server-a", CROWDSEC_PASSWORD: pwA, CROWDSEC_API_KEY: keyA, ...extra,
});
const envB = (extra: Record<string, string> = {}) => ({
  ...base(rootB, join(h.tmp, "empty.log")), CROWDSEC_URL: lapi.url, CROWDSEC_LOGIN: "server-b", CROWDSEC_PASSWORD: pwB,
  CROWDSEC_API_KEY: keyB, ADD_TO_NFTABLES: "1", FIREWALL_TABLE: TABLE, ...extra,
});
/** A sentry run where the LAPI is reachable (the namespace). */
const run = (args: string[], env: Record<string, string>) => lapi.exec(SENTRY, args, env);
const read = (f: string) => (existsSync(f) ? readFileSync(f, "utf8") : "");
const blockFile = (root: string, ip: string) => read(join(root, "block", ip));
const denyHas = (root: string, ip: string) => read(join(root, "hosts.deny")).split("\n").includes(ip);
const nftHas = (ip: string) => {
  const r = h.inNs("nft", ["list", "set", "inet", TABLE, "v4"]);
  return r.code === 0 && new RegExp(`(^|[\\s{,])${ip.replace(/\./g, "\\.")}([\\s},]|$)`).test(r.stdout);
};
/** Active decisions the LAPI holds for `ip`. */
const onLapi = (ip: string) => lapi.decisions(ip).filter((d) => d.value === ip && !d.duration.startsWith("-"));

function attack(ip: string, lines = 3): void {
  let text = "";
  for (let i = 0; i < lines; i++) text += `Nov 29 13:00:0${i} host sshd[${700 + i}]: Invalid user oracle${i} from ${ip} port ${40000 + i}\n`;
  writeFileSync(logA, read(logA) + text);
}

t.test("A blocks through --connect, A pushes, B pulls: B's hosts.deny, nft set and real sshd refuse it", async (t) => {
  attack(ATTACKER);
  for (let i = 0; i < 3; i++) run(["--connect", `--ip=${ATTACKER}`], envA());
  t.match(blockFile(rootA, ATTACKER), / block by connect: ssh: /, "A blocked the attacker on its own evidence");
  t.match(read(join(rootA, "fleet.outbox")), new RegExp(`"ip":"${ATTACKER}"`), "the connect queued it in A's outbox (no network on the connect path)");

  const pa = run(["--sync"], envA({ CROWDSEC_PULL: "0" }));
  t.equal(pa.status, 0, "A's --sync succeeds", pa);
  t.match(pa.stdout, /pushed 1 blocks/);
  t.notOk(existsSync(join(rootA, "fleet.outbox")) || existsSync(join(rootA, "fleet.sending")), "A's outbox is empty once pushed");
  const d = onLapi(ATTACKER);
  t.equal(d.length, 1, "the LAPI holds one decision", { d });
  t.match(d[0], { origin: "sentry", scenario: "sentry/ssh-naughty", scope: "Ip", machine: "server-a" }, "origin sentry, the rule that fired, A's machine");
  t.equal(statSync(join(rootA, "fleet.jwt")).mode & 0o777, 0o600, "the machine's token is cached 0600");

  const pb = run(["--sync"], envB());
  t.equal(pb.status, 0, "B's --sync succeeds", pb);
  const text = blockFile(rootB, ATTACKER);
  t.match(text, /^\S+ block by fleet \(sentry\/sentry\/ssh-naughty\): decision \d+ from http:\/\/127\.0\.0\.1:\d+\/\nuntil \S+ \(/, "B's block file says it came from the fleet, with its origin, scenario and end", { text });
  t.ok(denyHas(rootB, ATTACKER), "B's hosts.deny holds it");
  t.ok(nftHas(ATTACKER), "B's nftables set (in the namespace) holds it");
  const o = await h.ssh({ from: ATTACKER, user: h.user, password: h.password });
  t.ok(o.refused && !o.loggedIn, "B's real sshd refuses the attacker, which never connected to B, even with the right password", { o });
  t.notOk(existsSync(join(rootB, "fleet.outbox")), "B does not queue what it learned from the fleet (no echo)");
  const pb2 = run(["--sync"], envB());
  t.equal(pb2.status, 0);
  t.equal(onLapi(ATTACKER).length, 1, "still one decision on the LAPI after B synced again");
  const rep = run(["--report"], envB());
  t.match(rep.stdout, /1 of them by the fleet \(CrowdSec\), 0 decided here/, "B's report shows fleet blocks apart", rep);
  const doc = run(["--doctor"], envB());
  t.match(doc.stdout, /OK: fleet: the CrowdSec LAPI at \S+ is up/, "--doctor: the LAPI answers", doc);
  t.match(doc.stdout, /OK: fleet: the machine login works/);
  t.match(doc.stdout, /OK: fleet: the bouncer key works/);
  t.match(doc.stdout, /OK: fleet: the last successful --sync was 0 minutes ago/);
});

t.test("cscli decisions delete: B lifts it on the next sync, A's own block stays", async (t) => {
  lapi.cscli(["decisions", "delete", "--ip", ATTACKER]);
  const pb = run(["--sync"], envB());
  t.equal(pb.status, 0, "B's --sync", pb);
  t.equal(blockFile(rootB, ATTACKER), "", "B's fleet block is lifted");
  t.notOk(denyHas(rootB, ATTACKER), "hosts.deny no longer holds it");
  t.notOk(nftHas(ATTACKER), "nor the nft set");
  t.match(read(join(rootB, "sentry.log")), new RegExp(`${ATTACKER} delist fleet: decision deleted on the LAPI`));
  const pa = run(["--sync"], envA());
  t.equal(pa.status, 0, "A's --sync (push and pull)", pa);
  t.match(blockFile(rootA, ATTACKER), / block by connect: /, "A's local block is never lifted by the fleet");
});

t.test("B allows an address: the fleet never blocks it there (nor loopback, nor ALLOW_IPS)", async (t) => {
  t.equal(run(["--allow", `--ip=${FRIEND}`], envB()).status, 0);
  t.equal(run(["--block", `--ip=${FRIEND}`], envA()).status, 0, "A blocks it by hand");
  lapi.cscli(["decisions", "add", "--ip", "127.0.0.1", "--duration", "1h", "--reason", "hostile"]);
  lapi.cscli(["decisions", "add", "--ip", "192.0.2.99", "--duration", "1h", "--reason", "in ALLOW_IPS"]);
  t.equal(run(["--sync"], envA({ CROWDSEC_PULL: "0" })).status, 0, "A pushes");
  t.equal(onLapi(FRIEND)[0]?.scenario, "sentry/admin", "pushed as sentry/admin");
  const pb = run(["--sync"], envB({ ALLOW_IPS: "192.0.2.99" }));
  t.equal(pb.status, 0, "B's --sync", pb);
  for (const ip of [FRIEND, "127.0.0.1", "192.0.2.99"]) {
    t.equal(blockFile(rootB, ip), "", `${ip} is not blocked on B`);
    t.notOk(denyHas(rootB, ip), `${ip} is not in B's hosts.deny`);
  }
  t.ok(existsSync(join(rootB, "allow", FRIEND)), "B still allows it");
  t.match(read(join(rootB, "sentry.log")), new RegExp(`${FRIEND} fleet-refused sentry/sentry/admin: the fleet blocks it, this server allows it`), "the conflict is in sentry.log");
  t.match(run(["--report"], envB({ ALLOW_IPS: "192.0.2.99" })).stdout, new RegExp(`the fleet blocks addresses this server allows[^]*${FRIEND} sentry/sentry/admin`), "and in --report");
  const o = await h.ssh({ from: FRIEND, user: h.user, password: h.password });
  t.ok(o.loggedIn, "the allowed address still logs in on B", { o });
});

t.test("an admin's --delist of a block A pushed deletes it on the LAPI, and B lifts it", async (t) => {
  t.equal(run(["--block", `--ip=${FORGIVEN}`], envA()).status, 0);
  t.equal(run(["--sync"], envA({ CROWDSEC_PULL: "0" })).status, 0);
  t.equal(run(["--sync"], envB()).status, 0);
  t.match(blockFile(rootB, FORGIVEN), /block by fleet/, "B holds it");
  t.equal(run(["--delist", `--ip=${FORGIVEN}`], envA()).status, 0);
  const pa = run(["--sync"], envA({ CROWDSEC_PULL: "0" }));
  t.match(pa.stdout, /1 deletions/, "A's sync sends the deletion", pa);
  t.equal(onLapi(FORGIVEN).length, 0, "the LAPI no longer holds a decision on it");
  t.equal(run(["--sync"], envB()).status, 0);
  t.equal(blockFile(rootB, FORGIVEN), "", "B lifted it: forgiveness propagates");
});

t.test("LAPI down or a wrong password: --sync exits 2, the outbox is kept and delivered next run", async (t) => {
  t.equal(run(["--block", `--ip=${QUEUED}`], envA()).status, 0);
  rmSync(join(rootA, "fleet.jwt")); // else the cached token still works, as it should
  const wrong = run(["--sync"], envA({ CROWDSEC_PASSWORD: "not-the-password" }));
  t.equal(wrong.status, 2, "a wrong password: exit 2", wrong);
  t.match(wrong.stderr, /refused the login of machine "server-a": HTTP 401/, "a clear message naming the machine");
  t.notMatch(wrong.stderr + wrong.stdout, /not-the-password/, "the password is never printed");
  const down = run(["--sync"], envA({ CROWDSEC_URL: "http://127.0.0.1:9/" }));
  t.equal(down.status, 2, "the LAPI down: exit 2", down);
  t.match(down.stderr, /cannot reach the CrowdSec LAPI at http:\/\/127\.0\.0\.1:9 .*ECONNREFUSED/);
  t.match(read(join(rootA, "fleet.sending")) + read(join(rootA, "fleet.outbox")), new RegExp(`"ip":"${QUEUED}"`), "the block is still queued");
  t.equal(onLapi(QUEUED).length, 0, "and not on the LAPI yet");
  const good = run(["--sync"], envA({ CROWDSEC_PULL: "0" }));
  t.equal(good.status, 0, "the next run succeeds", good);
  t.equal(onLapi(QUEUED).length, 1, "and delivers it, once");
  t.notMatch(read(join(rootA, "sentry.log")), new RegExp(pwA), "no secret in sentry.log");
});

t.test("a credentials file readable by others is refused; at 0600 it works", async (t) => {
  const creds = join(h.tmp, "local_api_credentials.yaml");
  writeFileSync(creds, `url: ${lapi.url}\nlogin: server-a\npassword: "${pwA}"\n`, { mode: 0o644 });
  chmodSync(creds, 0o644);
  const env = { ...envA({ CROWDSEC_CREDENTIALS: creds, CROWDSEC_PULL: "0" }) } as Record<string, string>;
  delete env.CROWDSEC_LOGIN;
  delete env.CROWDSEC_PASSWORD;
  const bad = run(["--sync"], env);
  t.equal(bad.status, 2, "refused", bad);
  t.match(bad.stderr, /CROWDSEC_CREDENTIALS: \S+ holds secrets and is readable or writable by group or others \(mode 644\): run chmod 600/);
  t.notMatch(bad.stderr, new RegExp(pwA));
  chmodSync(creds, 0o600);
  rmSync(join(rootA, "fleet.jwt"), { force: true });
  t.equal(run(["--block", "--ip=192.0.2.60"], envA()).status, 0, "something to push");
  const ok = run(["--sync"], env);
  t.equal(ok.status, 0, "the same file at 0600 logs in", ok);
  t.ok(existsSync(join(rootA, "fleet.jwt")), "a token was obtained with it");
  t.equal(onLapi("192.0.2.60").length, 1, "and the block pushed with it");
});

t.test("a bouncer key in a sentry.conf readable by others is refused; at 0600 it works", async (t) => {
  const conf = join(rootB, "sentry.conf");
  writeFileSync(conf, `CROWDSEC_API_KEY=${keyB}\n`, { mode: 0o644 });
  chmodSync(conf, 0o644);
  t.teardown(() => rmSync(conf, { force: true }));
  const env = envB();
  delete (env as Record<string, string>).CROWDSEC_API_KEY;
  const bad = run(["--sync"], env);
  t.equal(bad.status, 2, "refused", bad);
  t.match(bad.stderr, /sentry\.conf holds CROWDSEC_PASSWORD or CROWDSEC_API_KEY and is readable by group or others \(mode 644\): run chmod 600/);
  t.notMatch(bad.stderr + bad.stdout, new RegExp(keyB), "the key is not printed");
  chmodSync(conf, 0o600);
  const ok = run(["--sync"], env);
  t.equal(ok.status, 0, "at 0600 the key in sentry.conf is used", ok);
});

t.test("200 parallel connects deciding blocks while syncs run: every block delivered exactly once", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "sentry-fleet-par-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const logDir = mkdtempSync(join(tmpdir(), "sentry-fleet-par-log-"));
  t.teardown(() => rmSync(logDir, { recursive: true, force: true }));
  const log = join(logDir, "auth.log");
  const ips = Array.from({ length: 200 }, (_, i) => `198.51.${100 + Math.floor(i / 100)}.${(i % 100) + 1}`);
  writeFileSync(log, ips.map((ip, i) => `Nov 29 13:00:00 host sshd[${i + 1}]: Invalid user admin from ${ip} port 4000\n`).join(""));
  const pw = lapi.machine("server-par");
  const env = { ...base(root, log), CROWDSEC_URL: lapi.url, CROWDSEC_LOGIN: "server-par", CROWDSEC_PASSWORD: pw, CROWDSEC_PULL: "0", CONNECT_THRESHOLD: "1" };
  let stop = false;
  let syncs = 0;
  const syncer = (async () => {
    while (!stop) {
      const r = await nsAsync(["--sync"], env);
      if (r.status !== 0) t.fail("a --sync during the connects failed", r);
      syncs++;
    }
  })();
  const results = await parallel(ips.length, 16, (i) => sentryAsync(["--connect", `--ip=${ips[i]}`], env));
  t.same(results.filter((r) => r.status !== 0), [], "every connect exits 0");
  // No convoy (issue 15): a connect that finds another process deciding
  // leaves its address counted and undecided; --scan (the timer) decides
  // those, while the syncs still run.
  const undecided = ips.filter((ip) => !existsSync(join(root, "block", ip)));
  if (undecided.length) t.comment(`${undecided.length} connects left their decision to --scan (no convoy)`);
  t.equal((await nsAsync(["--scan"], env)).status, 0, "--scan decides what the busy connects left");
  stop = true;
  await syncer;
  t.equal(readdirSync(join(root, "block")).length, 200, "200 blocks decided");
  t.equal((await nsAsync(["--sync"], env)).status, 0, "a last --sync");
  t.ok(syncs >= 1, `--sync ran ${syncs} times during the connects`);
  const db = new DatabaseSync(lapi.db, { readOnly: true });
  const rows = db.prepare("SELECT d.value AS value, COUNT(*) AS n FROM decisions d JOIN alerts a ON d.alert_decisions = a.id JOIN machines m ON a.machine_alerts = m.id WHERE m.machine_id = 'server-par' GROUP BY d.value").all();
  db.close();
  const counts = new Map(rows.map((r) => [String(r.value), Number(r.n)]));
  t.equal(counts.size, 200, "the LAPI holds a decision for each of the 200");
  t.same([...counts.values()].filter((n) => n !== 1), [], "exactly one each");
});

t.test("a decision the LAPI flushed without a delete event still expires locally", async (t) => {
  lapi.cscli(["decisions", "add", "--ip", FLUSHED, "--duration", "1h", "--reason", "short"]);
  t.equal(run(["--sync"], envB()).status, 0);
  t.match(blockFile(rootB, FLUSHED), /block by fleet \(cscli\/[^]*\nuntil \S+ \((59|60) minutes/, "B holds it, until the end the stream gave", { text: blockFile(rootB, FLUSHED) });
  // What db_config.flush does: the rows go, no bouncer hears of it.
  const db = new DatabaseSync(lapi.db, { timeout: 10_000 });
  db.prepare("DELETE FROM decisions WHERE value = ?").run(FLUSHED);
  db.close();
  t.equal(run(["--sync"], envB()).status, 0);
  t.match(blockFile(rootB, FLUSHED), /block by fleet/, "no delete event: still blocked right after the flush");
  // An hour passes: the block's length runs from its file's mtime (section 8.5), so age the file.
  const past = Date.now() / 1000 - 3700;
  utimesSync(join(rootB, "block", FLUSHED), past, past);
  const s = run(["--scan"], envB());
  t.equal(s.status, 0, "--scan (which lifts what is due, and syncs)", s);
  t.equal(blockFile(rootB, FLUSHED), "", "lifted at the end the stream gave it");
  t.notOk(denyHas(rootB, FLUSHED), "and gone from hosts.deny");
});

t.test("a full pull every CROWDSEC_FULL_PULL_MINUTES brings back what incremental pulls do not return", async (t) => {
  const ip = "192.0.2.55";
  lapi.cscli(["decisions", "add", "--ip", ip, "--duration", "1h", "--reason", "missed"]);
  t.equal(run(["--sync"], envB()).status, 0);
  t.match(blockFile(rootB, ip), /block by fleet/, "B holds it");
  rmSync(join(rootB, "block", ip)); // what a pull that missed it would have left
  t.equal(run(["--sync"], envB()).status, 0);
  t.equal(blockFile(rootB, ip), "", "an incremental pull does not return it again");
  const past = Date.now() / 1000 - 3700;
  utimesSync(join(rootB, "fleet.pulled"), past, past);
  const before = Date.now();
  t.equal(run(["--sync"], envB()).status, 0);
  const after = Date.now();
  t.match(blockFile(rootB, ip), /block by fleet/, "the hourly full pull does");
  // Measured from the --sync (a second's slack for the file system's coarse clock), not from now.
  const pulled = statSync(join(rootB, "fleet.pulled")).mtimeMs;
  t.ok(pulled >= before - 1_000 && pulled <= after + 1_000, `and dates the next one from that pull (${pulled - before} ms after its start)`);
});

t.test("--doctor: LAPI down, a refused key, a stale sync", async (t) => {
  const down = run(["--doctor"], envB({ CROWDSEC_URL: "http://127.0.0.1:9/" }));
  t.equal(down.status, 2, "CRITICAL", down);
  t.match(down.stdout, /CRITICAL: fleet: cannot reach the CrowdSec LAPI at http:\/\/127\.0\.0\.1:9 /);
  const key = run(["--doctor"], envB({ CROWDSEC_API_KEY: "not-a-key" }));
  t.match(key.stdout, /CRITICAL: fleet: the LAPI refused this server's bouncer: HTTP 403/, "a wrong bouncer key", key);
  t.notMatch(key.stdout + key.stderr, /not-a-key/, "the key is never printed");
  const pw = run(["--doctor"], envB({ CROWDSEC_PASSWORD: "wrong-pw" }));
  t.match(pw.stdout, /CRITICAL: fleet: the CrowdSec LAPI at \S+ refused the login of machine "server-b": HTTP 401/, "a wrong password", pw);
  const stamp = join(rootB, "fleet.stamp");
  const ago = (min: number) => {
    const at = (Date.now() - min * 60_000) / 1000;
    utimesSync(stamp, at, at);
    return run(["--doctor"], envB()).stdout;
  };
  t.match(ago(10), /WARNING: fleet: the last successful --sync was 10 minutes ago/, "past 3 intervals: WARNING");
  t.match(ago(45), /CRITICAL: fleet: the last successful --sync was 45 minutes ago/, "past 30 intervals: CRITICAL");
  t.equal(run(["--sync"], envB()).status, 0);
  t.match(run(["--doctor"], envB()).stdout, /OK: fleet: the last successful --sync was 0 minutes ago/, "a sync makes it OK again");
});

t.test("pure parts: Go durations, scenario names, alerts 1.4.6 accepts", async (t) => {
  t.equal(parseGoDuration("3h59m58.5s"), 14_398_500);
  t.equal(parseGoDuration("-2.5s"), -2500);
  t.equal(parseGoDuration("150ms"), 150);
  t.equal(parseGoDuration("1d"), null, "days are not Go syntax");
  t.equal(parseGoDuration("forever"), null);
  t.equal(parseGoDuration(""), null);
  t.equal(goDuration(90 * 86_400_000), "2160h0m0s", "hours, never days (1.4.6 refuses d)");
  t.equal(fleetScenario("admin", "--block"), "sentry/admin");
  t.equal(fleetScenario("connect", "ssh: 0 success, 3 naughty, 0 failed, 0 probe"), "sentry/ssh-naughty");
  t.equal(fleetScenario("scan", "12 failed attempts (more than 10); ftp: 0 success, 0 naughty, 12 failed, 0 probe"), "sentry/ftp-failures");
  const a = alertFor({ op: "ban", ip: "192.0.2.9", at: 0, end: null, scenario: "sentry/admin" }, 1000, 3_600_000);
  t.match(a, { stop_at: new Date(1000).toISOString(), source: { scope: "Ip", value: "192.0.2.9" }, decisions: [{ duration: "1h0m0s", origin: "sentry", scope: "Ip", type: "ban" }] });
});

/** A sentry run inside the namespace, as a child process (so other work goes on meanwhile). */
function nsAsync(args: string[], env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const p = spawn("ip", ["netns", "exec", h.ns, "env", "-i", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), SENTRY, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("error", fail);
    p.on("close", (status) => done({ status, stdout, stderr }));
  });
}

t.test("a hostile stream: refused or bounded, nothing outside ROOT_DIR, no loopback or allowed address blocked", async (t) => {
  // A real LAPI validates what it stores; a compromised or impostor one does not.
  const parent = mkdtempSync(join(tmpdir(), "sentry-fleet-hostile-"));
  t.teardown(() => rmSync(parent, { recursive: true, force: true }));
  const root = join(parent, "root");
  mkdirSync(root, { mode: 0o755 });
  mkdirSync(join(root, "allow"), { mode: 0o755 });
  writeFileSync(join(root, "allow", "10.0.0.7"), "allowed by hand\n");
  const entry = (value: string, extra: Record<string, unknown> = {}) => ({ id: 1, origin: "sentry", scenario: "x", scope: "Ip", type: "ban", duration: "3h", value, ...extra });
  const news = [
    entry("../../../etc/passwd"),
    entry("1.2.3.4/../../x"),
    entry("0.0.0.0/0", { scope: "Range" }),
    entry("::/0", { scope: "Range" }),
    entry("127.0.0.1"),
    entry("::1"),
    entry("10.0.0.7"),
    entry("203.0.113.77", { duration: "876000h" }), // a hundred years
    entry("203.0.113.78", { duration: "forever" }),
    entry("203.0.113.79", { type: "captcha" }),
    ...Array.from({ length: 100_000 }, (_, i) => entry(`10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`)),
  ];
  const body = JSON.stringify({ new: news, deleted: [entry("../../etc/shadow")] });
  const server = createServer((req, res) => {
    if (req.url?.startsWith("/v1/decisions/stream")) {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(body);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const r = await sentryAsync(["--sync"], {
    ...base(root, join(parent, "none.log")), CROWDSEC_URL: `http://127.0.0.1:${port}`, CROWDSEC_PUSH: "0", CROWDSEC_API_KEY: "k", CROWDSEC_MAX_BLOCKS: "200", CROWDSEC_MAX_DAYS: "30",
  });
  t.equal(r.status, 0, "the sync itself completes", r);
  t.match(r.stderr, /3 × a value that is not an address/, "values that are not addresses (two new, one deleted) are refused, counted");
  t.match(r.stderr, /2 × a range wider than one address/, "/0 ranges are refused");
  t.match(r.stderr, /more than CROWDSEC_MAX_BLOCKS=200 fleet blocks/, "100,000 entries are cut at CROWDSEC_MAX_BLOCKS");
  t.match(r.stderr, /1 × a duration that is not one/);
  t.match(r.stderr, /1 × type captcha/);
  t.same(readdirSync(parent), ["root"], "nothing written beside ROOT_DIR");
  const blocks = readdirSync(join(root, "block"));
  t.equal(blocks.length, 200, "exactly CROWDSEC_MAX_BLOCKS fleet blocks");
  for (const ip of ["127.0.0.1", "::1", "10.0.0.7"]) t.notOk(blocks.includes(ip), `${ip} is not blocked`);
  t.ok(existsSync(join(root, "allow", "10.0.0.7")), "the allowed address stays allowed");
  const long = read(join(root, "block", "203.0.113.77"));
  t.match(long, /\(30 days; fleet decision, cut to CROWDSEC_MAX_DAYS=30\)/, "a hundred years is cut to CROWDSEC_MAX_DAYS", { long });
  const deny = read(join(root, "hosts.deny")).split("\n").filter(Boolean);
  t.equal(deny.length, 200, "hosts.deny holds the 200");
  t.notOk(deny.some((l) => !/^[0-9.]+$/.test(l)), "and nothing that is not an address");
});
