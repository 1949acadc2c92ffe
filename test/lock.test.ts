// The state lock (sentry.ts section 5.2) held by another process: an
// administrator's command waits LOCK_TIMEOUT_SECONDS, then fails with exit 2
// and a message naming the lock and the setting, having written nothing; a
// connect (sshd waits for it) never waits that long and is still counted.
// The holder here is this test itself, through node:sqlite, exactly as a
// sentry process holds it (BEGIN IMMEDIATE on ROOT_DIR/sentry.lock).
import t from "tap";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { envFor, requireBinary, sentry, sentryLog, tempDir } from "./lib/run.ts";

requireBinary();

t.test("an admin command facing a held lock fails with exit 2 and a clear message, and changes nothing", async (t) => {
  const root = tempDir(t);
  const env = envFor(root, { LOCK_TIMEOUT_SECONDS: "1" });
  t.equal(sentry(["--connect", "--ip=192.0.2.1"], env).status, 0, "first connect makes ROOT_DIR and the lock file");
  t.equal(sentry(["--block", "--ip=192.0.2.2"], env).status, 0, "a block to delist later");
  const denyBefore = readFileSync(join(root, "hosts.deny"), "utf8");
  const logBefore = sentryLog(root);

  const holder = new DatabaseSync(join(root, "sentry.lock"));
  holder.exec("BEGIN IMMEDIATE");
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    holder.exec("ROLLBACK");
    holder.close();
  };
  t.teardown(release);

  const want = `sentry: cannot lock ${join(root, "sentry.lock")}: another sentry process held it longer than LOCK_TIMEOUT_SECONDS (1 s); try again\n`;
  for (const args of [["--block", "--ip=192.0.2.9"], ["--allow", "--ip=192.0.2.8"], ["--delist", "--ip=192.0.2.2"]]) {
    const r = sentry(args, env);
    t.equal(r.status, 2, `${args[0]}: exit 2`);
    t.equal(r.stderr, want, `${args[0]}: the message names the lock and the setting`);
    t.equal(r.stdout, "", `${args[0]}: reports no change`);
  }
  t.notOk(existsSync(join(root, "block", "192.0.2.9")), "no block/IP written");
  t.notOk(existsSync(join(root, "allow", "192.0.2.8")), "no allow/IP written");
  t.ok(existsSync(join(root, "block", "192.0.2.2")), "the block stays");
  t.equal(readFileSync(join(root, "hosts.deny"), "utf8"), denyBefore, "hosts.deny unchanged");
  t.equal(sentryLog(root), logBefore, "sentry.log unchanged");

  // A connect does not wait for the lock: counted, exit 0 (sshd is waiting for it).
  const c = sentry(["--connect", "--ip=192.0.2.9"], env);
  t.equal(c.status, 0, `connect under a held lock: ${c.stderr}`);
  t.equal(c.stdout, "   1 connections from 192.0.2.9\n");

  // Once the holder lets go, the same command goes through.
  release();
  const r = sentry(["--block", "--ip=192.0.2.9"], env);
  t.equal(r.status, 0, `--block after the release: ${r.stderr}`);
  t.ok(existsSync(join(root, "block", "192.0.2.9")), "block/IP written");
  t.ok(readFileSync(join(root, "hosts.deny"), "utf8").split("\n").includes("192.0.2.9"), "hosts.deny lists it");
});
