// test/e2e-early.test.ts — issue 16 item 5 with a real sshd: strong evidence
// decides at the second connection, and the connection that decided is ended
// before its first guess (section 8.2); the administrator of the benchmark
// table (3 logins, 12 typos, a login) is never refused, and ending a
// connection never touches anyone else's.
//
// Measured before this change (sshd 9.2, tcpd only): a bot using all 6 of
// MaxAuthTries per connection on invalid names got 18 guesses, 3 whole
// connections, before tcpd refused it. Here it gets 6.

import t from "tap";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { nftablesBackend, DEFAULTS } from "../sentry.ts";
import { DAEMON, LOGIN_MARKER, PORT, SERVER_V4, checkPrerequisites, startHarness } from "./lib/sshd.ts";
import type { Harness, SshOutcome } from "./lib/sshd.ts";

t.setTimeout(120_000);

const SENTRY = join(resolve(import.meta.dirname, ".."), "dist", "sentry");
const BOT = "192.0.2.30";
const ADMIN = "192.0.2.31";
const SESSION = "192.0.2.32";
const BOT_V6 = "2001:db8::30";
const HOLDER = "192.0.2.35";
const WRONG = "wrong-password-e2e";

let h: Harness;
let rootDir = "";

t.before(async () => {
  checkPrerequisites(SENTRY);
  h = await startHarness({ addresses: [BOT, ADMIN, SESSION, BOT_V6, HOLDER], sshdConfig: { LogLevel: "INFO", LoginGraceTime: "0" } });
  rootDir = join(h.tmp, "root");
  mkdirSync(rootDir, { mode: 0o755 });
  writeFileSync(h.hostsAllow,
    `${DAEMON} : ${rootDir}/hosts.deny : deny\n` +
    `${DAEMON} : ALL : spawn ROOT_DIR=${rootDir} SSH_LOG=${h.sshLog} ${SENTRY} --connect --ip=%a 2>>${join(h.tmp, "sentry.stderr")} : allow\n`);
});

t.teardown(() => h?.cleanup());

const state = (ip: string) => (existsSync(join(rootDir, "allow", ip)) ? "allowed" : existsSync(join(rootDir, "block", ip)) ? "blocked" : "none");
const read = (f: string) => (existsSync(f) ? readFileSync(f, "utf8") : "");
const mine = (text: string, ip: string) => text.split("\n").filter((l) => l.split(/[\s[\]]+/).includes(ip));
/** Passwords sshd saw from `ip` (each a guess that reached sshd). */
const guesses = (ip: string) => mine(read(h.sshLog), ip).filter((l) => /^Failed password for /.test(l)).length;
function why(ip: string, runs: SshOutcome[] = []): Record<string, unknown> {
  return {
    state: state(ip),
    sshd: mine(read(h.sshLog), ip),
    sentryLog: mine(read(join(rootDir, "sentry.log")), ip),
    stderr: read(join(h.tmp, "sentry.stderr")).split("\n").slice(-10),
    runs: runs.map((o) => ({ loggedIn: o.loggedIn, refused: o.refused, denied: o.denied, stderr: o.stderr.slice(0, 300) })),
  };
}
/** sshd writes a connection's last lines after the client has gone: wait (bounded) for `n` of them. */
async function settle(ip: string, re: RegExp, n: number): Promise<void> {
  for (let i = 0; i < 100 && mine(read(h.sshLog), ip).filter((l) => re.test(l)).length < n; i++) await new Promise((r) => setTimeout(r, 50));
}

