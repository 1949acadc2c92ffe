// test/early.test.ts — issue 16 item 5: a bot's evidence decides before the
// third connection, a person's evidence and allows wait for it. The rule is pure
// (decisionThreshold, earlyEvidence), shared by --connect, --scan and the
// prediction of --test-log; these tests check the rule, its safety property
// and that the prediction follows it. The real-sshd proof is e2e-early.test.ts.
import t from "tap";
import fc from "fast-check";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { decide, decisionThreshold, earlyEvidence, blockLength, predict, procNetAddress, procNetPeers, thresholdReached, DEFAULTS, type Tallies } from "../sentry.ts";
import { sentry, tempDir } from "./lib/run.ts";

const tally = (o: Partial<{ success: number; failed: number; naughty: number; probe: number }>) => ({
  success: 0, failed: 0, naughty: 0, probe: 0, sample: "", ...o,
});
const cfg = { ...DEFAULTS };
const at = (t: Tallies, names: number) => {
  const v = decide(t, cfg.FAIL_THRESHOLD);
  return decisionThreshold(v, v.action === "block" && earlyEvidence(t, names, cfg), cfg);
};

t.test("the rule: a bot's evidence blocks from the 2nd connection, a person's and allows from the 3rd", async (t) => {
  // One connection of a bot using MaxAuthTries 6 on an invalid name: Invalid user, 6 × Failed … invalid user, maximum … exceeded.
  t.equal(at({ ssh: tally({ naughty: 8 }) }, 1), 2, "8 naughty lines, one name: a bot, 2nd connection");
  t.equal(at({ ssh: tally({ naughty: 2 }) }, 2), 2, "two names: a bot, 2nd connection");
  t.equal(at({ ssh: tally({ failed: 11 }) }, 0), 2, "more failures than FAIL_THRESHOLD: 2nd connection");
  t.equal(at({ ssh: tally({ naughty: 3 }) }, 1), 3, "one wrong name, one password (3 lines): 3rd connection");
  t.equal(at({ ssh: tally({ naughty: 5 }) }, 1), 3, "one wrong name, ssh's 3 passwords (5 lines): a person's connection, 3rd");
  t.equal(at({ ssh: tally({ naughty: 4 }) }, 1), 3, "`ssh root@host` with 3 passwords: strong for blockLength, yet a person writes it: 3rd");
  t.match(blockLength({ ssh: tally({ naughty: 4 }) }, 1, cfg).why, /^strong/, "(blockLength calls those 4 lines strong)");
  t.equal(at({ ssh: tally({ naughty: 1, failed: 2 }) }, 1), 3, "`ssh root@host` and a wrong password: 3rd connection");
  t.equal(at({ ssh: tally({ naughty: 8, success: 1 }) }, 3), 3, "an allow never comes early, whatever else is there");
  t.equal(at({ ssh: tally({ failed: 6 }) }, 0), 3, "nothing to decide: the usual threshold");
  t.equal(decisionThreshold({ action: "block", reason: "" }, true, { CONNECT_THRESHOLD: 3, STRONG_CONNECT_THRESHOLD: 5 }), 3,
    "STRONG_CONNECT_THRESHOLD above CONNECT_THRESHOLD never delays a block");
  t.equal(decisionThreshold({ action: "block", reason: "" }, true, { CONNECT_THRESHOLD: 3, STRONG_CONNECT_THRESHOLD: 1 }), 1, "it is a setting");
});

// The safety of the early rule: it only ever brings forward a block the old
// rule (decide at CONNECT_THRESHOLD) makes on the same evidence, on strong
// evidence (blockLength), never where a success was logged.
t.test("property: an early decision is a block on strong evidence that decide() makes anyway", async (t) => {
  const arbTally = fc.record({ success: fc.nat(3), failed: fc.nat(20), naughty: fc.nat(10), probe: fc.nat(5) }).map((o) => tally(o));
  const arbTallies = fc.record({ ssh: arbTally, ftp: arbTally }, { requiredKeys: [] });
  fc.assert(
    fc.property(arbTallies, fc.nat(4), (ts: Tallies, names: number) => {
      const v = decide(ts, cfg.FAIL_THRESHOLD);
      const th = at(ts, names);
      if (th >= cfg.CONNECT_THRESHOLD) return true;
      return v.action === "block" && /^strong/.test(blockLength(ts, names, cfg).why) && !Object.values(ts).some((x) => x && x.success > 0);
    }),
    { numRuns: 2000 },
  );
  t.pass("2000 random tallies: no early decision but a strong block");
});

