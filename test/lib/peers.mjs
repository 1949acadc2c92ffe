// test/lib/peers.mjs — fail2ban and sshguard, the tools sentry is measured
// against, for `npm run bench` only (the guesses and parse parts).
//
// How it gets them without touching the system: `apt-get download` of
// Debian's packages (fail2ban, python3-pyinotify, sshguard) and `dpkg-deb -x`
// into a cache directory, once per machine (SENTRY_PEERS_CACHE, else
// TMPDIR/sentry-peers-cache). Nothing is installed: no maintainer script
// runs, so no service is enabled or started on the host, nothing under /etc
// is written, and `npm test` never needs them. python3-pyinotify comes along
// because Debian installs it with fail2ban (Recommends), and with it
// fail2ban's default `backend = auto` follows the log by inotify, not by
// polling once a second: the peer is measured as an administrator gets it.
// fail2ban runs on Debian's own /usr/bin/python3 (its only dependency).
//
// How they run: each inside the benchmark sshd's network namespace
// (`ip netns exec`), so their firewall rules are that namespace's and vanish
// with it; reading the harness's sshd log; configuration, socket, pid file,
// database and their own log in a directory of the run. Each is started in a
// process group of its own (detached) and stopped by that group: sshguard's
// script ends with `trap "kill 0" EXIT`, which would otherwise signal the
// benchmark itself.
//
// What is changed from the packages' defaults, and only where the harness
// differs from a Debian server (everything that decides when to ban stays):
//   fail2ban  jail `sshd` (enabled by Debian's jail.d/defaults-debian.conf):
//             port = the harness's (2222: the stock `ssh` would ban port 22
//             only), logpath = the harness's sshd log read from its end
//             (`tail`), datepattern = {NONE} (sshd -E writes no time: each
//             line is taken as "now", which it is, since fail2ban follows the
//             file as it grows); filter.d/sshd.local sets the filter's
//             `__prefix_line` to `\s*`: the stock one expects `host sshd[pid]:`
//             before the message and, on a bare line, takes its first word for
//             the host name, so no line would match. maxretry 5, findtime 10m,
//             bantime 10m, banaction iptables-multiport: the stock values.
//   sshguard  the package's /usr/sbin/sshguard script with its two hard-wired
//             paths (libexec, config) pointed into the cache and the run; the
//             configuration is the package's sshguard.conf (THRESHOLD 30,
//             BLOCK_TIME 120, DETECTION_TIME 1800, BACKEND sshg-fw-nft-sets,
//             the package's whitelist) with the journalctl LOGREADER replaced
//             by FILES = the harness's sshd log (sshg-logtail, i.e. tail -F).

import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const PACKAGES = ["fail2ban", "python3-pyinotify", "sshguard"];
export const PYTHON = "/usr/bin/python3";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The extracted packages' root (ROOT/usr/bin/fail2ban-server,
 * ROOT/usr/libexec/sshguard/…), downloaded and unpacked once; returns
 * { root, versions: { fail2ban, sshguard } } (Debian versions of the debs).
 */
