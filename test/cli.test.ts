// The built binary, as an administrator and tcpd use it: every command line
// form, every exit code, bad input, parallel writers, broken ROOT_DIRs.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { SENTRY, requireBinary, tempDir, envFor, sentry, sentryAsync, parallel } from "./lib/run.ts";

requireBinary();

t.test("--help, --version, no arguments, unknown options", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  const help = sentry(["--help"], env);
  t.equal(help.status, 0);
  for (const h of ["NAME", "SYNOPSIS", "DESCRIPTION", "ACTIONS", "CONNECT", "FILES", "CONFIGURATION", "EXAMPLES"])
    t.match(help.stdout, new RegExp(`^${h}$`, "m"), `--help has ${h}`);
  t.equal(sentry(["-h"], env).stdout, help.stdout, "-h is --help");
  const v = sentry(["--version"], env);
  t.equal(v.status, 0);
  t.match(v.stdout, /^sentry \d+\.\d+\.\d+\n$/);
  const none = sentry([], env);
  t.equal(none.status, 1, "no action is a usage error");
  t.match(none.stderr, /SYNOPSIS/);
  const bad = sentry(["--frobnicate"], env);
  t.equal(bad.status, 1);
  t.equal(bad.stderr, "sentry: Unknown option: --frobnicate; see sentry --help\n", "one line, not the manual");
  t.equal(bad.stdout, "");
  t.same(fs.readdirSync(root), [], "nothing written for a usage error");
});

t.test("connect counts, prints the record line, decides nothing without evidence", async (t) => {
  const root = join(tempDir(t), "root");
  const env = envFor(root);
  for (let i = 1; i <= 4; i++) {
    const r = sentry(["--connect", "--ip=192.0.2.10"], env);
    t.equal(r.status, 0);
    t.equal(r.stdout, `${String(i).padStart(4)} connections from 192.0.2.10\n`);
  }
  t.equal(fs.readFileSync(join(root, "seen", "192.0.2.10"), "utf8").split("\n").filter(Boolean).length, 4);
  t.match(fs.readFileSync(join(root, "seen", "192.0.2.10"), "utf8"), /^(\d{10}\n){4}$/, "one epoch line per connection");
  t.equal((fs.statSync(root).mode & 0o777).toString(8), "750", "ROOT_DIR is 0750");
  const r = sentry(["-c", "--ip", "::ffff:192.0.2.10"], env);
  t.equal(r.stdout, "   5 connections from 192.0.2.10\n", "the mapped form is the same client");
  t.match(r.stderr, /no log could be read/, "a missing log is said, and nothing is decided");
  t.notOk(fs.existsSync(join(root, "block", "192.0.2.10")));
  t.notOk(fs.existsSync(join(root, "allow", "192.0.2.10")));
});

t.test("allow, block, delist and their old names", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  let r = sentry(["--ip=203.0.113.5", "--blacklist"], env);
  t.equal(r.status, 0);
  t.equal(r.stdout, "   0 connections from 203.0.113.5 and it is blocked\nblocked 203.0.113.5 (was: not decided)\n");
  t.ok(fs.existsSync(join(root, "block", "203.0.113.5")));
  t.match(fs.readFileSync(join(root, "block", "203.0.113.5"), "utf8"), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ block by admin \(uid \d+\): --block\nuntil \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(90 days; EXPIRE_BLOCK_DAYS\)\n$/);
  r = sentry(["--block", "--ip", "2001:DB8::5"], env);
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "203.0.113.5\n[2001:db8::5]\n");
  r = sentry(["--ip=203.0.113.5"], env);
  t.match(r.stdout, /^   0 connections from 203\.0\.113\.5 and it is blocked\n/, "an address alone shows it");
  r = sentry(["--whitelist", "--ip=203.0.113.5"], env);
  t.match(r.stdout, /^   0 connections from 203\.0\.113\.5 and it is allowed\nallowed 203\.0\.113\.5 \(was: blocked since \S+Z by admin\)\n$/, "the record line shows the state after, then what changed");
  t.notOk(fs.existsSync(join(root, "block", "203.0.113.5")), "allow lifts the block");
  t.ok(fs.existsSync(join(root, "allow", "203.0.113.5")));
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "[2001:db8::5]\n");
  r = sentry(["--allow", "--ip=2001:db8::5"], env);
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "", "an empty hosts.deny, never a stray word");
  r = sentry(["--block", "--ip=203.0.113.5"], env);
  t.notOk(fs.existsSync(join(root, "allow", "203.0.113.5")), "block lifts the allow");
  sentry(["-c", "--ip=203.0.113.5"], env);
  r = sentry(["--delist", "--ip=203.0.113.5"], env);
  t.equal(r.status, 0);
  t.match(r.stdout, /^   0 connections from 203\.0\.113\.5\ndelisted 203\.0\.113\.5 \(was: blocked since \S+Z by admin\)\n$/, "delist says it forgot a block");
  t.same(["seen", "allow", "block"].map((d) => fs.existsSync(join(root, d, "203.0.113.5"))), [false, false, false], "delist forgets it");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "");
  const log = fs.readFileSync(join(root, "sentry.log"), "utf8").trim().split("\n");
  t.equal(log.length, 6, "one sentry.log line per decision");
  t.match(log[5], /^\S+Z 203\.0\.113\.5 delist admin \([^)]+\): --delist$/);
});

