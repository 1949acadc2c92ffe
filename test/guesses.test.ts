// test/guesses.test.ts — issue 16 item 5, the decision side: password
// guesses (GUESS_THRESHOLD) and the guesses of one connection
// (CONNECTION_GUESSES, section 7.1.2). The classifier marks guesses and
// connections, a read keeps them per connection in bounded memory, sentry.db
// carries a connection read by two runs, the rules weigh them; the binary
// decides with them. The real-sshd proof is e2e-guesses.test.ts.
import t from "tap";
import fc from "fast-check";
import { join } from "node:path";
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import {
  blockLength, classifyLine, connEnd, connGuess, connMaxOf, connMerge, decide, decisionThreshold, earlyEvidence, newClassifierState, DEFAULTS,
  type ConnTrack, type Tallies,
} from "../sentry.ts";
import { envFor, sentry, state, tempDir } from "./lib/run.ts";

const cfg = { ...DEFAULTS };
const tally = (o: Partial<{ success: number; failed: number; naughty: number; probe: number; guesses: number; connMax: number }>) => ({
  success: 0, failed: 0, naughty: 0, probe: 0, sample: "", ...o,
});
const IP = "203.0.113.9";

t.test("the classifier: a password is a guess of its connection, a key is not; close lines end it", async (t) => {
  const pw = classifyLine(`Failed password for alice from ${IP} port 40100 ssh2`, "sshd");
  t.same([pw?.kind, pw?.guess, pw?.port, pw?.ends], ["failed", true, "40100", undefined], "Failed password: a guess of port 40100");
  const inv = classifyLine(`Failed password for invalid user admin from ${IP} port 40101 ssh2`, "sshd");
  t.same([inv?.kind, inv?.guess, inv?.port], ["naughty", true, "40101"], "an invalid user's password: naughty, and a guess");
  const kbd = classifyLine(`Failed keyboard-interactive/pam for alice from ${IP} port 40102 ssh2`, "sshd");
  t.same([kbd?.guess, kbd?.port], [true, "40102"], "keyboard-interactive (no PAM line before it): a guess");
  const key = classifyLine(`Failed publickey for alice from ${IP} port 40103 ssh2: ED25519 SHA256:abc`, "sshd");
  t.same([key?.kind, key?.guess, key?.port], ["failed", undefined, "40103"], "a failed key: a failure, never a guess (an agent offers keys by itself)");
  const max = classifyLine(`error: maximum authentication attempts exceeded for alice from ${IP} port 40103 ssh2 [preauth]`, "sshd");
  t.equal(max?.guess, undefined, "the agent's exceeded limit: not a guess");
  const pam = classifyLine(`error: PAM: Authentication failure for alice from ${IP}`, "sshd", newClassifierState());
  t.same([pam?.guess, pam?.port], [true, undefined], "PAM's line: a guess, of no known connection");
  const closed = classifyLine(`Connection closed by authenticating user alice ${IP} port 40100 [preauth]`, "sshd");
  t.same([closed?.kind, closed?.port, closed?.ends], ["probe", "40100", true], "the close line ends port 40100");
  const disc = classifyLine(`Disconnecting authenticating user alice ${IP} port 40104: Too many authentication failures [preauth]`, "sshd");
  t.same([disc?.port, disc?.ends], ["40104", true]);
  const old = classifyLine(`Connection closed by ${IP} [preauth]`, "sshd");
  t.same([old?.kind, old?.port], ["probe", undefined], "no port on the line: no connection");
  // The port is read from the one "from A port P" field; client text cannot move it.
  const forged = classifyLine(`Failed password for x from 1.2.3.4 port 1 ssh2 from ${IP} port 40105 ssh2`, "sshd");
  t.same([forged?.ip, forged?.port], [IP, "40105"], "the field sshd wrote, not the one in the user name");
});

