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
import type { Test } from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DAEMON, checkPrerequisites, startHarness, whatHappened } from "./lib/sshd.ts";
import type { Harness, SshOutcome } from "./lib/sshd.ts";

t.setTimeout(200_000);

const SENTRY = join(resolve(import.meta.dirname, ".."), "dist", "sentry");
const GUESSER = "192.0.2.20";
const OWNER = "192.0.2.21";

let h: Harness | undefined;
let rootDir = "";

/** A fresh sandbox (one at a time: the namespace is named after this process) wired as README says. */
async function sandbox(logLevel: string): Promise<Harness> {
  h?.cleanup();
  const hh = await startHarness({
    addresses: [GUESSER, OWNER],
    sshdConfig: { KbdInteractiveAuthentication: "yes", UsePAM: "yes", LogLevel: logLevel },
  });
  h = hh;
  rootDir = join(hh.tmp, "root");
  mkdirSync(rootDir, { mode: 0o755 });
  writeFileSync(hh.hostsAllow,
    `${DAEMON} : ${rootDir}/hosts.deny : deny\n` +
    `${DAEMON} : ALL : spawn ROOT_DIR=${rootDir} SSH_LOG=${hh.sshLog} ${SENTRY} --connect --ip=%a : allow\n`);
  return hh;
}

t.before(() => checkPrerequisites(SENTRY));
t.teardown(() => h?.cleanup());

const has = (dir: string, ip: string): boolean => existsSync(join(rootDir, dir, ip));
const inDeny = (ip: string): boolean => {
  const f = join(rootDir, "hosts.deny");
  return existsSync(f) && readFileSync(f, "utf8").split("\n").includes(ip);
};
const happened = (hh: Harness, ip: string, runs: SshOutcome[]): Record<string, unknown> => whatHappened(rootDir, hh.sshLog, ip, runs);

/**
 * 3 wrong answers per connection. sentry runs as each connection arrives,
 * before its answers: connection N sees the 3(N-1) guesses before it, so the
 * 1st and 2nd are not blocked (3 per connection is what ssh asks a person),
 * and the 3rd (6 guesses, more than GUESS_THRESHOLD 4) blocks on thin
 * evidence. The evidence index then holds exactly 6 guesses: counting one
 * attempt twice would show 12, counting none would never block.
 */
async function guessUntilBlocked(t: Test, hh: Harness): Promise<SshOutcome[]> {
  const runs: SshOutcome[] = [];
  for (let i = 1; i <= 3; i++) {
    const o = await hh.ssh({ from: GUESSER, user: hh.user, password: "wrong-kbd-e2e", prompts: 3, method: "keyboard-interactive" });
    runs.push(o);
    t.ok(o.denied && !o.loggedIn, `connection ${i}: sshd denies the wrong answers`, happened(hh, GUESSER, runs));
    if (i <= 2) t.notOk(has("block", GUESSER), `not blocked after ${i} connection(s), ${3 * (i - 1)} guesses seen`, happened(hh, GUESSER, runs));
  }
  t.ok(has("block", GUESSER), "block/IP exists after the 3rd connection", happened(hh, GUESSER, runs));
  t.ok(inDeny(GUESSER), "hosts.deny lists it", happened(hh, GUESSER, runs));
  const r = spawnSync(SENTRY, ["--report", "--json", `--ip=${GUESSER}`], { encoding: "utf8", env: { PATH: process.env.PATH, ROOT_DIR: rootDir, SSH_LOG: hh.sshLog } });
  const ssh = (JSON.parse(r.stdout) as { ip: { evidence: { ssh: { failed: number; guesses?: number } } } }).ip.evidence.ssh;
  t.same([ssh.failed, ssh.guesses], [6, 6], "the block weighed 6 guesses: each answer counted once", happened(hh, GUESSER, runs));
  t.match(readFileSync(join(rootDir, "block", GUESSER), "utf8"), /\(10 minutes; thin evidence/, "a short block: a person who forgot an answer does the same");
  const next = await hh.ssh({ from: GUESSER, user: hh.user, password: hh.password, method: "keyboard-interactive" });
  runs.push(next);
  t.ok(next.refused && !next.loggedIn, "its next connection is refused, right password notwithstanding", happened(hh, GUESSER, runs));
  return runs;
}

const re = (s: string): string => s.replaceAll(".", "\\.");

t.test("LogLevel INFO: only PAM lines; the guesser is blocked, the owner is not", async (t) => {
  const hh = await sandbox("INFO");
  await guessUntilBlocked(t, hh);
  // What the log looked like: PAM lines, and no Failed line for 3 answers.
  const log = readFileSync(hh.sshLog, "utf8");
  t.match(log, new RegExp(`PAM: Authentication failure for ${hh.user} from ${re(GUESSER)}\\r?\\n`), "sshd wrote its PAM line");
  t.notMatch(log, new RegExp(`Failed keyboard-interactive/pam for ${hh.user} from ${re(GUESSER)} `), "and at INFO no Failed line of its own");

  // The owner mistypes once (a PAM failure), then answers right, connection after connection.
  const owner: SshOutcome[] = [];
  owner.push(await hh.ssh({ from: OWNER, user: hh.user, password: "typo-kbd-e2e", method: "keyboard-interactive" }));
  for (let i = 0; i < 3; i++) owner.push(await hh.ssh({ from: OWNER, user: hh.user, password: hh.password, method: "keyboard-interactive" }));
  t.ok(owner[0].denied, "the owner's typo is denied", happened(hh, OWNER, owner));
  t.ok(owner.slice(1).every((o) => o.loggedIn), "the owner logs in with the right answer every time", happened(hh, OWNER, owner));
  t.notOk(has("block", OWNER) || inDeny(OWNER), "the owner is not blocked", happened(hh, OWNER, owner));
  t.ok(has("allow", OWNER), "and is allowed once seen 3 times with a success in the log", happened(hh, OWNER, owner));
});

t.test("LogLevel VERBOSE: a PAM line and a Failed line per answer count once", async (t) => {
  const hh = await sandbox("VERBOSE");
  await guessUntilBlocked(t, hh);
  const log = readFileSync(hh.sshLog, "utf8");
  const pam = log.split("\n").filter((l) => l.startsWith(`PAM: Authentication failure for ${hh.user} from ${GUESSER}`)).length;
  const failed = log.split("\n").filter((l) => l.startsWith(`Failed keyboard-interactive/pam for ${hh.user} from ${GUESSER} `)).length;
  t.ok(pam >= 6 && failed === pam, `sshd wrote both lines for every answer (${pam} PAM, ${failed} Failed)`);
});

t.test("cleanup", async (t) => {
  const hh = h as Harness;
  hh.cleanup();
  t.ok(hh.cleanedUp(), "the sandbox is gone");
  t.equal(spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout.includes(hh.ns), false, "no namespace left");
});
