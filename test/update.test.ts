// test/update.test.ts — sentry --update / --rollback and the release step,
// against a real HTTP server on 127.0.0.1 and throw-away Ed25519 keys.
//
// The "installed binary" is a small shell script in a temporary directory
// that answers --version like sentry; update() is called with it as target.
// Every refused update is checked the same way: the target's SHA-256 is what
// it was, and the directory holds exactly what it held (no temporary file).

import t from "tap";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { execFile } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type Config, type Sys, DEFAULTS, VERSION, realSys } from "../sentry.ts";
import {
  BINARY_MAX_BYTES,
  MANIFEST_MAX_BYTES,
  canonicalJson,
  isNewer,
  manifestSignedBytes,
  parseVersion,
  platformKey,
  rollback,
  transportProblem,
  update,
  verifyManifest,
} from "../sentry.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const PLAT = platformKey();

// ---- versions relative to the running one, so a version bump breaks nothing
const [MAJ, MIN, PAT] = parseVersion(VERSION) as [number, number, number];
const NEXT = `${MAJ}.${MIN + 1}.0`;
const LATER = `${MAJ}.${MIN + 2}.0`;
const OLDER = MAJ > 0 ? `${MAJ - 1}.9.9` : `0.0.0`;
t.ok(MAJ === 0 || isNewer(VERSION, OLDER), "fixture versions make sense");
void PAT;

// ---- keys ------------------------------------------------------------------
function keyPair() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519");
  return { privateKey, pub: publicKey.export({ type: "spki", format: "der" }).toString("base64") };
}
const KEY = keyPair();
const OTHER = keyPair();

type Doc = Record<string, unknown>;
function signDoc(doc: Doc, key: crypto.KeyObject = KEY.privateKey): Doc {
  return { ...doc, signature: crypto.sign(null, manifestSignedBytes(doc), key).toString("base64") };
}

// ---- fake binaries -----------------------------------------------------------
function script(version: string, tag: string, status = 0): Buffer {
  return Buffer.from(
    `#!/bin/sh\n# fake sentry (${tag})\nif [ "$1" = "--version" ]; then echo "sentry ${version}"; exit ${status}; fi\nexit 0\n`,
  );
}
const sha = (b: Buffer) => crypto.createHash("sha256").update(b).digest("hex");
const fileSha = (p: string) => sha(fs.readFileSync(p));

// ---- the server ----------------------------------------------------------------
type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;
const routes = new Map<string, Handler>();
const hits: string[] = [];
const server = http.createServer((req, res) => {
  hits.push(req.url ?? "");
  const h = routes.get(req.url ?? "");
  if (h) h(req, res);
  else {
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found\n");
  }
});
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const port = (server.address() as { port: number }).port;
const ORIGIN = `http://127.0.0.1:${port}`;
t.teardown(() => {
  server.closeAllConnections();
  server.close();
});

const serveBytes =
  (body: Buffer | string, headers: Record<string, string> = {}): Handler =>
  (_req, res) => {
    const b = Buffer.from(body);
    res.writeHead(200, { "content-length": String(b.length), ...headers });
    res.end(b);
  };

let seq = 0;
/** A fresh URL prefix, so tests never share routes. */
const prefix = () => `/r${++seq}`;

/**
 * Publishes a release: the binary at PREFIX/NAME and a manifest at
 * PREFIX/manifest.json. `edit` changes the document before it is signed,
 * `after` after (to forge). Returns the manifest URL.
 */
function publish(opts: {
  version: string;
  bin: Buffer;
  key?: crypto.KeyObject;
  edit?: (doc: Doc, entry: Doc) => void;
  after?: (doc: Doc) => Doc | string;
  binHandler?: Handler;
}): { url: string; binPath: string; dir: string } {
  const dir = prefix();
  const name = `sentry-${opts.version}-${PLAT}`;
  const entry: Doc = { url: name, sha256: sha(opts.bin), size: opts.bin.length };
  const doc: Doc = { format: 1, version: opts.version, released: "2026-11-21T12:00:00.000Z", platforms: { [PLAT]: entry } };
  opts.edit?.(doc, entry);
  let signed: Doc | string = signDoc(doc, opts.key);
  if (opts.after) signed = opts.after(signed);
  const text = typeof signed === "string" ? signed : JSON.stringify(signed, null, 2);
  routes.set(`${dir}/manifest.json`, serveBytes(text, { "content-type": "application/json" }));
  routes.set(`${dir}/${name}`, opts.binHandler ?? serveBytes(opts.bin));
  return { url: `${ORIGIN}${dir}/manifest.json`, binPath: `${dir}/${name}`, dir };
}

// ---- a scene: a directory with an installed "sentry" -----------------------------
interface Scene {
  dir: string;
  target: string;
  old: Buffer;
  out: string[];
  err: string[];
  sys: Sys;
  cfg: (url: string, over?: Partial<Config>) => Config;
  /** The installed binary is what it was and no file was added or left. */
  untouched: (t: Tap) => void;
}
type Tap = Pick<typeof t, "teardown" | "equal" | "same">;

function scene(tt: Tap, installed = script(VERSION, "installed")): Scene {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sentry-update-"));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const target = path.join(dir, "sentry");
  fs.writeFileSync(target, installed, { mode: 0o755 });
  const out: string[] = [];
  const err: string[] = [];
  const sys: Sys = { ...realSys(), out: (s) => void out.push(s), warn: (s) => void err.push(s) };
  const before = sha(installed);
  const listing = fs.readdirSync(dir).sort();
  return {
    dir,
    target,
    old: installed,
    out,
    err,
    sys,
    cfg: (url, over = {}) => ({
      ...DEFAULTS,
      UPDATE_URL: url,
      UPDATE_PUBLIC_KEY: KEY.pub,
      UPDATE_TIMEOUT_SECONDS: 5,
      ...over,
    }),
    untouched: (t2) => {
      t2.equal(fileSha(target), before, "installed binary unchanged (SHA-256)");
      t2.same(fs.readdirSync(dir).sort(), listing, "no file added or left behind");
    },
  };
}

const refused = (message: RegExp, exitCode: 1 | 2 = 2) => ({ name: "SentryError", exitCode, message });

// =================================================================================
// Pure parts
// =================================================================================

t.test("isNewer compares x.y.z numerically", async (t) => {
  t.equal(isNewer("3.10.0", "3.9.9"), true);
  t.equal(isNewer("3.1.0", "3.1.0"), false);
  t.equal(isNewer("3.0.9", "3.1.0"), false);
  t.equal(isNewer("10.0.0", "9.99.99"), true);
  t.equal(isNewer("3.0.1", "3.0.0"), true);
  t.throws(() => isNewer("3.1", "3.0.0"), refused(/not a version/));
  t.throws(() => isNewer("3.0.0", "v3.0.0"), refused(/v3\.0\.0/));
  t.equal(parseVersion("03.0.0"), null, "no leading zeros");
  t.equal(parseVersion("3.0.0-rc1"), null, "no pre-release tags");
});