/** A read's events, in order: a number is a guess of that port, "-P" the close line of port P. */
function track(events: (number | string)[]): ConnTrack {
  const c: ConnTrack = { segs: [], mid: 0 };
  for (const e of events) typeof e === "number" ? connGuess(c, String(e)) : connEnd(c, e.slice(1));
  return c;
}

t.test("one connection's guesses: counted per port, ended by its close line, carried across reads", async (t) => {
  t.equal(connMaxOf(track([1, 1, 1, 1, 1, 1])), 6, "six guesses on one port");
  t.equal(connMaxOf(track([1, 1, 1, "-1", 2, 2, 2, "-2", 3, 3, 3])), 3, "a person's connections of 3: never more than 3");
  t.equal(connMaxOf(track([1, 1, 1, "-1", 1, 1, 1])), 3, "a port used again after its close line: a new connection");
  t.equal(connMaxOf(track([1, 2, 1, 2, 1, 2, 1, 2])), 1, "two connections interleaved: counted short, never long");
  t.equal(connMaxOf(track([1, 1, "-1", 2, 2, 2, 2, 2, "-2", 3])), 5, "the largest middle connection is kept");
  // A connection read by two runs (a connect came in the middle of it).
  const first = connMerge(track([7, 7]), { port: "", n: 0, max: 0 });
  t.same(first, { port: "7", n: 2, max: 2 }, "open at the end of the first read");
  const second = connMerge(track([7, 7, 7, 7, "-7"]), first);
  t.same(second, { port: "", n: 0, max: 6 }, "the second read continues it: 6 in one connection");
  t.same(connMerge(track([8, 8, 8]), first), { port: "8", n: 3, max: 3 }, "another port: the open one ended unseen");
  t.same(connMerge(track(["-7"]), first), { port: "", n: 0, max: 2 }, "only its close line: closed");
  t.same(connMerge(track(["-3"]), first), first, "another connection's close line: the open one goes on");
  t.same(connMerge(track(["-7", 7]), first), { port: "7", n: 1, max: 2 }, "closed, then a new connection from the same port");
  // Property: however a sequence of events is cut into reads, the maximum is that of one read of all.
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.integer({ min: 1, max: 3 }), fc.constantFrom("-1", "-2", "-3")), { maxLength: 40 }), fc.nat(40), (evs, cut) => {
      const at = Math.min(cut, evs.length);
      const whole = connMerge(track(evs), { port: "", n: 0, max: 0 });
      const split = connMerge(track(evs.slice(at)), connMerge(track(evs.slice(0, at)), { port: "", n: 0, max: 0 }));
      return whole.max === split.max && whole.port === split.port && whole.n === split.n;
    }),
    { numRuns: 2000 },
  );
  t.pass("2000 random event sequences: one read or two agree");
});

