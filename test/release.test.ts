// The whole life of the binary, as an administrator lives it: a copy of
// dist/sentry installed on a scratch root, --doctor OK, a newer release
// built and signed by the real `build.mjs --release`, published on a
// loopback HTTP server, --update to it, --rollback back.
import t from "tap";
import * as fs from "node:fs";
import * as http from "node:http";
import * as crypto from "node:crypto";
import { join, resolve } from "node:path";
import { execFile, spawnSync } from "node:child_process";
import type { AddressInfo } from "node:net";
import { SENTRY, requireBinary, systemPaths, tempDir } from "./lib/run.ts";

requireBinary();
t.setTimeout(600_000); // a whole release: two architectures, each compressed; arm64 runs under qemu

const REPO = resolve(import.meta.dirname, "..");
const sha = (f: string) => crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex");

/** Runs a program without blocking this process's event loop (the test's server must answer meanwhile). */
function run(file: string, args: string[], env: Record<string, string>, cwd?: string): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(file, args, { env, cwd, encoding: "utf8", timeout: 480_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const status = err ? (typeof err.code === "number" ? err.code : 99) : 0;
      done({ status, stdout, stderr });
    });
  });
}

t.test("install, doctor, update to a newer signed release, rollback", async (t) => {
  const dir = tempDir(t, "sentry-release-");
  const version = (bin: string) => spawnSync(bin, ["--version"], { env: {}, encoding: "utf8" }).stdout.trim();
  const current = version(SENTRY);
  t.match(current, /^sentry (\d+)\.(\d+)\.(\d+)$/);
  const [maj, min, pat] = current.replace("sentry ", "").split(".").map(Number);
  const next = `${maj}.${min}.${pat + 1}`;

  // 1. A newer release: this tree's sentry.ts with the next version, built by
  //    build.mjs --release with a throw-away key, in a folder of its own.
  const src = join(dir, "src");
  fs.mkdirSync(src);
  fs.copyFileSync(join(REPO, "build.mjs"), join(src, "build.mjs"));
  fs.copyFileSync(join(REPO, "package.json"), join(src, "package.json"));
  const text = fs.readFileSync(join(REPO, "sentry.ts"), "utf8");
  const bumped = text.replace(/export const VERSION = "[^"]+";/, `export const VERSION = "${next}";`);
  t.not(bumped, text, "the version line was found");
  fs.writeFileSync(join(src, "sentry.ts"), bumped);
  fs.symlinkSync(join(REPO, "node_modules"), join(src, "node_modules"));
  const keys = crypto.generateKeyPairSync("ed25519");
  const pem = keys.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const pub = keys.publicKey.export({ type: "spki", format: "der" }).toString("base64");

  const server = http.createServer((req, res) => {
    const name = (req.url ?? "/").replace(/^\//, "");
    const file = join(src, "dist", name);
    if (!/^[\w.-]+$/.test(name) || !fs.existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-length": fs.statSync(file).size });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  t.teardown(() => new Promise<void>((ok) => server.close(() => ok())));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;

  const built = await run(process.execPath, ["build.mjs", "--release"], {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    SENTRY_SIGNING_KEY: pem,
    SENTRY_RELEASE_URL: base,
  }, src);
  t.equal(built.status, 0, `build.mjs --release: ${built.stderr}`);
  t.match(built.stdout, new RegExp(`release ${next.replace(/\./g, "\\.")}`));
  const manifest = JSON.parse(fs.readFileSync(join(src, "dist", "manifest.json"), "utf8"));
  t.equal(manifest.version, next);
  t.match(manifest.signature, /^[A-Za-z0-9+/]+=*$/);
  t.ok(fs.readFileSync(join(src, "dist", "sentry")).includes(pub), "the release carries its public key");

  // Verifiable: the manifest names the bundle's SHA-256, the binary carries
  // it, and the checkout rebuilds it; a changed checkout does not.
  t.match(manifest.bundle.sha256, /^[0-9a-f]{64}$/);
  const vv = spawnSync(join(src, "dist", "sentry"), ["--version", "--verbose"], { env: {}, encoding: "utf8" });
  t.equal(vv.stdout, `sentry ${next}\nbundle sha256 ${manifest.bundle.sha256}\n`, "--version --verbose prints the bundle hash");
  const verify = () => run(process.execPath, ["build.mjs", "--verify-release", join(src, "dist", "manifest.json")], { PATH: process.env.PATH ?? "/usr/bin:/bin" }, src);
  let v = await verify();
  t.equal(v.status, 0, `verify-release on the clean checkout: ${v.stdout}${v.stderr}`);
  t.match(v.stdout, new RegExp(`^OK: this checkout builds the bundle ${manifest.bundle.sha256}`));
  const clean = fs.readFileSync(join(src, "sentry.ts"), "utf8");
  fs.writeFileSync(join(src, "sentry.ts"), clean.replace("no action given", "no action was given"));
  v = await verify();
  t.equal(v.status, 1, `verify-release on a changed checkout: ${v.stdout}${v.stderr}`);
  t.match(v.stdout, /^MISMATCH: /);
  fs.writeFileSync(join(src, "sentry.ts"), clean);

  // linux-arm64: in the manifest beside linux-x64, and it runs (under
  // qemu-user, with Debian's arm64 cross libraries as its root): --version,
  // a connect and a block against a scratch ROOT_DIR.
  t.same(Object.keys(manifest.platforms).sort(), ["linux-arm64", "linux-x64"], "the manifest lists both architectures");
  const arm = join(src, "dist", `sentry-${next}-linux-arm64`);
  t.equal(sha(arm), manifest.platforms["linux-arm64"].sha256);
  const armRoot = join(dir, "arm64-root");
  const armEnv = { ROOT_DIR: armRoot, SSH_LOG: join(dir, "none.log"), PROTECT_FTP: "0", PROTECT_MUA: "0" };
  const qemu = (args: string[]) => run("qemu-aarch64-static", ["-L", "/usr/aarch64-linux-gnu", arm, ...args], armEnv);
  let q = await qemu(["--version"]);
  t.equal(q.stdout, `sentry ${next}\n`, `arm64 --version: ${q.stderr}`);
  q = await qemu(["--ip=203.0.113.5", "--connect"]);
  t.equal(q.status, 0, q.stderr);
  t.equal(q.stdout, "   1 connections from 203.0.113.5\n");
  t.equal(fs.readFileSync(join(armRoot, "seen", "203.0.113.5"), "utf8").length, 11, "one seen line");
  q = await qemu(["--ip=203.0.113.5", "--block"]);
  t.equal(q.status, 0, q.stderr);
  t.match(q.stdout, /blocked 203\.0\.113\.5 \(was: not decided\)/);
  t.equal(fs.readFileSync(join(armRoot, "hosts.deny"), "utf8"), "203.0.113.5\n");

  // 2. The administrator's server: a copy of dist/sentry, installed.
  const root = join(dir, "root");
  const hostsAllow = join(dir, "hosts.allow");
  const log = join(dir, "auth.log");
  fs.writeFileSync(hostsAllow, "ALL : LOCAL : allow\n");
  fs.writeFileSync(log, "Accepted password for admin from 192.0.2.9 port 4000 ssh2\n");
  const drop = join(dir, "sentry");
  fs.copyFileSync(SENTRY, drop);
  fs.chmodSync(drop, 0o755);
  const env = {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    ROOT_DIR: root,
    HOSTS_ALLOW: hostsAllow,
    HOSTS_DENY: join(dir, "hosts.deny"), // none: a default-allow host (not this machine's file)
    SSH_CLIENT: "192.0.2.9 50000 22", // the administrator, over SSH: --install --write allows them first
    SSH_LOG: log,
    PROTECT_FTP: "0",
    PROTECT_MUA: "0",
    SSHD_PATH: "/usr/sbin/sshd",
    ...systemPaths(join(dir, "sys")),
  };
  let r = await run(drop, ["--install", "--write"], env);
  t.equal(r.status, 0, `--install --write: ${r.stderr}`);
  const installed = join(root, "sentry");
  // The channel of the plain build is set where an administrator sets it.
  fs.writeFileSync(join(root, "sentry.conf"), `UPDATE_URL=${base}manifest.json\nUPDATE_PUBLIC_KEY=${pub}\n`);
  r = await run(installed, ["--doctor"], env);
  t.equal(r.status, 0, `--doctor: ${r.stdout}`);
  t.match(r.stdout, /^SENTRY OK/);

  // 3. --update --check reports, --update moves to the new release.
  const before = sha(installed);
  r = await run(installed, ["--update", "--check"], env);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(next.replace(/\./g, "\\.")));
  t.equal(sha(installed), before, "--check changes nothing");
  r = await run(installed, ["--update"], env);
  t.equal(r.status, 0, `--update: ${r.stdout}${r.stderr}`);
  t.equal(version(installed), `sentry ${next}`, "the installed binary is the new release");
  t.equal(sha(installed), sha(join(src, "dist", "sentry")), "byte for byte");
  t.equal(sha(join(root, "sentry.prev")), before, "the previous one is kept as sentry.prev");
  r = await run(installed, ["--doctor"], env);
  t.equal(r.status, 0, "the new binary passes --doctor");
  r = await run(installed, ["--update"], env);
  t.equal(r.status, 0);
  t.equal(sha(installed), sha(join(src, "dist", "sentry")), "already up to date: nothing changes");

  // 4. --rollback moves back.
  r = await run(installed, ["--rollback"], env);
  t.equal(r.status, 0, `--rollback: ${r.stderr}`);
  t.equal(version(installed), current, "rolled back");
  t.equal(sha(installed), before);
  t.same(fs.readdirSync(root).filter((f) => f.includes("tmp")), [], "no temporary files left");
});
