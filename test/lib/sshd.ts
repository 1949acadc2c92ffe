// test/lib/sshd.ts — a real sshd, through real tcpwrappers, in a sandbox.
//
// What it builds (all of it private to one test run, nothing global changed):
//
//   network namespace  `sentry-e2e-PID` (`ip netns add`): its `lo` carries the
//                      server addresses 192.0.2.1 and 2001:db8::1 and one
//                      address per simulated client (192.0.2.0/24 TEST-NET-1,
//                      2001:db8::/64 documentation prefix). A client is
//                      `ip netns exec NS ssh -b CLIENT_ADDR ...`, so tcpd's %a
//                      is that address. These addresses are not loopback, so
//                      sentry's hard-wired "never block loopback" rule does not
//                      hide anything, yet no packet leaves the namespace.
//   mount namespace    sshd starts under `unshare -m --propagation private`
//                      with a copy of /etc bind-mounted over /etc, and tmpfs
//                      over /run and /var/log. So /etc/hosts.allow, the
//                      throw-away user (/etc/passwd, shadow, group), PAM
//                      tweaks, /run/sshd, btmp/wtmp/lastlog all exist only
//                      for this sshd and its children (the spawned sentry
//                      included) and vanish with it: the global
//                      /etc/hosts.allow is never written, so it cannot be left
//                      changed on any exit path. The copy lives in the run's
//                      temp dir, so the test rewrites the private hosts.allow
//                      from outside at will (libwrap rereads it per connection).
//   sshd               /usr/sbin/sshd run through a symlink named
//                      `sshd-sentry-test`: libwrap matches rules on the
//                      daemon's program name, so the rules name only this
//                      sshd. Own config, host key, pid file, port 2222,
//                      `LogLevel VERBOSE`, `-E` log (no syslog prefix) that
//                      sentry reads through SSH_LOG. `-D`: the process the
//                      harness spawned *is* sshd (ip netns exec, unshare and
//                      sh all exec), so it is stopped by its own pid.
//   cleanup            cleanup() is synchronous and idempotent; it runs from
//                      the test's teardown, from process 'exit', and from
//                      SIGINT/SIGTERM/SIGHUP. A detached watchdog shell also
//                      does it if this process dies without running it
//                      (SIGKILL, tap's timeout): it polls our pid.
//
// Facts measured on Debian 12 (OpenSSH 9.2p1, libwrap0 7.6.q-32):
//   - a client listed in hosts.deny sees `kex_exchange_identification: read:
//     Connection reset by peer` after 5.0 s (libwrap's refusal delay), exit 255;
//     sshd's -E log shows nothing for it (libwrap logs to syslog itself);
//   - pam_unix sleeps ~2 s after each failed password: the private copy of
//     /etc/pam.d/common-auth gets `nodelay` (the log lines stay the same);
//   - sshd's -E file is CRLF: every line ends in "\r\n" (OpenSSH writes its
//     stderr log that way), so a parser must drop a trailing \r;
//   - a command session (`ssh host cmd`, no tty) writes no utmp/wtmp, but every
//     failed password is appended to /var/log/btmp: hence the tmpfs.

