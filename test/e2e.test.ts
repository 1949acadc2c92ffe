// test/e2e.test.ts — sentry for real: a real sshd, through real tcpwrappers,
// spawns the built binary (dist/sentry) on every connection; attackers get
// refused, the administrator keeps getting in.
//
// Everything runs inside a network namespace and a private mount namespace the
// harness creates (test/lib/sshd.ts explains both); clients are
// `ssh -b 192.0.2.N` / `-b 2001:db8::N` inside the namespace, so tcpd's %a is
// a non-loopback address that exists nowhere else. Each scenario asserts what
// the client experiences (login, "Permission denied", refused before the
// banner) and what sentry wrote under ROOT_DIR (seen/, allow/, block/,
// hosts.deny).
//
// A refusal costs ~5 s (libwrap's delay), so refusals are checked in parallel
// where they can be. Prerequisites come from test/deps.sh; when one is missing
// the suite fails with the list, it never skips.

import t from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  DAEMON, GLOBAL_FILES, alive, checkPrerequisites, netnsExists, pidsMentioning, sha256OrNull, startHarness, whatHappened,
} from "./lib/sshd.ts";
import type { Harness, SshOutcome } from "./lib/sshd.ts";
import { parallel } from "./lib/run.ts";

t.setTimeout(280_000);

const REPO = resolve(import.meta.dirname, "..");
const SENTRY = join(REPO, "dist", "sentry");

// ---- the cast: one address each (TEST-NET-1 and the IPv6 documentation range)
const STUB_OK_V4 = "192.0.2.3";
const STUB_OK_V6 = "2001:db8::3";
const STUB_DENY_V4 = "192.0.2.250";
const STUB_DENY_V6 = "2001:db8::250";
const ADMIN = "192.0.2.2";
const INVALID_USER_ATTACKER = "192.0.2.10";
const PASSWORD_ATTACKER = "192.0.2.11";
const INJECTOR = "192.0.2.12";
const ROOT_ATTACKER = "192.0.2.13";
const INJECTION_VICTIM = "192.0.2.9";
const V6_ATTACKER = "2001:db8::5";
const HORDE = Array.from({ length: 30 }, (_, i) => `192.0.2.${100 + i}`);
const BYSTANDERS = ["192.0.2.200", "192.0.2.201", "192.0.2.202", "192.0.2.203", "2001:db8::200"];
const ALL_CLIENTS = [
  STUB_OK_V4, STUB_OK_V6, STUB_DENY_V4, STUB_DENY_V6, ADMIN, INVALID_USER_ATTACKER, PASSWORD_ATTACKER,
  INJECTOR, ROOT_ATTACKER, INJECTION_VICTIM, V6_ATTACKER, ...HORDE, ...BYSTANDERS,
];
const NO_SUCH_USER = "no-such-user-e2e";
const WRONG = "wrong-password-e2e";

let h: Harness;
let rootDir = "";
let spawnErr = "";

t.before(async () => {
  checkPrerequisites(SENTRY);
  const version = spawnSync(SENTRY, ["--version"], { encoding: "utf8" });
  if (version.status !== 0) throw new Error(`${SENTRY} --version failed: ${version.stderr}`);
  h = await startHarness({ addresses: ALL_CLIENTS });
  rootDir = join(h.tmp, "root");
  spawnErr = join(h.tmp, "sentry.stderr");
});

t.teardown(() => h?.cleanup());

// ---- sentry's state, as an administrator would look at it ---------------

const blocked = (ip: string): boolean => existsSync(join(rootDir, "block", ip));
const allowed = (ip: string): boolean => existsSync(join(rootDir, "allow", ip));
const seenCount = (ip: string): number => {
  const f = join(rootDir, "seen", ip);
  return existsSync(f) ? readFileSync(f, "utf8").split("\n").filter(Boolean).length : 0;
};
const denyLines = (): string[] => {
  const f = join(rootDir, "hosts.deny");
  return existsSync(f) ? readFileSync(f, "utf8").split("\n").filter((l) => l !== "") : [];
};
/** hosts.deny spells IPv6 in brackets: that is the form libwrap compares as a number. */
const denyForm = (ip: string): string => (ip.includes(":") ? `[${ip}]` : ip);
const inDeny = (ip: string): boolean => denyLines().includes(denyForm(ip));

/** What to print when an assertion about `ip` fails. */
const happened = (ip: string, outcomes: SshOutcome[] = []): Record<string, unknown> => whatHappened(rootDir, h.sshLog, ip, outcomes, spawnErr);