t.test("canonicalJson: sorted keys, no whitespace, whole numbers", async (t) => {
  t.equal(canonicalJson({ b: 1, a: [true, null, "x\n"], c: { z: 0, y: -2 } }), '{"a":[true,null,"x\\n"],"b":1,"c":{"y":-2,"z":0}}');
  t.throws(() => canonicalJson({ a: 1.5 }), refused(/not a whole number/));
  t.throws(() => canonicalJson({ a: 2 ** 60 }), refused(/not a whole number/));
  t.throws(() => canonicalJson(undefined), refused(/cannot canonicalise/));
});

t.test("transportProblem: https, or http to loopback only", async (t) => {
  t.equal(transportProblem(new URL("https://example.org/m.json")), null);
  t.equal(transportProblem(new URL("http://127.0.0.1:8080/m.json")), null);
  t.equal(transportProblem(new URL("http://127.1.2.3/m.json")), null);
  t.equal(transportProblem(new URL("http://[::1]:8080/m.json")), null);
  t.match(transportProblem(new URL("http://example.org/m.json")), /plain http/);
  t.match(transportProblem(new URL("http://localhost/m.json")), /plain http/, "a name is not an address");
  t.match(transportProblem(new URL("http://127.0.0.1.example.org/m.json")), /plain http/);
  t.match(transportProblem(new URL("ftp://example.org/m.json")), /only https/);
  t.match(transportProblem(new URL("file:///etc/passwd")), /only https/);
});

t.test("verifyManifest", async (t) => {
  const entry = { url: "sentry-x", sha256: "a".repeat(64), size: 1000 };
  const doc = { format: 1, version: NEXT, platforms: { [PLAT]: entry } };
  const good = signDoc(doc);

  t.test("a good manifest, however it is laid out", async (t) => {
    const m = verifyManifest(JSON.stringify(good), KEY.pub);
    t.same(m, { format: 1, version: NEXT, platforms: { [PLAT]: entry } });
    // Same members in another order, other whitespace: the same canonical bytes.
    const reordered = `{ "signature": ${JSON.stringify(good.signature)},\n "platforms": {"${PLAT}": {"size": 1000, "sha256": "${"a".repeat(64)}", "url": "sentry-x"}},\n\t"version": "${NEXT}", "format": 1.0 }`;
    t.same(verifyManifest(reordered, KEY.pub), m);
    // Unknown members are signed and ignored.
    const extra = signDoc({ ...doc, notes: ["hello"], future: { x: 1 } });
    t.same(verifyManifest(JSON.stringify(extra), KEY.pub), m);
  });

  t.test("altered after signing", async (t) => {
    for (const forged of [
      { ...good, version: LATER },
      { ...good, platforms: { [PLAT]: { ...entry, sha256: "b".repeat(64) } } },
      { ...good, extra: 1 },
    ])
      t.throws(() => verifyManifest(JSON.stringify(forged), KEY.pub), refused(/signature does not verify/));
  });

  t.test("signed by another key", async (t) => {
    t.throws(() => verifyManifest(JSON.stringify(signDoc(doc, OTHER.privateKey)), KEY.pub), refused(/does not verify/));
  });

  t.test("not a manifest at all", async (t) => {
    t.throws(() => verifyManifest("<html>", KEY.pub), refused(/not JSON/));
    t.throws(() => verifyManifest("[1]", KEY.pub), refused(/not a JSON object/));
    t.throws(() => verifyManifest(JSON.stringify(doc), KEY.pub), refused(/no "signature"/));
    t.throws(() => verifyManifest(JSON.stringify({ ...doc, signature: "abc" }), KEY.pub), refused(/not an Ed25519 signature/));
    t.throws(
      () => verifyManifest(JSON.stringify({ ...doc, signature: Buffer.alloc(32).toString("base64") }), KEY.pub),
      refused(/not an Ed25519 signature/),
    );
    t.throws(() => verifyManifest(" ".repeat(MANIFEST_MAX_BYTES + 1), KEY.pub), refused(/larger than/));
    t.throws(() => verifyManifest(JSON.stringify({ ...good, x: 0.5 }), KEY.pub), refused(/not a whole number/));
  });

  t.test("signed, but not what this version reads", async (t) => {
    const cases: [Doc, RegExp][] = [
      [{ ...doc, format: 2 }, /format 2/],
      [{ ...doc, version: "3.1" }, /"version" is not x\.y\.z/],
      [{ ...doc, platforms: [] }, /no "platforms"/],
      [{ ...doc, platforms: { [PLAT]: "x" } }, /is not an object/],
      [{ ...doc, platforms: { [PLAT]: { ...entry, url: "" } } }, /url is not a URL/],
      [{ ...doc, platforms: { [PLAT]: { ...entry, sha256: "A".repeat(64) } } }, /sha256 is not/],
      [{ ...doc, platforms: { [PLAT]: { ...entry, size: 0 } } }, /size is not/],
      [{ ...doc, platforms: { [PLAT]: { ...entry, size: BINARY_MAX_BYTES + 1 } } }, /size is not/],
    ];
    for (const [d, re] of cases) t.throws(() => verifyManifest(JSON.stringify(signDoc(d)), KEY.pub), refused(re));
  });

  t.test("a bad public key is a configuration error (exit 1)", async (t) => {
    t.throws(() => verifyManifest(JSON.stringify(good), ""), refused(/UPDATE_PUBLIC_KEY is not set/, 1));
    t.throws(() => verifyManifest(JSON.stringify(good), "not base64!"), refused(/not an Ed25519 public key/, 1));
    const rsa = crypto.generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey;
    const rsaB64 = rsa.export({ type: "spki", format: "der" }).toString("base64");
    t.throws(() => verifyManifest(JSON.stringify(good), rsaB64), refused(/not an Ed25519 public key/, 1));
    t.same(verifyManifest(JSON.stringify(good), ` ${KEY.pub}\n`).version, NEXT, "surrounding blanks are fine");
  });
});

// =================================================================================
// update()
// =================================================================================