t.test("the rules: more than 4 guesses block thin at the 3rd connection; more than 3 in one connection block strong at the 2nd", async (t) => {
  const at = (ts: Tallies, names = 0) => {
    const v = decide(ts, cfg.FAIL_THRESHOLD, cfg);
    return { v, th: decisionThreshold(v, v.action === "block" && earlyEvidence(ts, names, cfg), cfg), len: blockLength(ts, names, cfg) };
  };
  const four = at({ ssh: tally({ failed: 4, guesses: 4, connMax: 1 }) });
  t.equal(four.v.action, "none", "4 guesses: nothing yet");
  const five = at({ ssh: tally({ failed: 5, guesses: 5, connMax: 1 }) });
  t.equal(five.v.action, "block", "5 guesses on a real account: a block");
  t.match(five.v.reason, /^5 password guesses \(more than 4\); ssh: /, "the reason names them and the service");
  t.equal(five.th, 3, "thin evidence: the 3rd connection (a person's success shows on it)");
  t.equal(five.len.ms, 10 * 60_000, "for BLOCK_THIN_MINUTES");
  const person = at({ ssh: tally({ failed: 6, guesses: 6, connMax: 3 }) });
  t.same([person.v.action, person.th, person.len.ms], ["block", 3, 10 * 60_000], "two connections of ssh's 3 prompts: thin, 3rd connection");
  const keys = at({ ssh: tally({ failed: 10 }) });
  t.equal(keys.v.action, "none", "10 failed keys (an agent): no guesses, FAIL_THRESHOLD still decides");
  const bot = at({ ssh: tally({ failed: 7, guesses: 6, connMax: 6 }) });
  t.match(bot.v.reason, /^6 password guesses in one connection \(more than 3/);
  t.same([bot.th, bot.len.ms], [2, 90 * 86_400_000], "a program: strong, from the 2nd connection");
  t.match(bot.len.why, /^strong evidence: .*6 password guesses, at most 6 in one connection/);
  const four1 = at({ ssh: tally({ failed: 4, guesses: 4, connMax: 4 }) });
  t.same([four1.v.action, four1.th], ["block", 2], "4 in one connection is already more than ssh asks");
  t.equal(at({ ssh: tally({ success: 1, failed: 7, guesses: 6, connMax: 6 }) }).v.action, "allow", "a success wins over everything (the office NAT)");
  t.equal(decide({ ssh: tally({ failed: 9, guesses: 9, connMax: 9 }) }, 10, { GUESS_THRESHOLD: 0, CONNECTION_GUESSES: 0 }).action, "none",
    "both 0: the old rule, more than FAIL_THRESHOLD failures");
  t.notOk(earlyEvidence({ ssh: tally({ connMax: 9 }) }, 0, { ...cfg, CONNECTION_GUESSES: 0 }), "CONNECTION_GUESSES=0: never early for it");
  t.equal(at({ ftp: tally({ failed: 8 }) }).v.action, "none", "FTP and mail failures are not ssh guesses: FAIL_THRESHOLD");
});

// The safety of early decisions, with guesses in the tallies: an early
// decision is a block on strong evidence, never where a success was logged.
t.test("property: with guesses, an early decision is still a strong block without a success", async (t) => {
  const arb = fc
    .record({ success: fc.nat(2), failed: fc.nat(14), naughty: fc.nat(8), probe: fc.nat(3), guesses: fc.nat(14), connMax: fc.nat(8) })
    .map((o) => tally({ ...o, guesses: Math.min(o.guesses, o.failed + o.naughty), connMax: Math.min(o.connMax, o.guesses) }));
  fc.assert(
    fc.property(fc.record({ ssh: arb, ftp: arb }, { requiredKeys: [] }), fc.nat(3), (ts: Tallies, names: number) => {
      const v = decide(ts, cfg.FAIL_THRESHOLD, cfg);
      if (decisionThreshold(v, v.action === "block" && earlyEvidence(ts, names, cfg), cfg) >= cfg.CONNECT_THRESHOLD) return true;
      return v.action === "block" && /^strong/.test(blockLength(ts, names, cfg).why) && !Object.values(ts).some((x) => x && x.success > 0);
    }),
    { numRuns: 2000 },
  );
  t.pass("2000 random tallies");
});

const failed = (ip: string, port: number, user = "alice") => `Failed password for ${user} from ${ip} port ${port} ssh2\n`;
const closed = (ip: string, port: number, user = "alice") => `Connection closed by authenticating user ${user} ${ip} port ${port} [preauth]\n`;

t.test("the binary: a bot's connection of 6 is blocked at the 2nd connect, even when two connects read it in halves", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const log = join(dir, "auth.log");
  const env = envFor(root, { SSH_LOG: log });
  const bot = "203.0.113.50";
  // Connection 1's first three guesses are in the log when another address's
  // second connect reads it (its own first connect reads nothing)...
  writeFileSync(log, failed(bot, 40000).repeat(3));
  t.equal(sentry(["--connect", `--ip=${bot}`], env).status, 0);
  const other = "203.0.113.59";
  for (let i = 0; i < 2; i++) sentry(["--connect", `--ip=${other}`], env);
  // ...the other three after it.
  appendFileSync(log, failed(bot, 40000).repeat(3) + closed(bot, 40000));
  const r = sentry(["--connect", `--ip=${bot}`], env);
  t.equal(r.status, 0, r.stderr);
  t.equal(state(root, bot), "blocked", "6 guesses of one connection, read in two halves: blocked at the 2nd connect");
  const j = JSON.parse(sentry(["--report", "--json", `--ip=${bot}`], env).stdout) as { ip: { evidence: { ssh: { guesses: number; connMax: number } } } };
  t.same([j.ip.evidence.ssh.guesses, j.ip.evidence.ssh.connMax], [6, 6], "--report --json shows the guesses and the connection's 6");

  // A person: ssh's 3 prompts, twice, each connection closed: nothing at the 2nd connect, a thin block at the 3rd.
  const person = "203.0.113.51";
  appendFileSync(log, failed(person, 41000).repeat(3) + closed(person, 41000) + failed(person, 41000).repeat(3) + closed(person, 41000));
  for (let i = 0; i < 2; i++) sentry(["--connect", `--ip=${person}`], env);
  t.equal(state(root, person), "none", "3 per connection, the same port used again after its close line: a person's, nothing yet");
  sentry(["--connect", `--ip=${person}`], env);
  t.equal(state(root, person), "blocked", "6 guesses: blocked at the 3rd connect");
  t.match(sentry(["--report", `--ip=${person}`], env).stdout, /10 minutes; thin evidence: 0 naughty lines, 0 names tried on them, 6 failed, 6 password guesses, at most 3 in one connection/);

  // --test-log predicts the same.
  const tl = sentry(["--test-log", log], { ...env, ROOT_DIR: join(dir, "fresh") });
  t.equal(tl.status, 0, tl.stderr);
  t.match(tl.stdout, new RegExp(`${bot.replaceAll(".", "\\.")} +ssh: .* → would block for 90 days\\n`), "--test-log: the bot at once, long");
  t.match(tl.stdout, new RegExp(`${person.replaceAll(".", "\\.")} +ssh: .* → would block for 10 minutes\\n`), "--test-log: the person short (8 events in the log: --scan decides)");
});

