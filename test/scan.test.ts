// Beyond tcpwrappers: `sentry --scan` (a timer, for daemons that never spawn
// sentry), the PAM trigger (pam_exec.so hands the address in PAM_RHOST), and
// --report --verbose naming a firewall backend that failed. Through the
// built binary, with logs each test writes.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { SENTRY, requireBinary, tempDir, envFor, sentry, sentryAsync, parallel, state, sentryLog, decisions, evidence } from "./lib/run.ts";
import type { Ran, TT } from "./lib/run.ts";

requireBinary();

function scan(t: TT, env: Record<string, string>, verbose = true): Ran {
  const r = sentry(verbose ? ["--scan", "-v"] : ["--scan"], env);
  if (r.status !== 0) t.fail(`--scan exited ${r.status}: ${r.stderr}`);
  return r;
}

const mailLine = (ip: string) => `Nov 21 10:00:00 mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=${ip}, lip=192.0.2.1, mpid=4242, TLS, session=<x0Aa1>\n`;
const mailFail = (ip: string) => `Nov 21 10:00:01 mail dovecot: imap-login: Disconnected (auth failed, 1 attempts): user=<bob>, method=PLAIN, rip=${ip}, lip=192.0.2.1, TLS\n`;
const saslFail = (ip: string) => `Nov 21 10:00:02 mail postfix/submission/smtpd[11538]: warning: unknown[${ip}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n`;
const ftpFail = (ip: string, user = "root") => `Thu Sep  8 00:40:00 2016 [pid 15020] [${user}] FAIL LOGIN: Client "${ip}"\n`;
const ftpOk = (ip: string) => `Thu Sep  8 00:41:00 2016 [pid 15021] [alice] OK LOGIN: Client "${ip}"\n`;
const sshFail = (ip: string) => `Nov 21 10:00:03 host sshd[1]: Failed password for alice from ${ip} port 4000 ssh2\n`;

function setup(t: TT) {
  const root = tempDir(t);
  const logs = { ssh: join(root, "auth.log"), mail: join(root, "mail.log"), ftp: join(root, "vsftpd.log") };
  const env = envFor(root, { SSH_LOG: logs.ssh, MAIL_LOG: logs.mail, FTP_LOG: logs.ftp, PROTECT_SMTP: "1", PROTECT_MUA: "1", PROTECT_FTP: "1" });
  return { root, logs, env };
}

