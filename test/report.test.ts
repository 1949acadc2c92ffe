// The report's index (sentry.db, fed by connections.log): always the same
// totals as listing seen/ would give, however the feed and the files change.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { SENTRY, requireBinary, tempDir, envFor, sentry, sentryAsync, parallel } from "./lib/run.ts";
import type { TT } from "./lib/run.ts";

requireBinary();

/** What listing seen/ says: unique addresses and connections (lines). */
function truth(root: string): { uniqueIps: number; connections: number } {
  const dir = join(root, "seen");
  const names = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  let connections = 0;
  for (const n of names) connections += fs.readFileSync(join(dir, n), "utf8").split("\n").filter(Boolean).length;
  return { uniqueIps: names.length, connections };
}

function report(env: Record<string, string>): { uniqueIps: number; connections: number; top: { ip: string; connections: number }[]; stderr: string } {
  const r = sentry(["--report", "--verbose", "--json"], env);
  if (r.status !== 0) throw new Error(`report exited ${r.status}: ${r.stderr}`);
  const j = JSON.parse(r.stdout);
  return { uniqueIps: j.uniqueIps, connections: j.connections, top: j.top, stderr: r.stderr };
}

const same = (t: TT, env: Record<string, string>, root: string, what: string) => {
  const r = report(env);
  t.same({ uniqueIps: r.uniqueIps, connections: r.connections }, truth(root), what);
  return r;
};

t.test("incremental: connects, reports, more connects, delist: always the truth", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  for (let i = 0; i < 30; i++) sentry(["-c", `--ip=198.51.100.${i % 7}`], env);
  let r = same(t, env, root, "first report (builds the index)");
  t.equal(r.connections, 30);
  t.same(r.top[0], { ip: "198.51.100.0", connections: 5, status: null }, "the busiest, from the index");
  await parallel(40, 20, (i) => sentryAsync(["-c", `--ip=198.51.100.${i % 10}`], env));
  r = same(t, env, root, "after 40 parallel connects, caught up from the feed");
  t.equal(r.connections, 70);
  sentry(["--delist", "--ip=198.51.100.3"], env);
  r = same(t, env, root, "a delisted address leaves the index");
  t.equal(r.uniqueIps, 9);
  const feed = fs.readFileSync(join(root, "connections.log"), "utf8");
  t.match(feed, /^(\d{10} [0-9a-f.:]+( delist)?\n)+$/, "the feed holds time and address, nothing else");
});

t.test("the feed rotated, lost or truncated; a seen file edited or removed by hand", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  for (let i = 0; i < 10; i++) sentry(["-c", `--ip=203.0.113.${i}`], env);
  same(t, env, root, "built");
  for (let i = 0; i < 5; i++) sentry(["-c", `--ip=203.0.113.${i}`], env);
  fs.renameSync(join(root, "connections.log"), join(root, "connections.log.1")); // rotated with unread lines
  for (let i = 0; i < 5; i++) sentry(["-c", `--ip=203.0.113.${20 + i}`], env);
  same(t, env, root, "the rotated file's unread lines are read by inode, then the new file");
  fs.rmSync(join(root, "connections.log.1"));
  fs.rmSync(join(root, "connections.log"));
  sentry(["-c", "--ip=203.0.113.99"], env);
  same(t, env, root, "a feed whose position is lost: rebuilt from seen/");
  fs.writeFileSync(join(root, "connections.log"), "");
  same(t, env, root, "a truncated feed: rebuilt from seen/");
  fs.appendFileSync(join(root, "seen", "203.0.113.0"), "1795262400\nnot-a-timestamp\n");
  sentry(["-c", "--ip=203.0.113.0"], env);
  same(t, env, root, "a hand-edited seen file (not 11-byte lines) is counted by its lines");
  fs.rmSync(join(root, "seen", "203.0.113.1"));
  const stale = report(env);
  t.equal(stale.uniqueIps, truth(root).uniqueIps + 1, "a file removed by hand is not in the feed: counted until the next rebuild");
  same(t, { ...env, REPORT_REBUILD_HOURS: "0" }, root, "REPORT_REBUILD_HOURS forces the rebuild that catches it");
});