export function peersPackages() {
  const cache = process.env.SENTRY_PEERS_CACHE ?? join(tmpdir(), "sentry-peers-cache");
  const root = join(cache, "root");
  const versionsFile = join(root, "versions.json"); // written before the rename: root never exists without it
  const complete = () => fs.existsSync(join(root, "usr", "bin", "fail2ban-server")) && fs.existsSync(join(root, "usr", "libexec", "sshguard", "sshg-parser")) && fs.existsSync(versionsFile);
  if (!complete()) {
    // root appears only by an atomic rename of a complete tree: one without
    // all of it is an older layout of this cache, replaced.
    fs.rmSync(root, { recursive: true, force: true });
    fs.mkdirSync(cache, { recursive: true });
    const work = fs.mkdtempSync(join(cache, "dl-"));
    try {
      const dl = () => spawnSync("apt-get", ["download", ...PACKAGES], { cwd: work, encoding: "utf8", timeout: 300_000 });
      let r = dl();
      if (r.status !== 0) {
        // A fresh machine has no package lists yet.
        spawnSync("apt-get", ["update", "-qq"], { encoding: "utf8", timeout: 300_000 });
        r = dl();
      }
      if (r.status !== 0) throw new Error(`apt-get download ${PACKAGES.join(" ")} failed: ${(r.stderr || String(r.error)).trim()}`);
      const versions = {};
      for (const p of PACKAGES) {
        const deb = fs.readdirSync(work).find((f) => f.startsWith(`${p}_`) && f.endsWith(".deb"));
        if (!deb) throw new Error(`apt-get download ${p}: no ${p}_*.deb in ${work}`);
        const x = spawnSync("dpkg-deb", ["-x", join(work, deb), join(work, "root")], { encoding: "utf8" });
        if (x.status !== 0) throw new Error(`dpkg-deb -x ${deb} failed: ${x.stderr}`);
        versions[p] = spawnSync("dpkg-deb", ["-f", join(work, deb), "Version"], { encoding: "utf8" }).stdout.trim();
      }
      fs.writeFileSync(join(work, "root", "versions.json"), JSON.stringify(versions));
      try {
        fs.renameSync(join(work, "root"), root); // atomic: a parallel run sees all of it or nothing
      } catch (e) {
        if (!complete()) throw e; // else another run unpacked the same packages first
      }
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
  if (!fs.existsSync(PYTHON)) throw new Error(`${PYTHON} is missing (Debian package python3): fail2ban runs on it`);
  const v = JSON.parse(fs.readFileSync(versionsFile, "utf8"));
  // "1.0.2-2" → "1.0.2", "2.4.2-1+b2" → "2.4.2": the upstream version names the tool.
  const up = (s) => String(s ?? "?").replace(/^\d+:/, "").replace(/-[^-]*$/, "");
  return { root, versions: { fail2ban: up(v.fail2ban), sshguard: up(v.sshguard) } };
}

/** argv and environment of fail2ban-regex (stock filter: ROOT/etc/fail2ban/filter.d/sshd.conf). */
export function fail2banRegex(root, log) {
  return {
    argv: [PYTHON, join(root, "usr", "bin", "fail2ban-regex"), log, join(root, "etc", "fail2ban", "filter.d", "sshd.conf")],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", PYTHONPATH: join(root, "usr", "lib", "python3", "dist-packages"), LANG: "C.UTF-8" },
  };
}

/** The path of sshguard's parser (reads log lines on stdin, writes one line per attack). */
export const sshgParser = (root) => join(root, "usr", "libexec", "sshguard", "sshg-parser");

function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (e) {
    return e.code === "EPERM";
  }
}

/** Ends a process group we started: SIGTERM, up to `graceMs`, then SIGKILL. */
async function stopGroup(pgid, graceMs) {
  if (!(pgid > 0) || !groupAlive(pgid)) return;
  try {
    process.kill(-pgid, "SIGTERM");
  } catch (e) {
    if (e.code !== "ESRCH") throw e; // ended between the check and the signal
  }
  for (let t = 0; t < graceMs && groupAlive(pgid); t += 100) await sleep(100);
  if (groupAlive(pgid)) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch (e) {
      if (e.code !== "ESRCH") throw e;
    }
  }
}

/** Spawns argv in the namespace, in its own process group, output to `outFile`. */
function spawnInNs(ns, argv, env, outFile) {
  const fd = fs.openSync(outFile, "a");
  const child = spawn("ip", ["netns", "exec", ns, ...argv], { env, detached: true, stdio: ["ignore", fd, fd] });
  fs.closeSync(fd);
  let exited = null;
  child.on("exit", (code, signal) => {
    exited = signal ? `signal ${signal}` : `exit ${code}`;
  });
  // A peer left running would keep its firewall rules and the namespace busy:
  // if the benchmark ends without stop() (an exception, a signal), end it.
  const onExit = () => {
    if (child.pid && groupAlive(child.pid)) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        /* already gone: nothing to end */
      }
    }
  };
  process.once("exit", onExit);
  return { child, pid: child.pid ?? 0, exited: () => exited, forget: () => process.off("exit", onExit) };
}

