// State that heals and cannot be subverted (issue 9): loopback in every
// spelling, bounds of number settings, hosts.deny healing, strict modes,
// a delist that survives the loss of sentry.db, a corrupt lock.
import t from "tap";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";
import { parseIp, parseAllowList, inRanges, loadConfig, CONFIG_MAX, DEFAULTS } from "../sentry.ts";
import { requireBinary, sentry, envFor, tempDir, state, sentryLog } from "./lib/run.ts";

requireBinary();

t.test("loopback in every spelling is never blocked", async (t) => {
  const ranges = parseAllowList("");
  for (const a of ["127.0.0.1", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::127.9.9.9", "::ffff:0:127.0.0.1", "::1"]) {
    const ip = parseIp(a);
    t.ok(ip !== null && inRanges(ip, ranges), `${a} is loopback`);
  }
  t.notOk(inRanges(parseIp("64:ff9b::8.8.8.8") as string, ranges), "NAT64 of a public address is not");
  const root = join(tempDir(t), "root");
  for (const a of ["::127.0.0.1", "64:ff9b::7f00:1"]) {
    const r = sentry(["--block", `--ip=${a}`], envFor(root));
    t.equal(r.status, 1, `--block ${a} is refused`);
    t.match(r.stderr, /never blocked/);
    t.equal(state(root, parseIp(a) as string), "none");
  }
});

t.test("unspecified, multicast and broadcast addresses are no clients", async (t) => {
  for (const a of ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "239.255.255.250", "ff02::1", "ff05::1:3", "::ffff:224.0.0.251"]) {
    t.equal(parseIp(a), null, a);
  }
  t.equal(parseIp("223.255.255.255"), "223.255.255.255", "the last unicast /8 below multicast is a client");
  const root = join(tempDir(t), "root");
  const r = sentry(["--connect", "--ip=224.0.0.1"], envFor(root));
  t.equal(r.status, 1);
  t.notOk(fs.existsSync(join(root, "seen", "224.0.0.1")), "nothing recorded");
});

t.test("every number setting has an upper bound that names itself", async (t) => {
  const root = tempDir(t);
  for (const [key, max] of Object.entries(CONFIG_MAX)) {
    t.equal(typeof DEFAULTS[key as keyof typeof DEFAULTS], "number", `${key} is a number setting`);
    t.ok(max < 2147483, `${key}'s bound is below what wraps a millisecond timer`);
    t.doesNotThrow(() => loadConfig({ ROOT_DIR: root, [key]: String(max) }), `${key}=${max} is accepted`);
    t.throws(() => loadConfig({ ROOT_DIR: root, [key]: String(max + 1) }), new RegExp(`${key}.*0 to ${max}`), `${key}=${max + 1} is refused`);
  }
  for (const k of Object.keys(DEFAULTS)) if (typeof DEFAULTS[k as keyof typeof DEFAULTS] === "number") t.ok(k in CONFIG_MAX, `${k} has a bound`);
  // The two values the issue found, through the binary and through sentry.conf.
  fs.writeFileSync(join(root, "sentry.conf"), "LOCK_TIMEOUT_SECONDS=2147484\n");
  let r = sentry(["--block", "--ip=192.0.2.9"], envFor(root));
  t.equal(r.status, 1);
  t.match(r.stderr, /sentry\.conf line 1: LOCK_TIMEOUT_SECONDS="2147484" is not valid: expected a whole number from 0 to 3600/);
  t.equal(state(root, "192.0.2.9"), "none");
  fs.rmSync(join(root, "sentry.conf"));
  r = sentry(["--update", "--check"], envFor(root, { UPDATE_TIMEOUT_SECONDS: "999999999" }));
  t.equal(r.status, 1);
  t.match(r.stderr, /UPDATE_TIMEOUT_SECONDS/);
});

t.test("a corrupt sentry.lock is moved aside and recreated", async (t) => {
  const root = join(tempDir(t), "root");
  t.equal(sentry(["--block", "--ip=192.0.2.1"], envFor(root)).status, 0);
  fs.writeFileSync(join(root, "sentry.lock"), "this is not a database, it is a note an admin left here\n".repeat(20));
  const r = sentry(["--block", "--ip=192.0.2.2"], envFor(root));
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /sentry\.lock was not a usable lock: moved to .*sentry\.lock\.corrupt-/);
  t.equal(state(root, "192.0.2.2"), "blocked");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "192.0.2.1\n192.0.2.2\n");
  const aside = fs.readdirSync(root).filter((n) => n.startsWith("sentry.lock.corrupt-"));
  t.equal(aside.length, 1, "the old file is kept");
  t.match(fs.readFileSync(join(root, aside[0]), "utf8"), /an admin left here/);
  t.match(sentryLog(root), /^\S+ - repair .*sentry\.lock was not a usable lock/m);
  // And the next one works without a word.
  const r2 = sentry(["--block", "--ip=192.0.2.3"], envFor(root));
  t.equal(r2.status, 0);
  t.equal(r2.stderr, "");
});
