// test/policy.test.ts — how long a block lasts, what lifts it (issue 16, item 0).
//
// The pure rules (blockLength, blockEnd, the typo check) through the module;
// everything else through the built binary against real files: a log it
// reads (SSH_LOG), a passwd file of its own (PASSWD_FILE), ROOT_DIR in a
// temporary folder. Time passes honestly: a block "made 11 minutes ago" has
// its file's modification time (and expire.stamp's, which is the next due
// moment) moved 11 minutes back, as the clock would have done.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import {
  blockEnd, blockLength, editDistance, isTypo, passwdAccounts, DEFAULTS, classifyLine,
} from "../sentry.ts";
import { envFor, requireBinary, sentry, sentryLog, state, tempDir } from "./lib/run.ts";

requireBinary();

const tally = (o: Partial<{ success: number; failed: number; naughty: number; probe: number }>) => ({
  success: 0, failed: 0, naughty: 0, probe: 0, sample: "", ...o,
});
const MIN = 60_000;
const DAY = 86_400_000;

// ---- pure parts -------------------------------------------------------------

t.test("blockLength: thin evidence blocks for minutes, strong for EXPIRE_BLOCK_DAYS", async (t) => {
  const cfg = DEFAULTS;
  t.equal(blockLength({ ssh: tally({ naughty: 1 }) }, 1, cfg).ms, 10 * MIN, "one naughty line, one name (ssh root@host with a key)");
  t.equal(blockLength({ ssh: tally({ naughty: 3, failed: 2 }) }, 1, cfg).ms, 10 * MIN, "one wrong name, one connection (3 lines), two wrong passwords");
  t.match(blockLength({ ssh: tally({ naughty: 1 }) }, 1, cfg).why, /^thin evidence: 1 naughty line, 1 name/);
  t.equal(blockLength({ ssh: tally({ naughty: 4 }) }, 1, cfg).ms, 90 * DAY, "more naughty lines than THIN_NAUGHTY_LINES");
  t.equal(blockLength({ ssh: tally({ naughty: 2 }) }, 2, cfg).ms, 90 * DAY, "two names guessed: a bot's pattern");
  t.equal(blockLength({ ssh: tally({ naughty: 1 }), mua: tally({ naughty: 1 }) }, 1, cfg).ms, 10 * MIN, "lines add up across services");
  t.equal(blockLength({ ssh: tally({ naughty: 2 }), mua: tally({ naughty: 2 }) }, 1, cfg).ms, 90 * DAY);
  t.equal(blockLength({ ssh: tally({ failed: 11 }) }, 0, cfg).ms, 90 * DAY, "more than FAIL_THRESHOLD failures stays strong");
  t.equal(blockLength({ ssh: tally({ naughty: 1, failed: 10 }) }, 1, cfg).ms, 90 * DAY, "naughty plus failures over FAIL_THRESHOLD is strong");
  t.match(blockLength({ ssh: tally({ naughty: 9 }) }, 3, cfg).why, /^strong evidence: 9 naughty lines, 3 names/);
  t.equal(blockLength({ ssh: tally({ naughty: 1 }) }, 1, { ...cfg, BLOCK_THIN_MINUTES: 0 }).ms, 90 * DAY, "BLOCK_THIN_MINUTES=0: thin blocks are as long as any");
  t.equal(blockLength({ ssh: tally({ naughty: 1 }) }, 1, { ...cfg, BLOCK_THIN_MINUTES: 45 }).ms, 45 * MIN, "the length is a setting");
  t.equal(blockLength({ ssh: tally({ naughty: 9 }) }, 3, { ...cfg, EXPIRE_BLOCK_DAYS: 0 }).ms, 0, "EXPIRE_BLOCK_DAYS=0: strong blocks never end");
});

