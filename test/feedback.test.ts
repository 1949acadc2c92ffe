// What sentry says to its operator (issue 14, points 5–8): output into a
// pipe that closes early, manual actions that say what they did, --test-log
// predicting exactly what --scan and --connect would do, the original's words.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { SENTRY, requireBinary, tempDir, envFor, sentry } from "./lib/run.ts";

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
  t.match(fs.readFileSync(join(root, "block", "192.0.2.201"), "utf8"), /block by admin: --block --force\n$/, "the force is on record");
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
