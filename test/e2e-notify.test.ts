// issue 10 with a real sshd through real tcpwrappers: six wrong passwords and
// then the right one. Six password guesses are more than GUESS_THRESHOLD (4,
// issue 16), so the third connection's start blocks the address briefly
// (thin evidence); tcpd lets that connection through, the person logs in on
// it, and the timer's --scan reads that success: the block becomes an allow
// flagged "allowed after 6 failures", shown in --report under ATTENTION and
// sent to NOTIFY_COMMAND, which sentry starts detached.

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
  t.ok(hit.loggedIn, "third connection: the right password (tcpd lets the deciding connection through)");
  t.equal(state(GUESSER), "blocked", "the third connection's start blocked it: six guesses, more than GUESS_THRESHOLD");
  t.match(readFileSync(join(rootDir, "block", GUESSER), "utf8"), /\(10 minutes; thin evidence/, "a short block");
  // The timer's --scan reads the success logged after the block, and lifts it.
  const scan = spawnSync(SENTRY, ["--scan"], { encoding: "utf8", env: { PATH: process.env.PATH, ROOT_DIR: rootDir, SSH_LOG: h.sshLog, NOTIFY_COMMAND: join(h.tmp, "notify.sh"), SYSLOG: "0" } });
  t.equal(scan.status, 0, "--scan", { stderr: scan.stderr });
  t.equal(state(GUESSER), "allowed", "the success lifted the block into an allow");
  const again = await h.ssh({ from: GUESSER, user: h.user, password: h.password });
  t.ok(again.loggedIn, "fourth connection: in again");
  const allow = readFileSync(join(rootDir, "allow", GUESSER), "utf8");
  t.match(allow, new RegExp(`^\\S+ allow by scan: allowed after 6 failures \\(users: ${h.user}\\)`), "the allow names --scan, the failures and the user");
  const rep = spawnSync(SENTRY, ["--report"], { encoding: "utf8", env: { PATH: process.env.PATH, ROOT_DIR: rootDir, SSH_LOG: h.sshLog } });
  t.match(rep.stdout, new RegExp(`\\nATTENTION: 1 IPs logged in after failed attempts .*\\n  ${GUESSER.replace(/\./g, "\\.")} +allowed \\S+ by \\w+: allowed after 6 failures`));
  // Two messages: the block (from the connect) and the lift (from --scan).
  let lifted: string[] = [];
  for (let i = 0; i < 100 && lifted.length === 0; i++) {
    lifted = runs().filter((r) => /^SENTRY_EVENT=allowed-after-failures$/m.test(r));
    if (lifted.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(lifted.length, 1, "the lift is notified once");
  t.match(lifted[0], new RegExp(`^SENTRY_IP=${GUESSER.replace(/\./g, "\\.")}$`, "m"));
  t.match(lifted[0], /--stdin--\nsentry on \S+: 1 ALLOWED AFTER FAILURES \(check them\) 192\.0\.2\.40\n/);
});
