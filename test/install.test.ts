// --install, --uninstall and --doctor through the built binary, against a
// scratch ROOT_DIR and a scratch hosts.allow (HOSTS_ALLOW is a setting).
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { SENTRY, requireBinary, systemPaths, tempDir, sentry } from "./lib/run.ts";

requireBinary();

/** An sshd that links libwrap (Debian's, installed by test/deps.sh) and one that does not. */
const WRAPPED_SSHD = "/usr/sbin/sshd";
const UNWRAPPED_SSHD = "/bin/true";

function scene(t: { teardown(fn: () => void): void }) {
  const dir = tempDir(t);
  const root = join(dir, "db", "sentry");
  const hostsAllow = join(dir, "hosts.allow");
  const hostsDeny = join(dir, "hosts.deny"); // missing: a default-allow host
  const log = join(dir, "auth.log");
  const bin = join(dir, "sentry"); // a copy, as an admin would drop it in
  fs.copyFileSync(SENTRY, bin);
  fs.chmodSync(bin, 0o755);
  const env = (extra: Record<string, string> = {}) => ({
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    ROOT_DIR: root,
    HOSTS_ALLOW: hostsAllow,
    HOSTS_DENY: hostsDeny,
    SSH_CLIENT: "192.0.2.200 50000 22", // the admin, over SSH
    SSH_LOG: log,
    PROTECT_FTP: "0",
    PROTECT_MUA: "0",
    SSHD_PATH: WRAPPED_SSHD,
    ...systemPaths(join(dir, "sys")),
    ...extra,
  });
  const run = (args: string[], extra: Record<string, string> = {}) => {
    const r = spawnSync(bin, args, { env: env(extra), encoding: "utf8", timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  return { dir, root, hostsAllow, hostsDeny, log, bin, env, run };
}

const DENY = (root: string) => `sshd : ${root}/hosts.deny : deny`;
// Between the two since hosts.allowed (issue 15): tcpd admits the allowed without spawning sentry.
const ALLOWED = (root: string) => `sshd : ${root}/hosts.allowed : allow`;
// A ROOT_DIR other than the default travels in the spawn line (issue 14).
const SPAWN = (root: string) => `sshd : ALL : spawn ROOT_DIR=${root} ${root}/sentry --connect --ip=%a : allow`;

t.test("install: fresh, then again; the binary, ROOT_DIR 0750, the lines shown", async (t) => {
  t.ok(fs.existsSync(WRAPPED_SSHD), "Debian's sshd is installed (test/deps.sh)");
  const s = scene(t);
  let r = s.run(["--install"]);
  t.equal(r.status, 0, r.stderr);
  t.equal((fs.statSync(s.root).mode & 0o777).toString(8), "750");
  const installed = join(s.root, "sentry");
  t.equal((fs.statSync(installed).mode & 0o777).toString(8), "755");
  t.same(fs.readFileSync(installed), fs.readFileSync(s.bin), "the running binary, byte for byte");
  t.match(r.stdout, new RegExp(`installed ${installed}`));
  t.ok(r.stdout.includes(`  ${DENY(s.root)}\n  ${ALLOWED(s.root)}\n  ${SPAWN(s.root)}`), "the three lines, deny first");
  t.notOk(fs.existsSync(s.hostsAllow), "without --write, hosts.allow is not touched");
  r = s.run(["--install"]);
  t.equal(r.status, 0, "running it again is harmless");
  t.same(fs.readdirSync(s.root).filter((f) => f.includes("tmp")), [], "no temporary file left");
  // Installed binary runs --install from its own place: nothing to copy.
  const again = spawnSync(installed, ["--install"], { env: s.env(), encoding: "utf8" });
  t.match(again.stdout, /is this binary already/);
});

t.test("install over SSH allows the administrator's address before anything else", async (t) => {
  const s = scene(t);
  fs.writeFileSync(s.hostsAllow, "# /etc/hosts.allow\nALL : 192.0.2.0/255.255.255.0 : allow\n");
  const r = s.run(["--install", "--write"], { SSH_CLIENT: "198.51.100.23 50022 22" });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^allowed 198\.51\.100\.23, the address you are logged in from \(SSH_CLIENT\)\n/, "the first thing done");
  t.ok(fs.existsSync(join(s.root, "allow", "198.51.100.23")));
  const log = fs.readFileSync(join(s.root, "sentry.log"), "utf8");
  t.match(log, /198\.51\.100\.23 allow install: the installing administrator's address/);
  // SSH_CONNECTION works too, and an IPv6 client.
  const s2 = scene(t);
  s2.run(["--install"], { SSH_CLIENT: "", SSH_CONNECTION: "2001:db8::23 50022 2001:db8::1 22" });
  t.ok(fs.existsSync(join(s2.root, "allow", "2001:db8::23")));
});

t.test("install --write: lines at the top, backup, unrelated lines kept, idempotent; uninstall", async (t) => {
  const s = scene(t);
  const original = "# hosts.allow: header comment\n#\nsshd : 192.0.2.1 : allow\nALL : LOCAL : allow\n";
  fs.writeFileSync(s.hostsAllow, original);
  let r = s.run(["--install", "--write"]);
  t.equal(r.status, 0, r.stderr);
  const text = fs.readFileSync(s.hostsAllow, "utf8");
  t.equal(text, `# hosts.allow: header comment\n#\n${DENY(s.root)}\n${ALLOWED(s.root)}\n${SPAWN(s.root)}\nsshd : 192.0.2.1 : allow\nALL : LOCAL : allow\n`);
  const backups = fs.readdirSync(s.dir).filter((f) => f.startsWith("hosts.allow.sentry-backup-"));
  t.equal(backups.length, 1, "one backup");
  t.equal(fs.readFileSync(join(s.dir, backups[0]), "utf8"), original, "the backup is the original");
  r = s.run(["--install", "--write"]);
  t.equal(r.status, 0);
  t.match(r.stdout, /already has sentry's lines/);
  t.equal(fs.readFileSync(s.hostsAllow, "utf8"), text, "re-running changes nothing");
  // An old sentry.pl line, or ours in the wrong order, is replaced by the right pair.
  fs.writeFileSync(s.hostsAllow, `sshd : ALL : spawn ${s.root}/sentry.pl -c --ip=%a : allow\nsshd : 192.0.2.1 : allow\n${DENY(s.root)}\n`);
  s.run(["--install", "--write"]);
  t.equal(fs.readFileSync(s.hostsAllow, "utf8"), `${DENY(s.root)}\n${ALLOWED(s.root)}\n${SPAWN(s.root)}\nsshd : 192.0.2.1 : allow\n`);
  r = s.run(["--uninstall"]);
  t.equal(r.status, 0);
  t.equal(fs.readFileSync(s.hostsAllow, "utf8"), "sshd : 192.0.2.1 : allow\n", "only sentry's lines removed");
  t.match(r.stdout, new RegExp(`rm -r ${s.root}`), "tells how to remove ROOT_DIR");
  t.ok(fs.existsSync(join(s.root, "sentry")), "ROOT_DIR itself is left for the admin");
});

t.test("install --write leaves hosts.allow when sshd does not link libwrap, and sets up the --scan timer instead", async (t) => {
  const s = scene(t);
  fs.writeFileSync(s.hostsAllow, "ALL : LOCAL : allow\n");
  fs.mkdirSync(join(s.dir, "sys", "cron.d"), { recursive: true }); // this machine runs no systemd: the cron line
  const r = s.run(["--install", "--write"], { SSHD_PATH: UNWRAPPED_SSHD });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /not editing .*hosts\.allow: \/bin\/true does not link libwrap/);
  t.match(fs.readFileSync(join(s.dir, "sys", "cron.d", "sentry"), "utf8"), /^\* \* \* \* \* root .*\/sentry --scan /m);
  t.match(r.stdout, /pam_exec\.so/);
  t.equal(fs.readFileSync(s.hostsAllow, "utf8"), "ALL : LOCAL : allow\n", "hosts.allow untouched");
});

t.test("doctor: OK when every link holds", async (t) => {
  const s = scene(t);
  s.run(["--install", "--write"]);
  fs.writeFileSync(s.log, Array.from({ length: 12 }, (_, i) => `Invalid user u${i} from 203.0.113.${i + 1} port 4${i}22\n`).join(""));
  const r = s.run(["--doctor"]);
  t.equal(r.status, 0, r.stdout);
  t.match(r.stdout, /^SENTRY OK - \d+ checks passed\n/);
  t.match(r.stdout, /OK: ssh: .*auth\.log: 12 lines of its daemons among the latest, 12 understood/);
});

t.test("doctor: each broken link gives its line and the Nagios code", async (t) => {
  const s = scene(t);
  s.run(["--install", "--write"]);
  fs.writeFileSync(s.log, "Accepted password for admin from 192.0.2.9 port 4000 ssh2\n");
  const good = fs.readFileSync(s.hostsAllow, "utf8");

  fs.writeFileSync(s.hostsAllow, `${SPAWN(s.root)}\n`);
  let r = s.run(["--doctor"]);
  t.equal(r.status, 2, "missing deny line: CRITICAL");
  t.match(r.stdout, /^SENTRY CRITICAL - 1 critical: .*hosts\.allow: no line/);
  t.match(r.stdout, /\nCRITICAL: .*no line "sshd : .*hosts\.deny : deny"/);

  fs.writeFileSync(s.hostsAllow, `${SPAWN(s.root)}\n${DENY(s.root)}\n`);
  r = s.run(["--doctor"]);
  t.equal(r.status, 2, "wrong order: CRITICAL");
  t.match(r.stdout, /CRITICAL: .*the deny line \(line 2\) comes after the spawn line \(line 1\)/);

  fs.writeFileSync(s.hostsAllow, good);
  fs.rmSync(join(s.root, "sentry"));
  r = s.run(["--doctor"]);
  t.equal(r.status, 2, "spawned binary missing: CRITICAL");
  t.match(r.stdout, /spawns .*\/sentry, which is not an executable file/);
  s.run(["--install"]);

  r = s.run(["--doctor"], { SSHD_PATH: UNWRAPPED_SSHD });
  t.equal(r.status, 2, "sshd without libwrap: CRITICAL");
  t.match(r.stdout, /\/bin\/true does not link libwrap/);
  s.run(["--scan"], { SSHD_PATH: UNWRAPPED_SSHD });
  r = s.run(["--doctor"], { SSHD_PATH: UNWRAPPED_SSHD });
  t.equal(r.status, 0, "but a --scan that ran within the hour protects it");
  t.match(r.stdout, /does not link libwrap, but sentry --scan ran within the hour/);

  r = s.run(["--doctor"], { SSH_LOG: join(s.dir, "missing.log") });
  t.equal(r.status, 2, "a configured log that is missing: CRITICAL");
  t.match(r.stdout, /CRITICAL: ssh: .*missing\.log does not exist/);

  fs.writeFileSync(s.log, Array.from({ length: 20 }, () => "Nov 21 10:00:00 host sshd[1]: some format sentry does not know from 203.0.113.1\n").join(""));
  r = s.run(["--doctor"]);
  t.equal(r.status, 2, "a log that is not understood: CRITICAL");
  t.match(r.stdout, /20 lines of its daemons among the latest, 0 understood: sentry does not understand this log/);
  fs.writeFileSync(s.log, "Accepted password for admin from 192.0.2.9 port 4000 ssh2\n");

  r = s.run(["--doctor"], { PROTECT_FTP: "1", FTP_LOG: join(s.dir, "nope.log") });
  t.equal(r.status, 2, "a configured FTP log that is missing holds back every block: CRITICAL");

  r = s.run(["--doctor"], { ADD_TO_PF: "1", PATH: "/nonexistent" });
  t.equal(r.status, 2, "an enabled firewall that cannot be reached: CRITICAL");
  t.match(r.stdout, /CRITICAL: pf: cannot list sentry_blocklist/);

  r = s.run(["--doctor"], { EXPIRE_BLOCK_DAYS: "x" });
  t.equal(r.status, 3, "a bad configuration: UNKNOWN");
  t.match(r.stdout, /^SENTRY UNKNOWN - 1 unknown: configuration: .*EXPIRE_BLOCK_DAYS/);

  // An unwritable ROOT_DIR: a read-only mount in a private mount namespace.
  const ro = spawnSync("unshare", ["-m", "sh", "-c", `mount -o bind,ro ${s.root} ${s.root} && exec "$0" --doctor`, s.bin], { env: s.env(), encoding: "utf8" });
  t.equal(ro.status, 2, "unwritable ROOT_DIR: CRITICAL");
  t.match(ro.stdout, /CRITICAL: .* is not writable: .*read-only/i);
});

t.test("install reads the logs once, so no login pays for the first read", async (t) => {
  const s = scene(t);
  const text = Array.from({ length: 12 }, (_, i) => `Invalid user u${i} from 203.0.113.${i + 1} port 4${i}22\n`).join("");
  fs.writeFileSync(s.log, text);
  const r = s.run(["--install"]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`read 1 of 1 logs once \\(${text.length} bytes\\)`));
  const { DatabaseSync } = await import("node:sqlite");
  const db = new DatabaseSync(join(s.root, "sentry.db"), { readOnly: true });
  const cur = db.prepare("SELECT offset FROM cursors WHERE source = ?").get(s.log);
  db.close();
  t.equal(Number(cur?.offset), text.length, "the cursor stands at the end of the log");
  t.notOk(fs.existsSync(join(s.root, "block", "203.0.113.1")), "reading decides nothing by itself");
});

// Issue 16 item 5: under tcpd a refused connection still holds an sshd
// login slot for 5 s; the kernel's drop costs nothing. --install says so
// where `nft` is there and the backend is off, and prints the rule.
t.test("--install offers the nftables backend where nft is present, and only then", async (t) => {
  const s = scene(t);
  const nft = spawnSync("nft", ["--version"], { encoding: "utf8" });
  t.equal(nft.status, 0, "this machine has nft (test/deps.sh installs it)");
  let r = s.run(["--install"]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /\nnftables is here \(nftables v[\d.]+.*\): it refuses a blocked address for free/, "offered");
  t.match(r.stdout, new RegExp(`set ADD_TO_NFTABLES=1 in ${s.root.replaceAll("/", "\\/")}/sentry\\.conf, load this rule, then run sentry --resync:\\n`));
  t.match(r.stdout, /table inet sentry_blocklist/, "with the rule to load");
  // Already on: the usual "sentry fills the set" text, no offer.
  r = s.run(["--install"], { ADD_TO_NFTABLES: "1" });
  t.notMatch(r.stdout, /nftables is here/, "not offered when on");
  // No nft on PATH: nothing offered.
  const bare = join(s.root, "..", "bare-path");
  fs.mkdirSync(bare, { recursive: true });
  r = s.run(["--install"], { PATH: bare });
  t.notMatch(r.stdout, /nftables is here/, "not offered without nft");
});