async function waitFor(what, ready, proc, outFiles, timeoutMs) {
  for (let t = 0; ; t += 200) {
    if (ready()) return;
    if (proc.exited() || t > timeoutMs) {
      const out = outFiles.filter((f) => fs.existsSync(f)).map((f) => fs.readFileSync(f, "utf8").slice(-2000)).join("\n");
      throw new Error(`${what} did not start (${proc.exited() ?? `not ready after ${timeoutMs / 1000} s`}):\n${out}`);
    }
    await sleep(200);
  }
}

/**
 * fail2ban-server in the foreground in namespace `ns`, jail sshd on `log`
 * (port `port`). Resolves once the jail has started; stop() ends it (its
 * actionstop removes its iptables chain).
 */
export async function startFail2ban({ root, ns, dir, log, port }) {
  const d = join(dir, "fail2ban");
  fs.mkdirSync(d, { recursive: true });
  const conf = join(d, "etc");
  const cp = spawnSync("cp", ["-a", join(root, "etc", "fail2ban"), conf], { encoding: "utf8" });
  if (cp.status !== 0) throw new Error(`cp fail2ban configuration: ${cp.stderr}`);
  const flog = join(d, "fail2ban.log");
  fs.writeFileSync(join(conf, "fail2ban.local"), [
    "# npm run bench: everything fail2ban keeps lives in this run's directory",
    "[Definition]",
    `logtarget = ${flog}`,
    `socket = ${join(d, "fail2ban.sock")}`,
    `pidfile = ${join(d, "fail2ban.pid")}`,
    `dbfile = ${join(d, "fail2ban.sqlite3")}`,
    "",
  ].join("\n"));
  fs.writeFileSync(join(conf, "jail.local"), [
    "# npm run bench: the harness's sshd (its port, its -E log, which has no time stamps)",
    "[sshd]",
    `port = ${port}`,
    `logpath = ${log} tail`,
    "datepattern = {NONE}",
    "",
  ].join("\n"));
  fs.writeFileSync(join(conf, "filter.d", "sshd.local"), [
    "# npm run bench: sshd -E lines are the bare message (no date, host, program[pid])",
    "[Definition]",
    "__prefix_line = \\s*",
    "",
  ].join("\n"));
  const out = join(d, "stdout");
  const { env } = fail2banRegex(root, log);
  const proc = spawnInNs(ns, [PYTHON, join(root, "usr", "bin", "fail2ban-server"), "-f", "-x", "-c", conf,
    "-s", join(d, "fail2ban.sock"), "-p", join(d, "fail2ban.pid"), "--logtarget", flog, "--loglevel", "INFO", "start"], env, out);
  const started = () => fs.existsSync(flog) && /Jail 'sshd' started/.test(fs.readFileSync(flog, "utf8"));
  try {
    await waitFor("fail2ban-server", started, proc, [out, flog], 120_000);
  } catch (e) {
    await stopGroup(proc.pid, 10_000);
    proc.forget();
    throw e;
  }
  return {
    log: flog,
    /** The addresses fail2ban says it banned (its log's "Ban" lines). */
    banned: () => [...fs.readFileSync(flog, "utf8").matchAll(/\[sshd\] Ban (\S+)/g)].map((m) => m[1]),
    stop: async () => {
      await stopGroup(proc.pid, 30_000);
      proc.forget();
    },
  };
}

/**
 * The package's sshguard script in namespace `ns`, on `log`. Resolves once
 * its firewall table exists and its tail follows the log; stop() ends the
 * whole pipeline (the backend deletes its nft tables on the way out).
 */