t.test("blockEnd: the file's own end, renewed by touch; old files last EXPIRE_BLOCK_DAYS from mtime", async (t) => {
  const text = "2026-11-29T13:00:00Z block by connect: ssh: x\nuntil 2026-11-29T13:10:00Z (10 minutes; thin evidence: ...)\n";
  const written = Date.parse("2026-11-29T13:00:00Z");
  t.equal(blockEnd(text, written, 90), Date.parse("2026-11-29T13:10:00Z"), "untouched: the until line");
  t.equal(blockEnd(text, written + 60 * MIN, 90), Date.parse("2026-11-29T14:10:00Z"), "touched an hour later: its length again from the touch");
  t.equal(blockEnd(text, written, 0), Date.parse("2026-11-29T13:10:00Z"), "EXPIRE_BLOCK_DAYS=0 does not make a thin block endless");
  const old = "2026-11-29T13:00:00Z block by connect: ssh: x\n";
  t.equal(blockEnd(old, written, 90), written + 90 * DAY, "no until line: today's rule");
  t.equal(blockEnd(old, written, 0), null, "no until line and EXPIRE_BLOCK_DAYS=0: never");
  t.equal(blockEnd("anything an admin typed\n", written, 2), written + 2 * DAY);
  t.equal(blockEnd("2026-11-29T13:00:00Z block by admin: x\nuntil yesterday\n", written, 2), written + 2 * DAY, "an unreadable until: today's rule");
});

t.test("the typo check: edit distance, passwd accounts, never root, never tiny names", async (t) => {
  t.equal(editDistance("alcie", "alice", 1), 1, "a swap is one edit");
  t.equal(editDistance("alic", "alice", 1), 1);
  t.equal(editDistance("alicee", "alice", 1), 1);
  t.equal(editDistance("alixe", "alice", 1), 1);
  t.equal(editDistance("alice", "alice", 1), 0);
  t.equal(editDistance("admin", "alice", 1), 2, "more than max: max + 1");
  t.equal(editDistance("lacie", "alice", 2), 2);
  t.equal(editDistance("x".repeat(30), "alice", 1), 2, "length alone rules it out");
  const passwd = [
    "root:x:0:0:root:/root:/bin/bash",
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
    "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin",
    "alice:x:1000:1000:Alice:/home/alice:/bin/bash",
    "svc:x:1001:1001::/srv:/usr/sbin/nologin",
    "git:x:1002:1002::/home/git:/usr/bin/git-shell",
    "ghost:x:1003:1003::/home/ghost:/bin/false",
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh",
    "broken line",
  ].join("\n");
  t.same(passwdAccounts(passwd), ["alice", "git"], "uid >= 1000, not nobody, a shell that lets one in");
  const known = ["alice", "root", "bob"];
  t.ok(isTypo("alcie", known, 1));
  t.notOk(isTypo("admin", known, 1));
  t.notOk(isTypo("roott", known, 1), "never a typo of root (bots try its variants)");
  t.notOk(isTypo("root", ["rooot"], 1), "root itself is never a typo");
  t.notOk(isTypo("bobb", known, 1), "names under 4 letters are too close to everything");
  t.notOk(isTypo("alcie", known, 0), "TYPO_DISTANCE=0: off");
});

t.test("max-auth for a valid user (an agent with many keys) is a failure; for an invalid user or root it stays naughty", async (t) => {
  // Logged by sshd 9.2 at LogLevel INFO for one connection of an agent with 8 keys:
  const maxAuth = "maximum authentication attempts exceeded for alice from 192.0.2.51 port 33673 ssh2 [preauth]";
  const disc = "Disconnecting authenticating user alice 192.0.2.51 port 33673: Too many authentication failures [preauth]";
  t.equal(classifyLine(maxAuth, "sshd")?.kind, "failed");
  t.equal(classifyLine(`error: ${maxAuth}`, "sshd")?.kind, "failed", "with the error: level prefix (syslog)");
  t.equal(classifyLine(disc, "sshd")?.kind, "probe", "its twin line ends the connection: shown, not counted twice");
  t.equal(classifyLine(maxAuth.replace("for alice", "for invalid user admin"), "sshd")?.kind, "naughty");
  t.equal(classifyLine(maxAuth.replace("for alice", "for root"), "sshd")?.kind, "naughty");
  t.equal(classifyLine(disc.replace("authenticating user alice", "invalid user admin"), "sshd")?.kind, "naughty");
  t.equal(classifyLine(disc.replace("user alice", "user root"), "sshd")?.kind, "naughty");
});