t.test("without sentry.db: a report does not create ROOT_DIR, and works read-only", async (t) => {
  const dir = tempDir(t);
  const missing = join(dir, "none");
  const r = sentry(["--report"], envFor(missing));
  t.equal(r.status, 0);
  t.match(r.stdout, /^ {3}-------- summary ---------\n {3}0 unique IPs have connected 0 times/);
  t.notOk(fs.existsSync(missing), "ROOT_DIR not created by a report");
  const root = join(dir, "root");
  for (let i = 0; i < 6; i++) sentry(["-c", `--ip=192.0.2.${i % 3}`], envFor(root));
  fs.rmSync(join(root, "sentry.db"), { force: true });
  const ro = spawnSync("unshare", ["-m", "sh", "-c", `mount -o bind,ro ${root} ${root} && exec "$0" --report`, SENTRY], {
    env: envFor(root), encoding: "utf8",
  });
  t.equal(ro.status, 0, ro.stderr);
  t.match(ro.stdout, /^ {3}-------- summary ---------\n {3}3 unique IPs have connected 6 times/, "read-only: seen/ is listed instead");
  t.match(ro.stderr, /cannot be used .*listing seen\/ instead/);
});

t.test("connections.log rotates past 16 MiB at the hourly look, and the report finishes the rotated file", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  const feed = join(root, "connections.log");
  t.equal(sentry(["--connect", "--ip=192.0.2.1"], env).status, 0);
  const first = report(env);
  t.same([first.uniqueIps, first.connections], [1, 1], "the index follows the feed");
  // Grow the feed past CONNECTIONS_LOG_ROTATE_BYTES (16 MiB) with lines naming
  // 192.0.2.1 again (harmless: its count is read from seen/), and make the
  // hourly look due (expire.stamp's mtime is when it is next due).
  const line = `${Math.floor(Date.now() / 1000)} 192.0.2.1\n`;
  fs.appendFileSync(feed, line.repeat(Math.ceil((16 * 1024 * 1024) / line.length)));
  const padded = fs.statSync(feed).size;
  t.ok(padded >= 16 * 1024 * 1024, `feed padded to ${padded} bytes`);
  fs.utimesSync(join(root, "expire.stamp"), 0, 0);

  // This connect's line goes to the feed, then the look rotates it.
  t.equal(sentry(["--connect", "--ip=192.0.2.2"], env).status, 0);
  t.ok(fs.existsSync(`${feed}.1`), "connections.log.1 exists");
  const rotated = fs.readFileSync(`${feed}.1`);
  t.match(rotated.subarray(padded).toString("utf8"), /^\d+ 192\.0\.2\.2\n$/, "it is the old feed, with 192.0.2.2's line at its end");
  t.notOk(fs.existsSync(feed), "no connections.log until the next connect");
  // The stamp is not due again: the next connect appends to a new feed and rotates nothing.
  t.equal(sentry(["--connect", "--ip=192.0.2.3"], env).status, 0);
  t.match(fs.readFileSync(feed, "utf8"), /^\d+ 192\.0\.2\.3\n$/, "a new connections.log holds the next connect alone");

  // The report reads the rotated file's tail (192.0.2.2) and the new feed (192.0.2.3).
  same(t, env, root, "after the rotation the index equals seen/");
  t.same(report(env).top.map((x) => [x.ip, x.connections]).sort(), [["192.0.2.1", 1], ["192.0.2.2", 1], ["192.0.2.3", 1]], "each address counted once");
});

t.test("read-only, without the index: the ten busiest from walking seen/, busiest first, ties by address", async (t) => {
  const root = tempDir(t);
  fs.mkdirSync(join(root, "seen"), { recursive: true });
  // 14 addresses: 192.0.2.k has k connections (1..12), plus two more with 12 (a tie broken by the address).
  const counts: [string, number][] = [];
  for (let k = 1; k <= 12; k++) counts.push([`192.0.2.${k}`, k]);
  counts.push(["198.51.100.7", 12], ["198.51.100.10", 12]);
  for (const [ip, n] of counts) fs.writeFileSync(join(root, "seen", ip), "1795262400\n".repeat(n));
  const ro = spawnSync("unshare", ["-m", "sh", "-c", `mount -o bind,ro ${root} ${root} && exec "$0" --report --verbose --json`, SENTRY], { env: envFor(root), encoding: "utf8" });
  t.equal(ro.status, 0, ro.stderr);
  t.match(ro.stderr, /listing seen\/ instead/, "no index could be made");
  const j = JSON.parse(ro.stdout) as { uniqueIps: number; connections: number; top: { ip: string; connections: number }[] };
  t.equal(j.uniqueIps, 14);
  t.equal(j.connections, 78 + 24);
  t.same(
    j.top.map((x) => [x.ip, x.connections]),
    [["192.0.2.12", 12], ["198.51.100.10", 12], ["198.51.100.7", 12], ["192.0.2.11", 11], ["192.0.2.10", 10], ["192.0.2.9", 9], ["192.0.2.8", 8], ["192.0.2.7", 7], ["192.0.2.6", 6], ["192.0.2.5", 5]],
  );
});