import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import {
  accessSync, chmodSync, chownSync, constants, existsSync, mkdirSync, mkdtempSync,
  readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// ---- fixed names ---------------------------------------------------------

export const PORT = 2222;
export const SERVER_V4 = "192.0.2.1";
export const SERVER_V6 = "2001:db8::1";
/** argv[0] basename of our sshd, i.e. the daemon name in hosts.allow rules. */
export const DAEMON = "sshd-sentry-test";
/** Printed by the remote command: its presence in stdout proves a login. */
export const LOGIN_MARKER = "sentry-e2e-login-ok";
const SSHD = "/usr/sbin/sshd";

export interface SshOutcome {
  from: string;
  user: string;
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** wall time of the whole client run */
  ms: number;
  /** the remote command ran: authentication succeeded */
  loggedIn: boolean;
  /** tcpd refused the connection before the SSH banner */
  refused: boolean;
  /** the server answered "Permission denied" (authentication failed) */
  denied: boolean;
}

export interface SshRequest {
  /** client source address (must have been added to the namespace) */
  from: string;
  user: string;
  password: string;
  /** password prompts answered in this one connection (1: sshpass; >1: SSH_ASKPASS) */
  prompts?: number;
  /** kill the client after this long (default 30 s) */
  timeoutMs?: number;
  /** the authentication method the client offers (default password) */
  method?: "password" | "keyboard-interactive";
}

export interface Harness {
  ns: string;
  tmp: string;
  /** the throw-away user, known only inside the private /etc */
  user: string;
  password: string;
  sshdPid: number;
  sshLog: string;
  /** the private copy, i.e. what this sshd reads as /etc/hosts.allow */
  hostsAllow: string;
  /** global files snapshotted at start: path -> sha256 (null: absent) */
  globalSnapshot: Map<string, string | null>;
  addAddresses(addrs: string[]): void;
  ssh(req: SshRequest): Promise<SshOutcome>;
  /** run a command inside the network namespace (not the mount namespace) */
  inNs(cmd: string, args: string[]): { code: number | null; stdout: string; stderr: string };
  cleanup(): void;
  cleanedUp(): boolean;
}

// ---- small helpers -------------------------------------------------------

function sh(cmd: string, args: string[], input?: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { input, encoding: "utf8", timeout: 30_000 });
  if (r.error) return { code: null, stdout: "", stderr: String(r.error) };
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function must(cmd: string, args: string[], input?: string): string {
  const r = sh(cmd, args, input);
  if (r.code !== 0) {
    throw new Error(`e2e harness: \`${cmd} ${args.join(" ")}\` failed (${r.code}): ${r.stderr.trim()}`);
  }
  return r.stdout;
}

export function sha256OrNull(path: string): string | null {
  try {
    return createHash("sha256").update(readFileSync(path)).digest("hex");
  } catch {
    return null;
  }
}

export function alive(pid: number): boolean {
  // A zombie (exited, not yet reaped by us) counts as gone.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Pids of processes whose command line mentions `needle` (our temp dir). */
export function pidsMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8");
      if (cmdline.includes(needle) && alive(Number(name))) found.push(Number(name));
    } catch {
      // process ended while we looked
    }
  }
  return found;
}

export function netnsExists(ns: string): boolean {
  return existsSync(join("/run/netns", ns));
}

/** Global files the suite must leave byte-identical. */
export const GLOBAL_FILES = [
  "/etc/hosts.allow", "/etc/hosts.deny", "/etc/passwd", "/etc/shadow", "/etc/group",
  "/var/log/btmp", "/var/log/wtmp", "/var/log/lastlog",
];

// ---- prerequisites -------------------------------------------------------

/** Throws one clear message listing everything missing (the test then FAILS). */
export function checkPrerequisites(sentry: string): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push("must run as root (ip netns, mount, sshd)");
  for (const tool of ["ip", "unshare", "mount", "ssh", "ssh-keygen", "sshpass", "useradd", "openssl", "ldd"]) {
    if (sh("sh", ["-c", `command -v ${tool}`]).code !== 0) problems.push(`missing command: ${tool}`);
  }
  if (!existsSync(SSHD)) {
    problems.push(`missing ${SSHD} (package openssh-server)`);
  } else if (!/libwrap\.so/.test(sh("ldd", [SSHD]).stdout)) {
    problems.push(`${SSHD} is not linked with libwrap: tcpwrappers cannot be tested with it`);
  }
  try {
    accessSync(sentry, constants.X_OK);
  } catch {
    problems.push(`missing or not executable: ${sentry} (run \`npm run build\`)`);
  }
  if (/[\s:%\\'"]/.test(sentry)) {
    problems.push(`path of the binary has a character hosts.allow cannot carry: ${sentry}`);
  }
  if (problems.length > 0) {
    throw new Error(`e2e prerequisites missing (run test/deps.sh as root):\n  - ${problems.join("\n  - ")}`);
  }
}

// ---- the harness ---------------------------------------------------------

/**
 * `sshdConfig` replaces (or adds) sshd_config keywords, e.g.
 * `{ KbdInteractiveAuthentication: "yes", LogLevel: "INFO" }`: a scenario
 * that needs another sshd than the default one says so in one place.
 */