// ---- the binary against real files --------------------------------------------

const IP = "192.0.2.50";
const OTHER = "192.0.2.99";

function setup(t: { teardown(fn: () => void): void }, extra: Record<string, string> = {}) {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  const passwd = join(root, "passwd");
  fs.writeFileSync(log, "");
  fs.writeFileSync(passwd, "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n");
  const env = envFor(root, { SSH_LOG: log, PASSWD_FILE: passwd, ...extra });
  const run = (...args: string[]) => sentry(args, env);
  const connect = (ip: string, n = 1) => {
    for (let i = 0; i < n; i++) {
      const r = run("--connect", `--ip=${ip}`);
      if (r.status !== 0) throw new Error(`connect ${ip} exit ${r.status}: ${r.stderr}`);
    }
  };
  const append = (...lines: string[]) => fs.appendFileSync(log, lines.map((l) => `${l}\n`).join(""));
  const blockText = (ip: string) => fs.readFileSync(join(root, "block", ip), "utf8");
  /** The block of `ip` was made `ms` ago: its file and the next-due stamp move back as the clock would. */
  const age = (ip: string, ms: number) => {
    for (const f of [join(root, "block", ip), join(root, "expire.stamp")]) {
      const st = fs.statSync(f);
      fs.utimesSync(f, (st.mtimeMs - ms) / 1000, (st.mtimeMs - ms) / 1000);
    }
  };
  const deny = () => fs.readFileSync(join(root, "hosts.deny"), "utf8");
  return { root, log, passwd, env, run, connect, append, blockText, age, deny };
}

/** The length written in a block file: until minus since. */
function writtenLength(text: string): number {
  const since = /^(\S+) block by /.exec(text);
  const until = /^until (\S+)/m.exec(text);
  if (!since || !until) throw new Error(`no since/until in ${JSON.stringify(text)}`);
  return Date.parse(until[1]) - Date.parse(since[1]);
}

t.test("a mistyped name close to a local account is a failure: the third connection is not blocked", async (t) => {
  const s = setup(t);
  // sshd 9.2, `ssh alcie@host` with a wrong password, then alice with a wrong password:
  s.append(
    `Invalid user alcie from ${IP} port 40001`,
    `Failed password for invalid user alcie from ${IP} port 40001 ssh2`,
    `Connection closed by invalid user alcie ${IP} port 40001 [preauth]`,
    `Failed password for alice from ${IP} port 40002 ssh2`,
    `Connection closed by authenticating user alice ${IP} port 40002 [preauth]`,
  );
  s.connect(IP, 3);
  t.equal(state(s.root, IP), "none", "not blocked at the connection that would succeed");
  const rep = s.run("--report", `--ip=${IP}`, "--json");
  const ev = JSON.parse(rep.stdout).ip.evidence.ssh;
  t.same([ev.naughty, ev.failed], [0, 2], "the typo's lines count as alice's would: one failure, the rest shown only");

  // The same with a name nowhere near an account: naughty, blocked (thin: one name).
  const bot = "192.0.2.60";
  s.append(`Invalid user admin from ${bot} port 40003`, `Failed password for invalid user admin from ${bot} port 40003 ssh2`, `Failed password for alice from ${bot} port 40004 ssh2`);
  s.connect(bot, 3);
  t.equal(state(s.root, bot), "blocked", "a name no account is near stays naughty");
  t.equal(writtenLength(s.blockText(bot)), 10 * MIN, "one name, two naughty lines: a thin, 10-minute block");

  // Without the passwd file's account, the same typo is naughty again: the check reads PASSWD_FILE.
  const s2 = setup(t, {});
  fs.writeFileSync(s2.passwd, "root:x:0:0:root:/root:/bin/bash\n");
  s2.append(`Invalid user alcie from ${IP} port 40001`, `Failed password for invalid user alcie from ${IP} port 40001 ssh2`);
  s2.connect(IP, 3);
  t.equal(state(s2.root, IP), "blocked", "no account near it: naughty");
});

