// test/e2e-policy.test.ts — the three lockouts of issue 16, with a real sshd.
//
// Measured against sshd 9.2 before this change: a user who mistypes the
// account name once and a password once, or whose agent offers too many keys
// twice, or who tries `ssh root@host` once with a key, was blocked at the
// start of the third connection (the one that would have succeeded) for 90
// days. Here each of them gets in, at the latest after the short block, while
// a bot with the same number of connections (invalid names, several of them)
// is still blocked for EXPIRE_BLOCK_DAYS.
//
// sshd runs at LogLevel INFO (Debian's default) with public keys on, through
// the harness of test/lib/sshd.ts: tcpd spawns dist/sentry inside sshd's
// mount namespace, so sentry reads the private /etc/passwd that holds the
// throw-away user. Time passes honestly: a block "made 11 minutes ago" has
// its file's and expire.stamp's modification times moved back 11 minutes.

import t from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DAEMON, PORT, SERVER_V4, checkPrerequisites, startHarness } from "./lib/sshd.ts";
import type { Harness, SshOutcome } from "./lib/sshd.ts";

t.setTimeout(120_000);

const SENTRY = join(resolve(import.meta.dirname, ".."), "dist", "sentry");
const TYPO = "192.0.2.20";
const AGENT = "192.0.2.21";
const ROOT_KEY = "192.0.2.22";
const ROOT_KEY_SLOW = "192.0.2.23";
const BOT = "192.0.2.24";
const OTHER = "192.0.2.25";
const WRONG = "wrong-password-e2e";
const MIN = 60_000;
const DAY = 86_400_000;

let h: Harness;
let rootDir = "";
let keys: string[] = [];

t.before(async () => {
  checkPrerequisites(SENTRY);
  h = await startHarness({
    addresses: [TYPO, AGENT, ROOT_KEY, ROOT_KEY_SLOW, BOT, OTHER],
    sshdConfig: { LogLevel: "INFO", PubkeyAuthentication: "yes", AuthorizedKeysFile: ".ssh/authorized_keys" },
  });
  rootDir = join(h.tmp, "root");
  mkdirSync(rootDir, { mode: 0o755 });
  writeFileSync(h.hostsAllow,
    `${DAEMON} : ${rootDir}/hosts.deny : deny\n` +
    `${DAEMON} : ALL : spawn ROOT_DIR=${rootDir} SSH_LOG=${h.sshLog} ${SENTRY} --connect --ip=%a 2>>${join(h.tmp, "sentry.stderr")} : allow\n`);
  const dir = join(h.tmp, "keys");
  mkdirSync(dir);
  keys = Array.from({ length: 8 }, (_, i) => join(dir, `k${i}`));
  for (const k of keys) spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", k]);
});

t.teardown(() => h?.cleanup());

// ---- what the client and the administrator see ------------------------------

