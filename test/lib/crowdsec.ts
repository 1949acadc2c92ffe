// test/lib/crowdsec.ts — a real CrowdSec Local API (Debian 12's crowdsec 1.4.6) for the fleet tests.
//
// How it gets the program without touching the system: `apt-get download
// crowdsec` and `dpkg-deb -x` into a cache directory (once per machine;
// SENTRY_CROWDSEC_CACHE or TMPDIR/sentry-crowdsec-cache). No maintainer
// script runs, so the postinst never registers with CrowdSec's central API
// over the internet and nothing under /etc is written.
//
// How it runs: `crowdsec -c CONFIG -no-cs -no-capi` in the foreground (LAPI
// only, no central API), config, SQLite database and profiles under the
// test's own temporary directory, listening on 127.0.0.1:PORT, inside a
// network namespace when one is given (then the sentry runs that talk to it
// run there too: `ip netns exec` execs, so the PID spawned is crowdsec's
// own). Start-up is checked by GET /health AND by `ss -ltnp` naming our PID
// on that port (another LAPI may already listen there). It is stopped by
// PID (SIGTERM; SQLite's WAL keeps the data) from stop(), from process
// 'exit' and from SIGINT/SIGTERM; machines and bouncers are created with
// cscli, which writes the database directly.

import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Lapi {
  url: string;
  port: number;
  pid: number;
  dir: string;
  config: string;
  /** Runs cscli with this LAPI's config; throws with its stderr if it fails. */
  cscli(args: string[]): string;
  /** Creates a machine (a pushing server); returns its password. */
  machine(name: string): string;
  /** Creates a bouncer (a pulling server); returns its key. */
  bouncer(name: string): string;
  /** The decisions the LAPI holds on one address (cscli decisions list -a --ip). */
  decisions(ip: string): { value: string; origin: string; scenario: string; duration: string; scope: string; machine: string }[];
  /** The LAPI's SQLite database file (to simulate a flush). */
  db: string;
  stop(): void;
  /** Runs a command where the LAPI is reachable (inside its namespace, if any). */
  exec(cmd: string, args: string[], env: Record<string, string>, input?: string): { status: number | null; stdout: string; stderr: string };
}

