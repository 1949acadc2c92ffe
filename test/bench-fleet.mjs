// test/bench-fleet.mjs — `npm run bench -- --fleet`: a simulated fleet against
// one real CrowdSec LAPI (Debian's 1.4.6, test/lib/crowdsec.ts).
//
// WHAT IT MEASURES
//
//   propagation  SERVERS ROOT_DIRs (20; --quick 5), each running `sentry --sync`
//                every INTERVAL (10 s) at its own phase, against one LAPI on
//                SQLite; ADDRESSES attackers (1,000; --quick 100) are blocked
//                by hand, each on one server (round robin), spread over the
//                first interval. For each address: the time from its first
//                block (the --block's end) to the end of the sync that gave
//                the last server its block. Median and worst.
//   push         one server's --sync pushing ADDRESSES queued blocks at once
//                (50 alerts per POST): alerts per second the LAPI took.
//   idle sync    one `--sync` with nothing to push or pull (token cached):
//                median wall time of RUNS runs.
//
// Whole processes spawned from here, loopback only, reserved addresses
// (198.18.0.0/15) only. Prints a Markdown table to stdout, progress to
// stderr; exit 1 if an address never reached every server.

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startLapi } from "./lib/crowdsec.ts";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function run(bin, args, env) {
  return new Promise((done) => {
    const t0 = performance.now();
    const p = spawn(bin, args, { env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    p.stderr.on("data", (d) => (stderr += d));
    p.on("close", (status) => done({ status, stderr, ms: performance.now() - t0, end: performance.now() }));
  });
}

export async function runFleetBench(argv) {
  const quick = argv.includes("--quick");
  const bin = argv.find((a) => a.startsWith("--bin="))?.slice(6) ?? join(REPO, "dist/sentry");
  const SERVERS = quick ? 5 : 20;
  const ADDRESSES = quick ? 100 : 1000;
  const INTERVAL = 10_000;
  const RUNS = quick ? 5 : 11;
  const s1 = (ms) => `${(ms / 1000).toFixed(1)} s`;
  const log = (m) => process.stderr.write(`bench-fleet: ${m}\n`);
  const tmp = fs.mkdtempSync(join(os.tmpdir(), "sentry-bench-fleet-"));
  const lapi = await startLapi();
  try {
    log(`LAPI pid ${lapi.pid} at ${lapi.url}; ${SERVERS} servers, ${ADDRESSES} addresses`);
    const servers = [];
    for (let i = 0; i < SERVERS; i++) {
      const root = join(tmp, `s${i}`);
      fs.mkdirSync(root, { mode: 0o700 });
      servers.push({
        root,
        env: {
          PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ROOT_DIR: root, SSH_LOG: join(tmp, "none.log"), PROTECT_FTP: "0", PROTECT_MUA: "0",
          CROWDSEC_URL: lapi.url, CROWDSEC_LOGIN: `s${i}`, CROWDSEC_PASSWORD: lapi.machine(`s${i}`), CROWDSEC_API_KEY: lapi.bouncer(`s${i}`),
        },
        got: new Map(), // address → ms it arrived
      });
    }
    const addr = (i) => `198.18.${Math.floor(i / 250)}.${(i % 250) + 1}`;
    const firstBlock = new Map();
    const t0 = performance.now();
    let failures = 0;
    // The attack: each address blocked on one server, spread over the first interval.
    let attackEnd = Infinity;
    const attack = (async () => {
      for (let i = 0; i < ADDRESSES; i += 4) {
        const batch = [];
        for (let k = i; k < Math.min(i + 4, ADDRESSES); k++) {
          const s = servers[k % SERVERS];
          batch.push(run(bin, ["--block", `--ip=${addr(k)}`], s.env).then((r) => {
            if (r.status !== 0) failures++;
            firstBlock.set(addr(k), r.end);
            s.got.set(addr(k), r.end);
          }));
        }
        await Promise.all(batch);
        const due = t0 + ((i + 4) / ADDRESSES) * INTERVAL;
        if (performance.now() < due) await sleep(due - performance.now());
      }
      attackEnd = performance.now();
    })();
    // Every server syncs every INTERVAL at its own phase until all hold every address.
    // Until every server holds every address, or 5 intervals after the attack's last block (a slow machine stretches the attack).
    const done = () => servers.every((s) => s.got.size >= ADDRESSES) || performance.now() > attackEnd + 5 * INTERVAL;
    const syncMs = [];
    await Promise.all(servers.map(async (s, i) => {
      await sleep((i / SERVERS) * INTERVAL);
      while (!done()) {
        const next = performance.now() + INTERVAL;
        const r = await run(bin, ["--sync"], s.env);
        syncMs.push(r.ms);
        if (r.status !== 0) {
          failures++;
          log(`s${i} --sync exit ${r.status}: ${r.stderr.trim()}`);
        }
        for (const ip of fs.readdirSync(join(s.root, "block"))) if (!s.got.has(ip)) s.got.set(ip, r.end);
        if (performance.now() < next) await sleep(next - performance.now());
      }
    }));
    await attack;
    const spread = [];
    let missing = 0;
    for (let k = 0; k < ADDRESSES; k++) {
      const a = addr(k);
      const last = Math.max(...servers.map((s) => s.got.get(a) ?? Infinity));
      if (!Number.isFinite(last)) missing++;
      else spread.push(last - firstBlock.get(a));
    }
    // What an incremental pull missed, a full one (startup=true, CROWDSEC_FULL_PULL_MINUTES) brings.
    let recovered = 0;
    if (missing > 0) {
      for (const s of servers) {
        if (s.got.size >= ADDRESSES) continue;
        fs.rmSync(join(s.root, "fleet.pulled"), { force: true });
        const r = await run(bin, ["--sync"], s.env);
        if (r.status !== 0) failures++;
      }
      for (let k = 0; k < ADDRESSES; k++) {
        const a = addr(k);
        if (servers.some((s) => !s.got.has(a)) && servers.every((s) => s.got.has(a) || fs.existsSync(join(s.root, "block", a)))) recovered++;
      }
    }
    log(`propagation measured; the attack took ${s1(attackEnd - t0)}; ${missing} addresses missing somewhere, ${failures} failed runs; load ${os.loadavg().map((x) => x.toFixed(1)).join(" ")}`);

    // Push throughput: one fresh server, ADDRESSES blocks queued, one --sync.
    const p = { root: join(tmp, "push") };
    fs.mkdirSync(p.root, { mode: 0o700 });
    const penv = { ...servers[0].env, ROOT_DIR: p.root, CROWDSEC_LOGIN: "push", CROWDSEC_PASSWORD: lapi.machine("push"), CROWDSEC_PULL: "0" };
    const outbox = [];
    const now = Date.now();
    for (let k = 0; k < ADDRESSES; k++) outbox.push(JSON.stringify({ op: "ban", ip: `198.19.${Math.floor(k / 250)}.${(k % 250) + 1}`, at: now, end: now + 3_600_000, scenario: "sentry/bench", message: "bench" }));
    fs.writeFileSync(join(p.root, "fleet.outbox"), outbox.join("\n") + "\n", { mode: 0o640 });
    const pr = await run(bin, ["--sync"], penv);
    if (pr.status !== 0) {
      failures++;
      log(`push --sync exit ${pr.status}: ${pr.stderr.trim()}`);
    }
    // Idle: nothing to push, nothing new to pull, token cached.
    const idle = [];
    await run(bin, ["--sync"], servers[0].env);
    for (let i = 0; i < RUNS; i++) idle.push((await run(bin, ["--sync"], servers[0].env)).ms);
    console.log(`| fleet (${SERVERS} servers, --sync every ${INTERVAL / 1000} s, ${ADDRESSES} attackers, one LAPI 1.4.6 on SQLite) | figure |`);
    console.log("| --- | --- |");
    console.log(`| first block → last server's block, median | ${s1(median(spread))} |`);
    console.log(`| first block → last server's block, worst | ${s1(Math.max(...spread))} |`);
    console.log(`| addresses that never reached every server by incremental pulls | ${missing} (${recovered} of them brought by one full pull) |`);
    console.log(`| one --sync during the attack, median (all servers) | ${median(syncMs).toFixed(0)} ms |`);
    console.log(`| push: ${ADDRESSES} blocks in one --sync | ${(ADDRESSES / (pr.ms / 1000)).toFixed(0)} alerts/s (${pr.ms.toFixed(0)} ms) |`);
    console.log(`| idle --sync (nothing to do), median of ${RUNS} | ${median(idle).toFixed(0)} ms |`);
    return missing > recovered || failures > 0 ? 1 : 0;
  } finally {
    lapi.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.main || process.argv[1] === fileURLToPath(import.meta.url)) {
  runFleetBench(process.argv.slice(2)).then((c) => process.exit(c));
}