t.test("a good update", async (t) => {
  const s = scene(t);
  const bin = script(NEXT, "new");
  const rel = publish({ version: NEXT, bin });
  const code = await update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target });
  t.equal(code, 0);
  t.same(fs.readFileSync(s.target), bin, "target holds the new bytes");
  t.same(fs.readFileSync(`${s.target}.prev`), s.old, "sentry.prev holds the old bytes");
  t.equal(fs.statSync(s.target).mode & 0o777, 0o755, "mode 0755");
  t.same(fs.readdirSync(s.dir).sort(), ["sentry", "sentry.prev"], "no temporary file left");
  t.match(s.out.join("\n"), new RegExp(`downloading sentry ${NEXT}.*\\n.*updated .* to sentry ${NEXT}`));
  t.same(s.err, []);
});

t.test("--check reports and changes nothing", async (t) => {
  const s = scene(t);
  const rel = publish({ version: NEXT, bin: script(NEXT, "new") });
  const n = hits.length;
  t.equal(await update(s.cfg(rel.url), s.sys, { check: true, force: false, target: s.target }), 0);
  t.match(s.out[0], `sentry ${NEXT} is available (this is ${VERSION})`);
  t.same(hits.slice(n), [`${rel.dir}/manifest.json`], "only the manifest was fetched");
  s.untouched(t);

  const same = publish({ version: VERSION, bin: script(VERSION, "same") });
  t.equal(await update(s.cfg(same.url), s.sys, { check: true, force: true, target: s.target }), 0);
  t.match(s.out[1], `sentry ${VERSION} is up to date`);

  const otherPlat = publish({ version: NEXT, bin: script(NEXT, "x"), edit: (d) => (d.platforms = { "plan9-mips": {
    url: "x", sha256: "0".repeat(64), size: 1 } }) });
  t.equal(await update(s.cfg(otherPlat.url), s.sys, { check: true, force: false }), 0, "--check needs no target");
  t.match(s.out[2], `but not for ${PLAT}`);
  s.untouched(t);
});

t.test("the same or an older version is refused, unless --force", async (t) => {
  const s = scene(t);
  const same = publish({ version: VERSION, bin: script(VERSION, "same but rebuilt") });
  t.equal(await update(s.cfg(same.url), s.sys, { check: false, force: false, target: s.target }), 0);
  t.match(s.out.at(-1), /is up to date; nothing to do/);
  s.untouched(t);

  const olderBin = script(OLDER, "older");
  const older = publish({ version: OLDER, bin: olderBin });
  const n = hits.length;
  t.equal(await update(s.cfg(older.url), s.sys, { check: false, force: false, target: s.target }), 0);
  t.match(s.err.at(-1), new RegExp(`is ${OLDER.replace(/\./g, "\\.")}, older than this sentry .* nothing done`));
  t.same(hits.slice(n), [`${older.dir}/manifest.json`], "the binary was not downloaded");
  s.untouched(t);

  t.equal(await update(s.cfg(older.url), s.sys, { check: false, force: true, target: s.target }), 0, "--force");
  t.same(fs.readFileSync(s.target), olderBin, "--force installs the older one");
  t.same(fs.readFileSync(`${s.target}.prev`), s.old);
});

t.test("a manifest with a bad signature", async (t) => {
  const s = scene(t);
  const rel = publish({ version: NEXT, bin: script(NEXT, "new"), after: (d) => ({ ...d, version: LATER }) });
  await t.rejects(
    update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
    refused(/^update failed checking the manifest .*signature does not verify.*sentry is unchanged$/),
  );
  s.untouched(t);
});

t.test("a manifest signed by another key", async (t) => {
  const s = scene(t);
  const rel = publish({ version: NEXT, bin: script(NEXT, "evil"), key: OTHER.privateKey });
  const n = hits.length;
  await t.rejects(update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }), refused(/does not verify/));
  t.same(hits.slice(n), [`${rel.dir}/manifest.json`], "the binary was never fetched");
  s.untouched(t);
});

t.test("a binary whose SHA-256 is not the manifest's", async (t) => {
  const s = scene(t);
  const good = script(NEXT, "new");
  const evil = script(NEXT, "neW"); // same size, other bytes
  const rel = publish({ version: NEXT, bin: good, binHandler: serveBytes(evil) });
  await t.rejects(
    update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
    refused(/^update failed downloading .*: SHA-256 is [0-9a-f]{64}, the manifest says [0-9a-f]{64}; .* is unchanged$/),
  );
  s.untouched(t);
});

t.test("a truncated or oversized download", async (t) => {
  const bin = Buffer.concat([script(NEXT, "new"), Buffer.alloc(256 * 1024, 0x23)]);

  t.test("the server closes the connection half way", async (t) => {
    const s = scene(t);
    const rel = publish({
      version: NEXT,
      bin,
      binHandler: (_req, res) => {
        res.writeHead(200, { "content-length": String(bin.length) });
        res.write(bin.subarray(0, 1000), () => setTimeout(() => res.destroy(), 50));
      },
    });
    await t.rejects(
      update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
      refused(/^update failed downloading .*after \d+ of \d+ bytes; .* is unchanged$/),
    );
    s.untouched(t);
  });

  t.test("a whole response, shorter than the manifest says", async (t) => {
    const s = scene(t);
    const rel = publish({ version: NEXT, bin, binHandler: serveBytes(bin.subarray(0, 5000)) });
    await t.rejects(
      update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
      refused(/the server announces 5000 bytes, the manifest says \d+/),
    );
    s.untouched(t);
  });

  t.test("short, without a Content-Length", async (t) => {
    const s = scene(t);
    const rel = publish({
      version: NEXT,
      bin,
      binHandler: (_req, res) => {
        res.writeHead(200); // chunked
        res.end(bin.subarray(0, 5000));
      },
    });
    await t.rejects(
      update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
      refused(/got 5000 bytes, the manifest says \d+ \(truncated\)/),
    );
    s.untouched(t);
  });

  t.test("longer than the manifest says, without a Content-Length", async (t) => {
    const s = scene(t);
    const rel = publish({
      version: NEXT,
      bin,
      binHandler: (_req, res) => {
        res.writeHead(200);
        res.write(bin);
        res.end(Buffer.alloc(100000));
      },
    });
    await t.rejects(
      update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
      refused(/more than the expected \d+ bytes/),
    );
    s.untouched(t);
  });

  t.test("a compressed download is measured after decompression", async (t) => {
    const s = scene(t);
    const zipped = zlib.gzipSync(bin);
    const rel = publish({ version: NEXT, bin, binHandler: serveBytes(zipped, { "content-encoding": "gzip" }) });
    t.equal(await update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }), 0);
    t.same(fs.readFileSync(s.target), bin);
  });

  t.test("a gzip bomb stops at the manifest's size", async (t) => {
    const s = scene(t);
    const bomb = zlib.gzipSync(Buffer.alloc(50 * 1024 * 1024));
    const rel = publish({ version: NEXT, bin, binHandler: serveBytes(bomb, { "content-encoding": "gzip" }) });
    await t.rejects(
      update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
      refused(/more than the expected \d+ bytes/),
    );
    s.untouched(t);
  });

  t.test("a manifest larger than any manifest", async (t) => {
    const s = scene(t);
    const dir = prefix();
    routes.set(`${dir}/manifest.json`, (_req, res) => {
      res.writeHead(200);
      res.end(Buffer.alloc(MANIFEST_MAX_BYTES + 10, 0x20));
    });
    await t.rejects(
      update(s.cfg(`${ORIGIN}${dir}/manifest.json`), s.sys, { check: false, force: false, target: s.target }),
      refused(/fetching the manifest .*more than the expected/),
    );
    s.untouched(t);
  });
});