t.test("--test-log predicts the early block (the same rule --scan and --connect use)", async (t) => {
  const o = { status: null, allowListed: false, connections: 0, cfg, naughtyNames: 1 } as const;
  // A bot's evidence always shows at least 2 events (2 naughty lines, or 11 failures), so the logs alone decide it.
  t.equal(predict({ ssh: tally({ naughty: 8 }) }, { ...o, connections: 0 }), "would block");
  t.equal(predict({ ssh: tally({ naughty: 2 }) }, { ...o, connections: 0, naughtyNames: 2 }), "would block", "two names, two lines");
  t.equal(predict({ ssh: tally({ naughty: 2 }) }, { ...o, connections: 0, naughtyNames: 1 }), "would block once seen 3 times", "one name, two lines: a person's");
  t.equal(predict({ ssh: tally({ naughty: 1 }) }, { ...o, connections: 1 }), "would block once seen 3 times");
  t.notOk(thresholdReached({ ssh: tally({ naughty: 1 }) }, 2, 3), "thin at two connections: not yet");

  // The binary: a bot's single connection (6 invalid-user guesses) in a log file.
  const dir = tempDir(t);
  const log = join(dir, "auth.log");
  const bot = "203.0.113.77";
  const person = "203.0.113.78";
  writeFileSync(log,
    `Invalid user admin from ${bot} port 40000\n` +
    Array.from({ length: 6 }, () => `Failed password for invalid user admin from ${bot} port 40000 ssh2\n`).join("") +
    `error: maximum authentication attempts exceeded for invalid user admin from ${bot} port 40000 ssh2 [preauth]\n` +
    `Invalid user admni from ${person} port 40001\n`);
  const r = sentry(["--test-log", log], { ROOT_DIR: join(dir, "root"), SSH_LOG: log });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`${bot.replaceAll(".", "\\.")} +ssh: 0 success, 8 naughty, 0 failed, 0 probe → would block for 90 days\\n`),
    "8 naughty lines show ≥ 2 events: --scan blocks the bot at once");
  t.match(r.stdout, new RegExp(`${person.replaceAll(".", "\\.")} +ssh: 0 success, 1 naughty, 0 failed, 0 probe → would block for 10 minutes once seen 3 times`),
    "one wrong name waits for the third connection");
});

// Section 8.0.1 reads the deciding connection's peer from /proc/PID/net/tcp{,6}.
// Rows below are as a real sshd 9.2 in the test namespace showed them.
t.test("/proc/net/tcp{,6} rows: the peer address, canonical", async (t) => {
  t.equal(procNetAddress("320200C0", false), "192.0.2.50");
  t.equal(procNetAddress("B80D0120000000000000000030000000", true), "2001:db8::30");
  t.equal(procNetAddress("0000000000000000FFFF0000320200C0", true), "192.0.2.50", "an IPv4-mapped peer is the IPv4 (tcpd's %a folds it too)");
  t.equal(procNetAddress("320200C", false), null, "a short field is nothing");
  t.equal(procNetAddress("320200CG", false), null, "not hex: nothing");
  const text =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
    "   0: 010200C0:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1837574 1 0000000052893a2d 100 0 0 10 0\n" +
    "   1: 010200C0:08AE 320200C0:9C2D 01 00000000:00000029 02:000AFC7B 00000000     0        0 1836929 2 000000002a2a4fe9 20 4 30 10 -1\n";
  t.same(procNetPeers(text, false), [
    { inode: "1837574", established: false, peer: null },
    { inode: "1836929", established: true, peer: "192.0.2.50" },
  ], "the listener's row: not established, no peer; the connection's: established, its peer");
});
