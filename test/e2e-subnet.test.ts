// Issue 16 item 3 for real: a bot with several addresses of one IPv6 /64 is
// stopped as one entry. A real sshd with libwrap spawns the built binary
// (test/lib/sshd.ts); after SUBNET_THRESHOLD (3) addresses of the /64 are
// blocked, a fresh address of that /64 that never connected is refused by
// sshd before the banner; a /64 holding an allowed address is not aggregated.

import t from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DAEMON, checkPrerequisites, startHarness } from "./lib/sshd.ts";
import type { Harness, SshOutcome } from "./lib/sshd.ts";

t.setTimeout(200_000);

const SENTRY = join(resolve(import.meta.dirname, ".."), "dist", "sentry");
const BOTS = ["2001:db8:7:7::11", "2001:db8:7:7::12", "2001:db8:7:7::13"];
const FRESH = "2001:db8:7:7::99"; // same /64, never connects before the /64 is blocked
const NEIGHBOUR = "2001:db8:7:8::99"; // the next /64
const OFFICE_ADMIN = "2001:db8:8:8::1";
const OFFICE_BOTS = ["2001:db8:8:8::11", "2001:db8:8:8::12", "2001:db8:8:8::13"];
const OFFICE_FRESH = "2001:db8:8:8::99";

let h: Harness;
let root = "";

t.before(async () => {
  checkPrerequisites(SENTRY);
  h = await startHarness({ addresses: [...BOTS, FRESH, NEIGHBOUR, OFFICE_ADMIN, ...OFFICE_BOTS, OFFICE_FRESH] });
  root = join(h.tmp, "root");
  mkdirSync(root, { mode: 0o755 });
  writeFileSync(h.hostsAllow,
    `${DAEMON} : ${root}/hosts.deny : deny\n` +
    `${DAEMON} : ALL : spawn ROOT_DIR=${root} SSH_LOG=${h.sshLog} ${SENTRY} --connect --ip=%a 2>>${join(h.tmp, "sentry.stderr")} : allow\n`);
});
t.teardown(() => h?.cleanup());

const login = (from: string) => h.ssh({ from, user: h.user, password: h.password });
const invalid = (from: string, user: string) => h.ssh({ from, user, password: "wrong-e2e" });
const read = (f: string) => (existsSync(f) ? readFileSync(f, "utf8") : "(missing)");
const show = (outcomes: SshOutcome[] = []) => ({
  hostsDeny: read(join(root, "hosts.deny")),
  sentryLog: read(join(root, "sentry.log")).split("\n").slice(-12),
  stderr: read(join(h.tmp, "sentry.stderr")).split("\n").slice(-10),
  clients: outcomes.map((o) => ({ user: o.user, loggedIn: o.loggedIn, refused: o.refused, denied: o.denied })),
});

/** Three connections from `ip`, each an invalid user: blocked at the third (tcpd lets that one through). */
async function attack(ip: string): Promise<SshOutcome[]> {
  const out: SshOutcome[] = [];
  for (const user of ["admin-e2e", "oracle-e2e", "test-e2e"]) out.push(await invalid(ip, user));
  return out;
}

t.test("three addresses of one /64 blocked → a fresh address of it is refused by sshd", async (t) => {
  const runs = (await Promise.all(BOTS.map(attack))).flat();
  for (const ip of BOTS) t.ok(existsSync(join(root, "block", ip)), `${ip} blocked on its own evidence`, show(runs));
  t.ok(existsSync(join(root, "block", "2001:db8:7:7::_64")), "block/ holds the /64 as one entry", show(runs));
  t.match(read(join(root, "hosts.deny")), /^\[2001:db8:7:7::\]\/64$/m, "hosts.deny holds tcpd's form of it");
  const fresh = await login(FRESH);
  t.ok(fresh.refused && !fresh.loggedIn, "a fresh address of the /64 is refused before the banner, right password notwithstanding", show([fresh]));
  t.notOk(existsSync(join(root, "seen", FRESH)), "tcpd refused it before spawning sentry");
  const next = await login(NEIGHBOUR);
  t.ok(next.loggedIn, "an address of the next /64 logs in", show([next]));
  // Delisting the /64 lifts it alone.
  const r = spawnSync(SENTRY, ["--delist", "--ip=2001:db8:7:7::/64"], { encoding: "utf8", env: { PATH: process.env.PATH, ROOT_DIR: root, SSH_LOG: h.sshLog } });
  t.equal(r.status, 0, r.stderr);
  const again = await login(FRESH);
  t.ok(again.loggedIn, "after --delist of the /64 the fresh address gets in", show([again]));
});

t.test("a /64 holding an allowed address is not aggregated", async (t) => {
  const admin: SshOutcome[] = [];
  for (let i = 0; i < 3; i++) admin.push(await login(OFFICE_ADMIN));
  t.ok(existsSync(join(root, "allow", OFFICE_ADMIN)), "the office's admin is allowed after logging in", show(admin));
  const runs = (await Promise.all(OFFICE_BOTS.map(attack))).flat();
  for (const ip of OFFICE_BOTS) t.ok(existsSync(join(root, "block", ip)), `${ip} blocked on its own evidence`, show(runs));
  t.notOk(existsSync(join(root, "block", "2001:db8:8:8::_64")), "the office /64 is not blocked", show(runs));
  t.match(read(join(root, "sentry.log")), /2001:db8:8:8::\/64 not-aggregated .*holds 2001:db8:8:8::1, which is allowed/);
  const fresh = await login(OFFICE_FRESH);
  t.ok(fresh.loggedIn, "a fresh address of the office /64 logs in", show([fresh]));
  const adminAgain = await login(OFFICE_ADMIN);
  t.ok(adminAgain.loggedIn, "and so does the admin", show([adminAgain]));
});