export async function startHarness(opts: { addresses: string[]; sshdConfig?: Record<string, string> }): Promise<Harness> {
  const ns = `sentry-e2e-${process.pid}`;
  const tmp = mkdtempSync(join(tmpdir(), "sentry-e2e-"));
  if (/[\s:%\\'"]/.test(tmp)) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`e2e harness: temp dir ${tmp} has a character hosts.allow cannot carry (set TMPDIR)`);
  }
  // 0711: the throw-away user's home is inside; everything secret in here
  // (host key, the /etc copy's shadow) keeps its own restrictive mode.
  chmodSync(tmp, 0o711);
  const user = `sentry-e2e-${process.pid % 100000}`;
  const password = "Corr3ct-h0rse-e2e";
  const sshLog = join(tmp, "sshd.log");
  const hostsAllow = join(tmp, "etc", "hosts.allow");
  const globalSnapshot = new Map<string, string | null>();
  for (const f of GLOBAL_FILES) globalSnapshot.set(f, sha256OrNull(f));

  let child: ChildProcess | undefined;
  let sshdPid = 0;
  let watchdogPid = 0;
  let done = false;

  function cleanup(): void {
    if (done) return;
    done = true;
    // 1. sshd by its pid (it is our direct child), then anything left in our
    //    network namespace (per-connection sshd children, clients): every one
    //    of them was started by this run.
    if (sshdPid > 0 && alive(sshdPid)) {
      try { process.kill(sshdPid, "SIGTERM"); } catch { /* gone */ }
      for (let i = 0; i < 50 && alive(sshdPid); i++) sleepSync(50);
      if (alive(sshdPid)) try { process.kill(sshdPid, "SIGKILL"); } catch { /* gone */ }
    }
    const killed: number[] = [];
    if (netnsExists(ns)) {
      for (const p of sh("ip", ["netns", "pids", ns]).stdout.split(/\s+/).filter(Boolean)) {
        try { process.kill(Number(p), "SIGKILL"); killed.push(Number(p)); } catch { /* gone */ }
      }
    }
    // 2. the temp dir (the private /etc copy, the user's home, logs, ROOT_DIR)
    rmSync(tmp, { recursive: true, force: true });
    // 3. the watchdog is no longer needed
    if (watchdogPid > 0) try { process.kill(watchdogPid, "SIGKILL"); killed.push(watchdogPid); } catch { /* gone */ }
    // SIGKILL is delivered, not yet done: wait (bounded) until they are gone,
    // so "nothing left running" is true when cleanup returns.
    for (let i = 0; i < 100 && killed.some(alive); i++) sleepSync(50);
    if (netnsExists(ns)) sh("ip", ["netns", "del", ns]);
  }

  const onSignal = (sig: NodeJS.Signals): void => {
    cleanup();
    process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGHUP" ? 1 : 15));
  };
  process.once("exit", cleanup);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(sig, onSignal);

  try {
    // Watchdog: if this process dies without cleaning up (SIGKILL), do it.
    // It kills only the sshd whose command line names our temp dir, and the
    // processes inside our own namespace.
    const wd = spawn("sh", ["-c", `
      while kill -0 "$1" 2>/dev/null; do sleep 1; done
      for p in $(ip netns pids "$2" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
      ip netns del "$2" 2>/dev/null
      rm -rf "$3"
    `, "sentry-e2e-watchdog", String(process.pid), ns, tmp], { detached: true, stdio: "ignore" });
    wd.unref();
    watchdogPid = wd.pid ?? 0;

    // -- network namespace
    if (netnsExists(ns)) must("ip", ["netns", "del", ns]); // a stale one of a dead run with our pid
    must("ip", ["netns", "add", ns]);
    must("ip", ["-n", ns, "link", "set", "lo", "up"]);
    addAddresses(ns, [SERVER_V4, SERVER_V6, ...opts.addresses]);

    // -- private /etc: a copy, the user, PAM without fail delay, tcpwrappers files
    must("cp", ["-a", "/etc", join(tmp, "etc")]);
    const home = join(tmp, "home");
    must("useradd", ["--prefix", tmp, "-M", "-d", home, "-s", "/bin/sh",
      "-p", must("openssl", ["passwd", "-6", password]).trim(), user]);
    const uid = Number(must("awk", ["-F:", `$1=="${user}"{print $3}`, join(tmp, "etc", "passwd")]).trim());
    mkdirSync(home);
    chownSync(home, uid, uid);
    const commonAuth = join(tmp, "etc", "pam.d", "common-auth");
    if (existsSync(commonAuth)) {
      writeFileSync(commonAuth, readFileSync(commonAuth, "utf8")
        .replace(/^(auth\s.*pam_unix\.so\b.*)$/gm, (line) => (/\bnodelay\b/.test(line) ? line : `${line} nodelay`)));
    }
    writeFileSync(hostsAllow, "");
    writeFileSync(join(tmp, "etc", "hosts.deny"), "");

    // -- sshd: symlinked name, host key, config
    const daemon = join(tmp, DAEMON);
    symlinkSync(SSHD, daemon);
    must("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(tmp, "hostkey")]);
    const version = sh("ssh", ["-V"]).stderr; // "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL ..."
    const m = /OpenSSH_(\d+)\.(\d+)/.exec(version);
    const atLeast98 = m !== null && (Number(m[1]) > 9 || (Number(m[1]) === 9 && Number(m[2]) >= 8));
    const config = [
      `Port ${PORT}`,
      "AddressFamily any",
      `ListenAddress ${SERVER_V4}`,
      `ListenAddress ${SERVER_V6}`,
      `HostKey ${join(tmp, "hostkey")}`,
      `PidFile ${join(tmp, "sshd.pid")}`,
      "LogLevel VERBOSE",
      "PasswordAuthentication yes",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication no",
      "AuthorizedKeysFile none",
      "UsePAM yes",
      "PermitRootLogin no",
      "UseDNS no",
      "PrintMotd no",
      "PrintLastLog no",
      "MaxAuthTries 6",
      "LoginGraceTime 30",
      // 30+ clients at once must not be dropped by sshd's own throttle
      "MaxStartups 200",
      // OpenSSH 9.8+ penalises failing sources itself; this test is about sentry
      ...(atLeast98 ? ["PerSourcePenalties no", "PerSourceMaxStartups none"] : []),
    ];
    for (const [key, value] of Object.entries(opts.sshdConfig ?? {})) {
      const at = config.findIndex((l) => l.split(" ")[0].toLowerCase() === key.toLowerCase());
      if (at === -1) config.push(`${key} ${value}`);
      else config[at] = `${key} ${value}`;
    }
    writeFileSync(join(tmp, "sshd_config"), `${config.join("\n")}\n`);
    writeFileSync(join(tmp, "askpass"), '#!/bin/sh\nprintf "%s\\n" "$SENTRY_E2E_PASSWORD"\n', { mode: 0o755 });

    // -- start sshd inside both namespaces
    const inner = `set -e
      mount --bind "$1/etc" /etc
      mount -t tmpfs -o mode=755 sentry-e2e-run /run
      mkdir -m 755 /run/sshd
      mount -t tmpfs -o mode=755 sentry-e2e-log /var/log
      exec "$1/${DAEMON}" -D -f "$1/sshd_config" -E "$1/sshd.log"`;
    let early = "";
    child = spawn("ip", ["netns", "exec", ns, "unshare", "-m", "--propagation", "private",
      "sh", "-c", inner, "sentry-e2e-sshd", tmp], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout?.on("data", (d: Buffer) => { early += d.toString(); });
    child.stderr?.on("data", (d: Buffer) => { early += d.toString(); });
    sshdPid = child.pid ?? 0;
    let exited = false;
    child.on("exit", () => { exited = true; });

    const deadline = Date.now() + 15_000;
    for (;;) {
      const log = existsSync(sshLog) ? readFileSync(sshLog, "utf8") : "";
      if (log.includes(`Server listening on ${SERVER_V4} port ${PORT}`) &&
          log.includes(`Server listening on ${SERVER_V6} port ${PORT}`)) break;
      if (exited || Date.now() > deadline) {
        throw new Error(`e2e harness: sshd did not start (${exited ? "exited" : "timeout"}):\n${early}${log}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const pidFile = Number(readFileSync(join(tmp, "sshd.pid"), "utf8").trim());
    if (pidFile !== sshdPid) {
      throw new Error(`e2e harness: sshd pid file says ${pidFile}, spawned pid ${sshdPid}`);
    }
    if (readlinkSync(`/proc/${sshdPid}/ns/net`) === readlinkSync("/proc/self/ns/net") ||
        readlinkSync(`/proc/${sshdPid}/ns/mnt`) === readlinkSync("/proc/self/ns/mnt")) {
      throw new Error("e2e harness: sshd is not in its own network and mount namespaces");
    }
  } catch (e) {
    cleanup();
    throw e;
  }

  function inNs(cmd: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
    return sh("ip", ["netns", "exec", ns, cmd, ...args]);
  }

  async function ssh(req: SshRequest): Promise<SshOutcome> {
    const prompts = req.prompts ?? 1;
    const to = req.from.includes(":") ? SERVER_V6 : SERVER_V4;
    const sshArgs = [
      "-F", "/dev/null", "-T", "-p", String(PORT), "-b", req.from, "-l", req.user,
      "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
      "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
      "-o", "PubkeyAuthentication=no", "-o", `PreferredAuthentications=${req.method ?? "password"}`,
      "-o", `NumberOfPasswordPrompts=${prompts}`, "-o", "ConnectTimeout=20",
      "-o", "ControlMaster=no", "-o", "ControlPath=none",
      to, `echo ${LOGIN_MARKER}`,
    ];
    // One prompt: sshpass (the usual attacker tool; it gives up after one
    // wrong answer). Several: ssh's own SSH_ASKPASS, forced, answers each.
    const argv = prompts === 1
      ? ["netns", "exec", ns, "sshpass", "-e", "ssh", ...sshArgs]
      : ["netns", "exec", ns, "ssh", ...sshArgs];
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" };
    if (prompts === 1) env.SSHPASS = req.password;
    else Object.assign(env, { SSH_ASKPASS: join(tmp, "askpass"), SSH_ASKPASS_REQUIRE: "force", SENTRY_E2E_PASSWORD: req.password });
    const start = Date.now();
    return await new Promise<SshOutcome>((resolve) => {
      const c = spawn("ip", argv, { env, stdio: ["ignore", "pipe", "pipe"], timeout: req.timeoutMs ?? 30_000 });
      let stdout = "";
      let stderr = "";
      c.stdout.on("data", (d: Buffer) => { stdout += d.toString(); });
      c.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
      c.on("close", (code, signal) => {
        const loggedIn = stdout.includes(LOGIN_MARKER);
        resolve({
          from: req.from, user: req.user, code, signal, stdout, stderr, ms: Date.now() - start, loggedIn,
          // No SSH banner at all: tcpd said no (libwrap closes with the client's
          // version string unread, hence the reset; a FIN is accepted too).
          refused: !loggedIn && /kex_exchange_identification: (read: Connection reset by peer|Connection closed by remote host)/.test(stderr),
          denied: !loggedIn && /Permission denied/.test(stderr),
        });
      });
    });
  }

  return {
    ns, tmp, user, password, sshdPid, sshLog, hostsAllow, globalSnapshot,
    addAddresses: (addrs) => addAddresses(ns, addrs),
    ssh, inNs, cleanup, cleanedUp: () => done,
  };
}

function addAddresses(ns: string, addrs: string[]): void {
  if (addrs.length === 0) return;
  // /32 and /128 each: exactly these addresses become local, nothing else.
  must("ip", ["-n", ns, "-batch", "-"], addrs.map((a) =>
    a.includes(":") ? `addr add ${a}/128 dev lo nodad` : `addr add ${a}/32 dev lo`).join("\n") + "\n");
}

/**
 * What to print beside a failed assertion about `ip`: sentry's files for
 * it, hosts.deny, the lines of sshd's log and of sentry.log that name it,
 * the end of sentry's stderr when the spawn line keeps one, and what each
 * client saw. (The index's tallies are test/lib/run.ts's evidence().)
 */
export function whatHappened(rootDir: string, sshLog: string, ip: string, outcomes: SshOutcome[] = [], spawnErr = ""): Record<string, unknown> {
  const read = (f: string): string => (existsSync(f) ? readFileSync(f, "utf8") : "(missing)");
  const mentions = (text: string): string[] => text.split("\n").filter((l) => l.split(/[\s[\]]+/).includes(ip));
  const file = (dir: string): string | null => (existsSync(join(rootDir, dir, ip)) ? read(join(rootDir, dir, ip)) : null);
  return {
    ip,
    seen: (file("seen") ?? "").split("\n").filter(Boolean).length,
    allowFile: file("allow"),
    blockFile: file("block"),
    hostsDeny: existsSync(join(rootDir, "hosts.deny")) ? read(join(rootDir, "hosts.deny")).split("\n").filter(Boolean) : null,
    sshdLog: mentions(read(sshLog)),
    sentryLog: mentions(read(join(rootDir, "sentry.log"))),
    ...(spawnErr ? { sentryStderr: read(spawnErr).split("\n").slice(-20) } : {}),
    clients: outcomes.map((o) => ({ user: o.user, code: o.code, ms: o.ms, loggedIn: o.loggedIn, refused: o.refused, denied: o.denied, stderr: o.stderr.trim() })),
  };
}
