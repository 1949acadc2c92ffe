// ROOT_DIR/hosts.allowed (issue 15, item 5): tcpd admits allowed addresses
// itself, without spawning sentry, and never one the host's own policy
// denies. The verdicts come from the real tcpdmatch (Debian package tcpd,
// test/deps.sh) run with -d on copies of the files sentry wrote, and from a
// real sshd through libwrap (test/lib/sshd.ts): an allowed client logs in
// and its seen/ file does not grow, because sentry was not run for it.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { SENTRY, checkJson, requireBinary, systemPaths, tempDir } from "./lib/run.ts";
import { DAEMON, checkPrerequisites, startHarness } from "./lib/sshd.ts";

requireBinary();
t.setTimeout(240_000);

const TCPDMATCH = "/usr/sbin/tcpdmatch";

/** A ROOT_DIR with the binary in it, and the host's own tcpwrappers files. */
function scene(t: { teardown(fn: () => void): void }, allow: string, deny: string) {
  const dir = tempDir(t);
  const root = join(dir, "db", "sentry");
  const hostsAllow = join(dir, "hosts.allow");
  const hostsDeny = join(dir, "hosts.deny");
  fs.writeFileSync(hostsAllow, allow);
  fs.writeFileSync(hostsDeny, deny);
  fs.mkdirSync(root, { recursive: true, mode: 0o750 });
  fs.symlinkSync(SENTRY, join(root, "sentry")); // --install then has nothing to copy (install.test.ts covers the copy)
  const log = join(dir, "auth.log");
  fs.writeFileSync(log, "");
  const run = (args: string[], extra: Record<string, string> = {}) => {
    const env = {
      PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ROOT_DIR: root, HOSTS_ALLOW: hostsAllow, HOSTS_DENY: hostsDeny, SSH_LOG: log,
      PROTECT_FTP: "0", PROTECT_MUA: "0", SSHD_PATH: "/usr/sbin/sshd", SSH_CLIENT: "192.0.2.200 50000 22", ...systemPaths(join(dir, "sys")), ...extra,
    };
    const r = spawnSync(SENTRY, args, { env, encoding: "utf8", timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const allowed = () => (fs.existsSync(join(root, "hosts.allowed")) ? fs.readFileSync(join(root, "hosts.allowed"), "utf8") : "(no file)");
  return { dir, root, hostsAllow, hostsDeny, log, run, allowed };
}

/** What the real tcpd decides for sshd from `client`, reading copies of these two files (hosts.allowed is read where the line names it). */
function tcpdmatch(t: { teardown(fn: () => void): void }, allow: string, deny: string, client: string): string {
  const dir = tempDir(t, "sentry-tcpdmatch-");
  fs.writeFileSync(join(dir, "hosts.allow"), allow);
  fs.writeFileSync(join(dir, "hosts.deny"), deny);
  const r = spawnSync(TCPDMATCH, ["-d", "sshd", client], { cwd: dir, encoding: "utf8" });
  const m = /^access:\s+(\w+)/m.exec(r.stdout);
  if (!m) throw new Error(`tcpdmatch -d sshd ${client}: ${r.stderr}${r.stdout}`);
  return m[1];
}

const ALLOWED_LINE = (root: string) => `sshd : ${root}/hosts.allowed : allow`;

t.test("hosts.allowed follows allow/ and ALLOW_IPS on every path that changes them", async (t) => {
  const s = scene(t, "", "");
  const ips = { ALLOW_IPS: "198.51.100.0/24 127.0.0.2" };
  t.equal(s.run(["--ip=192.0.2.10", "--allow"], ips).status, 0);
  t.equal(s.allowed(), "192.0.2.10\n198.51.100.0/255.255.255.0\n", "--allow: the address, and ALLOW_IPS as a range; loopback never");
  t.equal(s.run(["--ip=2001:db8::10", "--allow"], ips).status, 0);
  t.equal(s.run(["--ip=10.1.1.1", "--allow"], ips).status, 0);
  t.equal(s.run(["--ip=10.0.0.0/8", "--allow"], ips).status, 0);
  t.equal(s.allowed(), "10.0.0.0/255.0.0.0\n192.0.2.10\n198.51.100.0/255.255.255.0\n[2001:db8::10]\n",
    "an allowed range as net/mask, IPv6 in brackets, an address the range holds not listed twice");
  t.equal(s.run(["--ip=10.0.0.0/8", "--delist"], ips).status, 0);
  t.equal(s.allowed(), "10.1.1.1\n192.0.2.10\n198.51.100.0/255.255.255.0\n[2001:db8::10]\n", "--delist of the range: the address in it is listed again");
  t.equal(s.run(["--ip=192.0.2.10", "--delist"], ips).status, 0);
  t.equal(s.run(["--ip=2001:db8::10", "--block"], ips).status, 0);
  t.equal(s.allowed(), "10.1.1.1\n198.51.100.0/255.255.255.0\n", "--delist and --block (which lifts the allow) take them out");
  t.notOk(fs.existsSync(join(s.root, "allow", "2001:db8::10")), "the block replaced the allow");

  // A success in the logs allows the address at its third connect: tcpd admits it from then on.
  fs.writeFileSync(s.log, "Accepted password for admin from 192.0.2.77 port 4000 ssh2\n");
  for (let i = 0; i < 3; i++) t.equal(s.run(["--connect", "--ip=192.0.2.77"], ips).status, 0);
  t.ok(fs.existsSync(join(s.root, "allow", "192.0.2.77")), "allowed by its success");
  t.equal(s.allowed(), "10.1.1.1\n192.0.2.77\n198.51.100.0/255.255.255.0\n", "the automatic allow is listed");

  // ALLOWED_TO_TCPWRAPPERS=0: the next write empties it (an installed line then admits no one).
  t.equal(s.run(["--ip=192.0.2.78", "--allow"], { ...ips, ALLOWED_TO_TCPWRAPPERS: "0" }).status, 0);
  t.equal(s.allowed(), "", "switched off: empty");
});

t.test("never widens: an allowed address the host's hosts.deny denies stays denied (tcpdmatch)", async (t) => {
  t.ok(fs.existsSync(TCPDMATCH), "tcpdmatch is installed (test/deps.sh: tcpd)");
  const s = scene(t, "", "sshd: 10.1.2.3\n");
  for (const ip of ["10.1.2.3", "10.1.2.4", "10.9.0.0/16"]) t.equal(s.run([`--ip=${ip}`, "--allow"]).status, 0);
  const r = s.run(["--install", "--write"]);
  t.equal(r.status, 0, r.stderr);
  const allow = fs.readFileSync(s.hostsAllow, "utf8");
  const deny = fs.readFileSync(s.hostsDeny, "utf8");
  const lines = allow.split("\n");
  t.equal(lines[1], ALLOWED_LINE(s.root), "the hosts.allowed line, right below the deny line");
  t.match(lines[2], / spawn .*--connect/, "and above the spawn line");
  t.equal(s.allowed(), "10.1.2.4\n10.9.0.0/255.255.0.0\n192.0.2.200\n", "10.1.2.3 is allowed but not listed: the host denies it");
  t.equal(tcpdmatch(t, allow, deny, "10.1.2.3"), "denied", "10.1.2.3: in allow/, denied by the host's hosts.deny, still denied");
  for (const ip of ["10.1.2.4", "10.9.255.255", "192.0.2.200", "10.1.2.5"]) t.equal(tcpdmatch(t, allow, deny, ip), "granted", `${ip} is granted`);
  // Which line admits them: without the spawn line, and with a host policy denying everyone else.
  const noSpawn = lines.filter((l) => !l.includes(" spawn ")).join("\n");
  t.equal(tcpdmatch(t, noSpawn, `${deny}sshd: ALL\n`, "10.1.2.4"), "granted", "the hosts.allowed line alone admits 10.1.2.4");
  t.equal(tcpdmatch(t, noSpawn, `${deny}sshd: ALL\n`, "10.1.2.5"), "denied", "and not a client that is not allowed");

  // A range that holds an address the host denies is left out as a whole.
  t.equal(s.run(["--ip=10.1.0.0/16", "--allow"]).status, 0);
  t.equal(s.allowed(), "10.1.2.4\n10.9.0.0/255.255.0.0\n192.0.2.200\n", "allow/10.1.0.0_16 holds 10.1.2.3: not listed (10.1.2.4 still is, on its own)");
  t.equal(tcpdmatch(t, allow, deny, "10.1.2.3"), "denied", "10.1.2.3 still denied");
  const doc = s.run(["--doctor"]);
  t.match(doc.stdout, /OK: .*hosts\.allowed agrees with allow\/ and ALLOW_IPS \(3 entries; 2 \(10\.1\.0\.0\/16, 10\.1\.2\.3\) allowed but not listed: your tcpd policy does not surely admit them/);

  // The host's policy changes after hosts.allowed was written: the next connect of anyone rewrites it.
  fs.appendFileSync(s.hostsDeny, "sshd: 10.9.0.0/255.255.0.0\n");
  const later = (fs.statSync(join(s.root, "hosts.allowed")).mtimeMs + 5000) / 1000;
  fs.utimesSync(s.hostsDeny, later, later); // newer than hosts.allowed, whatever the file system's clock resolution
  // (The spawn line --install placed still grants it: that is --doctor's CRITICAL of section 11.1.1; here, the hosts.allowed line alone.)
  t.equal(tcpdmatch(t, noSpawn, fs.readFileSync(s.hostsDeny, "utf8"), "10.9.1.1"), "granted", "before a connect: the stale file admits 10.9.1.1");
  t.equal(s.run(["--connect", "--ip=203.0.113.60"]).status, 0);
  t.equal(s.allowed(), "10.1.2.4\n192.0.2.200\n", "the range the host now denies is taken out");
  t.equal(tcpdmatch(t, noSpawn, fs.readFileSync(s.hostsDeny, "utf8"), "10.9.1.1"), "denied", "and the hosts.allowed line admits it no more: the host's policy refuses it");
  t.match(fs.readFileSync(join(s.root, "sentry.log"), "utf8"), /heal .*hosts\.deny changed: hosts\.allowed rewritten/);
});

t.test("hosts.allowed heals: a connect of an allowed address it lacks, --scan and --resync", async (t) => {
  const s = scene(t, "", "");
  t.equal(s.run(["--ip=192.0.2.30", "--allow"]).status, 0);
  fs.writeFileSync(join(s.root, "hosts.allowed"), ""); // as after a kill -9 between allow/IP and the list
  const r = s.run(["--connect", "--ip=192.0.2.30"]);
  t.equal(r.status, 0);
  t.match(r.stderr, /192\.0\.2\.30 connected although allowed: hosts\.allowed lacked it and was rewritten/);
  t.equal(s.allowed(), "192.0.2.30\n");
  t.match(fs.readFileSync(join(s.root, "sentry.log"), "utf8"), /192\.0\.2\.30 heal connected although allowed/);
  const again = s.run(["--connect", "--ip=192.0.2.30"]);
  t.notMatch(again.stderr, /rewritten/, "listed: nothing to heal");

  fs.writeFileSync(join(s.root, "hosts.allowed"), "192.0.2.30\n203.0.113.99\n"); // an entry no longer allowed: tcpd would admit it
  const doc = s.run(["--doctor"]);
  t.match(doc.stdout, /CRITICAL: .*hosts\.allowed admits 1 \(203\.0\.113\.99\) that allow\/, ALLOW_IPS or the host's tcpd policy no longer grant/);
  const scan = s.run(["--scan"]);
  t.match(scan.stderr, /hosts\.allowed differed .* 0 missing, 1 \(203\.0\.113\.99\) left over/);
  t.equal(s.allowed(), "192.0.2.30\n", "--scan rewrote it");
  fs.writeFileSync(join(s.root, "hosts.allowed"), "");
  const rs = s.run(["--resync"]);
  t.equal(rs.status, 0, rs.stderr);
  t.match(rs.stdout, /hosts\.allowed: 1 entries; hosts\.allowed differed .* 1 \(192\.0\.2\.30\) missing/);
  t.equal(s.allowed(), "192.0.2.30\n", "--resync rewrote it");
});

t.test("--install writes the line, --doctor checks it, --report says the counts stop, --uninstall removes it", async (t) => {
  const s = scene(t, "", "");
  t.equal(s.run(["--ip=192.0.2.40", "--allow"]).status, 0);
  t.equal(s.run(["--connect", "--ip=192.0.2.40"]).status, 0);
  let rep = s.run(["--report", "--ip=192.0.2.40"]);
  t.notMatch(rep.stdout, /counts stop/, "no line in hosts.allow yet: it is still counted");
  t.equal(s.run(["--install", "--write"]).status, 0);
  t.ok(fs.readFileSync(s.hostsAllow, "utf8").includes(`${ALLOWED_LINE(s.root)}\n`));
  rep = s.run(["--report", "--ip=192.0.2.40"]);
  t.match(rep.stdout, /counts stop at the allow: tcpd admits it via hosts\.allowed without spawning sentry/);
  t.match(rep.stdout, /tcpd admits 2 entries of hosts\.allowed without spawning sentry: their counts stop at the allow/, "the summary says how many");
  const json = s.run(["--report", "--ip=192.0.2.40", "--json"]);
  t.equal(json.status, 0, json.stderr);
  const doc = checkJson(json.stdout) as { admittedByTcpd: number | null; ip: { admitted: string | null } };
  t.equal(doc.admittedByTcpd, 2);
  t.match(doc.ip.admitted, /counts stop at the allow/);
  const other = checkJson(s.run(["--report", "--ip=203.0.113.1", "--json"]).stdout) as { ip: { admitted: string | null } };
  t.equal(other.ip.admitted, null, "an address not allowed is counted");

  let d = s.run(["--doctor"]);
  t.match(d.stdout, /OK: .*has the hosts\.allowed line \(line 2\) between the deny and the spawn line/);
  const installed = fs.readFileSync(s.hostsAllow, "utf8");
  fs.writeFileSync(s.hostsAllow, installed.split("\n").filter((l) => !l.includes("hosts.allowed")).join("\n"));
  d = s.run(["--doctor"]);
  t.match(d.stdout, /WARNING: .*no line "sshd : .*\/hosts\.allowed : allow": allowed addresses spawn sentry at every connection/);
  const [deny, , spawn] = installed.split("\n");
  fs.writeFileSync(s.hostsAllow, `${deny}\n${spawn}\n${ALLOWED_LINE(s.root)}\n`);
  d = s.run(["--doctor"]);
  t.match(d.stdout, /WARNING: .*the hosts\.allowed line \(line 3\) comes after the spawn line \(line 2\): tcpd never reaches it/);

  fs.writeFileSync(s.hostsAllow, installed);
  const u = s.run(["--uninstall"]);
  t.equal(u.status, 0, u.stderr);
  t.equal(fs.readFileSync(s.hostsAllow, "utf8"), "", "the hosts.allowed line went with the other two");
});

t.test("a real sshd: an allowed client logs in without sentry being spawned; others still spawn it", async (t) => {
  checkPrerequisites(SENTRY);
  const ALLOWED = "192.0.2.40";
  const OTHER = "192.0.2.41";
  const h = await startHarness({ addresses: [ALLOWED, OTHER] });
  t.teardown(() => h.cleanup());
  const root = join(h.tmp, "root");
  fs.mkdirSync(root, { mode: 0o755 });
  const env = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ROOT_DIR: root, HOSTS_ALLOW: h.hostsAllow, HOSTS_DENY: join(h.tmp, "etc", "hosts.deny"), SSH_LOG: h.sshLog, PROTECT_FTP: "0", PROTECT_MUA: "0" };
  const allow = spawnSync(SENTRY, [`--ip=${ALLOWED}`, "--allow"], { env, encoding: "utf8" });
  t.equal(allow.status, 0, allow.stderr);
  t.equal(fs.readFileSync(join(root, "hosts.allowed"), "utf8"), `${ALLOWED}\n`);
  const deny = `${DAEMON} : ${root}/hosts.deny : deny\n`;
  const spawnLine = `${DAEMON} : ALL : spawn ROOT_DIR=${root} SSH_LOG=${h.sshLog} ${SENTRY} --connect --ip=%a 2>>${join(h.tmp, "sentry.stderr")} : allow\n`;
  const seen = (ip: string) => fs.statSync(join(root, "seen", ip), { throwIfNoEntry: false })?.size ?? 0;
  const login = (from: string) => h.ssh({ from, user: h.user, password: h.password });

  // Without the line, tcpd spawns sentry for the allowed address too: its count grows.
  fs.writeFileSync(h.hostsAllow, deny + spawnLine);
  let o = await login(ALLOWED);
  t.ok(o.loggedIn, "logged in (no hosts.allowed line)", { o });
  t.equal(seen(ALLOWED), 11, "sentry was spawned and counted it (one 11-byte line)");

  fs.writeFileSync(h.hostsAllow, `${deny}${DAEMON} : ${root}/hosts.allowed : allow\n${spawnLine}`);
  for (let i = 0; i < 2; i++) {
    o = await login(ALLOWED);
    t.ok(o.loggedIn, `logged in through the hosts.allowed line (${i + 1})`, { o });
  }
  t.equal(seen(ALLOWED), 11, "seen/ did not grow: tcpd admitted it without spawning sentry");
  o = await login(OTHER);
  t.ok(o.loggedIn, "a client that is not allowed logs in too", { o });
  t.equal(seen(OTHER), 11, "and sentry was spawned for it");
});