t.test("--scan decides from ssh, mail (SMTP and IMAP) and FTP logs once an address shows 3 events", async (t) => {
  const { root, logs, env } = setup(t);
  fs.writeFileSync(
    logs.ssh,
    // blocked: invalid user ×3
    "Invalid user a from 203.0.113.1 port 1\n".repeat(3) +
      // allowed: failures, then a success
      sshFail("198.51.100.1").repeat(2) +
      "Accepted password for u from 198.51.100.1 port 2 ssh2\n" +
      // below the threshold: one invalid user, two failures
      "Invalid user b from 203.0.113.2 port 1\n" +
      sshFail("203.0.113.3").repeat(2) +
      // 3 events but nothing that decides: left alone
      sshFail("203.0.113.4").repeat(3) +
      // 12 failures: more than 10
      sshFail("203.0.113.5").repeat(12),
  );
  fs.writeFileSync(logs.mail, saslFail("203.0.113.10").repeat(3) + mailFail("203.0.113.11").repeat(3) + mailLine("198.51.100.10") + mailFail("198.51.100.10").repeat(2) + mailFail("203.0.113.12"));
  fs.writeFileSync(logs.ftp, ftpFail("203.0.113.20").repeat(3) + ftpOk("198.51.100.20").repeat(3) + ftpFail("203.0.113.21"));
  // Two events in the logs and three connections in seen/ also count.
  fs.appendFileSync(logs.ssh, "Invalid user c from 203.0.113.6 port 1\n".repeat(2));
  for (let i = 0; i < 3; i++) sentry(["--connect", "--ip=203.0.113.6"], { ...env, SSH_LOG: join(root, "none.log"), PROTECT_FTP: "0", PROTECT_MUA: "0", PROTECT_SMTP: "0" });
  t.equal(state(root, "203.0.113.6"), "none", "no log read by those connects");

  const r = scan(t, env);
  const want: Record<string, ReturnType<typeof state>> = {
    "203.0.113.1": "blocked",
    "198.51.100.1": "allowed",
    "203.0.113.2": "none",
    "203.0.113.3": "none",
    "203.0.113.4": "none",
    "203.0.113.5": "blocked",
    "203.0.113.6": "blocked",
    "203.0.113.10": "blocked",
    "203.0.113.11": "blocked",
    "198.51.100.10": "allowed",
    "203.0.113.12": "none",
    "203.0.113.20": "blocked",
    "198.51.100.20": "allowed",
    "203.0.113.21": "none",
  };
  for (const [ip, s] of Object.entries(want)) {
    t.equal(state(root, ip), s, `${ip} ${s}`);
    t.equal(decisions(root, ip).length, s === "none" ? 0 : 1, `${ip}: ${s === "none" ? "no decision" : "one decision"}`);
  }
  t.match(decisions(root, "203.0.113.10")[0], /block scan: smtp: 0 success, 3 naughty/);
  t.match(decisions(root, "203.0.113.11")[0], /block scan: mua: 0 success, 3 naughty/);
  t.match(decisions(root, "203.0.113.20")[0], /block scan: ftp: /);
  t.match(decisions(root, "198.51.100.10")[0], /allow scan: mua: 1 success, 2 naughty/);
  t.match(r.stdout, /^scan: read \d+ bytes \(\d+ lines\) from 3 of 3 logs; weighed 14 addresses: 3 allowed, 6 blocked; 0 expired blocks lifted$/m);
  t.same(evidence(t, env, "203.0.113.3"), { ssh: [0, 0, 2, 0] });

  // A second run with no new lines reads nothing and decides nothing.
  const again = scan(t, env);
  t.match(again.stdout, /^scan: read 0 bytes \(0 lines\) from 3 of 3 logs; weighed 0 addresses: 0 allowed, 0 blocked; 0 expired blocks lifted$/m);
  t.equal(sentry(["--scan"], env).stdout, "", "without -v and with nothing done, --scan is quiet");

  // One more line for a below-threshold address: now it has 3 events.
  fs.appendFileSync(logs.ssh, sshFail("203.0.113.3"));
  fs.appendFileSync(logs.mail, saslFail("203.0.113.12").repeat(2));
  const third = scan(t, env);
  t.match(third.stdout, /weighed 2 addresses: 0 allowed, 1 blocked/);
  t.equal(state(root, "203.0.113.3"), "none", "3 ordinary failures decide nothing");
  t.equal(state(root, "203.0.113.12"), "blocked", "a mail failure now with 3 events blocks");
  t.same(evidence(t, env, "203.0.113.3"), { ssh: [0, 0, 3, 0] }, "counted once across runs");
});

t.test("--scan racing 20 parallel connects: no count lost, each address decided once", async (t) => {
  const { root, logs, env } = setup(t);
  const ips = Array.from({ length: 20 }, (_, i) => `203.0.113.${100 + i}`);
  let ssh = "";
  let mail = "";
  for (const [i, ip] of ips.entries()) {
    ssh += sshFail(ip).repeat((i % 3) + 1) + (i % 4 === 0 ? `Accepted password for u from ${ip} port 9 ssh2\n` : `Invalid user x${i} from ${ip} port 9\n`);
    mail += mailFail(ip).repeat(i % 2);
  }
  fs.writeFileSync(logs.ssh, ssh);
  fs.writeFileSync(logs.mail, mail);
  fs.writeFileSync(logs.ftp, "");
  for (const ip of ips) for (let k = 0; k < 2; k++) sentry(["--connect", `--ip=${ip}`], env);
  const runs = await parallel(22, 22, (k) => (k < 20 ? sentryAsync(["--connect", `--ip=${ips[k]}`], env) : sentryAsync(["--scan"], env)));
  for (const r of runs) t.equal(r.status, 0, r.stderr);
  for (const [i, ip] of ips.entries()) {
    t.equal(state(root, ip), i % 4 === 0 ? "allowed" : "blocked", `${ip} decided`);
    t.equal(decisions(root, ip).length, 1, `${ip}: one decision`);
    const want: Record<string, [number, number, number, number]> = { ssh: i % 4 === 0 ? [1, 0, (i % 3) + 1, 0] : [0, 1, (i % 3) + 1, 0] };
    if (i % 2) want.mua = [0, 1, 0, 0];
    t.same(evidence(t, env, ip), want, `${ip}: tallies exact`);
  }
  t.match(scan(t, env).stdout, /read 0 bytes/, "and nothing left to read");
});