/** sentry's command line, with the test's configuration in the environment. */
function sentry(args: string[], extra: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(SENTRY, args, {
    encoding: "utf8",
    env: { PATH: process.env.PATH, ROOT_DIR: rootDir, SSH_LOG: h.sshLog, ...extra },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const login = (from: string) => h.ssh({ from, user: h.user, password: h.password });
const invalidUser = (from: string, user = NO_SUCH_USER) => h.ssh({ from, user, password: WRONG });
const wrongPasswords = (from: string, prompts: number) => h.ssh({ from, user: h.user, password: WRONG, prompts });

/** Run the same client `n` times in a row, one connection after the other. */
async function times(n: number, fn: () => Promise<SshOutcome>): Promise<SshOutcome[]> {
  const out: SshOutcome[] = [];
  for (let i = 0; i < n; i++) out.push(await fn());
  return out;
}

// ---- 0. the harness itself, with a stub in sentry's place ---------------

t.test("harness: sshd in the namespace, tcpd spawns with %a, hosts.deny refuses", async (t) => {
  // Prove the plumbing before trusting any sentry result: a stub records %a,
  // a hand-written deny file lists one IPv4 and one bracketed IPv6 address.
  const record = join(h.tmp, "stub-spawned");
  const stub = join(h.tmp, "stub.sh");
  const deny = join(h.tmp, "stub.deny");
  writeFileSync(stub, `#!/bin/sh\necho "$1" >> ${record}\n`, { mode: 0o755 });
  writeFileSync(deny, `${STUB_DENY_V4}\n[${STUB_DENY_V6}]\n`);
  writeFileSync(h.hostsAllow, `${DAEMON} : ${deny} : deny\n${DAEMON} : ALL : spawn ${stub} %a : allow\n`);

  const [ok4, ok6, bad4, bad6, wrong] = await Promise.all([
    login(STUB_OK_V4), login(STUB_OK_V6), login(STUB_DENY_V4), login(STUB_DENY_V6),
    h.ssh({ from: STUB_OK_V4, user: h.user, password: WRONG }),
  ]);
  t.ok(ok4?.loggedIn, "the throw-away user logs in over IPv4 with its password", { ok4 });
  t.ok(ok6?.loggedIn, "and over IPv6", { ok6 });
  t.ok(wrong?.denied && !wrong.loggedIn, "a wrong password is denied", { wrong });
  const spawned = readFileSync(record, "utf8").split("\n").filter(Boolean).sort();
  t.same(spawned, [STUB_OK_V4, STUB_OK_V4, STUB_OK_V6].sort(), "the spawn ran once per allowed connection, with %a = the client's bound address");
  for (const [ip, o] of [[STUB_DENY_V4, bad4], [STUB_DENY_V6, bad6]] as const) {
    t.ok(o?.refused, `${ip} listed in the deny file is refused before the banner`, { o });
    t.comment(`refusal of ${ip} took ${o?.ms} ms`);
  }
  const log = readFileSync(h.sshLog, "utf8");
  t.match(log, new RegExp(`^Accepted password for ${h.user} from ${STUB_OK_V4} port \\d+ ssh2$`, "m"),
    "the -E log has bare lines, no syslog prefix");
  t.notMatch(log, new RegExp(`${STUB_DENY_V4}|${STUB_DENY_V6}`), "refused clients never reach sshd's log");
});

// ---- wiring as README tells administrators -------------------------------

t.test("wire sentry into the private /etc/hosts.allow", async (t) => {
  mkdirSync(rootDir, { mode: 0o755 });
  // The deny line first, then the spawn; the test's configuration rides on
  // the spawn command itself (tcpd runs it through /bin/sh). stderr is kept
  // (it is /dev/null under tcpd) so a failure can show what sentry said.
  writeFileSync(h.hostsAllow,
    `${DAEMON} : ${rootDir}/hosts.deny : deny\n` +
    `${DAEMON} : ALL : spawn ROOT_DIR=${rootDir} SSH_LOG=${h.sshLog} ${SENTRY} --connect --ip=%a 2>>${spawnErr} : allow\n`);
  const first = await login(ADMIN);
  t.ok(first.loggedIn, "the administrator's first login goes through sentry's spawn", happened(ADMIN, [first]));
  t.equal(seenCount(ADMIN), 1, "sentry recorded the connection in seen/IP", happened(ADMIN));
});

// ---- scenarios -----------------------------------------------------------

t.test("invalid user: blocked at the 3rd connection, then refused even with a real password", async (t) => {
  const ip = INVALID_USER_ATTACKER;
  const runs: SshOutcome[] = [];
  for (let i = 1; i <= 3; i++) {
    const o = await invalidUser(ip);
    runs.push(o);
    t.ok(o.denied, `connection ${i}: sshd denies the invalid user`, happened(ip, runs));
    if (i < 3) t.notOk(blocked(ip) || inDeny(ip), `not blocked after ${i} connection(s)`, happened(ip, runs));
  }
  t.equal(seenCount(ip), 3, "three connections seen", happened(ip, runs));
  t.ok(blocked(ip), "block/IP exists after the 3rd connection", happened(ip, runs));
  t.ok(inDeny(ip), "hosts.deny lists it", happened(ip, runs));
  t.notOk(allowed(ip), "not allowed", happened(ip, runs));

  const refused = await login(ip);
  runs.push(refused);
  t.ok(refused.refused && !refused.loggedIn, "its next connection is refused by sshd, right password notwithstanding", happened(ip, runs));
  t.comment(`refusal took ${refused.ms} ms`);
  t.equal(seenCount(ip), 3, "tcpd refused it before spawning sentry (deny line first)", happened(ip, runs));
});

t.test("wrong passwords of a real user, more than GUESS_THRESHOLD (4) over several connections: blocked, short", async (t) => {
  const ip = PASSWORD_ATTACKER;
  const runs: SshOutcome[] = [];
  // 3 failures per connection (ssh's prompts). sentry runs when a connection
  // arrives, before its passwords are tried, so connection N sees the
  // guesses of the N-1 before it: the 2nd sees 3 (nothing), the 3rd sees 6,
  // more than GUESS_THRESHOLD: a thin block, decided at its start. tcpd lets
  // that connection through (a person's success would show on it); the 4th
  // is refused.
  for (let i = 1; i <= 3; i++) {
    const o = await wrongPasswords(ip, 3);
    runs.push(o);
    t.ok(o.denied && !o.loggedIn, `connection ${i}: three wrong passwords denied`, happened(ip, runs));
    if (i <= 2) t.notOk(blocked(ip) || inDeny(ip), `not blocked when the log held ${(i - 1) * 3} failures`, happened(ip, runs));
  }
  const failures = readFileSync(h.sshLog, "utf8").split("\n")
    .filter((l) => l.startsWith(`Failed password for ${h.user} from ${ip} port `)).length;
  t.ok(failures >= 9, `sshd logged ${failures} failed passwords for it`, happened(ip, runs));
  t.comment(`blocked after ${seenCount(ip)} connections, ${failures} failed passwords in the log`);
  t.ok(blocked(ip), "blocked", happened(ip, runs));
  t.ok(inDeny(ip), "hosts.deny lists it", happened(ip, runs));
  t.match(readFileSync(join(rootDir, "block", ip), "utf8"), /\(10 minutes; thin evidence: .*6 password guesses, at most 3 in one connection\)/,
    "a short block: a person who forgot the password leaves the same lines");

  const refused = await login(ip);
  runs.push(refused);
  t.ok(refused.refused && !refused.loggedIn, "refused even with the right password", happened(ip, runs));
});

t.test("the administrator: allowed after logging in, never blocked by later failures", async (t) => {
  const ip = ADMIN; // its first login happened while wiring
  const runs: SshOutcome[] = [];
  for (let i = 2; i <= 3; i++) {
    const o = await login(ip);
    runs.push(o);
    t.ok(o.loggedIn, `login ${i} succeeds`, happened(ip, runs));
  }
  t.equal(seenCount(ip), 3, "three connections seen", happened(ip, runs));
  t.ok(allowed(ip), "allow/IP exists after the 3rd connection", happened(ip, runs));
  t.notOk(blocked(ip), "not blocked", happened(ip, runs));

  // Now fat-finger the password 18 times over 6 connections, and try a user
  // name that does not exist, which would block anyone not allowed.
  for (let i = 0; i < 6; i++) runs.push(await wrongPasswords(ip, 3));
  runs.push(await invalidUser(ip));
  t.ok(runs.slice(2).every((o) => o.denied && !o.refused), "every failure was an authentication failure, never a refusal", happened(ip, runs));
  const last = await login(ip);
  runs.push(last);
  t.ok(last.loggedIn, "and the administrator still gets in", happened(ip, runs));
  t.notOk(blocked(ip) || inDeny(ip), "never blocked", happened(ip, runs));
  t.ok(allowed(ip), "still allowed", happened(ip, runs));
});

t.test("root attempts: blocked", async (t) => {
  const ip = ROOT_ATTACKER;
  const runs = await times(3, () => h.ssh({ from: ip, user: "root", password: WRONG }));
  t.ok(runs.every((o) => o.denied), "root is denied (PermitRootLogin no)", happened(ip, runs));
  t.ok(blocked(ip) && inDeny(ip), "blocked after 3 connections trying root", happened(ip, runs));
});

t.test("log injection through the user name does not block the named address", async (t) => {
  // sshd logs user names unquoted: `Invalid user x from 192.0.2.9 port 22
  // from 192.0.2.12 port 41234`, and `Connection closed by invalid user x
  // 192.0.2.9 port 22 192.0.2.12 port 41234 [preauth]`.
  const runs: SshOutcome[] = [];
  for (const name of [`x from ${INJECTION_VICTIM} port 22`, `x ${INJECTION_VICTIM} port 22`, `x from ${INJECTION_VICTIM} port 22 ssh2`]) {
    runs.push(await invalidUser(INJECTOR, name));
  }
  t.match(readFileSync(h.sshLog, "utf8"), `Invalid user x from ${INJECTION_VICTIM} port 22 from ${INJECTOR} port `,
    "the forged text reached sshd's log");
  t.ok(runs.every((o) => o.denied), "the injector's connections were denied", happened(INJECTOR, runs));
  t.ok(blocked(INJECTOR) && inDeny(INJECTOR), "the injector itself is blocked (its own invalid users)", happened(INJECTOR, runs));

  // The victim's own record: one mistyped password per connection, 4 times
  // (4 failures: nothing to block). sentry evaluates it at connections 3, 4.
  const victim = await times(4, () => h.ssh({ from: INJECTION_VICTIM, user: h.user, password: WRONG }));
  t.ok(victim.every((o) => o.denied && !o.refused), "the victim was never refused", happened(INJECTION_VICTIM, victim));
  t.equal(seenCount(INJECTION_VICTIM), 4, "four connections seen", happened(INJECTION_VICTIM, victim));
  t.notOk(blocked(INJECTION_VICTIM) || inDeny(INJECTION_VICTIM), `${INJECTION_VICTIM} is not blocked`, happened(INJECTION_VICTIM, victim));
  const ok = await login(INJECTION_VICTIM);
  t.ok(ok.loggedIn, "and it still logs in", happened(INJECTION_VICTIM, [...victim, ok]));
});

t.test("IPv6: blocked, written in brackets, refused", async (t) => {
  const ip = V6_ATTACKER;
  const runs = await times(3, () => invalidUser(ip));
  t.ok(runs.every((o) => o.denied), "invalid user denied over IPv6", happened(ip, runs));
  t.ok(blocked(ip), "block/2001:db8::5 exists (canonical name)", happened(ip, runs));
  t.ok(denyLines().includes(`[${ip}]`), "hosts.deny has [2001:db8::5]", happened(ip, runs));
  t.notOk(denyLines().includes(ip), "and not the bare form", happened(ip, runs));
  const refused = await login(ip);
  runs.push(refused);
  t.ok(refused.refused && !refused.loggedIn, "its next connection is refused", happened(ip, runs));
});

t.test("--delist lets a blocked address in again", async (t) => {
  const ip = INVALID_USER_ATTACKER;
  t.ok(blocked(ip), "precondition: still blocked", happened(ip));
  const r = sentry(["--delist", `--ip=${ip}`]);
  t.equal(r.code, 0, "sentry --delist exits 0", { ...r, ...happened(ip) });
  t.notOk(blocked(ip), "block/IP removed", happened(ip));
  t.notOk(inDeny(ip), "hosts.deny no longer lists it", happened(ip));
  t.notOk(allowed(ip), "and it is not allowed either (delist removes both)", happened(ip));
  const back = await login(ip);
  t.ok(back.loggedIn, "its next connection logs in", happened(ip, [back]));
  // An administrator delists an address to let it in, not for one connection:
  // the evidence sentry already judged (the old invalid users) must not block
  // it again now that it has logged in successfully.
  const again = await login(ip);
  t.ok(again.loggedIn, "and the one after that too (no re-block from evidence older than --delist)", happened(ip, [back, again]));
  t.notOk(blocked(ip) || inDeny(ip), "not blocked again", happened(ip, [back, again]));
});

t.test("30 attackers in parallel: every one blocked, none of the others", async (t) => {
  // Each attacker makes 3 invalid-user connections in a row; the 30 of them
  // and the bystanders' logins run interleaved, 12 clients at a time.
  type Job = { ip: string; attacker: boolean };
  const jobs: Job[] = HORDE.map((ip) => ({ ip, attacker: true }));
  BYSTANDERS.forEach((ip, i) => jobs.splice(i * 7 + 3, 0, { ip, attacker: false })); // interleave
  const started = Date.now();
  const results = await parallel(jobs.length, 12, async (i) => {
    const j = jobs[i];
    return { ...j, runs: await times(3, () => (j.attacker ? invalidUser(j.ip) : login(j.ip))) };
  });
  t.comment(`${jobs.length * 3} connections in ${Date.now() - started} ms`);
  // No convoy (issue 15): a connect that finds another process reading the
  // logs exits at once, counted, and leaves its decision to the next look
  // (the reader decides for the addresses its read covered). The timer's
  // --scan is that next look for whatever the burst left.
  const left = HORDE.filter((ip) => !blocked(ip));
  if (left.length) t.comment(`${left.length} attackers left to --scan by busy connects: ${left.join(", ")}`);
  // Only sshd's log: this machine's own FTP and mail logs are no part of the scene.
  const scan = sentry(["--scan"], { PROTECT_FTP: "0", PROTECT_MUA: "0" });
  t.equal(scan.code, 0, "--scan (the timer) exits 0", scan);

  const deny = denyLines();
  for (const r of results) {
    if (r.attacker) {
      t.ok(r.runs.every((o) => o.denied), `${r.ip}: its connections reached sshd and were denied`, happened(r.ip, r.runs));
      t.ok(blocked(r.ip) && deny.includes(denyForm(r.ip)), `${r.ip} blocked and in hosts.deny`, happened(r.ip, r.runs));
    } else {
      t.ok(r.runs.every((o) => o.loggedIn), `${r.ip}: bystander logged in 3 times`, happened(r.ip, r.runs));
      t.ok(allowed(r.ip), `${r.ip} allowed`, happened(r.ip, r.runs));
      t.notOk(blocked(r.ip) || deny.includes(denyForm(r.ip)), `${r.ip} not blocked`, happened(r.ip, r.runs));
    }
  }

  // hosts.deny is derived from block/: exactly one line per blocked address,
  // nothing lost to the concurrent writers, nothing else in it.
  const blockDir = join(rootDir, "block");
  const blockedNow = existsSync(blockDir) ? readdirSync(blockDir).filter((f) => !f.startsWith(".")) : [];
  t.same([...deny].sort(), blockedNow.map(denyForm).sort(), "hosts.deny lines = block/ files, one each");
  t.equal(new Set(deny).size, deny.length, "no duplicate line");
  t.ok(deny.every((l) => /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:.]+\])$/.test(l)), "every line is a bare IPv4 or a bracketed IPv6", { deny });

  // What each experiences next: all at once (a refusal is a 5 s wait).
  const next = await parallel(jobs.length, jobs.length, async (i) => ({ ...jobs[i], o: await login(jobs[i].ip) }));
  for (const n of next) {
    if (n.attacker) t.ok(n.o.refused && !n.o.loggedIn, `${n.ip} is refused`, happened(n.ip, [n.o]));
    else t.ok(n.o.loggedIn, `${n.ip} still logs in`, happened(n.ip, [n.o]));
  }
  t.comment(`refusals took ${Math.min(...next.filter((n) => n.attacker).map((n) => n.o.ms))}–${Math.max(...next.filter((n) => n.attacker).map((n) => n.o.ms))} ms`);
});

// ---- last: the sandbox leaves nothing behind ----------------------------

t.test("cleanup leaves nothing running and nothing changed", async (t) => {
  const { sshdPid, ns, tmp } = h;
  const err = existsSync(spawnErr) ? readFileSync(spawnErr, "utf8").trim() : "";
  if (err !== "") t.comment(`sentry's stderr under tcpd:\n${err}`);
  h.cleanup();
  t.notOk(alive(sshdPid), `sshd (pid ${sshdPid}) is gone`);
  t.same(pidsMentioning(tmp), [], "no process mentions the run's temp dir");
  t.notOk(netnsExists(ns), "the network namespace is gone");
  t.notOk(existsSync(tmp), "the temp dir (private /etc, the user's home, ROOT_DIR) is gone");
  for (const f of GLOBAL_FILES) {
    t.equal(sha256OrNull(f), h.globalSnapshot.get(f), `${f} is byte-identical to before`);
  }
  const passwd = readFileSync("/etc/passwd", "utf8");
  t.notOk(passwd.split("\n").some((l) => l.startsWith(`${h.user}:`)), "the throw-away user never existed outside the sandbox");
});