t.test("a binary that fails its --version test run", async (t) => {
  const cases: [string, Buffer, RegExp][] = [
    ["another version", script(LATER, "liar"), new RegExp(`it is ${LATER}, the manifest says ${NEXT}`)],
    ["a non-zero exit", script(NEXT, "fails", 3), /exited with status 3/],
    ["not sentry", Buffer.from("#!/bin/sh\necho hello\n"), /printed "hello", not "sentry X\.Y\.Z"/],
    ["not a program", Buffer.from("\x7fELF\x02\x01garbage\n"), /exited with status|cannot run it/],
    ["needs its environment", Buffer.from(`#!/bin/sh\n[ -n "$HOME" ] && echo "sentry ${NEXT}"\n`), /exited with status 1/],
  ];
  for (const [name, bin, re] of cases)
    t.test(name, async (t) => {
      const s = scene(t);
      const rel = publish({ version: NEXT, bin });
      await t.rejects(
        update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
        refused(new RegExp(`^update failed test-running the new binary with --version: .*${re.source}.*is unchanged$`)),
      );
      s.untouched(t);
    });
});

t.test("a binary that hangs on --version is killed after the timeout", async (t) => {
  const s = scene(t);
  const rel = publish({ version: NEXT, bin: Buffer.from("#!/bin/sh\nexec sleep 30\n") });
  const started = Date.now();
  await t.rejects(
    update(s.cfg(rel.url, { UPDATE_TIMEOUT_SECONDS: 1 }), s.sys, { check: false, force: false, target: s.target }),
    refused(/no answer within 1 s/),
  );
  t.comment(`refused after ${Date.now() - started} ms (the refusal names the 1 s timeout; timing is npm run bench's)`);
  s.untouched(t);
});