t.test("a name that logged in from anywhere teaches the typo check, in the same read too", async (t) => {
  const s = setup(t);
  fs.writeFileSync(s.passwd, "");
  s.append(
    `Accepted publickey for carol5 from 198.51.100.7 port 50000 ssh2: ED25519 SHA256:x`,
    `Invalid user carlo5 from ${IP} port 40001`,
    `Failed password for invalid user carlo5 from ${IP} port 40001 ssh2`,
  );
  s.connect(IP, 3);
  t.equal(state(s.root, IP), "none", "carlo5 is a typo of carol5, who logged in from elsewhere");
  t.equal(state(s.root, "198.51.100.7"), "none", "(the other address is only read, not decided: it never connected)");
  const missing = setup(t, { PASSWD_FILE: "/nonexistent/passwd" });
  missing.append(`Invalid user alcie from ${IP} port 40001`);
  const r = missing.run("--connect", `--ip=${IP}`);
  t.equal(r.status, 0);
  missing.connect(IP, 2);
  const r3 = missing.run("--scan");
  t.equal(r3.status, 0);
  t.equal(state(missing.root, IP), "blocked", "an unreadable PASSWD_FILE: no account known, naughty");
});

t.test("an agent offering too many keys twice: failures of a valid user, not blocked", async (t) => {
  const s = setup(t);
  for (const port of [40001, 40002])
    s.append(
      `maximum authentication attempts exceeded for alice from ${IP} port ${port} ssh2 [preauth]`,
      `Disconnecting authenticating user alice ${IP} port ${port}: Too many authentication failures [preauth]`,
    );
  s.connect(IP, 3);
  t.equal(state(s.root, IP), "none", "two connections of an over-eager agent do not block");
});

t.test("a success after a block decided by the logs lifts it: via --scan, and via another address's connect", async (t) => {
  for (const via of ["scan", "connect"] as const) {
    const s = setup(t);
    // `ssh root@host` with a key (PermitRootLogin no, sshd 9.2 at INFO logs only this), then a wrong password:
    s.append(`Connection closed by authenticating user root ${IP} port 40001 [preauth]`, `Failed password for alice from ${IP} port 40002 ssh2`);
    s.connect(IP, 3);
    t.equal(state(s.root, IP), "blocked", `${via}: blocked at the start of the third connection`);
    t.match(s.blockText(IP), /^\S+ block by connect: .*\nuntil \S+ \(10 minutes; thin evidence: 1 naughty line, 1 name tried on them, 1 failed\)\n$/);
    t.equal(s.deny(), `${IP}\n`);
    // ... and that very connection, let through by tcpd, logs in.
    s.append(`Accepted password for alice from ${IP} port 40003 ssh2`);
    if (via === "scan") t.equal(s.run("--scan").status, 0);
    else s.connect(OTHER, 3);
    t.equal(state(s.root, IP), "allowed", `${via}: the success lifted the block into an allow`);
    t.match(fs.readFileSync(join(s.root, "allow", IP), "utf8"), new RegExp(`^\\S+ allow by ${via}: allowed after failures: a successful login was logged after the block \\(\\S+ block by connect: `));
    t.match(sentryLog(s.root), new RegExp(`${IP.replace(/\./g, "\\.")} allow ${via}: allowed after failures`));
    t.equal(s.deny(), "", `${via}: hosts.deny no longer lists it`);
  }
});

t.test("an administrator's --block is not lifted by a success", async (t) => {
  const s = setup(t);
  t.equal(s.run("--block", `--ip=${IP}`).status, 0);
  s.append(`Accepted password for alice from ${IP} port 40003 ssh2`);
  t.equal(s.run("--scan").status, 0);
  t.equal(state(s.root, IP), "blocked", "the admin's block stands");
  s.connect(OTHER, 3);
  t.equal(state(s.root, IP), "blocked", "also after another address's connect read the logs");
  t.notMatch(sentryLog(s.root), /allowed after failures/);
});