t.test("the index built from a seen/ of 1,003 addresses (rows go in batches; the walk stats from inside seen/): every one counted, the busiest right", (t) => {
  const root = tempDir(t);
  const seen = join(root, "seen");
  fs.mkdirSync(seen, { recursive: true });
  const now = Math.floor(Date.now() / 1000);
  let connections = 0;
  for (let i = 0; i < 1003; i++) {
    const n = 1 + ((i * 7) % 13); // 1 to 13 connections
    connections += n;
    fs.writeFileSync(join(seen, `198.18.${i >> 8}.${i & 255}`), `${now}\n`.repeat(n));
  }
  fs.writeFileSync(join(seen, "203.0.113.99"), `${now}\n`.repeat(40)); // the busiest
  connections += 40;
  fs.writeFileSync(join(seen, "not-an-address"), `${now}\n`); // passed over
  fs.mkdirSync(join(seen, "10.0.0.1")); // a folder by an address's name: passed over
  const r = report(envFor(root));
  t.same({ uniqueIps: r.uniqueIps, connections: r.connections }, { uniqueIps: 1004, connections }, "every address and connection");
  t.same(r.top[0], { ip: "203.0.113.99", connections: 40, status: null }, "the busiest first");
  t.equal(r.top.length, 10);
  t.ok(r.top.slice(1).every((e) => e.connections === 13), "then nine of 13 connections");
  t.end();
});

/**
 * A seen/ of `n` addresses 198.18.x.y, the i-th with 1 + i % `kinds`
 * connections; returns the connections. The files are hard links to one
 * file per count: creating 45,000 files one by one took half a minute on
 * the test machine's disk, linking them a second.
 */
function bigSeen(root: string, n: number, kinds: number): number {
  const seen = join(root, "seen");
  const src = join(root, "seen-sources");
  fs.mkdirSync(seen, { recursive: true });
  fs.mkdirSync(src, { recursive: true });
  const now = Math.floor(Date.now() / 1000);
  for (let k = 1; k <= kinds; k++) fs.writeFileSync(join(src, String(k)), `${now}\n`.repeat(k));
  let connections = 0;
  for (let i = 0; i < n; i++) {
    const k = 1 + (i % kinds);
    connections += k;
    fs.linkSync(join(src, String(k)), join(seen, `198.18.${i >> 8}.${i & 255}`));
  }
  return connections;
}

t.test("a big seen/ (45,000 addresses) is walked with a second thread: the same totals, each name weighed as in one thread", (t) => {
  const root = tempDir(t);
  const seen = join(root, "seen");
  const now = Math.floor(Date.now() / 1000);
  let connections = bigSeen(root, 45_000, 5);
  fs.writeFileSync(join(seen, "2001:db8::7"), `${now}\n`.repeat(30)); // the busiest, IPv6
  fs.writeFileSync(join(seen, "203.0.113.5"), `${now}\n`.repeat(20) + "17952"); // a torn last line: counted by reading, as in one thread
  connections += 30 + 20;
  fs.writeFileSync(join(seen, "010.0.0.1"), `${now}\n`); // not canonical: passed over
  fs.writeFileSync(join(seen, "not-an-address"), `${now}\n`);
  fs.mkdirSync(join(seen, "10.0.0.1")); // a folder by an address's name: passed over
  const want = { uniqueIps: 45_002, connections };
  t.ok(fs.statSync(seen).size >= 1024 * 1024, `seen/'s own size (${fs.statSync(seen).size} bytes) reaches SEEN_THREAD_FROM_BYTES, so this walks in a thread`);

  // Which thread stats the addresses' files: strace names each call's thread.
  const trace = join(root, "strace.out");
  const r = spawnSync("strace", ["-f", "-qq", "-e", "trace=statx,newfstatat,stat,lstat", "-o", trace, SENTRY, "--report", "--verbose", "--json"], { env: envFor(root), encoding: "utf8", timeout: 120_000 });
  t.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { uniqueIps: number; connections: number; top: { ip: string; connections: number }[] };
  t.same({ uniqueIps: j.uniqueIps, connections: j.connections }, want, "every address and connection");
  t.same(j.top.slice(0, 2).map((x) => [x.ip, x.connections]), [["2001:db8::7", 30], ["203.0.113.5", 20]], "the busiest first, the torn file's complete lines counted");
  const lines = fs.readFileSync(trace, "utf8").split("\n").filter((l) => l !== "");
  const main = lines[0].split(" ")[0]; // the first call of all is the main thread's
  const byThread = new Map<string, number>();
  for (const l of lines) if (/"198\.18\.\d+\.\d+"/.test(l)) byThread.set(l.split(" ")[0], (byThread.get(l.split(" ")[0]) ?? 0) + 1);
  const walker = [...byThread].filter(([tid]) => tid !== main);
  const shown = `threads: ${JSON.stringify([...byThread])}, main ${main}`;
  t.equal(walker.length, 1, `one other thread stats files (${shown})`);
  t.ok(walker.length === 1 && walker[0][1] > 0, "the walker stats a share of them, relative to seen/");
  t.equal([...byThread.values()].reduce((a, b) => a + b, 0), 45_000, "every address's file is stat'ed once, by one thread or the other, relative to seen/");

  // The same walk where no index can be made (read-only): the report lists seen/ the same way.
  fs.rmSync(join(root, "sentry.db"), { force: true });
  const ro = spawnSync("unshare", ["-m", "sh", "-c", `mount -o bind,ro ${root} ${root} && exec "$0" --report --json`, SENTRY], { env: envFor(root), encoding: "utf8" });
  t.equal(ro.status, 0, ro.stderr);
  const k = JSON.parse(ro.stdout) as { uniqueIps: number; connections: number };
  t.same({ uniqueIps: k.uniqueIps, connections: k.connections }, want, "read-only: the same totals from the walk alone");
  t.end();
});