t.test("loopback and ALLOW_IPS are never blocked, even by hand", async (t) => {
  const root = tempDir(t);
  const env = envFor(root, { ALLOW_IPS: "198.51.100.0/24,2001:db8:aa::/48" });
  for (const ip of ["127.0.0.1", "127.9.9.9", "::1", "198.51.100.77", "2001:db8:aa::1", "::ffff:127.0.0.1"]) {
    const r = sentry(["--block", `--ip=${ip}`], env);
    t.equal(r.status, 1, `${ip} refused`);
    t.match(r.stderr, /is in ALLOW_IPS or loopback and is never blocked/);
  }
  t.notOk(fs.existsSync(join(root, "block")) && fs.readdirSync(join(root, "block")).length, "nothing in block/");
  const r = sentry(["--connect", "--ip=198.51.100.77"], env);
  t.match(r.stdout, /and it is allowed/, "an ALLOW_IPS address connects as allowed");
});

t.test("bad addresses: a message, exit 1, and nothing written anywhere", async (t) => {
  const root = tempDir(t);
  const cwd = tempDir(t);
  const env = envFor(root);
  const bad = ["", " ", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "../../etc/passwd", "1.2.3.4;touch pwned",
    "$(touch pwned)", "1.2.3.4 ", "1::2::3", "..", "seen", "ALL", "1.2.3.4/../../x"];
  for (const ip of bad) {
    for (const action of ["--connect", "--block", "--allow", "--delist"]) {
      const r = sentry([action, `--ip=${ip}`], env, { cwd });
      t.equal(r.status, 1, `${action} ${JSON.stringify(ip)}: exit 1`);
      t.match(r.stderr, /not a valid IP address/);
    }
  }
  for (const action of ["--connect", "--block", "--allow", "--delist"]) {
    const r = sentry([action], env, { cwd });
    t.equal(r.status, 1, `${action} without --ip`);
    t.match(r.stderr, /needs an address/);
  }
  t.same(fs.readdirSync(root), [], "ROOT_DIR untouched");
  t.same(fs.readdirSync(cwd), [], "no file in the working directory");
  t.notOk(fs.existsSync("/etc/passwd.sentry") || fs.existsSync("pwned"), "nothing named after the input");
});

t.test("bad configuration names the key; exit 1", async (t) => {
  const root = tempDir(t);
  let r = sentry(["-c", "--ip=192.0.2.1"], envFor(root, { EXPIRE_BLOCK_DAYS: "ninety" }));
  t.equal(r.status, 1);
  t.match(r.stderr, /EXPIRE_BLOCK_DAYS="ninety" is not valid/);
  fs.writeFileSync(join(root, "sentry.conf"), "ADD_TO_NFTABLE=1\n");
  r = sentry(["-r"], envFor(root));
  t.equal(r.status, 1);
  t.match(r.stderr, /sentry\.conf line 1: unknown setting ADD_TO_NFTABLE/);
  t.notOk(fs.existsSync(join(root, "seen")), "nothing written");
});