t.test("HTTP errors", async (t) => {
  t.test("no manifest (404)", async (t) => {
    const s = scene(t);
    await t.rejects(
      update(s.cfg(`${ORIGIN}/nothing/manifest.json`), s.sys, { check: false, force: false, target: s.target }),
      refused(/^update failed fetching the manifest .*: HTTP 404 Not Found from .*; .* is unchanged$/),
    );
    s.untouched(t);
  });
  t.test("no binary (404)", async (t) => {
    const s = scene(t);
    const rel = publish({ version: NEXT, bin: script(NEXT, "new") });
    routes.delete(rel.binPath);
    await t.rejects(
      update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
      refused(/^update failed downloading .*: HTTP 404 Not Found/),
    );
    s.untouched(t);
  });
  t.test("nobody listening", async (t) => {
    const s = scene(t);
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const deadPort = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    await t.rejects(
      update(s.cfg(`http://127.0.0.1:${deadPort}/manifest.json`), s.sys, { check: false, force: false, target: s.target }),
      refused(/fetching the manifest .*fetch failed \(.*ECONNREFUSED/),
    );
    s.untouched(t);
  });
});

t.test("timeouts on every network step", async (t) => {
  t.test("a server that never answers", async (t) => {
    const s = scene(t);
    const dir = prefix();
    routes.set(`${dir}/manifest.json`, () => {}); // accepts, never answers
    const started = Date.now();
    await t.rejects(
      update(s.cfg(`${ORIGIN}${dir}/manifest.json`, { UPDATE_TIMEOUT_SECONDS: 1 }), s.sys, {
        check: false,
        force: false,
        target: s.target,
      }),
      refused(/fetching the manifest .*: no answer within 1 s/),
    );
    const elapsed = Date.now() - started;
    t.comment(`gave up after ${elapsed} ms (the refusal names the 1 s timeout; timing is npm run bench's)`);
    s.untouched(t);
  });

  t.test("a manifest that starts and stalls", async (t) => {
    const s = scene(t);
    const dir = prefix();
    routes.set(`${dir}/manifest.json`, (_req, res) => {
      res.writeHead(200, { "content-length": "1000" });
      res.write("{");
    });
    const started = Date.now();
    await t.rejects(
      update(s.cfg(`${ORIGIN}${dir}/manifest.json`, { UPDATE_TIMEOUT_SECONDS: 1 }), s.sys, {
        check: false,
        force: false,
        target: s.target,
      }),
      refused(/fetching the manifest .*: not finished within 1 s/),
    );
    t.comment(`refused after ${Date.now() - started} ms (the refusal names the 1 s timeout; timing is npm run bench's)`);
    s.untouched(t);
  });

  t.test("a download that stalls half way", async (t) => {
    const s = scene(t);
    const bin = Buffer.concat([script(NEXT, "new"), Buffer.alloc(100000)]);
    const rel = publish({
      version: NEXT,
      bin,
      binHandler: (_req, res) => {
        res.writeHead(200, { "content-length": String(bin.length) });
        res.write(bin.subarray(0, 2000));
      },
    });
    const started = Date.now();
    await t.rejects(
      update(s.cfg(rel.url, { UPDATE_TIMEOUT_SECONDS: 1 }), s.sys, { check: false, force: false, target: s.target }),
      refused(/downloading .*: no data for 1 s after 2000 of \d+ bytes/),
    );
    t.comment(`refused after ${Date.now() - started} ms (the refusal names the 1 s timeout; timing is npm run bench's)`);
    s.untouched(t);
  });
});

t.test("plain http to a remote host is refused without a connection", async (t) => {
  const s = scene(t);
  const started = Date.now();
  await t.rejects(
    update(s.cfg("http://example.com/sentry/manifest.json"), s.sys, { check: false, force: false, target: s.target }),
    refused(/^UPDATE_URL: http:\/\/example\.com\/sentry\/manifest\.json is plain http/, 1),
  );
  t.comment(`refused in ${Date.now() - started} ms: the refusal is the URL check's, made before any connection`);
  s.untouched(t);

  t.test("nor through a redirect", async (t) => {
    const s = scene(t);
    const dir = prefix();
    routes.set(`${dir}/manifest.json`, (_req, res) => {
      res.writeHead(302, { location: "http://example.com/manifest.json" });
      res.end();
    });
    await t.rejects(
      update(s.cfg(`${ORIGIN}${dir}/manifest.json`), s.sys, { check: false, force: false, target: s.target }),
      refused(/fetching the manifest .*: redirected to http:\/\/example\.com\/manifest\.json is plain http/),
    );
    s.untouched(t);
  });

  t.test("nor as the binary's URL in a signed manifest", async (t) => {
    const s = scene(t);
    const rel = publish({ version: NEXT, bin: script(NEXT, "x"), edit: (_d, e) => (e.url = "http://example.com/sentry") });
    await t.rejects(
      update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
      refused(/choosing the binary: http:\/\/example\.com\/sentry is plain http/),
    );
    s.untouched(t);
  });
});

t.test("redirects between allowed URLs are followed, within a limit", async (t) => {
  const s = scene(t);
  const bin = script(NEXT, "redirected");
  const rel = publish({ version: NEXT, bin, edit: (_d, e) => (e.url = "../bin/latest") });
  const hop = prefix();
  routes.set(`${hop}/manifest.json`, (_req, res) => {
    res.writeHead(301, { location: rel.url });
    res.end();
  });
  // "../bin/latest" is relative to the manifest's final URL, and redirects on.
  routes.set(`/bin/latest`, (_req, res) => {
    res.writeHead(307, { location: `${rel.binPath}` });
    res.end();
  });
  t.equal(await update(s.cfg(`${ORIGIN}${hop}/manifest.json`), s.sys, { check: false, force: false, target: s.target }), 0);
  t.same(fs.readFileSync(s.target), bin);

  const loop = prefix();
  routes.set(`${loop}/manifest.json`, (_req, res) => {
    res.writeHead(302, { location: `${loop}/manifest.json` });
    res.end();
  });
  const s2 = scene(t);
  await t.rejects(
    update(s2.cfg(`${ORIGIN}${loop}/manifest.json`), s2.sys, { check: false, force: false, target: s2.target }),
    refused(/more than 5 redirects/),
  );
  s2.untouched(t);
});

t.test("configuration errors (exit 1), before any connection", async (t) => {
  const s = scene(t);
  const o = { check: false, force: false, target: s.target };
  await t.rejects(update(s.cfg(""), s.sys, o), refused(/--update is not configured: set UPDATE_URL/, 1));
  await t.rejects(update(s.cfg("not a url"), s.sys, o), refused(/UPDATE_URL is not a URL/, 1));
  await t.rejects(update(s.cfg("file:///etc/passwd"), s.sys, o), refused(/only https/, 1));
  const n = hits.length;
  await t.rejects(
    update(s.cfg(`${ORIGIN}/x/manifest.json`, { UPDATE_PUBLIC_KEY: "" }), s.sys, o),
    refused(/UPDATE_PUBLIC_KEY is not set/, 1),
  );
  await t.rejects(
    update(s.cfg(`${ORIGIN}/x/manifest.json`, { UPDATE_TIMEOUT_SECONDS: 0 }), s.sys, o),
    refused(/UPDATE_TIMEOUT_SECONDS must be 1 or more/, 1),
  );
  t.equal(hits.length, n, "no request made");
  await t.rejects(
    update(s.cfg(`${ORIGIN}/x/manifest.json`), s.sys, { ...o, target: path.join(s.dir, "missing") }),
    refused(/cannot find the installed binary/),
  );
  s.untouched(t);
});

t.test("a release without this platform", async (t) => {
  const s = scene(t);
  const rel = publish({
    version: NEXT,
    bin: script(NEXT, "x"),
    edit: (d, e) => (d.platforms = { "plan9-mips": e }),
  });
  await t.rejects(
    update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
    refused(new RegExp(`choosing the binary: release ${NEXT} has no binary for ${PLAT} \\(it has: plan9-mips\\)`)),
  );
  s.untouched(t);
});

t.test("a symbolic link to the binary: the file is replaced, the link kept", async (t) => {
  const s = scene(t);
  const link = path.join(s.dir, "link-to-sentry");
  fs.symlinkSync("sentry", link);
  const bin = script(NEXT, "via link");
  const rel = publish({ version: NEXT, bin });
  t.equal(await update(s.cfg(rel.url), s.sys, { check: false, force: false, target: link }), 0);
  t.ok(fs.lstatSync(link).isSymbolicLink());
  t.same(fs.readFileSync(s.target), bin);
  t.same(fs.readFileSync(`${s.target}.prev`), s.old);
});

t.test("a temporary file left by a killed update is removed; a fresh one is not", async (t) => {
  const s = scene(t);
  const stale = path.join(s.dir, ".sentry.tmp-new-1-deadbeef");
  const fresh = path.join(s.dir, ".sentry.tmp-new-2-cafecafe");
  fs.writeFileSync(stale, "half");
  fs.writeFileSync(fresh, "busy");
  const old = new Date(Date.now() - 2 * 3600 * 1000);
  fs.utimesSync(stale, old, old);
  const rel = publish({ version: NEXT, bin: script(NEXT, "new") });
  t.equal(await update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }), 0);
  t.notOk(fs.existsSync(stale), "stale one removed");
  t.ok(fs.existsSync(fresh), "a concurrent one is left alone");
  t.match(s.err[0], /removed .*\.sentry\.tmp-new-1-deadbeef, left by an interrupted update/);
});

