// test/lib/netns.ts — a private network namespace for the firewall tests.
//
// The rule for every test that touches a network: loopback, or a namespace
// the test made itself. createNetns() makes a namespace with lo up
// and a veth pair (both ends inside) carrying documentation addresses:
//
//   192.0.2.1, 2001:db8::1                     the server (a listener per probe)
//   192.0.2.5-7, 2001:db8::5-7                 clients (a probe binds to one)
//
// All of them are local addresses of the namespace, so a connection between
// them never leaves it, yet passes the input hook where the firewall rules
// sit, with the client address as its source. Its firewall (nftables,
// iptables, ipset) is the namespace's own and vanishes with it.
//
// The name is sentry-fw-<pid>-<random>. destroy() is idempotent; tests call
// it from t.teardown, a process exit hook catches the paths where teardown
// would not run, and createNetns() first deletes the namespaces of test
// processes that died without either (killed by a runner's timeout).

import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { runCommand, type RunResult } from "../../sentry.ts";

export const SERVER4 = "192.0.2.1";
export const SERVER6 = "2001:db8::1";
export const CLIENTS4 = ["192.0.2.5", "192.0.2.6", "192.0.2.7"];
export const CLIENTS6 = ["2001:db8::5", "2001:db8::6", "2001:db8::7"];

export type ProbeOutcome = "connected" | "timeout" | "refused" | string;

export interface Netns {
  name: string;
  /** Runs cmd inside the namespace, like Sys.run (argument vector, no shell, never throws). */
  run(cmd: string, args: string[], opts?: { timeoutMs?: number; input?: string }): RunResult;
  /** Opens a listener on `to` and connects to it from `from`; what happened within timeoutMs. */
  probe(from: string, to: string, timeoutMs?: number): ProbeOutcome;
  /** Deletes the namespace; safe to call twice. */
  destroy(): void;
}

/** Whether this machine can run the namespace tests: root and `ip`. "" if so, else why not. */
export function netnsUnavailable(): string {
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "needs root (ip netns add)";
  const r = spawnSync("ip", ["-V"], { encoding: "utf8" });
  if (r.error) return "needs iproute2 (`ip`): run test/deps.sh";
  return "";
}

// One process per probe: the listener and the client live and die together,
// so no server is left running. `to` and `from` come from argv.
const PROBE_JS = `
const net = require("node:net");
const [from, to, ms] = process.argv.slice(1);
const done = (what) => { process.stdout.write(what + "\\n"); process.exit(0); };
const srv = net.createServer((s) => s.end());
srv.on("error", (e) => done("listen-error " + e.code));
srv.listen(0, to, () => {
  const c = net.connect({ host: to, port: srv.address().port, localAddress: from });
  setTimeout(() => done("timeout"), Number(ms));
  c.on("connect", () => done("connected"));
  c.on("error", (e) => done(e.code === "ECONNREFUSED" ? "refused" : "error " + e.code));
});
`;

const live = new Set<string>();
let hooked = false;

function del(name: string): void {
  if (!live.has(name)) return;
  spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  live.delete(name);
}

/**
 * Deletes namespaces `PREFIX-PID-…` whose PID is no longer running: what a
 * test process killed outright (SIGKILL, a runner's timeout) left behind,
 * since no exit hook runs then. A live PID's namespaces are another run's.
 */
function sweep(prefix: string): void {
  for (const n of listNetns()) {
    const m = new RegExp(`^${prefix}-(\\d+)-[0-9a-f]+$`).exec(n);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      if ((e as { code?: string }).code === "ESRCH") spawnSync("ip", ["netns", "del", n], { stdio: "ignore" });
    }
  }
}

/** Creates the namespace and its addresses; throws with the failing step if it cannot. */
export function createNetns(prefix = "sentry-fw"): Netns {
  sweep(prefix);
  const name = `${prefix}-${process.pid}-${randomBytes(4).toString("hex")}`;
  const must = (args: string[]) => {
    const r = spawnSync("ip", args, { encoding: "utf8" });
    if (r.status !== 0) {
      del(name);
      throw new Error(`ip ${args.join(" ")} failed: ${(r.stderr || r.error?.message || "").trim()}`);
    }
  };
  must(["netns", "add", name]);
  live.add(name);
  if (!hooked) {
    hooked = true;
    process.once("exit", () => {
      for (const n of [...live]) del(n);
    });
  }
  const inNs = (args: string[]) => must(["-n", name, ...args]);
  inNs(["link", "set", "lo", "up"]);
  inNs(["link", "add", "sfw0", "type", "veth", "peer", "name", "sfw1"]);
  inNs(["link", "set", "sfw0", "up"]);
  inNs(["link", "set", "sfw1", "up"]);
  for (const a of [SERVER4, ...CLIENTS4]) inNs(["addr", "add", `${a}/24`, "dev", "sfw0"]);
  // nodad: an address in "tentative" state (duplicate detection) cannot be bound.
  for (const a of [SERVER6, ...CLIENTS6]) inNs(["-6", "addr", "add", `${a}/64`, "dev", "sfw0", "nodad"]);

  const run = (cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}) =>
    runCommand("ip", ["netns", "exec", name, cmd, ...args], opts);

  return {
    name,
    run,
    probe(from, to, timeoutMs = 800) {
      const r = runCommand("ip", ["netns", "exec", name, process.execPath, "-e", PROBE_JS, from, to, String(timeoutMs)], {
        timeoutMs: timeoutMs + 10_000,
      });
      if (r.error) return `probe-failed ${r.error}`;
      return r.stdout.trim() || `probe-failed exit ${r.status}: ${r.stderr.trim()}`;
    },
    destroy: () => del(name),
  };
}

/** The names of the namespaces that exist now (to check that a test left none behind). */
export function listNetns(): string[] {
  const r = spawnSync("ip", ["netns", "list"], { encoding: "utf8" });
  return (r.stdout ?? "")
    .split("\n")
    .map((l) => l.split(" ")[0])
    .filter((l) => l !== "");
}