t.test("report: summary, verbose, one address, JSON", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  for (let i = 0; i < 3; i++) sentry(["-c", "--ip=192.0.2.1"], env);
  sentry(["-c", "--ip=192.0.2.2"], env);
  sentry(["--allow", "--ip=192.0.2.2"], env);
  sentry(["--block", "--ip=203.0.113.9"], env);
  let r = sentry(["--report"], env);
  t.equal(r.status, 0);
  t.equal(r.stdout, "   -------- summary ---------\n   2 unique IPs have connected 4 times\n   1 IPs are allowed\n   1 IPs are blocked\n");
  r = sentry(["-r", "-v"], env);
  t.match(r.stdout, /most active:\n   3 connections from 192\.0\.2\.1\n   1 connections from 192\.0\.2\.2 and it is allowed/);
  t.match(r.stdout, /latest decisions \(sentry\.log\):\n  \S+ 192\.0\.2\.2 allow admin \([^)]+\): --allow\n  \S+ 203\.0\.113\.9 block admin \([^)]+\): --block/);
  r = sentry(["-r", "--ip=192.0.2.1"], env);
  t.match(r.stdout, /^   3 connections from 192\.0\.2\.1\n     first seen \S+Z, last seen \S+Z\n/);
  r = sentry(["-r", "-v", "--json", "--ip=203.0.113.9"], env);
  const j = JSON.parse(r.stdout);
  t.equal(j.uniqueIps, 2);
  t.equal(j.connections, 4);
  t.equal(j.allowed, 1);
  t.equal(j.blocked, 1);
  t.equal(j.ip.status, "blocked");
  t.equal(j.schema, 1);
  t.same([j.ip.block.by, j.ip.block.reason, j.ip.block.length], ["admin", "--block", "90 days; EXPIRE_BLOCK_DAYS"], "the block record as fields");
  t.equal(j.top[0].ip, "192.0.2.1");
  t.equal(sentry(["-r"], envFor(tempDir(t))).stdout, "   -------- summary ---------\n   0 unique IPs have connected 0 times\n   0 IPs are allowed\n   0 IPs are blocked\n", "an empty ROOT_DIR reports zeros");
});

t.test("40 parallel connects of one address: exactly 40 counted", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  const runs = await parallel(40, 40, () => sentryAsync(["--connect", "--ip=192.0.2.40"], env));
  t.ok(runs.every((r) => r.status === 0), "all exit 0");
  const lines = fs.readFileSync(join(root, "seen", "192.0.2.40"), "utf8").split("\n").filter(Boolean);
  t.equal(lines.length, 40);
  const counts = runs.map((r) => Number(/^\s*(\d+) connections/.exec(r.stdout)?.[1])).sort((a, b) => a - b);
  t.equal(counts[counts.length - 1], 40, "the last one saw all 40");
});

t.test("30 parallel blocks of different addresses: all 30 in hosts.deny; a racing delist keeps the others", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  sentry(["--block", "--ip=198.18.0.250"], env);
  const ips = Array.from({ length: 30 }, (_, i) => (i % 2 ? `198.18.0.${i + 1}` : `2001:db8::${(i + 1).toString(16)}`));
  const runs = await parallel(31, 31, (i) =>
    i === 30 ? sentryAsync(["--delist", "--ip=198.18.0.250"], env) : sentryAsync(["--block", `--ip=${ips[i]}`], env));
  t.ok(runs.every((r) => r.status === 0), `all exit 0 ${runs.map((r) => r.stderr).join("")}`);
  const deny = fs.readFileSync(join(root, "hosts.deny"), "utf8").split("\n").filter(Boolean);
  t.equal(deny.length, 30);
  for (const ip of ips) t.ok(deny.includes(ip.includes(":") ? `[${ip}]` : ip), `${ip} listed`);
  t.notOk(deny.includes("198.18.0.250"), "the delisted one is gone");
  t.same(fs.readdirSync(root).filter((f) => f.includes("tmp")), [], "no temporary files left");
});