t.test("file-system failures (injected through Sys.fs) leave the binary as it was", async (t) => {
  const boom = (code: string): never => {
    throw Object.assign(new Error(`${code}: injected`), { code });
  };
  const isTemp = (p: unknown) => typeof p === "string" && path.basename(p).startsWith(".sentry.tmp-");
  type F = Sys["fs"];
  const cases: [string, (f: F) => Partial<F>, RegExp][] = [
    [
      "no temporary file can be created",
      (f) => ({
        openSync: ((p: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode | null) =>
          isTemp(p) ? boom("EACCES") : f.openSync(p, flags ?? "r", mode)) as F["openSync"],
      }),
      /^update failed creating a temporary file in .*: EACCES: injected; .* is unchanged$/,
    ],
    [
      "the disk fills up during the download",
      (f) => {
        let n = 0;
        return {
          writeSync: ((...a: Parameters<F["writeSync"]>) => (++n > 1 ? boom("ENOSPC") : f.writeSync(...a))) as F["writeSync"],
        };
      },
      /^update failed downloading .*: ENOSPC: injected after \d+ of \d+ bytes; .* is unchanged$/,
    ],
    [
      "sentry.prev cannot be written",
      (f) => ({
        copyFileSync: ((from: string, to: string, m?: number) =>
          isTemp(to) ? boom("ENOSPC") : f.copyFileSync(from, to, m)) as F["copyFileSync"],
      }),
      /^update failed keeping the installed binary as .*sentry\.prev: ENOSPC: injected; .* is unchanged$/,
    ],
    [
      "the final rename fails",
      (f) => ({
        renameSync: ((from: string, to: string) =>
          path.basename(from).startsWith(".sentry.tmp-new") ? boom("EIO") : f.renameSync(from, to)) as F["renameSync"],
      }),
      /^update failed renaming the new binary over .*: EIO: injected; .* is unchanged$/,
    ],
  ];
  for (const [name, make, re] of cases)
    t.test(name, async (t) => {
      const s = scene(t);
      const rel = publish({ version: NEXT, bin: Buffer.concat([script(NEXT, "new"), Buffer.alloc(300000)]) });
      const sys: Sys = { ...s.sys, fs: { ...s.sys.fs, ...make(s.sys.fs) } };
      await t.rejects(update(s.cfg(rel.url), sys, { check: false, force: false, target: s.target }), refused(re));
      t.equal(fileSha(s.target), sha(s.old), "installed binary unchanged");
      t.same(fs.readdirSync(s.dir).filter((n) => n.startsWith(".")), [], "no temporary file left");
      if (fs.existsSync(`${s.target}.prev`)) t.same(fs.readFileSync(`${s.target}.prev`), s.old, "sentry.prev, if made, is the installed one");
    });
});

// =================================================================================
// rollback()
// =================================================================================

t.test("rollback swaps the binary and sentry.prev; twice goes forward again", async (t) => {
  const s = scene(t);
  const bin = script(NEXT, "new");
  const rel = publish({ version: NEXT, bin });
  await update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target });

  t.equal(rollback(s.cfg(rel.url), s.sys, { target: s.target }), 0);
  t.same(fs.readFileSync(s.target), s.old, "back to the old binary");
  t.same(fs.readFileSync(`${s.target}.prev`), bin, "the new one kept as sentry.prev");
  t.equal(fs.statSync(s.target).mode & 0o777, 0o755);
  t.match(s.out.at(-1), new RegExp(`rolled back .* to sentry ${VERSION}; .*sentry\\.prev now holds sentry ${NEXT}`));

  t.equal(rollback(s.cfg(rel.url), s.sys, { target: s.target }), 0);
  t.same(fs.readFileSync(s.target), bin, "forward again");
  t.same(fs.readFileSync(`${s.target}.prev`), s.old);
  t.same(fs.readdirSync(s.dir).sort(), ["sentry", "sentry.prev"], "no temporary file left");
});

t.test("rollback works when the current binary is broken", async (t) => {
  const s = scene(t, Buffer.from("#!/bin/sh\nexit 1\n"));
  fs.writeFileSync(`${s.target}.prev`, script(VERSION, "good old"), { mode: 0o755 });
  t.equal(rollback(s.cfg(""), s.sys, { target: s.target }), 0);
  t.match(fs.readFileSync(s.target, "utf8"), /good old/);
  t.match(s.out.at(-1), /now holds the current binary/);
});

t.test("rollback refuses, changing nothing", async (t) => {
  t.test("without sentry.prev", async (t) => {
    const s = scene(t);
    t.throws(() => rollback(s.cfg(""), s.sys, { target: s.target }), refused(/there is no .*sentry\.prev to go back to/));
    s.untouched(t);
  });
  t.test("when sentry.prev does not run as sentry", async (t) => {
    const s = scene(t);
    const broken = Buffer.from("#!/bin/sh\necho oops\n");
    fs.writeFileSync(`${s.target}.prev`, broken, { mode: 0o755 });
    t.throws(
      () => rollback(s.cfg(""), s.sys, { target: s.target }),
      refused(/sentry\.prev does not answer --version as sentry: it printed "oops".*nothing was changed/),
    );
    t.same(fs.readFileSync(s.target), s.old);
    t.same(fs.readFileSync(`${s.target}.prev`), broken);
    t.same(fs.readdirSync(s.dir).sort(), ["sentry", "sentry.prev"]);
  });
  t.test("when sentry.prev is not a file", async (t) => {
    const s = scene(t);
    fs.mkdirSync(`${s.target}.prev`);
    t.throws(() => rollback(s.cfg(""), s.sys, { target: s.target }), refused(/is not a regular file/));
    t.same(fs.readFileSync(s.target), s.old);
  });
});

// =================================================================================
// Through a child process (the program as an admin runs it, minus the SEA)
// =================================================================================

function runDriver(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  // The test's own server answers while the child runs, so this must not block.
  const driver = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "sentry-driver-")), "driver.mjs");
  fs.writeFileSync(
    driver,
    `import { update } from ${JSON.stringify(pathToFileURL(path.join(here, "../sentry.ts")).href)};
import { DEFAULTS, realSys } from ${JSON.stringify(pathToFileURL(path.join(here, "../sentry.ts")).href)};
const cfg = { ...DEFAULTS, UPDATE_URL: process.env.URL, UPDATE_PUBLIC_KEY: process.env.KEY };
try {
  process.exitCode = await update(cfg, realSys(), { check: false, force: false, target: process.env.TARGET || undefined });
} catch (e) {
  process.stderr.write("sentry: " + e.message + "\\n");
  process.exitCode = e.exitCode ?? 70;
}
`,
  );
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--disable-warning=ExperimentalWarning", driver],
      { env: { ...env, PATH: process.env.PATH ?? "" }, encoding: "utf8", timeout: 20000 },
      (error, stdout, stderr) => {
        fs.rmSync(path.dirname(driver), { recursive: true, force: true });
        const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

t.test("through a child process", async (t) => {
  const s = scene(t);
  const bin = script(NEXT, "child");
  const rel = publish({ version: NEXT, bin });
  const r = await runDriver({ URL: rel.url, KEY: KEY.pub, TARGET: s.target });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, new RegExp(`updated .* to sentry ${NEXT}`));
  t.same(fs.readFileSync(s.target), bin);

  // Under node, this program is node: --update must not replace it.
  const r2 = await runDriver({ URL: rel.url, KEY: KEY.pub, TARGET: "" });
  t.equal(r2.code, 1);
  t.match(r2.stderr, /--update works on the compiled sentry binary; this is .* running sentry\.ts as a script/);

  const r3 = await runDriver({ URL: rel.url, KEY: OTHER.pub, TARGET: s.target });
  t.equal(r3.code, 2);
  t.match(r3.stderr, /^sentry: update failed checking the manifest .*does not verify/m);
});

