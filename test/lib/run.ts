// Helpers shared by the tests: run the built binary against a temporary ROOT_DIR.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type t from "tap";

/** The `t` a subtest receives, for helpers that take one. */
export type TT = Parameters<Parameters<typeof t.test>[0]>[0];

export const SENTRY = resolve(import.meta.dirname, "..", "..", "dist", "sentry");

/** Fails loudly when the binary has not been built: every test below needs it. */
export function requireBinary(): void {
  if (!existsSync(SENTRY)) throw new Error(`${SENTRY} is missing: run "npm run build" first`);
}

export interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** A fresh temporary directory, removed at the end of the test. */
export function tempDir(t: { teardown(fn: () => void): void }, prefix = "sentry-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * The environment of a test run: only what is given, plus a PATH, and the
 * services other than ssh switched off so this machine's own logs stay out.
 */
export function envFor(root: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ROOT_DIR: root, PROTECT_FTP: "0", PROTECT_MUA: "0", SSH_LOG: join(root, "no-such.log"), ...systemPaths(`${root}.sys`), ...extra };
}

/**
 * Where --install puts the manual, the completion, the units and the cron
 * line, redirected under `dir` so that no test writes into the machine's
 * /usr/local/share or /etc.
 */
export function systemPaths(dir: string): Record<string, string> {
  return { MAN_DIR: join(dir, "man8"), COMPLETION_DIR: join(dir, "completions"), UNIT_DIR: join(dir, "systemd"), CRON_FILE: join(dir, "cron.d", "sentry") };
}

/**
 * Every --json output is checked against sentry.schema.json (with ajv, a
 * well-kept validator, not hand-written checks): a test that reads the JSON
 * fails here first if the document strays from what is written down.
 */
type AjvClass = typeof import("ajv").default;
const Ajv = createRequire(import.meta.url)("ajv") as AjvClass;
export const SCHEMA_FILE = resolve(import.meta.dirname, "..", "..", "sentry.schema.json");
const validate = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(JSON.parse(readFileSync(SCHEMA_FILE, "utf8")));

/** Throws unless `text` is one JSON document valid under sentry.schema.json; returns it parsed. */
export function checkJson(text: string): unknown {
  const doc: unknown = JSON.parse(text);
  if (!validate(doc)) throw new Error(`--json output does not match sentry.schema.json: ${JSON.stringify(validate.errors, null, 1).slice(0, 2000)}\n${text.slice(0, 2000)}`);
  return doc;
}

/** Runs dist/sentry synchronously (a --json output that worked is validated: checkJson). */
export function sentry(args: string[], env: Record<string, string>, opts: { cwd?: string; input?: string } = {}): Ran {
  const r = spawnSync(SENTRY, args, { env, cwd: opts.cwd, input: opts.input, encoding: "utf8", timeout: 60_000 });
  if (args.includes("--json") && r.status === 0) checkJson(r.stdout ?? "");
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/** Runs dist/sentry as a child process (for parallel runs). */
export function sentryAsync(args: string[], env: Record<string, string>): Promise<Ran> {
  return new Promise((done, fail) => {
    const p = spawn(SENTRY, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("error", fail);
    p.on("close", (status) => {
      try {
        if (args.includes("--json") && status === 0) checkJson(stdout);
      } catch (e) {
        fail(e);
        return;
      }
      done({ status, stdout, stderr });
    });
  });
}

/** Runs `n` tasks at most `width` at a time. */
export async function parallel<T>(n: number, width: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      out[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, n) }, worker));
  return out;
}

/**
 * The evidence sentry's index holds for `ip`, from `--report --json
 * --ip=IP`: per service, [success, naughty, failed, probe]. {} when none.
 */
export function evidence(t: TT, env: Record<string, string>, ip: string): Record<string, [number, number, number, number]> {
  const r = sentry(["--report", "--json", `--ip=${ip}`], env);
  if (r.status !== 0) t.fail(`--report --json exited ${r.status}: ${r.stderr}`);
  const e = (JSON.parse(r.stdout) as { ip: { evidence: Record<string, { success: number; naughty: number; failed: number; probe: number }> | null } }).ip.evidence ?? {};
  const out: Record<string, [number, number, number, number]> = {};
  for (const [s, x] of Object.entries(e)) out[s] = [x.success, x.naughty, x.failed, x.probe];
  return out;
}

/** Where sentry's files say an address stands; both at once is a bug. */
export function state(root: string, ip: string): "allowed" | "blocked" | "none" {
  const a = existsSync(join(root, "allow", ip));
  const b = existsSync(join(root, "block", ip));
  if (a && b) throw new Error(`${ip} is both allowed and blocked`);
  return a ? "allowed" : b ? "blocked" : "none";
}

/** ROOT_DIR/sentry.log, or "" before the first decision. */
export function sentryLog(root: string): string {
  return existsSync(join(root, "sentry.log")) ? readFileSync(join(root, "sentry.log"), "utf8") : "";
}

/** sentry.log lines that record a decision (allow or block) about `ip`. */
export function decisions(root: string, ip: string): string[] {
  return sentryLog(root)
    .split("\n")
    .filter((l) => {
      const w = l.split(" ");
      return w[1] === ip && (w[2] === "allow" || w[2] === "block");
    });
}