t.test("--scan lifts due expiries", async (t) => {
  const { root, logs, env } = setup(t);
  fs.writeFileSync(logs.ssh, "");
  fs.writeFileSync(logs.mail, "");
  fs.writeFileSync(logs.ftp, "");
  for (const ip of ["203.0.113.50", "203.0.113.51"]) t.equal(sentry(["--block", `--ip=${ip}`], env).status, 0);
  const old = Date.now() / 1000 - 91 * 86400;
  fs.utimesSync(join(root, "block", "203.0.113.50"), old, old);
  t.match(fs.readFileSync(join(root, "hosts.deny"), "utf8"), /203\.0\.113\.50/);
  const r = scan(t, env);
  t.match(r.stdout, /1 expired blocks lifted/);
  t.equal(state(root, "203.0.113.50"), "none", "the 91-day-old block is lifted");
  t.equal(state(root, "203.0.113.51"), "blocked", "the new one stays");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "203.0.113.51\n");
  t.match(sentryLog(root), /203\.0\.113\.50 delist expiry: blocked since /);
  // --scan runs expiry every time, not once an hour.
  fs.utimesSync(join(root, "block", "203.0.113.51"), old, old);
  t.match(scan(t, env).stdout, /1 expired blocks lifted/);
  t.equal(state(root, "203.0.113.51"), "none");
});

t.test("PAM trigger: --connect with PAM_RHOST and no --ip counts that address", async (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  fs.writeFileSync(log, "Invalid user a from 203.0.113.44 port 1\n");
  const env = envFor(root, { SSH_LOG: log, PAM_RHOST: "203.0.113.44" });
  for (let i = 1; i <= 3; i++) {
    const r = sentry(["--connect"], env);
    t.equal(r.status, 0, r.stderr);
    t.equal(r.stdout, `${String(i).padStart(4)} connections from 203.0.113.44\n`);
  }
  t.equal(fs.readFileSync(join(root, "seen", "203.0.113.44"), "utf8").split("\n").length - 1, 3);
  t.equal(state(root, "203.0.113.44"), "blocked");
  // --ip wins over PAM_RHOST; a bad PAM_RHOST is refused like a bad --ip.
  t.equal(sentry(["--connect", "--ip=203.0.113.45"], env).stdout, "   1 connections from 203.0.113.45\n");
  const bad = sentry(["--connect"], { ...env, PAM_RHOST: "../../etc" });
  t.equal(bad.status, 1);
  t.match(bad.stderr, /not a valid IP/);
});

t.test("--report --verbose lists a firewall backend that failed lately", async (t) => {
  const root = tempDir(t);
  const empty = join(root, "empty-bin");
  fs.mkdirSync(empty);
  const env = envFor(root, { ADD_TO_PF: "1", PATH: empty });
  const r = sentry(["--block", "--ip=203.0.113.60"], env);
  t.equal(r.status, 2, "a failed backend exits 2");
  t.match(r.stderr, /pf.*could not add 203\.0\.113\.60/);
  t.equal(state(root, "203.0.113.60"), "blocked", "the decision is still recorded");
  const rep = sentry(["--report", "--verbose"], env);
  t.equal(rep.status, 0);
  t.match(rep.stdout, /firewall backends that failed in the last 7 days:\n {2}\S+Z 203\.0\.113\.60 backend-failed pf add: /);
  t.notMatch(sentry(["--report"], env).stdout, /backend-failed/, "only with --verbose");
});

/** A log of `n` attacking addresses of 198.18.0.0/15 (RFC 2544), 3 invalid users each: n blocks for --scan. */
function backlog(file: string, n: number): string[] {
  const ips: string[] = [];
  const lines: string[] = [];
  for (let i = 1; i <= n; i++) {
    const ip = `198.18.${i >> 8}.${i & 255}`;
    ips.push(ip);
    for (const u of ["admin", "oracle", "test"]) lines.push(`Nov 21 10:00:00 host sshd[${i}]: Invalid user ${u} from ${ip} port ${1000 + i}\n`);
  }
  fs.writeFileSync(file, lines.join(""));
  return ips;
}

/** The addresses hosts.deny lists, sorted. */
const denied = (root: string) => fs.readFileSync(join(root, "hosts.deny"), "utf8").split("\n").filter((l) => l !== "" && !l.startsWith("#")).sort();