// =================================================================================
// The release step (build.mjs --release)
// =================================================================================

interface ReleaseKeys {
  privateKey: crypto.KeyObject;
  publicKey: string;
  releaseUrl: string;
  updateUrl: string;
  define: Record<string, string>;
}
interface ReleaseModule {
  releaseKeys(env: Record<string, string | undefined>): ReleaseKeys;
  writeRelease(o: { keys: ReleaseKeys; binary: string; version: string; platform?: string; released?: Date }): {
    manifestPath: string;
    binaryPath: string;
    manifest: Doc;
  };
}
const releasePath: string = "../build.mjs";
const release = (await import(releasePath)) as ReleaseModule;

t.test("release: keys from the environment", async (t) => {
  const pk = crypto.generateKeyPairSync("ed25519");
  const pem = pk.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const derB64 = pk.privateKey.export({ type: "pkcs8", format: "der" }).toString("base64");
  const pub = pk.publicKey.export({ type: "spki", format: "der" }).toString("base64");

  t.throws(() => release.releaseKeys({}), /SENTRY_SIGNING_KEY is not set/);
  t.throws(() => release.releaseKeys({ SENTRY_SIGNING_KEY: "  " }), /SENTRY_SIGNING_KEY is not set/);
  t.throws(() => release.releaseKeys({ SENTRY_SIGNING_KEY: "bm90IGEga2V5" }), /not an unencrypted PKCS#8/);
  const rsa = crypto.generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({ type: "pkcs8", format: "pem" });
  t.throws(() => release.releaseKeys({ SENTRY_SIGNING_KEY: rsa.toString() }), /rsa key, not Ed25519/);

  const a = release.releaseKeys({ SENTRY_SIGNING_KEY: pem });
  const b = release.releaseKeys({ SENTRY_SIGNING_KEY: `${derB64}\n` });
  t.equal(a.publicKey, pub, "PEM");
  t.equal(b.publicKey, pub, "base64 DER");
  t.same(a.define, { SENTRY_BUILD_UPDATE_PUBLIC_KEY: JSON.stringify(pub), SENTRY_BUILD_UPDATE_URL: '""' });

  const c = release.releaseKeys({ SENTRY_SIGNING_KEY: pem, SENTRY_RELEASE_URL: "https://example.org/sentry/3.1.0" });
  t.equal(c.releaseUrl, "https://example.org/sentry/3.1.0/", "a trailing slash is added");
  t.equal(c.updateUrl, "https://example.org/sentry/3.1.0/manifest.json");
  t.equal(c.define.SENTRY_BUILD_UPDATE_URL, JSON.stringify(c.updateUrl));
  const d = release.releaseKeys({
    SENTRY_SIGNING_KEY: pem,
    SENTRY_RELEASE_URL: "https://example.org/sentry/3.1.0/",
    SENTRY_UPDATE_URL: "https://example.org/sentry/latest/manifest.json",
  });
  t.equal(d.updateUrl, "https://example.org/sentry/latest/manifest.json");
  t.throws(
    () => release.releaseKeys({ SENTRY_SIGNING_KEY: pem, SENTRY_RELEASE_URL: "http://example.org/" }),
    /SENTRY_RELEASE_URL must be https/,
  );
  t.throws(() => release.releaseKeys({ SENTRY_SIGNING_KEY: pem, SENTRY_UPDATE_URL: "nope" }), /SENTRY_UPDATE_URL is not a URL/);
});

t.test("release: writes a manifest that update() accepts", async (t) => {
  const pk = crypto.generateKeyPairSync("ed25519");
  const pem = pk.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const dist = fs.mkdtempSync(path.join(os.tmpdir(), "sentry-dist-"));
  t.teardown(() => fs.rmSync(dist, { recursive: true, force: true }));
  const keys = release.releaseKeys({ SENTRY_SIGNING_KEY: pem });
  // The built binary carries its public key (the define); so does this fake one.
  const built = Buffer.concat([script(NEXT, `public key ${keys.publicKey}`), Buffer.alloc(3 * 1024 * 1024, 0x23)]);
  const binary = path.join(dist, "sentry");
  fs.writeFileSync(binary, built, { mode: 0o755 });

  const r = release.writeRelease({ keys, binary, version: NEXT, released: new Date("2026-11-21T12:00:00Z") });
  const name = `sentry-${NEXT}-${PLAT}`;
  t.equal(r.binaryPath, path.join(dist, name));
  t.equal(r.manifestPath, path.join(dist, "manifest.json"));
  t.same(fs.readFileSync(r.binaryPath), built);
  const text = fs.readFileSync(r.manifestPath, "utf8");
  const m = verifyManifest(text, keys.publicKey);
  const zst = fs.readFileSync(path.join(dist, `${name}.zst`));
  t.same(zlib.zstdDecompressSync(zst), built, "the .zst is the binary, compressed");
  t.ok(zst.length < built.length / 4, `compressed: ${zst.length} of ${built.length} bytes`);
  t.same(m, {
    format: 1,
    version: NEXT,
    platforms: { [PLAT]: { url: name, sha256: sha(built), size: built.length, compressed: { format: "zstd", url: `${name}.zst`, sha256: sha(zst), size: zst.length } } },
  });
  t.match(JSON.parse(text), { released: "2026-11-21T12:00:00.000Z" });
  t.same(fs.readdirSync(dist).sort(), ["manifest.json", name, `${name}.zst`, "sentry"].sort(), "nothing else written");

  // Publish dist/ as is and update from it: only the compressed file is fetched.
  const dir = prefix();
  routes.set(`${dir}/manifest.json`, serveBytes(text));
  routes.set(`${dir}/${name}`, serveBytes(fs.readFileSync(r.binaryPath)));
  routes.set(`${dir}/${name}.zst`, serveBytes(zst));
  const before = hits.length;
  const s = scene(t);
  const code = await update(s.cfg(`${ORIGIN}${dir}/manifest.json`, { UPDATE_PUBLIC_KEY: keys.publicKey }), s.sys, {
    check: false,
    force: false,
    target: s.target,
  });
  t.equal(code, 0);
  t.same(fs.readFileSync(s.target), built);
  t.same(hits.slice(before), [`${dir}/manifest.json`, `${dir}/${name}.zst`], "the manifest and the .zst, not the binary");

  // With SENTRY_RELEASE_URL the binary is named absolutely.
  const k2 = release.releaseKeys({ SENTRY_SIGNING_KEY: pem, SENTRY_RELEASE_URL: `${ORIGIN}${dir}` });
  const r2 = release.writeRelease({ keys: k2, binary, version: NEXT });
  t.equal(verifyManifest(JSON.stringify(r2.manifest), keys.publicKey).platforms[PLAT].url, `${ORIGIN}${dir}/${name}`);
});

t.test("release: refuses a binary built without the key, or a bad version", async (t) => {
  const pk = crypto.generateKeyPairSync("ed25519");
  const keys = release.releaseKeys({ SENTRY_SIGNING_KEY: pk.privateKey.export({ type: "pkcs8", format: "pem" }).toString() });
  const dist = fs.mkdtempSync(path.join(os.tmpdir(), "sentry-dist-"));
  t.teardown(() => fs.rmSync(dist, { recursive: true, force: true }));
  const binary = path.join(dist, "sentry");
  fs.writeFileSync(binary, script(NEXT, "plain build"), { mode: 0o755 });
  t.throws(() => release.writeRelease({ keys, binary, version: NEXT }), /does not contain the public key/);
  t.throws(() => release.writeRelease({ keys, binary, version: "v3" }), /is not x\.y\.z/);
  t.same(fs.readdirSync(dist), ["sentry"], "nothing written");
  // The key found across a read boundary (1 MiB pieces) still counts.
  fs.writeFileSync(binary, Buffer.concat([Buffer.alloc(1024 * 1024 - 10, 0x20), Buffer.from(keys.publicKey)]));
  t.doesNotThrow(() => release.writeRelease({ keys, binary, version: NEXT }));
});

// =================================================================================
// Compressed releases: the manifest names a zstd copy; --update fetches it,
// checks its hash, decompresses with the binary's size as a cap, checks the
// binary's hash.
// =================================================================================

/** Publishes `bin` with a compressed copy `zst` (default: zstd of bin) described by the signed entry. */
function publishZst(version: string, bin: Buffer, zst: Buffer = zlib.zstdCompressSync(bin), entryOver: Doc = {}) {
  const dir = prefix();
  const name = `sentry-${version}-${PLAT}`;
  return {
    dir,
    name,
    ...publishAt(dir, name, version, bin, zst, entryOver),
  };
}
function publishAt(dir: string, name: string, version: string, bin: Buffer, zst: Buffer, entryOver: Doc) {
  const doc: Doc = {
    format: 1,
    version,
    platforms: { [PLAT]: { url: name, sha256: sha(bin), size: bin.length, compressed: { format: "zstd", url: `${name}.zst`, sha256: sha(zst), size: zst.length, ...entryOver } } },
  };
  routes.set(`${dir}/manifest.json`, serveBytes(JSON.stringify(signDoc(doc)), { "content-type": "application/json" }));
  routes.set(`${dir}/${name}`, serveBytes(bin));
  routes.set(`${dir}/${name}.zst`, serveBytes(zst));
  return { url: `${ORIGIN}${dir}/manifest.json` };
}

t.test("compressed: a good update fetches the .zst only and installs the binary", async (t) => {
  const s = scene(t);
  const bin = Buffer.concat([script(NEXT, "new, compressed"), Buffer.alloc(2 * 1024 * 1024, 0x23)]);
  const rel = publishZst(NEXT, bin);
  const n = hits.length;
  t.equal(await update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }), 0, s.err.join("\n"));
  t.same(fs.readFileSync(s.target), bin, "target holds the decompressed new bytes");
  t.same(hits.slice(n), [`${rel.dir}/manifest.json`, `${rel.dir}/${rel.name}.zst`], "the binary itself was not downloaded");
  t.same(fs.readdirSync(s.dir).sort(), ["sentry", "sentry.prev"], "no temporary file left");
  t.match(s.out.join("\n"), /MB, zstd of [\d.]+ MB\) from .*\.zst/);
});

