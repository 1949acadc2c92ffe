// issue 10 with a real sshd through real tcpwrappers: six wrong passwords and
// then the right one. The seed rule allows the address (a success allows),
// and the allow is flagged "allowed after 6 failures (users: …)", shown in
// --report under ATTENTION, and sent to NOTIFY_COMMAND, which tcpd's spawned
// sentry starts detached.

import t from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DAEMON, checkPrerequisites, startHarness } from "./lib/sshd.ts";
import type { Harness } from "./lib/sshd.ts";

t.setTimeout(180_000);

const SENTRY = join(resolve(import.meta.dirname, ".."), "dist", "sentry");
const GUESSER = "192.0.2.40";
const WRONG = "wrong-password-e2e";

let h: Harness;
let rootDir = "";
let outDir = "";

t.before(async () => {
  checkPrerequisites(SENTRY);
  h = await startHarness({ addresses: [GUESSER], sshdConfig: { LogLevel: "INFO" } });
  rootDir = join(h.tmp, "root");
  outDir = join(h.tmp, "notified");
  mkdirSync(rootDir, { mode: 0o755 });
  mkdirSync(outDir);
  const notify = join(h.tmp, "notify.sh");
  writeFileSync(notify, `#!/bin/sh\nf=${outDir}/run.$$\n{ env | grep '^SENTRY_' | sort; echo '--stdin--'; cat; } > $f.tmp\nmv $f.tmp $f\n`, { mode: 0o755 });
  writeFileSync(h.hostsAllow,
    `${DAEMON} : ${rootDir}/hosts.deny : deny\n` +
    `${DAEMON} : ALL : spawn ROOT_DIR=${rootDir} SSH_LOG=${h.sshLog} NOTIFY_COMMAND=${notify} SYSLOG=0 ${SENTRY} --connect --ip=%a 2>>${join(h.tmp, "sentry.stderr")} : allow\n`);
});

t.teardown(() => h?.cleanup());

const state = (ip: string) => (existsSync(join(rootDir, "allow", ip)) ? "allowed" : existsSync(join(rootDir, "block", ip)) ? "blocked" : "none");
const runs = () => readdirSync(outDir).filter((f) => /^run\.\d+$/.test(f)).map((f) => readFileSync(join(outDir, f), "utf8"));

t.test("failures, then the right password: allowed, flagged, in the report, notified", async (t) => {
  // Two connections of three wrong passwords each: six failures, not yet more than FAIL_THRESHOLD.
  for (let i = 0; i < 2; i++) {
    const r = await h.ssh({ from: GUESSER, user: h.user, password: WRONG, prompts: 3 });
    t.notOk(r.loggedIn, `connection ${i + 1}: three wrong passwords`);
  }
  const hit = await h.ssh({ from: GUESSER, user: h.user, password: h.password });
  t.ok(hit.loggedIn, "third connection: the right password");
  t.equal(state(GUESSER), "none", "nothing decided at the third connection's start (six failures, no success yet)");
  const again = await h.ssh({ from: GUESSER, user: h.user, password: h.password });
  t.ok(again.loggedIn, "fourth connection: in again");
  t.equal(state(GUESSER), "allowed", "the success allows: the seed rule stands");
  const allow = readFileSync(join(rootDir, "allow", GUESSER), "utf8");
  t.match(allow, new RegExp(`^\\S+ allow by connect: allowed after 6 failures \\(users: ${h.user}\\): ssh: 1 success, 0 naughty, 6 failed`));
  const rep = spawnSync(SENTRY, ["--report"], { encoding: "utf8", env: { PATH: process.env.PATH, ROOT_DIR: rootDir, SSH_LOG: h.sshLog } });
  t.match(rep.stdout, new RegExp(`\\nATTENTION: 1 IPs logged in after failed attempts .*\\n  ${GUESSER.replace(/\./g, "\\.")} +allowed \\S+ by connect: allowed after 6 failures`));
  let got: string[] = [];
  for (let i = 0; i < 100 && got.length === 0; i++) {
    got = runs();
    if (got.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(got.length, 1, "notified once");
  t.match(got[0], /^SENTRY_EVENT=allowed-after-failures$/m);
  t.match(got[0], new RegExp(`^SENTRY_IP=${GUESSER.replace(/\./g, "\\.")}$`, "m"));
  t.match(got[0], /--stdin--\nsentry on \S+: 1 ALLOWED AFTER FAILURES \(check them\) 192\.0\.2\.40\n/);
});
