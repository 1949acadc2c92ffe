// Install safety (issue 14): sentry never widens who may connect, the whole
// chain agrees on one ROOT_DIR, and the installer's own address is allowed
// or the installer is told. Every verdict below comes from the real
// tcpdmatch (Debian package tcpd, test/deps.sh), run with -d on copies of the
// files, for a fixed set of clients chosen by this test, not by sentry.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { SENTRY, requireBinary, systemPaths, tempDir } from "./lib/run.ts";
import { DAEMON, checkPrerequisites, startHarness } from "./lib/sshd.ts";
import fc from "fast-check";
import { accessVerdicts, parseAccessFile, sampleClients } from "../sentry.ts";

requireBinary();
t.setTimeout(120_000); // a real sshd, and tcpdmatch a few thousand times

const TCPDMATCH = "/usr/sbin/tcpdmatch";
/** Clients at and around every network the policies below name, and elsewhere. */
const CLIENTS = [
  "10.0.0.0", "10.0.0.1", "10.255.255.255", "9.255.255.255", "11.0.0.0",
  "192.0.2.1", "192.0.2.255", "192.0.1.255", "192.0.3.0",
  "198.51.100.0", "198.51.100.7", "198.51.100.255", "198.51.101.0",
  "203.0.113.1", "203.0.113.255", "203.0.112.255", "203.0.114.0",
  "1.2.3.4", "127.0.0.1", "2001:db8::1", "2001:db8:ffff::1", "2001:db9::1", "::1",
];

/** What the real tcpd decides for sshd from each client, given the two files' text. */
function verdicts(t: { teardown(fn: () => void): void }, allow: string, deny: string): Map<string, string> {
  const dir = tempDir(t, "sentry-tcpdmatch-");
  fs.writeFileSync(join(dir, "hosts.allow"), allow);
  fs.writeFileSync(join(dir, "hosts.deny"), deny);
  const out = new Map<string, string>();
  for (const c of CLIENTS) {
    const r = spawnSync(TCPDMATCH, ["-d", "sshd", c], { cwd: dir, encoding: "utf8" });
    const m = /^access:\s+(\w+)/m.exec(r.stdout);
    if (!m) throw new Error(`tcpdmatch -d sshd ${c}: ${r.stderr}${r.stdout}`);
    out.set(c, m[1]);
  }
  return out;
}