const state = (ip: string) => (existsSync(join(rootDir, "allow", ip)) ? "allowed" : existsSync(join(rootDir, "block", ip)) ? "blocked" : "none");
const blockText = (ip: string) => readFileSync(join(rootDir, "block", ip), "utf8");
const blockLength = (ip: string): number => {
  const text = blockText(ip);
  return Date.parse(/^until (\S+)/m.exec(text)?.[1] ?? "") - Date.parse(/^(\S+) block by /.exec(text)?.[1] ?? "");
};
const login = (from: string) => h.ssh({ from, user: h.user, password: h.password });
const wrongPassword = (from: string) => h.ssh({ from, user: h.user, password: WRONG });
/** `ssh -i k0 -i k1 ... user@host` with public keys only, none of them authorised. */
function withKeys(from: string, user: string, n: number): { code: number | null; stderr: string } {
  const r = h.inNs("ssh", [
    "-F", "/dev/null", "-T", "-p", String(PORT), "-b", from, "-l", user,
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
    "-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=publickey", "-o", "LogLevel=ERROR",
    ...keys.slice(0, n).flatMap((k) => ["-i", k]), SERVER_V4, "true",
  ]);
  return { code: r.code, stderr: r.stderr };
}
/** The block of `ip` was made `ms` earlier: its file and the next-due stamp move back as the clock would. */
function age(ip: string, ms: number): void {
  for (const f of [join(rootDir, "block", ip), join(rootDir, "expire.stamp")]) {
    const m = (statSync(f).mtimeMs - ms) / 1000;
    utimesSync(f, m, m);
  }
}
/** sshd's log once it holds `re` (sshd writes a connection's closing line after the client has gone): polled, at most 5 s. */
async function logOnce(re: RegExp): Promise<string> {
  for (let i = 0; ; i++) {
    const log = readFileSync(h.sshLog, "utf8");
    if (re.test(log) || i >= 100) return log;
    await new Promise((r) => setTimeout(r, 50));
  }
}
function scan(): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(SENTRY, ["--scan"], {
    encoding: "utf8",
    env: { PATH: process.env.PATH, ROOT_DIR: rootDir, SSH_LOG: h.sshLog, PASSWD_FILE: join(h.tmp, "etc", "passwd") },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
function why(ip: string, runs: SshOutcome[] = []): Record<string, unknown> {
  const read = (f: string) => (existsSync(f) ? readFileSync(f, "utf8") : "(missing)");
  const mine = (text: string) => text.split("\n").filter((l) => l.split(/[\s[\]]+/).includes(ip));
  return {
    state: state(ip),
    block: existsSync(join(rootDir, "block", ip)) ? blockText(ip) : null,
    sshd: mine(read(h.sshLog)),
    sentryLog: mine(read(join(rootDir, "sentry.log"))),
    stderr: read(join(h.tmp, "sentry.stderr")).split("\n").slice(-10),
    runs: runs.map((o) => ({ user: o.user, loggedIn: o.loggedIn, refused: o.refused, denied: o.denied })),
  };
}

// ---- the three lockouts -------------------------------------------------------

t.test("a mistyped account name, then a wrong password: the third connection logs in, and every one after", async (t) => {
  const typo = `${h.user[0]}${h.user[2]}${h.user[1]}${h.user.slice(3)}`; // two neighbours swapped
  const runs = [await h.ssh({ from: TYPO, user: typo, password: WRONG }), await wrongPassword(TYPO)];
  t.ok(runs[0].denied && runs[1].denied, "both are denied by sshd", why(TYPO, runs));
  t.match(readFileSync(h.sshLog, "utf8"), new RegExp(`^Invalid user ${typo} from ${TYPO} port`, "m"), "sshd logged the typo as an invalid user");
  runs.push(await login(TYPO));
  t.ok(runs[2].loggedIn, "third connection: logged in", why(TYPO, runs));
  t.equal(state(TYPO), "none", "and sentry did not block it at its start: the typo is a failure, not naughty", why(TYPO, runs));
  runs.push(await login(TYPO));
  t.ok(runs[3].loggedIn && !runs[3].refused, "fourth connection: logged in", why(TYPO, runs));
  t.equal(state(TYPO), "allowed", "the fourth connect read the success", why(TYPO, runs));
});

t.test("an agent offering too many keys, twice: the third connection logs in, and every one after", async (t) => {
  for (let i = 1; i <= 2; i++) {
    const r = withKeys(AGENT, h.user, 8);
    t.match(r.stderr, /Too many authentication failures/, `connection ${i}: sshd ends it after MaxAuthTries keys`, why(AGENT));
  }
  t.match(readFileSync(h.sshLog, "utf8"), new RegExp(`^maximum authentication attempts exceeded for ${h.user} from ${AGENT} port`, "m"));
  const third = await login(AGENT);
  t.ok(third.loggedIn, "third connection: logged in", why(AGENT, [third]));
  t.equal(state(AGENT), "none", "not blocked: a valid user's exceeded limit is failures, not naughty", why(AGENT, [third]));
  const fourth = await login(AGENT);
  t.ok(fourth.loggedIn, "fourth connection: logged in", why(AGENT, [fourth]));
});

t.test("`ssh root@host` with a key, a wrong password, then a login: the short block is lifted by that login", async (t) => {
  const r = withKeys(ROOT_KEY, "root", 1);
  t.match(r.stderr, /Permission denied \(publickey/, "root's key is refused (PermitRootLogin no)");
  const closed = new RegExp(`^Connection closed by authenticating user root ${ROOT_KEY} port \\d+ \\[preauth\\]`, "m");
  t.match(await logOnce(closed), closed, "all sshd 9.2 logs of it at INFO");
  const runs = [await wrongPassword(ROOT_KEY)];
  runs.push(await login(ROOT_KEY));
  t.ok(runs[1].loggedIn, "third connection: tcpd let it through, the user logged in", why(ROOT_KEY, runs));
  t.equal(state(ROOT_KEY), "blocked", "sentry blocked the address at that connection's start", why(ROOT_KEY, runs));
  t.equal(blockLength(ROOT_KEY), 10 * MIN, "thin evidence (one naughty line, one name): 10 minutes", why(ROOT_KEY, runs));
  // Another address's connect reads the logs: the success logged after the block lifts it.
  for (let i = 0; i < 3; i++) runs.push(await login(OTHER));
  t.equal(state(ROOT_KEY), "allowed", "another address's connect lifted the block into an allow", why(ROOT_KEY, runs));
  t.match(readFileSync(join(rootDir, "allow", ROOT_KEY), "utf8"), /allowed after failures/);
  const after = await login(ROOT_KEY);
  t.ok(after.loggedIn, "and the user keeps getting in", why(ROOT_KEY, [after]));
});

t.test("the same user who does not log in on the third connection gets in after the short block; a bot does not", async (t) => {
  withKeys(ROOT_KEY_SLOW, "root", 1);
  await wrongPassword(ROOT_KEY_SLOW);
  await wrongPassword(ROOT_KEY_SLOW);
  // The bot: three connections, three invalid names, one password each.
  for (const name of ["admin", "test", "oracle"]) await h.ssh({ from: BOT, user: name, password: WRONG });
  t.equal(state(ROOT_KEY_SLOW), "blocked", "the user is blocked at the third connection", why(ROOT_KEY_SLOW));
  t.equal(state(BOT), "blocked", "the bot too", why(BOT));
  t.equal(blockLength(ROOT_KEY_SLOW), 10 * MIN, "the user's block is short", why(ROOT_KEY_SLOW));
  t.equal(blockLength(BOT), 90 * DAY, "the bot's is EXPIRE_BLOCK_DAYS (several names: strong)", why(BOT));
  const refused = await Promise.all([login(ROOT_KEY_SLOW), login(BOT)]);
  t.ok(refused.every((o) => o.refused), "both are refused while blocked", { refused });

  // 11 minutes pass; any connect or --scan after the block's end lifts it.
  age(ROOT_KEY_SLOW, 11 * MIN);
  age(BOT, 11 * MIN);
  const s = scan();
  t.equal(s.code, 0, "--scan", { s });
  t.equal(state(ROOT_KEY_SLOW), "none", "the short block ended", why(ROOT_KEY_SLOW));
  t.equal(state(BOT), "blocked", "the bot's did not", why(BOT));
  const [user, bot] = await Promise.all([login(ROOT_KEY_SLOW), login(BOT)]);
  t.ok(user.loggedIn, "the user gets in", why(ROOT_KEY_SLOW, [user]));
  t.ok(bot.refused && !bot.loggedIn, "the bot, right password notwithstanding, is still refused", why(BOT, [bot]));
});