t.test("--scan of a backlog past one batch: every block in block/ and in hosts.deny", async (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  const ips = backlog(log, 600); // three batches of 250 (SCAN_BATCH): hosts.deny is rewritten after each
  const env = envFor(root, { SSH_LOG: log });
  const r = scan(t, env, false);
  t.match(r.stdout, /weighed 600 addresses: 0 allowed, 600 blocked/);
  t.same(fs.readdirSync(join(root, "block")).sort(), [...ips].sort(), "block/ holds every one");
  t.same(denied(root), [...ips].sort(), "hosts.deny lists every one, the last batch too");
  t.equal(scan(t, env, true).stdout.match(/weighed (\d+) addresses/)?.[1], "0", "nothing left pending");
});

t.test("--scan killed in the middle of a backlog loses nothing: the next --scan decides the rest and heals hosts.deny", async (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  const ips = backlog(log, 1500);
  const env = envFor(root, { SSH_LOG: log });
  const p = spawn(SENTRY, ["--scan"], { env, stdio: "ignore" });
  const exited = new Promise<number | null>((done) => p.on("close", (code) => done(code)));
  // Killed once it is past its first batch (block/ is its progress).
  let killedAt = -1;
  for (let i = 0; i < 3000 && p.exitCode === null; i++) {
    const n = fs.existsSync(join(root, "block")) ? fs.readdirSync(join(root, "block")).length : 0;
    if (n > 260) {
      p.kill("SIGKILL");
      killedAt = n;
      break;
    }
    await new Promise((d) => setTimeout(d, 10));
  }
  await exited;
  t.ok(killedAt > 260 && killedAt < ips.length, `killed with ${killedAt} of ${ips.length} blocked`);
  // A kill inside writeAtomic leaves its hidden temporary (.IP.tmp-PID), which every reader passes over.
  const blocked = () => fs.readdirSync(join(root, "block")).filter((n) => !n.startsWith("."));
  const torn = blocked().filter((ip) => !/^\S+Z block by scan: ssh: /.test(fs.readFileSync(join(root, "block", ip), "utf8")));
  t.same(torn, [], `every block file the kill left is whole (${blocked().length} of them)`);
  const r = scan(t, env, false);
  t.match(r.stdout, /blocked/, "the next --scan decided the rest");
  t.same(blocked().sort(), [...ips].sort(), "every address blocked, none lost");
  t.same(denied(root), [...ips].sort(), "hosts.deny lists every one");
  for (const ip of ips.slice(0, 20)) t.equal(decisions(root, ip).length, 1, `${ip} decided once`);
});

t.test("--scan removes what killed runs left (.NAME.tmp-PID of a process that is gone, untouched for an hour) and nothing else", async (t) => {
  const root = tempDir(t);
  const log = join(root, "auth.log");
  fs.writeFileSync(log, "");
  const env = envFor(root, { SSH_LOG: log });
  t.equal(sentry(["--block", "--ip=203.0.113.9"], env).status, 0); // makes ROOT_DIR and block/
  fs.mkdirSync(join(root, "allow"), { recursive: true });
  // A pid that is gone: a child that has exited.
  const child = spawn("true");
  await new Promise((r) => child.on("exit", r));
  const dead = child.pid as number;
  const hourAgo = new Date(Date.now() - 2 * 3600_000);
  const make = (rel: string, old: boolean) => {
    const f = join(root, rel);
    fs.writeFileSync(f, "203.0.113.5 block by scan: half writ");
    if (old) fs.utimesSync(f, hourAgo, hourAgo);
    return f;
  };
  const stale = [make(`block/.203.0.113.5.tmp-${dead}`, true), make(`allow/.198.51.100.7.tmp-${dead}`, true), make(`.hosts.deny.tmp-${dead}`, true)];
  const kept = [
    make(`block/.203.0.113.6.tmp-${dead}`, false), // recent: its writer may have just died, or the clock is off
    make(`block/.203.0.113.7.tmp-${process.pid}`, true), // its process is alive (this test)
    make("block/.hidden-by-hand", true), // not sentry's name
  ];
  const r = scan(t, env, false);
  t.match(r.stderr, /removed 3 temporary files left by killed runs/);
  t.same(stale.filter((f) => fs.existsSync(f)), [], "the three stale ones are gone");
  t.same(kept.filter((f) => !fs.existsSync(f)), [], "the recent one, the live one and the admin's file stay");
  t.equal(state(root, "203.0.113.9"), "blocked", "the block itself untouched");
  const again = scan(t, env, false);
  t.notMatch(again.stderr, /removed/, "said once: the next --scan finds nothing to remove");
});