t.test("a sentry.db made before these columns gets them, and its tallies count on", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  mkdirSync(root, { mode: 0o755 });
  const log = join(dir, "auth.log");
  const env = envFor(root, { SSH_LOG: log });
  const ip = "203.0.113.60";
  // The tallies table as the previous release made it, with 4 failures of ip already counted.
  const old = new DatabaseSync(join(root, "sentry.db"));
  old.exec(`CREATE TABLE tallies (
    ip TEXT NOT NULL, service TEXT NOT NULL,
    success INTEGER NOT NULL, failed INTEGER NOT NULL, naughty INTEGER NOT NULL, probe INTEGER NOT NULL,
    sample TEXT NOT NULL, sample_rank INTEGER NOT NULL,
    pending INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (ip, service)) WITHOUT ROWID`);
  old.prepare("INSERT INTO tallies (ip, service, success, failed, naughty, probe, sample, sample_rank) VALUES (?, 'ssh', 0, 4, 0, 0, 'x', 1)").run(ip);
  old.close();
  writeFileSync(log, failed(ip, 40000).repeat(5));
  for (let i = 0; i < 2; i++) {
    const r = sentry(["--connect", `--ip=${ip}`], env);
    t.equal(r.status, 0, r.stderr);
  }
  const db = new DatabaseSync(join(root, "sentry.db"));
  const row = db.prepare("SELECT failed, guesses, conn_port, conn_n, conn_max FROM tallies WHERE ip = ?").get(ip);
  db.close();
  t.same({ ...row }, { failed: 9, guesses: 5, conn_port: "40000", conn_n: 5, conn_max: 5 }, "the old count kept, the new columns filled by the new read");
  t.equal(state(root, ip), "blocked", "5 in one connection: blocked at the 2nd connect");
});