export async function startSshguard({ root, ns, dir, log }) {
  const d = join(dir, "sshguard");
  fs.mkdirSync(d, { recursive: true });
  const libexec = join(root, "usr", "libexec", "sshguard");
  const stock = fs.readFileSync(join(root, "etc", "sshguard", "sshguard.conf"), "utf8");
  const conf = stock
    .replace(/^BACKEND="\/usr\/libexec\/sshguard\//m, `BACKEND="${libexec}/`)
    .replace(/^LOGREADER=.*$/m, `# npm run bench: the harness's sshd log instead of journalctl\nFILES="${log}"`)
    .replace(/^WHITELIST_FILE=\/etc\/sshguard\/whitelist$/m, `WHITELIST_FILE=${join(root, "etc", "sshguard", "whitelist")}`);
  for (const need of [`BACKEND="${libexec}/`, `FILES="${log}"`, `WHITELIST_FILE=${root}`]) {
    if (!conf.includes(need)) throw new Error(`sshguard.conf of the package changed: could not set ${need}…`);
  }
  const confFile = join(d, "sshguard.conf");
  fs.writeFileSync(confFile, conf);
  const script = fs.readFileSync(join(root, "usr", "sbin", "sshguard"), "utf8")
    .replace(/^libexec="\/usr\/libexec\/sshguard"$/m, `libexec="${libexec}"`)
    .replace(/^config="\/etc\/sshguard\/sshguard.conf"$/m, `config="${confFile}"`);
  if (!script.includes(`libexec="${libexec}"`) || !script.includes(`config="${confFile}"`)) {
    throw new Error("the sshguard script of the package changed: its libexec= and config= lines were not found");
  }
  const scriptFile = join(d, "sshguard");
  fs.writeFileSync(scriptFile, script, { mode: 0o755 });
  const out = join(d, "stdout");
  // sshg-blocker reports each attack and block with syslog(3): in a mount
  // namespace of its own, /dev/null covers /dev/log, so those lines about
  // documentation addresses never reach the host's auth log (where a log
  // reader, sentry included, would take them for its own). unshare and sh
  // exec, so the pid spawned is the script's.
  const inner = 'if [ -S /dev/log ]; then mount --bind /dev/null /dev/log || exit 1; fi; exec /bin/sh "$0" -i "$1"';
  const proc = spawnInNs(ns, ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", inner, scriptFile, join(d, "sshguard.pid")],
    { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" }, out);
  // Ready: the backend made its table, and tail (in sshguard's process group) runs.
  const ready = () => {
    const t = spawnSync("ip", ["netns", "exec", ns, "nft", "list", "table", "ip", "sshguard"], { encoding: "utf8" });
    return t.status === 0 && groupMembers(proc.pid).includes("tail");
  };
  try {
    await waitFor("sshguard", ready, proc, [out], 60_000);
  } catch (e) {
    await stopGroup(proc.pid, 10_000);
    proc.forget();
    throw e;
  }
  await sleep(500); // tail -F -n 0: from exec to its first read of the file's end
  return {
    log: out,
    /** The addresses in sshguard's nft set now. */
    banned: () => {
      const t = spawnSync("ip", ["netns", "exec", ns, "nft", "list", "set", "ip", "sshguard", "attackers"], { encoding: "utf8" });
      return [...(t.stdout ?? "").matchAll(/\b(\d+\.\d+\.\d+\.\d+)\b/g)].map((m) => m[1]);
    },
    stop: async () => {
      await stopGroup(proc.pid, 30_000);
      proc.forget();
    },
  };
}

/** The command names (comm) of the processes in process group `pgid`. */
function groupMembers(pgid) {
  const names = [];
  for (const n of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(n)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${n}/stat`, "utf8");
    } catch {
      continue; // ended while we looked
    }
    const close = stat.lastIndexOf(")");
    const fields = stat.slice(close + 2).split(" "); // state ppid pgrp …
    if (Number(fields[2]) === pgid) names.push(stat.slice(stat.indexOf("(") + 1, close));
  }
  return names;
}