function scene(t: { teardown(fn: () => void): void }, allow: string | null, deny: string | null) {
  const dir = tempDir(t);
  const root = join(dir, "db", "sentry");
  const hostsAllow = join(dir, "hosts.allow");
  const hostsDeny = join(dir, "hosts.deny");
  if (allow !== null) fs.writeFileSync(hostsAllow, allow);
  if (deny !== null) fs.writeFileSync(hostsDeny, deny);
  // ROOT_DIR/sentry is the built binary already (a symlink: --install then has nothing to copy, and
  // these tests do not copy 125 MB thirty times; test/install.test.ts covers the copy).
  fs.mkdirSync(root, { recursive: true, mode: 0o750 });
  fs.symlinkSync(SENTRY, join(root, "sentry"));
  const log = join(dir, "auth.log");
  fs.writeFileSync(log, Array.from({ length: 12 }, (_, i) => `Invalid user u${i} from 203.0.113.${i + 1} port 4${i}22\n`).join(""));
  const env = (extra: Record<string, string>) => ({
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    ROOT_DIR: root,
    HOSTS_ALLOW: hostsAllow,
    HOSTS_DENY: hostsDeny,
    SSH_LOG: log,
    PROTECT_FTP: "0",
    PROTECT_MUA: "0",
    SSHD_PATH: "/usr/sbin/sshd",
    SSH_CLIENT: "192.0.2.200 50000 22",
    ...systemPaths(join(dir, "sys")),
    ...extra,
  });
  const run = (args: string[], extra: Record<string, string> = {}) => {
    const r = spawnSync(SENTRY, args, { env: env(extra), encoding: "utf8", timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const read = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, "utf8") : "");
  return { dir, root, hostsAllow, hostsDeny, log, run, read };
}

const DENY = (root: string) => `sshd : ${root}/hosts.deny : deny`;
// Between the two since hosts.allowed (issue 15): tcpd admits the allowed without spawning sentry.
const ALLOWED = (root: string) => `sshd : ${root}/hosts.allowed : allow`;
const SPAWN = (root: string, clients = "ALL") => `sshd : ${clients} : spawn ROOT_DIR=${root} ${root}/sentry --connect --ip=%a : allow`;

/** The clients granted sshd after the install that were not granted before. */
function gained(before: Map<string, string>, after: Map<string, string>): string[] {
  return CLIENTS.filter((c) => before.get(c) !== "granted" && after.get(c) === "granted");
}

// The policies an administrator has; what sentry must write for each.
const CASES: { name: string; allow: string | null; deny: string | null; expect: (root: string) => string | null }[] = [
  {
    name: "allowlist: hosts.allow sshd: 10.0.0.0/255.0.0.0, hosts.deny sshd: ALL",
    allow: "sshd: 10.0.0.0/255.0.0.0\n",
    deny: "sshd: ALL\n",
    expect: (root) => `${DENY(root)}\n${ALLOWED(root)}\n${SPAWN(root, "10.0.0.0/255.0.0.0")}\nsshd: 10.0.0.0/255.0.0.0\n`,
  },
  {
    name: "hosts.deny ALL: ALL, admins' networks in hosts.allow",
    allow: "# admins only\nsshd, vsftpd: 192.0.2.0/255.255.255.0 [2001:db8::]/32\nvsftpd: ALL\n",
    deny: "ALL: ALL\n",
    expect: (root) =>
      `# admins only\n${DENY(root)}\n${ALLOWED(root)}\n${SPAWN(root, "192.0.2.0/255.255.255.0 [2001:db8::]/32")}\nsshd, vsftpd: 192.0.2.0/255.255.255.0 [2001:db8::]/32\nvsftpd: ALL\n`,
  },
  {
    name: "an EXCEPT rule: sshd: ALL EXCEPT 203.0.113.0/255.255.255.0, hosts.deny ALL: ALL",
    allow: "sshd: ALL EXCEPT 203.0.113.0/255.255.255.0\n",
    deny: "ALL: ALL\n",
    expect: (root) => `${DENY(root)}\n${ALLOWED(root)}\n${SPAWN(root, "ALL EXCEPT 203.0.113.0/255.255.255.0")}\nsshd: ALL EXCEPT 203.0.113.0/255.255.255.0\n`,
  },
  {
    name: "default allow: no rules at all",
    allow: null,
    deny: null,
    expect: (root) => `${DENY(root)}\n${ALLOWED(root)}\n${SPAWN(root)}\n`,
  },
  {
    name: "default allow with a blocklist in hosts.deny",
    allow: "ALL: 127.0.0.1\n",
    deny: "sshd: 198.51.100.0/255.255.255.0 203.0.113.\n",
    expect: (root) => `${DENY(root)}\n${ALLOWED(root)}\n${SPAWN(root, "127.0.0.1")}\nALL: 127.0.0.1\n${SPAWN(root, "ALL EXCEPT 198.51.100.0/255.255.255.0 203.0.113.")}\n`,
  },
  {
    name: "hosts.deny EXCEPT: sentry cannot place its lines exactly, writes nothing",
    allow: null,
    deny: "sshd: ALL EXCEPT 10.0.0.0/255.0.0.0\n",
    expect: () => null,
  },
  {
    name: "a host name decides: sentry cannot compare names, writes nothing",
    allow: "sshd: .example.com\n",
    deny: "sshd: ALL\n",
    expect: () => null,
  },
];

t.test("tcpdmatch is installed (test/deps.sh: tcpd)", async (t) => {
  t.ok(fs.existsSync(TCPDMATCH));
});

for (const c of CASES) {
  for (const how of ["tcpdmatch", "sentry's reading of hosts_access(5)"]) {
    t.test(`install --write, ${c.name}; checked by ${how}`, async (t) => {
      const s = scene(t, c.allow, c.deny);
      // Without /usr/sbin on PATH sentry does not find tcpdmatch and reads the files itself.
      const extra: Record<string, string> = how === "tcpdmatch" ? {} : { PATH: "/usr/bin:/bin" };
      const before = verdicts(t, c.allow ?? "", c.deny ?? "");
      const r = s.run(["--install", "--write"], extra);
      const after = verdicts(t, s.read(s.hostsAllow), c.deny ?? "");
      t.same(gained(before, after), [], "no client gains access to sshd (tcpdmatch, before and after)");
      const want = c.expect(s.root);
      if (want === null) {
        t.equal(r.status, 2, "refuses: it cannot tell exactly");
        t.equal(s.read(s.hostsAllow), c.allow ?? "", "hosts.allow untouched");
        t.match(r.stderr, /not editing .*hosts\.allow/);
      } else {
        t.equal(r.status, 0, r.stderr);
        t.equal(s.read(s.hostsAllow), want, "sentry's lines where they keep the policy");
        t.same(CLIENTS.filter((x) => before.get(x) !== after.get(x)), [], "every client keeps its verdict");
        t.match(r.stdout, new RegExp(`checked with ${how.replace(/[()]/g, "\\$&")}: no client gains access`));
        if (c.allow !== null && c.deny !== null && want !== `${DENY(s.root)}\n${ALLOWED(s.root)}\n${SPAWN(s.root)}\n`)
          t.match(r.stdout, /deny sshd to some clients .*would let them in/, "says why the usual line was not used");
      }
      // Without --write: the same lines are shown, nothing is written (once per case: an install copies the binary).
      if (how !== "tcpdmatch") return;
      const s2 = scene(t, c.allow, c.deny);
      const shown = s2.run(["--install"], extra);
      t.equal(s2.read(s2.hostsAllow), c.allow ?? "", "without --write nothing is written");
      const want2 = c.expect(s2.root);
      if (want2 !== null) {
        const spawnLines = want2.split("\n").filter((l) => l.includes(" spawn "));
        t.ok(spawnLines.every((l) => shown.stdout.includes(l)), "the same lines are shown", { spawnLines, stdout: shown.stdout });
      }
    });
  }
}

t.test("doctor: CRITICAL when sentry's spawn line lets in clients the policy denies", async (t) => {
  const s = scene(t, null, "sshd: ALL\n");
  // What sentry 3.0.0 wrote above an allowlist: the spawn line for ALL, first.
  fs.writeFileSync(s.hostsAllow, `${DENY(s.root)}\n${SPAWN(s.root)}\nsshd: 10.0.0.0/255.0.0.0\n`);
  s.run(["--install"]);
  let r = s.run(["--doctor"]);
  t.equal(r.status, 2, r.stdout);
  t.match(r.stdout, /^SENTRY CRITICAL - [^\n]*\n(?:.*\n)*CRITICAL: .*sentry's spawn line lets in clients the rest of the policy denies \(.*203\.0\.113\.50/);
  t.notMatch(r.stdout.split("\n")[0], /ROOT_DIR/, "the chain itself is fine: the policy is the one problem");
  // --install --write over it (an upgrade from 3.0.0) replaces the ALL line by the lines that keep the policy: OK.
  t.equal(s.run(["--install", "--write"]).status, 0);
  t.equal(s.read(s.hostsAllow), `${DENY(s.root)}\n${ALLOWED(s.root)}\n${SPAWN(s.root, "10.0.0.0/255.0.0.0")}\nsshd: 10.0.0.0/255.0.0.0\n`);
  r = s.run(["--doctor"]);
  t.equal(r.status, 0, r.stdout);
  t.match(r.stdout, /^SENTRY OK/);
  t.match(r.stdout, /OK: .*hosts\.allow: sentry's lines let in no client the rest of the policy denies \(tcpdmatch, \d+ addresses compared\)/);
  // Without tcpdmatch, sentry's own reading finds the same.
  fs.writeFileSync(s.hostsAllow, `${DENY(s.root)}\n${SPAWN(s.root)}\nsshd: 10.0.0.0/255.0.0.0\n`);
  r = s.run(["--doctor"], { PATH: "/usr/bin:/bin" });
  t.equal(r.status, 2);
  t.match(r.stdout, /^SENTRY CRITICAL - [^\n]*\n(?:.*\n)*CRITICAL: .*lets in clients the rest of the policy denies .*sentry's reading of hosts_access\(5\)/);
});

t.test("doctor: a hosts.deny of 2,000 old-style rules is compared by sentry's own reading, and the widening found", async (t) => {
  const deny = Array.from({ length: 2000 }, (_, i) => `ALL: 10.${i >> 8}.${i & 255}.7 : deny\n`).join("");
  const s = scene(t, null, deny);
  fs.writeFileSync(s.hostsAllow, `${DENY(s.root)}\n${SPAWN(s.root)}\n`);
  const r = s.run(["--doctor"]);
  t.equal(r.status, 2, r.stdout);
  t.match(r.stdout, /^SENTRY CRITICAL - [^\n]*\n(?:.*\n)*CRITICAL: .*lets in clients the rest of the policy denies \(10\.0\.0\.7, 10\.0\.1\.7, 10\.0\.2\.7, and 1997 more; sentry's reading of hosts_access\(5\) \(more than POLICY_TCPDMATCH_MAX=500 clients for tcpdmatch\)/);
});

t.test("doctor: WARNING when a rule decides by host name, which no address comparison can settle", async (t) => {
  const s = scene(t, null, "sshd: .evil.example\n");
  t.equal(s.run(["--install", "--write"]).status, 2, "--install writes nothing");
  fs.writeFileSync(s.hostsAllow, `${DENY(s.root)}\n${SPAWN(s.root)}\n`);
  const r = s.run(["--doctor"]);
  t.equal(r.status, 1, r.stdout);
  t.match(r.stdout, /^SENTRY WARNING - [^\n]*\n(?:.*\n)*WARNING: .*cannot tell whether sentry's lines let in clients the policy denies: .*hosts\.deny line 1 \("sshd: \.evil\.example"\) uses \.evil\.example/);
});

t.test("doctor: CRITICAL when the spawned sentry and the deny line use two ROOT_DIRs", async (t) => {
  const s = scene(t, null, null);
  t.equal(s.run(["--install", "--write"]).status, 0);
  t.equal(s.run(["--doctor"]).status, 0, "as written: one ROOT_DIR");
  // The spawn line of sentry 3.0.0: no ROOT_DIR=, so the spawned binary uses /var/db/sentry.
  fs.writeFileSync(s.hostsAllow, `${DENY(s.root)}\nsshd : ALL : spawn ${s.root}/sentry --connect --ip=%a : allow\n`);
  let r = s.run(["--doctor"]);
  t.equal(r.status, 2);
  t.match(r.stdout, new RegExp(`^SENTRY CRITICAL - [^\\n]*\\n(?:.*\\n)*CRITICAL: .*the spawned sentry uses ROOT_DIR=/var/db/sentry .*but the deny line reads ${s.root}/hosts\\.deny`));
  fs.writeFileSync(s.hostsAllow, `${DENY(s.root)}\nsshd : ALL : spawn ROOT_DIR=/srv/other ${s.root}/sentry --connect --ip=%a : allow\n`);
  r = s.run(["--doctor"]);
  t.equal(r.status, 2);
  t.match(r.stdout, /\nCRITICAL: .*the spawned sentry uses ROOT_DIR=\/srv\/other but the deny line reads/);
});

t.test("install: a ROOT_DIR tcpd or the shell would split is refused", async (t) => {
  const s = scene(t, null, null);
  const r = s.run(["--install", "--write"], { ROOT_DIR: join(s.dir, "a b") });
  t.equal(r.status, 1);
  t.match(r.stderr, /cannot be written into hosts\.allow/);
  t.equal(s.read(s.hostsAllow), "");
});

/** A utmp file (Linux glibc layout, 384-byte records) with USER_PROCESS sessions. */
function utmp(sessions: { line: string; user: string; host: string; v4?: string }[]): Buffer {
  const buf = Buffer.alloc(384 * (sessions.length + 1));
  buf.writeInt16LE(2, 0); // a BOOT_TIME record first, as on a real system
  sessions.forEach((s, i) => {
    const off = 384 * (i + 1);
    buf.writeInt16LE(7, off);
    buf.write(s.line, off + 8, "latin1");
    buf.write(s.user, off + 44, "latin1");
    buf.write(s.host, off + 76, "latin1");
    if (s.v4) Buffer.from(s.v4.split(".").map(Number)).copy(buf, off + 348);
  });
  return buf;
}

t.test("sudo: no SSH_CLIENT; the address is found in utmp, else the admin is told and --write refuses", async (t) => {
  const s = scene(t, null, null);
  const sudo = { SSH_CLIENT: "", SUDO_USER: "admin" };
  // No utmp entry for the admin (this machine has no /run/utmp, or none of "admin").
  let r = s.run(["--install", "--write"], sudo);
  t.equal(r.status, 1, "refuses to edit hosts.allow");
  t.match(r.stderr, /could not tell the address you are logged in from/);
  t.ok(r.stderr.includes(`  ROOT_DIR=${s.root} ${s.root}/sentry --ip=YOUR.ADDRESS --allow`), "names the command to allow it");
  t.match(r.stderr, /not editing .*hosts\.allow: no address of yours is allowed.*--force/);
  t.equal(s.read(s.hostsAllow), "", "hosts.allow untouched");
  t.same(fs.existsSync(join(s.root, "allow")) ? fs.readdirSync(join(s.root, "allow")) : [], [], "nobody allowed");
  r = s.run(["--install", "--write", "--force"], sudo);
  t.equal(r.status, 0, "--force writes anyway");
  t.equal(s.read(s.hostsAllow), `${DENY(s.root)}\n${ALLOWED(s.root)}\n${SPAWN(s.root)}\n`);
  t.match(r.stderr, /could not tell the address/, "and still warns");

  // A utmp (in a private mount namespace: tmpfs over /run) with the admin's SSH session.
  const s2 = scene(t, null, null);
  const file = join(s2.dir, "utmp");
  fs.writeFileSync(file, utmp([
    { line: "pts/3", user: "other", host: "203.0.113.9", v4: "203.0.113.9" },
    { line: "pts/7", user: "admin", host: "198.51.100.23", v4: "198.51.100.23" },
  ]));
  const env: Record<string, string | undefined> = { ...process.env, PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ROOT_DIR: s2.root, HOSTS_ALLOW: s2.hostsAllow, HOSTS_DENY: s2.hostsDeny,
    SSH_LOG: s2.log, PROTECT_FTP: "0", PROTECT_MUA: "0", SSHD_PATH: "/usr/sbin/sshd", SUDO_USER: "admin", ...systemPaths(join(s2.dir, "sys")) };
  delete env.SSH_CLIENT;
  delete env.SSH_CONNECTION;
  const ns = spawnSync("unshare", ["-m", "--propagation", "private", "sh", "-c", `mount -t tmpfs tmpfs /run && cp "$1" /run/utmp && exec "$0" --install --write`, SENTRY, file],
    { env, encoding: "utf8", input: "" });
  t.equal(ns.status, 0, ns.stderr);
  t.match(ns.stdout, /^allowed 198\.51\.100\.23, the address you are logged in from \(the login session of admin \(SUDO_USER\) in \/run\/utmp\)/);
  t.ok(fs.existsSync(join(s2.root, "allow", "198.51.100.23")));
  t.notOk(fs.existsSync(join(s2.root, "allow", "203.0.113.9")), "another user's session is not the admin's");
  t.equal(s2.read(s2.hostsAllow), `${DENY(s2.root)}\n${ALLOWED(s2.root)}\n${SPAWN(s2.root)}\n`);
});

t.test("utmp: the session on this terminal first (as who -m); several of SUDO_USER's: each exact command", async (t) => {
  const s = scene(t, null, null);
  const file = join(s.dir, "utmp");
  const env: Record<string, string | undefined> = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ROOT_DIR: s.root, HOSTS_ALLOW: s.hostsAllow,
    HOSTS_DENY: s.hostsDeny, SSH_LOG: s.log, PROTECT_FTP: "0", PROTECT_MUA: "0", SSHD_PATH: "/usr/sbin/sshd", SUDO_USER: "admin", ...systemPaths(join(s.dir, "sys")) };
  // One session per pseudo-terminal, pts/N from 198.51.100.N; script(1) gives sentry a terminal.
  fs.writeFileSync(file, utmp(Array.from({ length: 64 }, (_, n) => ({ line: `pts/${n}`, user: "admin", host: `198.51.100.${n}`, v4: `198.51.100.${n}` }))));
  const ttyFile = join(s.dir, "tty");
  const inner = `tty > ${ttyFile}; exec ${SENTRY} --install`;
  const r = spawnSync("unshare", ["-m", "--propagation", "private", "sh", "-c", `mount -t tmpfs tmpfs /run && cp "$0" /run/utmp && exec script -qec "$1" /dev/null`, file, inner],
    { env, encoding: "utf8" });
  t.equal(r.status, 0, r.stdout + r.stderr);
  const tty = fs.readFileSync(ttyFile, "utf8").trim().replace(/^\/dev\//, "");
  t.match(tty, /^pts\/\d+$/);
  const n = Number(tty.split("/")[1]);
  t.match(r.stdout, new RegExp(`allowed 198\\.51\\.100\\.${n}, the address you are logged in from \\(the login session on ${tty} in /run/utmp\\)`));
  t.same(fs.readdirSync(join(s.root, "allow")), [`198.51.100.${n}`], "that one address, not the user's other sessions");

  // No terminal, SUDO_USER logged in from two places: no guess, both commands named.
  const s2 = scene(t, null, null);
  fs.writeFileSync(file, utmp([
    { line: "pts/1", user: "admin", host: "198.51.100.1", v4: "198.51.100.1" },
    { line: "pts/2", user: "admin", host: "203.0.113.2", v4: "203.0.113.2" },
  ]));
  const r2 = spawnSync("unshare", ["-m", "--propagation", "private", "sh", "-c", `mount -t tmpfs tmpfs /run && cp "$1" /run/utmp && exec "$0" --install --write`, SENTRY, file],
    { env: { ...env, ROOT_DIR: s2.root, HOSTS_ALLOW: s2.hostsAllow, HOSTS_DENY: s2.hostsDeny }, encoding: "utf8", input: "" });
  t.equal(r2.status, 1, "--write refuses");
  t.ok(r2.stderr.includes(`  ROOT_DIR=${s2.root} ${s2.root}/sentry --ip=198.51.100.1 --allow\n  ROOT_DIR=${s2.root} ${s2.root}/sentry --ip=203.0.113.2 --allow\n`), r2.stderr);
  t.equal(s2.read(s2.hostsAllow), "");
});

t.test("uninstall after a keep-policy install gives back the admin's file exactly", async (t) => {
  const allow = "# admins\nsshd: 10.0.0.0/255.0.0.0\nALL: 127.0.0.1\n";
  const s = scene(t, allow, "sshd: 192.0.2.0/255.255.255.0\n");
  t.equal(s.run(["--install", "--write"]).status, 0);
  t.not(s.read(s.hostsAllow), allow);
  t.equal(s.run(["--uninstall"]).status, 0);
  t.equal(s.read(s.hostsAllow), allow);
});

t.test("--force goes with --install and --update only", async (t) => {
  const s = scene(t, null, null);
  const r = s.run(["--scan", "--force"]);
  t.equal(r.status, 1);
});

t.test("real sshd with libwrap: after --install --write on an allowlist host, outsiders are still refused", async (t) => {
  // The admins' network is 192.0.2.0/25; everyone else is denied by hosts.deny.
  checkPrerequisites(SENTRY);
  const INSIDE = "192.0.2.20"; // the installer's: allowed, so tcpd admits it from hosts.allowed (issue 15)
  const INSIDE2 = "192.0.2.21"; // not allowed: tcpd spawns sentry for it
  const OUTSIDE = "192.0.2.200";
  const h = await startHarness({ addresses: [INSIDE, INSIDE2, OUTSIDE] });
  t.teardown(() => h.cleanup());
  const s = scene(t, "sshd: 192.0.2.0/255.255.255.128\n", "sshd: ALL\n");
  const root = join(h.tmp, "root");
  const r = s.run(["--install", "--write"], { ROOT_DIR: root, SSH_CLIENT: `${INSIDE} 50000 22` });
  t.equal(r.status, 0, r.stderr);
  fs.writeFileSync(join(root, "sentry.conf"), `SSH_LOG=${h.sshLog}\nPROTECT_FTP=0\nPROTECT_MUA=0\n`);
  // The harness's sshd answers to the daemon name DAEMON: the same files with that name.
  const rename = (text: string) => text.replace(/^sshd(\s*[:,])/gm, `${DAEMON}$1`);
  fs.writeFileSync(h.hostsAllow, rename(s.read(s.hostsAllow)));
  fs.writeFileSync(join(h.tmp, "etc", "hosts.deny"), rename(s.read(s.hostsDeny)));
  const [inside, inside2, outside] = await Promise.all([
    h.ssh({ from: INSIDE, user: h.user, password: h.password }),
    h.ssh({ from: INSIDE2, user: h.user, password: h.password }),
    h.ssh({ from: OUTSIDE, user: h.user, password: h.password }),
  ]);
  t.ok(inside.loggedIn && inside2.loggedIn, "the admins' network still logs in", { inside, inside2, hostsAllow: fs.readFileSync(h.hostsAllow, "utf8") });
  t.notOk(fs.existsSync(join(root, "seen", INSIDE)), "the installer's address, allowed: admitted from hosts.allowed, sentry not spawned");
  t.ok(fs.existsSync(join(root, "seen", INSIDE2)), "another of its addresses: tcpd spawned sentry for it (seen/IP)");
  t.ok(outside.refused && !outside.loggedIn, "a client outside it is refused before the banner, as before sentry", { outside });
  t.notOk(fs.existsSync(join(root, "seen", OUTSIDE)), "and sentry was not spawned for it");
});

t.test("sentry's own reading of hosts_access(5) gives tcpdmatch's verdict (random address policies)", async (t) => {
  // The fallback where tcpdmatch is not installed: every verdict it reaches
  // for the clients it would ask about must be the real tcpd's.
  const daemon = fc.constantFrom("sshd", "ALL", "vsftpd", "sshd, vsftpd", "ALL EXCEPT vsftpd", "ALL EXCEPT sshd", "SSHD");
  const pattern = fc.constantFrom(
    "ALL", "10.0.0.0/255.0.0.0", "10.1.0.0/255.255.0.0", "10.1.", "10.", "10.1.2.3", "192.0.2.0/24", "192.0.2.128/25",
    "10.1.2.3/255.0.0.0", "192.0.2.", "[2001:db8::]/32", "[2001:db8::1]", "2001:db8::1", "[2001:db8:1::]/48", "203.0.113.7",
  );
  const list = fc.tuple(fc.array(pattern, { minLength: 1, maxLength: 3 }), fc.option(fc.array(pattern, { minLength: 1, maxLength: 2 })))
    .map(([a, ex]) => (ex === null ? a.join(" ") : `${a.join(", ")} EXCEPT ${ex.join(" ")}`));
  const option = fc.constantFrom("", " : deny", " : allow", " : spawn /bin/true : allow", " : twist /bin/true");
  const rule = fc.tuple(daemon, list, option).map(([d, l, o]) => `${d}: ${l}${o}\n`);
  const file = fc.array(rule, { maxLength: 4 }).map((rs) => rs.join(""));
  const dir = tempDir(t, "sentry-fc-");
  let compared = 0;
  fc.assert(
    fc.property(file, file, (allow, deny) => {
      fs.writeFileSync(join(dir, "hosts.allow"), allow);
      fs.writeFileSync(join(dir, "hosts.deny"), deny);
      const a = parseAccessFile(allow, "hosts.allow", true);
      const d = parseAccessFile(deny, "hosts.deny", false);
      for (const ip of sampleClients([...a, ...d], [])) {
        const mine = [...accessVerdicts(a, d, ip)];
        const r = spawnSync(TCPDMATCH, ["-d", "sshd", ip], { cwd: dir, encoding: "utf8" });
        const real = /^access:\s+(\w+)/m.exec(r.stdout)?.[1];
        const want = real === "granted" ? "granted" : "denied";
        compared++;
        if (mine.length !== 1 || mine[0] !== want) throw new Error(`${ip}: sentry ${mine.join("|")}, tcpdmatch ${real}\nhosts.allow:\n${allow}hosts.deny:\n${deny}`);
      }
    }),
    { numRuns: 40, seed: 14 },
  );
  t.ok(compared > 400, `${compared} verdicts compared`);
});