t.test("no thread to spare (RLIMIT_NPROC): the report walks a big seen/ in one thread, with the same totals", (t) => {
  t.equal(process.getuid?.(), 0, "the test runs as root (it switches to a uid of its own with setpriv)");
  const root = tempDir(t);
  fs.chmodSync(root, 0o755);
  const connections = bigSeen(root, 45_000, 3);
  t.ok(fs.statSync(join(root, "seen")).size >= 1024 * 1024, "seen/ is big enough for the walker");
  // A uid nobody uses: RLIMIT_NPROC counts this uid's threads, this run's
  // alone. Under too low a limit Node itself may hang at start: timeout
  // (one more thread of the uid, in every run alike) kills it, and pkill
  // leaves nothing of the uid behind.
  const asUid = (nproc: number, args: string[], trace: string | null, secs = 20) => {
    const tracing = trace === null ? [] : ["strace", "-f", "-qq", "-e", "trace=execve,clone,clone3,statx,newfstatat", "-o", trace];
    const r = spawnSync("prlimit", [`--nproc=${nproc}`, ...tracing, "setpriv", "--reuid=64999", "--regid=64999", "--clear-groups", "timeout", "-s", "KILL", String(secs), SENTRY, ...args], {
      env: { PATH: "/usr/bin:/bin", ROOT_DIR: root, SSH_LOG: join(root, "no-such.log"), PROTECT_FTP: "0", PROTECT_MUA: "0" }, // no system paths: those are root's alone
      encoding: "utf8",
      timeout: 60_000,
    });
    spawnSync("pkill", ["-KILL", "-u", "64999"]);
    return r;
  };
  // The fewest threads Node starts with: the first limit --version answers under.
  let least = 0;
  for (let n = 6; n <= 16 && least === 0; n++) if (asUid(n, ["--version"], null, 5).status === 0) least = n;
  t.ok(least > 0, `Node starts with ${least} threads`);
  const trace = join(root, "strace.out");
  const r = asUid(least, ["--report", "--json"], trace); // enough for Node, none for the walker
  t.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout || "{}") as { uniqueIps?: number; connections?: number };
  t.same({ uniqueIps: j.uniqueIps, connections: j.connections }, { uniqueIps: 45_000, connections }, "every address and connection");
  const lines = fs.readFileSync(trace, "utf8").split("\n");
  t.ok(lines.some((l) => /clone3?\(.*= -1 EAGAIN/.test(l)), "the walker's thread was refused (EAGAIN)");
  const main = (lines.find((l) => l.includes(`execve("${SENTRY}"`)) ?? "").split(" ")[0]; // sentry's main thread
  const stats = lines.filter((l) => /"198\.18\.\d+\.\d+"/.test(l));
  t.equal(stats.length, 45_000, "each address's file stat'ed once");
  t.ok(main !== "" && stats.every((l) => l.split(" ")[0] === main), `all by the main thread (${main})`);
  t.end();
});