t.test("compressed: a corrupt .zst is refused by its hash, and a signed .zst of other bytes by the binary's", async (t) => {
  const bin = Buffer.concat([script(NEXT, "new"), Buffer.alloc(100_000, 0x23)]);
  const good = zlib.zstdCompressSync(bin);
  // 1. Bytes changed on the way: the .zst's own SHA-256 does not match.
  {
    const s = scene(t);
    const rel = publishZst(NEXT, bin, good);
    const bad = Buffer.from(good);
    bad[bad.length >> 1] ^= 0xff;
    routes.set(`${rel.dir}/${rel.name}.zst`, serveBytes(bad));
    await t.rejects(update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }), refused(/update failed downloading .*\.zst: SHA-256 is [0-9a-f]{64}, the manifest says [0-9a-f]{64}; .* is unchanged$/));
    s.untouched(t);
  }
  // 2. A .zst that is what the manifest says but is not zstd: decompression fails.
  {
    const s = scene(t);
    const rel = publishZst(NEXT, bin, Buffer.from("not zstd at all, but signed"));
    await t.rejects(update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }), refused(/update failed downloading .*: decompressing it: .*; .* is unchanged$/));
    s.untouched(t);
  }
  // 3. A well-formed .zst of different bytes of the same size: the binary's hash refuses it.
  {
    const s = scene(t);
    const other = Buffer.from(bin);
    other[other.length - 1] ^= 0x01;
    const dir = prefix();
    const name = `sentry-${NEXT}-${PLAT}`;
    const zOther = zlib.zstdCompressSync(other);
    const rel = publishAt(dir, name, NEXT, bin, zOther, {});
    await t.rejects(update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }), refused(/decompressing it: the decompressed binary's SHA-256 is [0-9a-f]{64}, the manifest says [0-9a-f]{64}/));
    s.untouched(t);
  }
});

t.test("compressed: a decompression bomb is refused at the binary's size, nothing written beyond it", async (t) => {
  const s = scene(t);
  const bin = script(NEXT, "small");
  // 64 MiB of zeros compress to a few KiB: far more than the manifest's size.
  const bomb = zlib.zstdCompressSync(Buffer.alloc(64 * 1024 * 1024));
  t.ok(bomb.length < 16 * 1024, `the bomb is ${bomb.length} bytes`);
  const rel = publishZst(NEXT, bin, bomb);
  await t.rejects(
    update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }),
    refused(new RegExp(`decompressing it: it decompresses to more than the ${bin.length} bytes the manifest says \\(a decompression bomb\\?\\); .* is unchanged$`)),
  );
  s.untouched(t);
});

t.test("compressed: an unknown format is a bad manifest", async (t) => {
  const s = scene(t);
  const bin = script(NEXT, "new");
  const rel = publishZst(NEXT, bin, undefined, { format: "xz" });
  await t.rejects(update(s.cfg(rel.url), s.sys, { check: false, force: false, target: s.target }), refused(/compressed\.format is "xz"; this sentry reads "zstd"/));
  s.untouched(t);
});