t.test("a bot with several names in the same three connections is blocked long", async (t) => {
  const s = setup(t);
  for (const [i, name] of ["admin", "test"].entries())
    s.append(`Invalid user ${name} from ${IP} port ${40000 + i}`, `Failed password for invalid user ${name} from ${IP} port ${40000 + i} ssh2`, `Connection closed by invalid user ${name} ${IP} port ${40000 + i} [preauth]`);
  s.connect(IP, 3);
  t.equal(writtenLength(s.blockText(IP)), 90 * DAY);
  t.match(s.blockText(IP), /\(90 days; strong evidence: 6 naughty lines, 2 names tried on them, 0 failed\)/);
  t.match(sentryLog(s.root), /block connect: ssh: .*; until \S+ \(90 days; strong evidence/);
});

t.test("expiry: at the block's own end, when the earliest-due stamp says so", async (t) => {
  const s = setup(t);
  const thin = IP;
  const strong = "192.0.2.61";
  s.append(`Connection closed by authenticating user root ${thin} port 40001 [preauth]`);
  for (const name of ["admin", "test", "oracle"]) s.append(`Invalid user ${name} from ${strong} port 40002`);
  s.connect(thin, 3);
  s.connect(strong, 3);
  t.equal(state(s.root, thin), "blocked");
  t.equal(state(s.root, strong), "blocked");
  const stamp = join(s.root, "expire.stamp");
  const until = Date.parse(/^until (\S+)/m.exec(s.blockText(thin))?.[1] ?? "");
  t.ok(Math.abs(fs.statSync(stamp).mtimeMs - until) < 2000, "expire.stamp's mtime is the thin block's end (the earliest)", { stamp: fs.statSync(stamp).mtime, until });

  // 11 minutes pass for the block only, not for the stamp: a connect costs one stat and lifts nothing.
  const st = fs.statSync(join(s.root, "block", thin));
  fs.utimesSync(join(s.root, "block", thin), (st.mtimeMs - 11 * MIN) / 1000, (st.mtimeMs - 11 * MIN) / 1000);
  s.connect(OTHER);
  t.equal(state(s.root, thin), "blocked", "not due by the stamp: the connect does not look");
  // --scan always looks.
  const scanned = Date.now();
  const r = s.run("--scan");
  t.equal(state(s.root, thin), "none", "--scan lifts a block whose end has passed");
  t.match(r.stdout, /; 1 expired blocks lifted$/m);
  t.equal(state(s.root, strong), "blocked", "the 90-day block stays");
  t.equal(s.deny(), `${strong}\n`);
  t.match(sentryLog(s.root), new RegExp(`${thin.replace(/\./g, "\\.")} delist expiry: blocked since \\S+, ended `));
  t.notOk(fs.existsSync(join(s.root, "seen", thin)), "expiry forgets the address as before (seen/ deleted)");
  t.ok(fs.statSync(stamp).mtimeMs >= scanned + 60 * MIN - 1000, "no block due soon: the stamp is EXPIRE_CHECK_MINUTES after the --scan", { stamp: fs.statSync(stamp).mtime, scanned: new Date(scanned) });

  // A new thin block, and 11 minutes pass for everything: any connect lifts it.
  s.append(`Connection closed by authenticating user root ${thin} port 40011 [preauth]`);
  s.connect(thin, 3);
  t.equal(state(s.root, thin), "blocked", "blocked again (new evidence)");
  // Its first block ran out, so this one is a repeat offender's: twice as long (REPEAT_FACTOR_PERCENT).
  t.match(s.blockText(thin), /\(20 minutes; thin evidence: .*repeat offender: 1 earlier block ran out/);
  s.age(thin, 21 * MIN);
  s.connect(OTHER);
  t.equal(state(s.root, thin), "none", "the next connect of any address lifts it");
});

t.test("touch block/IP renews a block; old-format files keep EXPIRE_BLOCK_DAYS from their mtime", async (t) => {
  const s = setup(t);
  s.append(`Connection closed by authenticating user root ${IP} port 40001 [preauth]`);
  s.connect(IP, 3);
  s.age(IP, 11 * MIN);
  const now = Date.now() / 1000;
  fs.utimesSync(join(s.root, "block", IP), now, now); // touch block/IP
  t.equal(s.run("--scan").status, 0);
  t.equal(state(s.root, IP), "blocked", "touched: its 10 minutes run again from the touch");

  const old = (ip: string, days: number) => {
    const f = join(s.root, "block", ip);
    fs.writeFileSync(f, "2026-08-01T10:00:00Z block by connect: ssh: 0 success, 1 naughty, 0 failed, 0 probe\n");
    const m = (Date.now() - days * DAY) / 1000;
    fs.utimesSync(f, m, m);
  };
  old("203.0.113.1", 91);
  old("203.0.113.2", 89);
  t.equal(s.run("--scan").status, 0);
  t.equal(state(s.root, "203.0.113.1"), "none", "no until line, 91 days old: lifted");
  t.equal(state(s.root, "203.0.113.2"), "blocked", "89 days old: kept");
  old("203.0.113.3", 1000);
  t.equal(sentry(["--scan"], { ...s.env, EXPIRE_BLOCK_DAYS: "0" }).status, 0);
  t.equal(state(s.root, "203.0.113.3"), "blocked", "EXPIRE_BLOCK_DAYS=0: an old-format block never ends");
});

t.test("a connect lifts at most EXPIRE_PER_CONNECT expired blocks; the next connect carries on, --scan lifts all", async (t) => {
  const s = setup(t, { EXPIRE_PER_CONNECT: "2" });
  const ips = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"];
  fs.mkdirSync(join(s.root, "block"), { recursive: true });
  for (const ip of ips) {
    const f = join(s.root, "block", ip);
    fs.writeFileSync(f, "2026-08-01T10:00:00Z block by connect: x\n");
    const m = (Date.now() - 91 * DAY) / 1000;
    fs.utimesSync(f, m, m);
  }
  const left = () => ips.filter((ip) => state(s.root, ip) === "blocked").length;
  s.connect(OTHER);
  t.equal(left(), 3, "the first connect lifted 2");
  s.connect(OTHER);
  t.equal(left(), 1, "the next connect 2 more (the stamp stayed due)");
  const last = Date.now();
  s.connect(OTHER);
  t.equal(left(), 0, "and the next the last one");
  t.ok(fs.statSync(join(s.root, "expire.stamp")).mtimeMs >= last + 60 * MIN - 1000, "nothing due: the stamp is EXPIRE_CHECK_MINUTES after that connect", { stamp: fs.statSync(join(s.root, "expire.stamp")).mtime, connect: new Date(last) });
  for (const ip of ips) fs.writeFileSync(join(s.root, "block", ip), "2026-08-01T10:00:00Z block by connect: x\n");
  for (const ip of ips) fs.utimesSync(join(s.root, "block", ip), (Date.now() - 91 * DAY) / 1000, (Date.now() - 91 * DAY) / 1000);
  t.match(s.run("--scan").stdout, /; 5 expired blocks lifted$/m, "--scan lifts them all at once");
  const none = setup(t, { EXPIRE_PER_CONNECT: "0" });
  fs.mkdirSync(join(none.root, "block"), { recursive: true });
  fs.writeFileSync(join(none.root, "block", ips[0]), "2026-08-01T10:00:00Z block by connect: x\n");
  fs.utimesSync(join(none.root, "block", ips[0]), (Date.now() - 91 * DAY) / 1000, (Date.now() - 91 * DAY) / 1000);
  none.connect(OTHER);
  t.equal(state(none.root, ips[0]), "blocked", "EXPIRE_PER_CONNECT=0: a connect lifts nothing");
  none.run("--scan");
  t.equal(state(none.root, ips[0]), "none", "--scan does");
});
