// test/e2e-kbdint.test.ts — password guessing through keyboard-interactive
// (KbdInteractiveAuthentication yes, UsePAM yes) at LogLevel INFO, against the
// real sshd through real tcpwrappers (test/lib/sshd.ts builds the sandbox).
//
// At INFO, OpenSSH writes no "Failed keyboard-interactive/pam" line for the
// first MaxAuthTries/2 wrong answers of a valid user: only its PAM line
// ("PAM: Authentication failure for U from A") and, at the end, "Connection
// closed by authenticating user U A port N [preauth]". sentry used to count
// the first as nothing and the second as a probe, so three guesses per
// connection, forever, were never blocked (issue 9, point 1).
//
// The spawned sentry's stderr is /dev/null under tcpd, as on a real host:
// every assertion is on ROOT_DIR's files and on what the client experiences.

import t from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DAEMON, checkPrerequisites, startHarness } from "./lib/sshd.ts";
import type { Harness, SshOutcome } from "./lib/sshd.ts";

t.setTimeout(200_000);

const SENTRY = join(resolve(import.meta.dirname, ".."), "dist", "sentry");
const GUESSER = "192.0.2.20";
const OWNER = "192.0.2.21";

let h: Harness;
let rootDir = "";

t.before(async () => {
  checkPrerequisites(SENTRY);
  h = await startHarness({
    addresses: [GUESSER, OWNER],
    sshdConfig: { KbdInteractiveAuthentication: "yes", UsePAM: "yes", LogLevel: "INFO" },
  });
  rootDir = join(h.tmp, "root");
  mkdirSync(rootDir, { mode: 0o755 });
  writeFileSync(h.hostsAllow,
    `${DAEMON} : ${rootDir}/hosts.deny : deny\n` +
    `${DAEMON} : ALL : spawn ROOT_DIR=${rootDir} SSH_LOG=${h.sshLog} ${SENTRY} --connect --ip=%a : allow\n`);
});

t.teardown(() => h?.cleanup());

const has = (dir: string, ip: string): boolean => existsSync(join(rootDir, dir, ip));
const inDeny = (ip: string): boolean => {
  const f = join(rootDir, "hosts.deny");
  return existsSync(f) && readFileSync(f, "utf8").split("\n").includes(ip);
};
function evidence(ip: string, runs: SshOutcome[]): Record<string, unknown> {
  const read = (f: string): string => (existsSync(f) ? readFileSync(f, "utf8") : "(missing)");
  return {
    seen: read(join(rootDir, "seen", ip)).split("\n").filter(Boolean).length,
    block: has("block", ip) ? read(join(rootDir, "block", ip)) : null,
    allow: has("allow", ip) ? read(join(rootDir, "allow", ip)) : null,
    sentryLog: read(join(rootDir, "sentry.log")).split("\n").filter((l) => l.includes(ip)),
    sshdLog: read(h.sshLog).split("\n").filter((l) => l.includes(ip)).slice(-12),
    runs: runs.map((o) => ({ code: o.code, loggedIn: o.loggedIn, refused: o.refused, denied: o.denied })),
  };
}

t.test("keyboard-interactive guesses at LogLevel INFO: the guesser is blocked, the owner is not", async (t) => {
  const guess = () => h.ssh({ from: GUESSER, user: h.user, password: "wrong-kbd-e2e", prompts: 3, method: "keyboard-interactive" });
  const runs: SshOutcome[] = [];
  // 3 guesses per connection; sentry runs as each connection arrives, so the
  // 5th sees 12 failures (more than 10): blocked by then at the latest.
  for (let i = 1; i <= 5 && !has("block", GUESSER); i++) {
    const o = await guess();
    runs.push(o);
    t.ok(o.denied && !o.loggedIn, `connection ${i}: sshd denies the wrong answers`, evidence(GUESSER, runs));
  }
  // What the measured log looks like: only PAM lines for the first guesses.
  const log = readFileSync(h.sshLog, "utf8");
  t.match(log, new RegExp(`PAM: Authentication failure for ${h.user} from ${GUESSER.replaceAll(".", "\\.")}\\r?\\n`), "sshd wrote its PAM line");
  t.notMatch(log, new RegExp(`Failed keyboard-interactive/pam for ${h.user} from ${GUESSER.replaceAll(".", "\\.")} `), "and at INFO no Failed line of its own for 3 answers");
  t.ok(has("block", GUESSER), "block/IP exists", evidence(GUESSER, runs));
  t.ok(inDeny(GUESSER), "hosts.deny lists it", evidence(GUESSER, runs));
  const next = await h.ssh({ from: GUESSER, user: h.user, password: h.password, method: "keyboard-interactive" });
  runs.push(next);
  t.ok(next.refused && !next.loggedIn, "its next connection is refused, right password notwithstanding", evidence(GUESSER, runs));

  // The owner mistypes once (a PAM failure), then answers right, connection after connection.
  const owner: SshOutcome[] = [];
  owner.push(await h.ssh({ from: OWNER, user: h.user, password: "typo-kbd-e2e", method: "keyboard-interactive" }));
  for (let i = 0; i < 3; i++) owner.push(await h.ssh({ from: OWNER, user: h.user, password: h.password, method: "keyboard-interactive" }));
  t.ok(owner[0].denied, "the owner's typo is denied", evidence(OWNER, owner));
  t.ok(owner.slice(1).every((o) => o.loggedIn), "the owner logs in with the right answer every time", evidence(OWNER, owner));
  t.notOk(has("block", OWNER) || inDeny(OWNER), "the owner is not blocked", evidence(OWNER, owner));
  t.ok(has("allow", OWNER), "and is allowed once seen 3 times with a success in the log", evidence(OWNER, owner));
});

t.test("cleanup", async (t) => {
  h.cleanup();
  t.ok(h.cleanedUp(), "the sandbox is gone");
  t.equal(spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout.includes(h.ns), false, "no namespace left");
});
