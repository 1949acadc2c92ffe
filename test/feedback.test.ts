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