/** The extracted package's root (DIR/usr/bin/crowdsec), downloaded and unpacked once. */
export function crowdsecPackage(): string {
  const cache = process.env.SENTRY_CROWDSEC_CACHE ?? join(tmpdir(), "sentry-crowdsec-cache");
  const root = join(cache, "root");
  if (existsSync(join(root, "usr", "bin", "crowdsec"))) return root;
  mkdirSync(cache, { recursive: true });
  const work = mkdtempSync(join(cache, "dl-"));
  try {
    const dl = () => spawnSync("apt-get", ["download", "crowdsec"], { cwd: work, encoding: "utf8", timeout: 300_000 });
    let r = dl();
    if (r.status !== 0) {
      // A fresh machine has no package lists yet.
      spawnSync("apt-get", ["update", "-qq"], { encoding: "utf8", timeout: 300_000 });
      r = dl();
    }
    const deb = readdirSync(work).find((f) => /^crowdsec_.*\.deb$/.test(f));
    if (r.status !== 0 || !deb) throw new Error(`apt-get download crowdsec failed: ${r.stderr || r.error}`);
    const x = spawnSync("dpkg-deb", ["-x", join(work, deb), join(work, "root")], { encoding: "utf8" });
    if (x.status !== 0) throw new Error(`dpkg-deb -x ${deb} failed: ${x.stderr}`);
    try {
      renameSync(join(work, "root"), root); // atomic: a parallel run sees all of it or nothing
    } catch (e) {
      if (!existsSync(join(root, "usr", "bin", "crowdsec"))) throw e;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return root;
}

const running = new Set<ChildProcess>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  const killAll = () => {
    for (const p of running) if (p.pid) try { process.kill(p.pid, "SIGTERM"); } catch { /* gone already */ }
    running.clear();
  };
  process.once("exit", killAll);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(sig, () => { killAll(); process.exit(130); });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts a LAPI; `netns` = run it (and exec()) inside that network namespace. */
export async function startLapi(opts: { netns?: string; flushMaxItems?: number } = {}): Promise<Lapi> {
  const pkg = crowdsecPackage();
  const dir = mkdtempSync(join(tmpdir(), "sentry-lapi-"));
  for (const d of ["config", "data", "hub", "notifications"]) mkdirSync(join(dir, d));
  copyFileSync(join(pkg, "etc", "crowdsec", "profiles.yaml"), join(dir, "config", "profiles.yaml"));
  writeFileSync(join(dir, "config", "simulation.yaml"), "simulation: off\n");
  writeFileSync(join(dir, "hub", ".index.json"), "{}\n");
  const db = join(dir, "data", "crowdsec.db");
  const inNs = (cmd: string, args: string[]): [string, string[]] => (opts.netns ? ["ip", ["netns", "exec", opts.netns, cmd, ...args]] : [cmd, args]);
  let lastErr = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 40_000);
    const config = join(dir, "config.yaml");
    writeFileSync(config, [
      "common: {daemonize: false, log_media: stdout, log_level: warning}",
      "config_paths:",
      `  config_dir: ${dir}/config/`,
      `  data_dir: ${dir}/data/`,
      `  simulation_path: ${dir}/config/simulation.yaml`,
      `  hub_dir: ${dir}/hub/`,
      `  index_path: ${dir}/hub/.index.json`,
      `  notification_dir: ${dir}/notifications/`,
      `  plugin_dir: ${pkg}/usr/lib/crowdsec/plugins/`,
      "db_config:",
      "  type: sqlite",
      `  db_path: ${db}`,
      "  use_wal: true",
      ...(opts.flushMaxItems ? ["  flush:", `    max_items: ${opts.flushMaxItems}`] : []),
      "api:",
      "  client:",
      `    credentials_path: ${dir}/config/local_api_credentials.yaml`,
      "  server:",
      `    listen_uri: 127.0.0.1:${port}`,
      `    profiles_path: ${dir}/config/profiles.yaml`,
      "    trusted_ips:",
      "      - 127.0.0.1",
      "prometheus: {enabled: false}",
      "",
    ].join("\n"));
    const [cmd, args] = inNs(join(pkg, "usr", "bin", "crowdsec"), ["-c", config, "-no-cs", "-no-capi"]);
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    hookExit();
    running.add(child);
    let output = "";
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    let exited = false;
    child.on("exit", () => { exited = true; running.delete(child); });
    const pid = child.pid as number;
    const stop = () => {
      if (!exited) try { process.kill(pid, "SIGTERM"); } catch { /* gone */ }
      running.delete(child);
    };
    const exec = (c: string, a: string[], env: Record<string, string>, input?: string) => {
      const [c2, a2] = inNs("env", ["-i", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), c, ...a]);
      const r = spawnSync(c2, a2, { encoding: "utf8", input, timeout: 120_000 });
      return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
    };
    let up = false;
    for (let i = 0; i < 100 && !exited; i++) {
      await sleep(100);
      // ss names the process holding the port: ours, not a LAPI that already listened there.
      const ss = exec("ss", ["-Hltnp", `sport = :${port}`], { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" });
      if (ss.stdout.includes(":" + port)) {
        if (!ss.stdout.includes(`pid=${pid},`)) {
          lastErr = `port ${port} is held by another process: ${ss.stdout.trim()}`;
          break;
        }
        up = true;
        break;
      }
    }
    if (!up) {
      stop();
      lastErr ||= exited ? `crowdsec exited: ${output.slice(-2000)}` : `crowdsec did not listen on ${port} within 10 s: ${output.slice(-2000)}`;
      continue;
    }
    const cscliBin = join(pkg, "usr", "bin", "cscli");
    const cscli = (a: string[]): string => {
      // Inside the namespace: cscli decisions talks to the LAPI over HTTP (machines/bouncers write the database).
      const [c, args2] = inNs(cscliBin, ["-c", config, ...a]);
      const r = spawnSync(c, args2, { encoding: "utf8", timeout: 60_000 });
      if (r.status !== 0) throw new Error(`cscli ${a.join(" ")} failed (${r.status}): ${r.stderr}`);
      return r.stdout;
    };
    // cscli decisions talks to the API as a machine: give it one.
    cscli(["machines", "add", "cscli-test", "--password", "cscli-test-pw", "-f", join(dir, "config", "local_api_credentials.yaml")]);
    return {
      url: `http://127.0.0.1:${port}/`,
      port,
      pid,
      dir,
      config,
      db,
      cscli,
      machine(name) {
        const pw = `pw-${name}-${Math.random().toString(36).slice(2)}`;
        cscli(["machines", "add", name, "--password", pw, "-f", "/dev/null"]);
        return pw;
      },
      bouncer(name) {
        return cscli(["bouncers", "add", name, "-o", "raw"]).trim();
      },
      decisions(ip) {
        const alerts = JSON.parse(cscli(["decisions", "list", "-a", "--ip", ip, "-o", "json"]) || "null") as
          | { machine_id: string; decisions: { value: string; origin: string; scenario: string; duration: string; scope: string }[] }[]
          | null;
        return (alerts ?? []).flatMap((a) => a.decisions.map((d) => ({ ...d, machine: a.machine_id })));
      },
      stop() {
        stop();
        rmSync(dir, { recursive: true, force: true });
      },
      exec,
    };
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`could not start a CrowdSec LAPI: ${lastErr}`);
}
