// What sentry says to its operator (issue 14, points 5–8): output into a
// pipe that closes early, manual actions that say what they did, --test-log
// predicting exactly what --scan and --connect would do, the original's words.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import fc from "fast-check";
import { SENTRY, requireBinary, tempDir, envFor, sentry } from "./lib/run.ts";
import { compareIps, thresholdReached, classOfReason, explainLine } from "../sentry.ts";

requireBinary();

/** Runs a shell script with $SENTRY and $D (a temporary directory) set; returns sh's own status. */
function sh(script: string, env: Record<string, string>, dir: string) {
  const r = spawnSync("/bin/sh", ["-c", script], { env: { ...env, SENTRY, D: dir }, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

// ---- point 5: pipes -----------------------------------------------------------------

t.test("a reader that went away ends the output quietly; the command keeps its exit code", async (t) => {
  const dir = tempDir(t);
  const env = envFor(join(dir, "no-root"), { HOSTS_ALLOW: join(dir, "hosts.allow") });
  // A FIFO whose only reader has opened and closed it before sentry starts:
  // sentry's first write gets EPIPE, every time, with no race.
  const closedPipe = `mkfifo "$D/f" && { (exec 3<"$D/f") & exec 4>"$D/f"; wait; exec "$SENTRY" "$@" >&4; }`;
  const doctor = sh(`set -- --doctor; ${closedPipe}`, env, dir);
  t.equal(doctor.status, 2, "a CRITICAL --doctor still exits 2 with nobody reading");
  t.equal(doctor.stderr, "", "no stack trace, no message");
  const plain = sentry(["--doctor"], env);
  t.equal(plain.status, 2);
  t.match(plain.stdout, /^SENTRY CRITICAL - /, "the same setup is CRITICAL when read");

  // The everyday form: `sentry --test-log FILE | head -2`, with far more output than a pipe holds.
  fs.writeFileSync(join(dir, "auth.log"), Array.from({ length: 20000 }, (_, i) => `Invalid user a from 203.0.113.9 port ${i + 1}\n`).join(""));
  const head = sh(`{ "$SENTRY" --test-log "$D/auth.log" 2>"$D/err"; echo $? >"$D/status"; } | head -2`, envFor(dir), dir);
  t.equal(head.stdout.split("\n").length, 3, "head shows two lines");
  t.equal(fs.readFileSync(join(dir, "status"), "utf8"), "0\n", "--test-log | head exits 0");
  t.equal(fs.readFileSync(join(dir, "err"), "utf8"), "", "and says nothing on stderr");

  const disk = sh(`"$SENTRY" --report >/dev/full`, envFor(dir), dir);
  t.equal(disk.status, 2, "a write that fails for another reason (a full disk) is exit 2");
  t.match(disk.stderr, /^sentry: cannot write to stdout: ENOSPC/m);
});

// ---- point 6: manual actions ---------------------------------------------------------

t.test("--block, --allow, --delist say what they did; the record line shows the state after", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  let r = sentry(["--ip=192.0.2.200", "--block"], env);
  t.equal(r.status, 0);
  t.equal(r.stdout, "   0 connections from 192.0.2.200 and it is blocked\nblocked 192.0.2.200 (was: not decided)\n");
  r = sentry(["--ip=192.0.2.200", "--delist"], env);
  t.match(r.stdout, /^   0 connections from 192\.0\.2\.200\ndelisted 192\.0\.2\.200 \(was: blocked since \d{4}-\d\d-\d\dT[\d:]+Z by admin\)\n$/);
  r = sentry(["--ip=192.0.2.200", "--delist"], env);
  t.equal(r.stdout, "   0 connections from 192.0.2.200\ndelisted 192.0.2.200 (was: not decided)\n", "delisting nothing says so");
  sentry(["-c", "--ip=2001:db8::200"], env);
  r = sentry(["--ip=2001:db8::200", "--allow"], env);
  t.equal(r.stdout, "   1 connections from 2001:db8::200 and it is allowed\nallowed 2001:db8::200 (was: not decided)\n");
  r = sentry(["--ip=2001:db8::200", "--block"], env);
  t.match(r.stdout, /^   1 connections from 2001:db8::200 and it is blocked\nblocked 2001:db8::200 \(was: allowed since \S+Z by admin\)\n$/);
});

t.test("--block of an address the logs show logging in refuses without --force and names the logins", async (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  fs.writeFileSync(
    log,
    "Nov 29 10:00:00 host sshd[1]: Accepted publickey for admin from 192.0.2.201 port 50000 ssh2: ED25519 SHA256:abc\n" +
      "Nov 29 10:01:00 host sshd[2]: Accepted password for admin from 192.0.2.201 port 50001 ssh2\n" +
      "Nov 29 10:02:00 host sshd[3]: Failed password for admin from 192.0.2.201 port 50002 ssh2\n",
  );
  const env = envFor(root, { SSH_LOG: log });
  for (let i = 0; i < 3; i++) sentry(["-c", "--ip=192.0.2.201"], env);
  t.ok(fs.existsSync(join(root, "allow", "192.0.2.201")), "precondition: its logins allowed it");
  let r = sentry(["--block", "--ip=192.0.2.201"], env);
  t.equal(r.status, 1, "refused: exit 1");
  t.equal(r.stdout, "", "nothing claimed");
  t.match(r.stderr, /not blocking 192\.0\.2\.201: the logs show 2 successful logins from it \(ssh: 2\), e\.g\. "[^"]*Accepted [^"]* for admin from 192\.0\.2\.201 port 5000[01] ssh2[^"]*"; .*--force/);
  t.ok(fs.existsSync(join(root, "allow", "192.0.2.201")), "still allowed");
  t.notOk(fs.existsSync(join(root, "block", "192.0.2.201")), "not blocked");
  r = sentry(["--block", "--force", "--ip=192.0.2.201"], env);
  t.equal(r.status, 0);
  t.match(r.stdout, /^   3 connections from 192\.0\.2\.201 and it is blocked\nblocked 192\.0\.2\.201 \(was: allowed since \S+Z by connect\)\n$/);
  t.match(fs.readFileSync(join(root, "block", "192.0.2.201"), "utf8"), /block by admin: --block --force by \S+\nuntil \S+ \(90 days; EXPIRE_BLOCK_DAYS\)\n$/, "the force is on record, with its end");
  t.equal(sentry(["--allow", "--force", "--ip=192.0.2.201"], env).status, 1, "--force goes with --block or --update only");
});

t.test("an unknown option is one line and a pointer to --help, exit 1", async (t) => {
  const root = tempDir(t);
  for (const bad of ["--frobnicate", "-x", "--verbose=yes"]) {
    const r = sentry(["--report", bad], envFor(root));
    t.equal(r.status, 1);
    t.equal(r.stderr, `sentry: Unknown option: ${bad}; see sentry --help\n`);
    t.equal(r.stdout, "");
  }
});

// ---- point 8: the original's words ------------------------------------------------------

t.test("--help opens with the original's NAME line and has an OPTIONS section; --report its summary header", async (t) => {
  const root = tempDir(t);
  const help = sentry(["--help"], envFor(root));
  t.equal(help.status, 0);
  const lines = help.stdout.split("\n");
  t.equal(lines[0], "NAME");
  t.equal(lines[1], "    sentry - safe and effective protection against bruteforce attacks");
  t.match(lines[2], /^ {4}version \d+\.\d+\.\d+$/);
  const options = help.stdout.slice(help.stdout.indexOf("\nOPTIONS\n"));
  t.ok(help.stdout.includes("\nOPTIONS\n"), "an OPTIONS section");
  for (const o of ["--verbose", "--json", "--force", "--write", "--check", "--missed"])
    t.match(options.slice(0, options.indexOf("\n\n", 9)), new RegExp(`^ {4}${o}\\b`, "m"), `OPTIONS lists ${o}`);
  sentry(["-c", "--ip=192.0.2.1"], envFor(root));
  const r = sentry(["--report"], envFor(root));
  t.equal(r.stdout, "   -------- summary ---------\n   1 unique IPs have connected 1 times\n   0 IPs are allowed\n   0 IPs are blocked\n");
});

// ---- point 7: --test-log predicts what --scan and --connect do ------------------------

const L = (pid: number, prog: string, msg: string) => `Nov 29 10:00:${String(pid % 60).padStart(2, "0")} host ${prog}[${pid}]: ${msg}\n`;
const invalid = (ip: string, i: number) => L(i, "sshd", `Invalid user admin${i} from ${ip} port ${40000 + i}`);
const sasl = (ip: string, i: number) => L(i, "postfix/smtpd", `warning: unknown[${ip}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6`);

/** The per-address line of --test-log's table for `ip`. */
const verdict = (out: string, ip: string) => out.split("\n").find((l) => l.startsWith(`${ip} `) && l.includes(" → ")) ?? "";

t.test("--test-log says what --scan then does: services that are off, the threshold, seen/, block/", async (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  fs.writeFileSync(
    log,
    [sasl("203.0.113.30", 1), sasl("203.0.113.30", 2), sasl("203.0.113.30", 3), sasl("203.0.113.30", 4)].join("") +
      invalid("203.0.113.31", 5) + // one line: below the threshold
      invalid("203.0.113.32", 6) + invalid("203.0.113.32", 7) + invalid("203.0.113.32", 8) +
      invalid("203.0.113.33", 9) + // one line, but seen/ already holds 3 connections
      invalid("203.0.113.34", 10) + invalid("203.0.113.34", 11) + invalid("203.0.113.34", 12), // already blocked by hand
  );
  const off = envFor(root, { SSH_LOG: log, MAIL_LOG: log, PROTECT_SMTP: "0" });
  for (let i = 0; i < 3; i++) sentry(["-c", "--ip=203.0.113.33"], envFor(root)); // no readable log: counted, not decided
  sentry(["--block", "--ip=203.0.113.34"], off);

  const r = sentry(["--test-log", log], off);
  t.equal(r.status, 0, r.stderr);
  const postfixLines = r.stdout.split("\n").filter((l) => /^ +[1-4]  /.test(l));
  t.equal(postfixLines.length, 4);
  for (const l of postfixLines) t.match(l, /^ +\d  off +smtp 203\.0\.113\.30 +ignored: PROTECT_SMTP=0 \(/, "a line of a service that is off says so");
  t.notMatch(r.stdout, /^203\.0\.113\.30 /m, "and its address is not predicted at all");
  t.notMatch(r.stdout, /would block[^\n]*PROTECT_SMTP|203\.0\.113\.30[^\n]*would block/);
  t.match(verdict(r.stdout, "203.0.113.31"), /→ would block once seen 3 times$/);
  t.match(verdict(r.stdout, "203.0.113.32"), /→ would block$/);
  t.match(verdict(r.stdout, "203.0.113.33"), /→ would block$/, "seen/ holds 3 connections: decided now");
  t.match(verdict(r.stdout, "203.0.113.34"), /→ already blocked \(block\/\): nothing to do$/);
  t.notMatch(r.stdout, /note: .* is not a log sentry reads/, "the file is the configured log");

  const scan = sentry(["--scan"], off);
  t.equal(scan.status, 0, scan.stderr);
  const blocked = fs.readdirSync(join(root, "block")).sort();
  t.same(blocked, ["203.0.113.32", "203.0.113.33", "203.0.113.34"], "--scan blocks exactly the addresses --test-log said it would");

  // The same file with PROTECT_SMTP=1 (a fresh ROOT_DIR: --scan never reads a line twice): the mail lines count, and --scan agrees again.
  const on = { ...off, PROTECT_SMTP: "1", ROOT_DIR: join(root, "second") };
  const r2 = sentry(["--test-log", log], on);
  t.match(r2.stdout, /^ +1  naughty +smtp 203\.0\.113\.30 /m);
  t.match(verdict(r2.stdout, "203.0.113.30"), /→ would block$/);
  sentry(["--scan"], on);
  t.ok(fs.existsSync(join(root, "second", "block", "203.0.113.30")), "--scan blocks it too");
});

t.test("--test-log: numeric order, aligned IPv6, fail2ban-style totals per class and per daemon, --missed", async (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  const lines = [
    invalid("10.0.0.10", 1),
    invalid("2001:db8:aaaa:bbbb:cccc:dddd:eeee:1", 2),
    invalid("9.9.9.9", 3),
    invalid("10.0.0.9", 4),
    L(5, "sshd", "Accepted password for bob from 10.0.0.9 port 50000 ssh2"),
    L(6, "sshd", "Server listening on 0.0.0.0 port 22."),
    L(7, "CRON", "(root) CMD (true)"),
    L(8, "sshd", "Invalid user bob from"),
    invalid("2001:db8::2", 9),
    L(10, "postfix/smtpd", "warning: unknown[198.51.100.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"),
  ];
  fs.writeFileSync(log, lines.join(""));
  const env = envFor(root, { SSH_LOG: log });
  const r = sentry(["--test-log", log], env);
  t.equal(r.status, 0, r.stderr);
  const table = r.stdout.split("\n").filter((l) => l.includes(" → "));
  t.same(table.map((l) => l.split(" ")[0]), ["9.9.9.9", "10.0.0.9", "10.0.0.10", "2001:db8::2", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1"], "IPv4 before IPv6, each by value");
  t.same(new Set(table.map((l) => l.indexOf(" ssh: "))).size, 1, "the table's columns line up");
  const matched = r.stdout.split("\n").filter((l) => /^ +\d+  (naughty|success) /.test(l));
  t.equal(matched.length, 6);
  t.same(new Set(matched.map((l) => l.indexOf("sshd: "))).size, 1, "the per-line reason column lines up for IPv4 and IPv6");
  t.match(
    r.stdout,
    /^totals: 10 lines: 6 matched \(1 success, 0 failed, 5 naughty, 0 probe\), 1 off \(service not protected, or read from another log\), 1 ignored \(known daemon, not about a login\), 1 missed \(known daemon, not understood: --missed lists them\), 1 other \(not a watched program\)$/m,
  );
  t.match(r.stdout, /^ {2}postfix\/smtpd +1 lines: 1 off$/m);
  t.match(r.stdout, /^ {2}sshd +8 lines: 6 matched \(1 success, 5 naughty\), 1 ignored, 1 missed$/m);
  t.match(r.stdout, /^ +8  missed +sshd 'Invalid user' line/m);
  t.match(r.stdout, /^ +7  other +not a watched program \(CRON\)$/m);

  const m = sentry(["--test-log", log, "--missed"], env);
  t.equal(m.status, 0);
  t.match(m.stdout, /^ +8  missed +sshd 'Invalid user' line[^\n]*\n$/, "--missed: the missed line alone");
  t.match(m.stderr, /^totals: 10 lines: .* 1 missed /m, "its totals on stderr");
  t.equal(sentry(["--report", "--missed"], env).status, 1, "--missed goes with --test-log");
});

t.test("the pure parts: numeric address order, the shared threshold rule, the class of a reason", async (t) => {
  // Client addresses only: 0/8 and multicast (224/4) are no clients (parseIp refuses them).
  const v4 = fc.tuple(fc.integer({ min: 1, max: 223 }), fc.nat(255), fc.nat(255), fc.nat(255));
  const value = (b: number[]) => ((b[0] * 256 + b[1]) * 256 + b[2]) * 256 + b[3];
  fc.assert(
    fc.property(v4.filter((b) => b[0] > 0), v4.filter((b) => b[0] > 0), (a, b) => {
      const c = compareIps(a.join("."), b.join("."));
      return Math.sign(c) === Math.sign(value(a) - value(b));
    }),
  );
  t.same(["2001:db8::10", "10.0.0.1", "2001:db8::9", "9.0.0.1", "::2"].sort(compareIps), ["9.0.0.1", "10.0.0.1", "::2", "2001:db8::9", "2001:db8::10"]);
  const one = { ssh: { success: 0, failed: 0, naughty: 1, probe: 0, sample: "" } };
  t.equal(thresholdReached(one, 0, 3), false, "one event, never connected: not yet");
  t.equal(thresholdReached(one, 3, 3), true, "seen/ holds 3 connections");
  t.equal(thresholdReached({ ssh: { ...one.ssh, probe: 2 } }, 0, 3), true, "3 events of any kind");
  const why = (line: string) => classOfReason(explainLine(line, "sshd").why);
  t.equal(why("Nov 29 10:00:00 host sshd[1]: Server listening on 0.0.0.0 port 22."), "ignored");
  t.equal(why("Nov 29 10:00:00 host CRON[1]: (root) CMD (true)"), "other");
  t.equal(why("Nov 29 10:00:00 host sshd[1]: Invalid user bob from"), "missed");
  t.equal(why("Nov 29 10:00:00 host sshd[1]: Invalid user bob from 999.1.1.1 port 22"), "missed", "an address that is not one");
});
