// Issue 15 item 6: a long read says how far it is on stderr when stderr is
// a terminal (script(1) gives the command one), and nothing otherwise (a
// pipe: cron's mail, tcpd's spawn, a script). Logs of 9 MB, past
// PROGRESS_MIN_BYTES (8 MiB), of lines sentry reads and skips quickly.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { SENTRY, requireBinary, tempDir, envFor } from "./lib/run.ts";

requireBinary();

function bigLog(file: string): void {
  const line = "Nov 29 10:00:01 host CRON[4242]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)\n";
  fs.writeFileSync(file, line.repeat(Math.ceil(9e6 / line.length)));
}

/** Runs `sh -c cmd` on a terminal (script -q -c), returns what the terminal showed. */
function onTty(cmd: string, env: Record<string, string>) {
  const r = spawnSync("script", ["-q", "-e", "-c", cmd, "/dev/null"], { env, encoding: "utf8" });
  return { status: r.status, shown: r.stdout };
}

t.test("--scan, first read of a big log: progress on a terminal, none into a pipe", (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  bigLog(log);
  const env = envFor(root, { SSH_LOG: log, FIRST_SCAN_MB: "20" });
  const tty = onTty(`"${SENTRY}" --scan`, env);
  t.equal(tty.status, 0, tty.shown);
  t.match(tty.shown, `\rsentry: reading ${log}: 100% (9 of 9 MB)`, "the last progress line: all of it read");
  t.match(tty.shown, /reading .*: [1-9]\d% \([1-8] of 9 MB\)/, "and lines on the way, over each other");

  // The same first read again, without its cursor.
  for (const f of fs.readdirSync(root)) if (f.startsWith("sentry.db")) fs.rmSync(join(root, f));
  const piped = spawnSync(SENTRY, ["--scan"], { env, encoding: "utf8" });
  t.equal(piped.status, 0, piped.stderr);
  t.notMatch(piped.stderr, /reading|%/, `no progress into a pipe: ${JSON.stringify(piped.stderr)}`);
  t.end();
});

t.test("--test-log of a big log: progress on a terminal when stdout is not that terminal, none into a pipe", (t) => {
  const root = tempDir(t);
  const log = join(root, "cron.log");
  bigLog(log);
  const env = envFor(root);
  const tty = onTty(`"${SENTRY}" --test-log "${log}" > "${log}.out"`, env);
  t.equal(tty.status, 0, tty.shown);
  t.match(tty.shown, `\rsentry: reading ${log}: 100% (9 of 9 MB)`);
  t.match(fs.readFileSync(`${log}.out`, "utf8"), /totals: \d+ lines/, "stdout holds the report alone");

  const piped = spawnSync(SENTRY, ["--test-log", log], { env, encoding: "utf8", maxBuffer: 1 << 30 });
  t.equal(piped.status, 0, piped.stderr);
  t.equal(piped.stderr, "", "nothing on stderr into a pipe");
  t.end();
});

t.test("--report, the first index of a big seen/: progress on a terminal, none into a pipe", (t) => {
  const root = tempDir(t);
  const seen = join(root, "seen");
  for (const d of ["seen", "allow", "block"]) fs.mkdirSync(join(root, d), { recursive: true });
  const at = `${Math.floor(Date.now() / 1000) - 600}\n`;
  // 10,000 addresses of 198.18.0.0/15 (RFC 2544): one progress line per 10,000.
  for (let i = 0; i < 10000; i++) fs.writeFileSync(join(seen, `198.18.${i >> 8}.${i & 255}`), at);
  const log = join(root, "auth.log");
  fs.writeFileSync(log, "");
  const env = envFor(root, { SSH_LOG: log });
  const tty = onTty(`"${SENTRY}" --report > "${root}/report.out"`, env);
  t.equal(tty.status, 0, tty.shown);
  t.match(tty.shown, "\rsentry: building the report index of seen/: 10000 addresses, done");
  t.match(fs.readFileSync(join(root, "report.out"), "utf8"), /10000 unique IPs/, "the report itself on stdout");

  for (const f of fs.readdirSync(root)) if (f.startsWith("sentry.db")) fs.rmSync(join(root, f));
  const piped = spawnSync(SENTRY, ["--report"], { env, encoding: "utf8" });
  t.equal(piped.status, 0, piped.stderr);
  t.match(piped.stdout, /10000 unique IPs/, "the index was built again");
  t.notMatch(piped.stderr, /index of seen/, "no progress into a pipe");
  t.end();
});