t.test("ROOT_DIR that is a file, read-only, or full: exit 2 naming the path, nothing lost", async (t) => {
  const dir = tempDir(t);
  const file = join(dir, "afile");
  fs.writeFileSync(file, "x");
  let r = sentry(["-c", "--ip=192.0.2.1"], envFor(file));
  t.equal(r.status, 2);
  t.match(r.stderr, new RegExp(`${file}`));
  t.equal(fs.readFileSync(file, "utf8"), "x", "the file is untouched");

  // A real read-only and a real full file system, in a private mount namespace.
  const mnt = join(dir, "mnt");
  fs.mkdirSync(mnt);
  const inNs = (script: string) =>
    spawnSync("unshare", ["-m", "sh", "-c", script], { encoding: "utf8", env: { PATH: "/usr/bin:/bin:/usr/sbin:/sbin" } });
  const envs = `ROOT_DIR=${mnt}/sentry PROTECT_FTP=0 PROTECT_MUA=0 SSH_LOG=/nonexistent`;
  let x = inNs(`mount -t tmpfs -o ro,size=1m tmpfs ${mnt} && env -i ${envs} ${SENTRY} -c --ip=192.0.2.1; echo "rc=$?"`);
  t.match(x.stdout, /rc=2/, "read-only: exit 2");
  t.match(x.stderr, new RegExp(`cannot create ${mnt}/sentry: .*read-only`, "i"));
  x = inNs(
    `mount -t tmpfs -o size=64k tmpfs ${mnt} && mkdir -p ${mnt}/sentry/block && env -i ${envs} ${SENTRY} --block --ip=203.0.113.1 >/dev/null && ` +
      `dd if=/dev/zero of=${mnt}/fill bs=4k 2>/dev/null; env -i ${envs} ${SENTRY} --block --ip=203.0.113.2; echo "rc=$?"; ` +
      `env -i ${envs} ${SENTRY} -c --ip=192.0.2.3; echo "rc=$?"; echo "deny:"; cat ${mnt}/sentry/hosts.deny; ls -a ${mnt}/sentry ${mnt}/sentry/block`,
  );
  t.match(x.stdout, /rc=2\n.*rc=2\n/s, "full disk: block and connect exit 2");
  t.match(x.stderr, /cannot write .*block\/203\.0\.113\.2: .*ENOSPC|no space left/i, "the message names the file");
  t.match(x.stdout, /deny:\n203\.0\.113\.1\n/, "the earlier block is still in hosts.deny, whole");
  t.notMatch(x.stdout, /\.tmp-/, "no temporary files left");
});

t.test("a broken state file is named, not trusted", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  sentry(["-c", "--ip=192.0.2.1"], env);
  fs.rmSync(join(root, "seen", "192.0.2.1"));
  fs.mkdirSync(join(root, "seen", "192.0.2.1")); // a directory where a file should be
  const r = sentry(["-c", "--ip=192.0.2.1"], env);
  t.equal(r.status, 2);
  t.match(r.stderr, /cannot record the connection in .*seen\/192\.0\.2\.1: EISDIR/);
  fs.writeFileSync(join(root, "block", "not-an-ip"), "x");
  fs.writeFileSync(join(root, "block", "ALL"), "x");
  fs.writeFileSync(join(root, "block", "203.0.113.1"), "\u0000\u00ff garbage\n");
  sentry(["--block", "--ip=203.0.113.2"], env);
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "203.0.113.1\n203.0.113.2\n", "only address names reach hosts.deny");
  const rep = sentry(["-r", "--ip=203.0.113.1"], env);
  t.equal(rep.status, 0);
  t.match(rep.stdout, /block\/203\.0\.113\.1: \?\u00ff garbage/, "control bytes are replaced, not echoed to the terminal");
  t.notMatch(rep.stdout, /\u0000/);
});

t.test("the binary alone: copied to an empty directory, an empty environment", async (t) => {
  const dir = tempDir(t);
  const copy = join(dir, "sentry");
  fs.copyFileSync(SENTRY, copy);
  fs.chmodSync(copy, 0o755);
  const empty = join(dir, "empty");
  fs.mkdirSync(empty);
  let r = spawnSync(copy, ["--help"], { cwd: empty, env: {}, encoding: "utf8" });
  t.equal(r.status, 0);
  t.match(r.stdout, /SYNOPSIS/);
  t.equal(r.stderr, "");
  const root = join(dir, "root");
  const env = { ROOT_DIR: root, SSH_LOG: "/nonexistent", PROTECT_FTP: "0", PROTECT_MUA: "0" };
  for (const args of [["-c", "--ip=192.0.2.1"], ["--allow", "--ip=192.0.2.1"], ["--block", "--ip=203.0.113.1"], ["--delist", "--ip=192.0.2.1"], ["-r", "-v"], ["--resync"], ["--scan"]]) {
    r = spawnSync(copy, args, { cwd: empty, env, encoding: "utf8" });
    t.ok(r.status === 0 || (args[0] === "--scan" && r.status === 2), `${args.join(" ")}: ${r.status} ${r.stderr}`);
  }
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "203.0.113.1\n");
  t.same(fs.readdirSync(empty), [], "nothing written in the working directory");
  r = spawnSync(copy, ["--version"], { cwd: empty, env: { NODE_OPTIONS: `--require ${join(dir, "evil.js")}` }, encoding: "utf8" });
  fs.writeFileSync(join(dir, "evil.js"), "console.log('PWNED')");
  r = spawnSync(copy, ["--version"], { cwd: empty, env: { NODE_OPTIONS: `--require ${join(dir, "evil.js")}` }, encoding: "utf8" });
  t.notMatch(r.stdout, /PWNED/, "NODE_OPTIONS does not run foreign code inside sentry");
});