t.test("a bot using all of MaxAuthTries on an invalid name: 6 guesses, then shut out from its 2nd connection", async (t) => {
  const runs = [await h.ssh({ from: BOT, user: "admin", password: WRONG, prompts: 6 })];
  t.ok(runs[0].denied, "first connection: six wrong passwords, denied", why(BOT, runs));
  await settle(BOT, /^Disconnecting invalid user|maximum authentication attempts exceeded/, 1);
  t.equal(guesses(BOT), 6, "six guesses reached sshd", why(BOT, runs));
  t.equal(state(BOT), "none", "one connection: nothing decided yet");

  runs.push(await h.ssh({ from: BOT, user: "oracle", password: WRONG, prompts: 6 }));
  t.equal(state(BOT), "blocked", "the second connect blocked it: strong evidence", why(BOT, runs));
  t.notOk(runs[1].loggedIn || runs[1].denied, "the second connection ended before sshd asked for a password", why(BOT, runs));
  t.match(read(join(rootDir, "block", BOT)), /^until \S+ \(90 days; strong evidence/m, "a long block");
  t.match(read(join(rootDir, "sentry.log")), new RegExp(`^\\S+ ${BOT.replaceAll(".", "\\.")} cut ended the deciding connection \\(sshd pid \\d+\\)$`, "m"),
    "sentry.log says it ended the deciding connection");
  runs.push(await h.ssh({ from: BOT, user: "test", password: WRONG, prompts: 6 }));
  t.ok(runs[2].refused, "third connection: refused by tcpd", why(BOT, runs));
  t.equal(guesses(BOT), 6, "no guess beyond the first connection's six", why(BOT, runs));
});

t.test("the same over IPv6 (the peer is read from /proc/PID/net/tcp6)", async (t) => {
  await h.ssh({ from: BOT_V6, user: "admin", password: WRONG, prompts: 6 });
  await settle(BOT_V6, /^Disconnecting invalid user|maximum authentication attempts exceeded/, 1);
  const second = await h.ssh({ from: BOT_V6, user: "admin", password: WRONG, prompts: 6 });
  t.equal(state(BOT_V6), "blocked", "blocked at the second connect", why(BOT_V6, [second]));
  t.notOk(second.denied || second.loggedIn, "and that connection ended before a guess", why(BOT_V6, [second]));
  t.equal(guesses(BOT_V6), 6, "six guesses in all", why(BOT_V6, [second]));
});

t.test("the administrator of the benchmark: 3 logins, 12 typos, a login, never refused", async (t) => {
  const runs: SshOutcome[] = [];
  for (let i = 0; i < 3; i++) runs.push(await h.ssh({ from: ADMIN, user: h.user, password: h.password }));
  for (let i = 0; i < 4; i++) runs.push(await h.ssh({ from: ADMIN, user: h.user, password: WRONG, prompts: 3 }));
  runs.push(await h.ssh({ from: ADMIN, user: h.user, password: h.password }));
  t.ok(runs.every((r) => !r.refused), "no connection refused", why(ADMIN, runs));
  t.ok(runs[0].loggedIn && runs[1].loggedIn && runs[2].loggedIn && runs[7].loggedIn, "every login got in", why(ADMIN, runs));
  t.equal(guesses(ADMIN), 12, "the twelve typos reached sshd", why(ADMIN, runs));
  t.equal(state(ADMIN), "allowed", "allowed by its success, never blocked", why(ADMIN, runs));
});

t.test("ending the deciding connection touches nothing else", async (t) => {
  // An open session from another address, inside sshd while a bot is cut.
  const held = spawn("ip", ["netns", "exec", h.ns, "sshpass", "-e", "ssh",
    "-F", "/dev/null", "-T", "-p", String(PORT), "-b", SESSION, "-l", h.user,
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
    SERVER_V4, `sleep 4; echo ${LOGIN_MARKER}`], { env: { PATH: process.env.PATH, SSHPASS: h.password }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  held.stdout.on("data", (d: Buffer) => { out += d.toString(); });
  const done = new Promise<number | null>((r) => held.on("close", r));
  for (let i = 0; i < 100 && !/^Accepted password for \S+ from 192\.0\.2\.32 /m.test(read(h.sshLog)); i++) await new Promise((r) => setTimeout(r, 50));
  const bot = "192.0.2.30"; // already blocked: use a fresh one through the same path
  t.equal(state(bot), "blocked");
  const fresh = "192.0.2.33";
  h.addAddresses([fresh]);
  await h.ssh({ from: fresh, user: "admin", password: WRONG, prompts: 6 });
  await settle(fresh, /^Disconnecting invalid user|maximum authentication attempts exceeded/, 1);
  const cut = await h.ssh({ from: fresh, user: "admin", password: WRONG, prompts: 6 });
  t.equal(state(fresh), "blocked", "the fresh bot is blocked and cut", why(fresh, [cut]));
  t.notOk(cut.denied, "its second connection ended before a guess", why(fresh, [cut]));
  t.equal(await done, 0, "the session from another address ran to its end", { out });
  t.match(out, LOGIN_MARKER, "and printed what it was asked to");

  // By hand, outside sshd: the same strong evidence blocks, nothing is ended, and sentry.log says why.
  const byHand = "192.0.2.34";
  writeFileSync(join(h.tmp, "hand.log"), `Invalid user a from ${byHand} port 1\nInvalid user b from ${byHand} port 2\n`);
  const env = { PATH: process.env.PATH ?? "", ROOT_DIR: rootDir, SSH_LOG: join(h.tmp, "hand.log") };
  for (let i = 0; i < 2; i++) spawnSync(SENTRY, ["--connect", `--ip=${byHand}`], { env });
  t.equal(state(byHand), "blocked", "two names: blocked at the second connect");
  t.match(read(join(rootDir, "sentry.log")), new RegExp(`^\\S+ ${byHand.replaceAll(".", "\\.")} cut-skipped (an ancestor \\(node\\) is neither a shell nor sshd|no sshd among)`, "m"),
    "run by hand: nothing ended, and sentry.log says why");
  t.ok(sshdAlive(), "sshd's listener is alive");
});

function sshdAlive(): boolean {
  try {
    process.kill(h.sshdPid, 0);
    return true;
  } catch {
    return false;
  }
}

// With the nftables backend, the blocked address's packets vanish, but sshd
// does not know: without `ss -K` a pre-login child of a blocked bot would
// hold its MaxStartups slot until LoginGraceTime (0 here: for ever).
t.test("nftables: every open connection of the address just blocked is closed (ss -K), not left to stall", async (t) => {
  const nftRoot = join(h.tmp, "root-nft");
  mkdirSync(nftRoot, { mode: 0o755 });
  const load = spawnSync("ip", ["netns", "exec", h.ns, "nft", "-f", "-"], { input: nftablesBackend.rules({ ...DEFAULTS, ADD_TO_NFTABLES: true }), encoding: "utf8" });
  t.equal(load.status, 0, `the rule loads in the namespace: ${load.stderr}`);
  writeFileSync(h.hostsAllow,
    `${DAEMON} : ${nftRoot}/hosts.deny : deny\n` +
    `${DAEMON} : ALL : spawn ROOT_DIR=${nftRoot} SSH_LOG=${h.sshLog} ADD_TO_NFTABLES=1 ${SENTRY} --connect --ip=%a 2>>${join(h.tmp, "sentry.stderr")} : allow\n`);
  // Connection 1: the bot opens a TCP connection and says nothing (sshd waits for its banner).
  const holder = spawn("ip", ["netns", "exec", h.ns, process.execPath, "-e", `
    const s = require("node:net").connect({ host: ${JSON.stringify(SERVER_V4)}, port: ${PORT}, localAddress: ${JSON.stringify(HOLDER)} });
    s.on("data", (d) => process.stdout.write("banner\\n"));
    s.on("close", () => { process.stdout.write("closed\\n"); process.exit(0); });
    s.on("error", (e) => process.stdout.write("error " + e.code + "\\n"));
    setTimeout(() => { process.stdout.write("still open\\n"); process.exit(3); }, 20000);
  `], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  holder.stdout.on("data", (d: Buffer) => { out += d.toString(); });
  const ended = new Promise<number | null>((r) => holder.on("close", r));
  for (let i = 0; i < 100 && !out.includes("banner"); i++) await new Promise((r) => setTimeout(r, 50));
  t.match(out, "banner", "connection 1 is open: sshd sent its banner");
  // Connections 2 and 3: six guesses each at most; the third connect blocks (a bot's evidence).
  await h.ssh({ from: HOLDER, user: "admin", password: WRONG, prompts: 6 });
  await settle(HOLDER, /^Disconnecting invalid user|maximum authentication attempts exceeded/, 1);
  const third = await h.ssh({ from: HOLDER, user: "admin", password: WRONG, prompts: 6 });
  t.ok(existsSync(join(nftRoot, "block", HOLDER)), "blocked", why(HOLDER, [third]));
  const set = spawnSync("ip", ["netns", "exec", h.ns, "nft", "list", "set", "inet", DEFAULTS.FIREWALL_TABLE, "v4"], { encoding: "utf8" });
  t.match(set.stdout, HOLDER, "in the kernel's set");
  t.equal(await ended, 0, "connection 1 was closed by the server, not left open", { out });
  t.match(out, /closed/);
  t.notOk(third.denied || third.loggedIn, "the deciding connection was closed before a guess", why(HOLDER, [third]));
  t.match(read(join(nftRoot, "sentry.log")), new RegExp(`^\\S+ ${HOLDER.replaceAll(".", "\\.")} cut closed [23] TCP connections of the blocked address \\(ss -K\\)$`, "m"),
    "sentry.log says so");
  t.equal(guesses(HOLDER), 6, "six guesses in all");
});
