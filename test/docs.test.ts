// The documentation names everything an administrator can set or find:
// every setting of the configuration block is in README's configuration
// table and in the manual, the usage text says which setting each number
// it quotes is, and every file the built binary writes under ROOT_DIR (found
// by running it, not by a list kept by hand) is in usage()'s FILES and in
// README's files table. A new setting or file without its line fails here.
import t from "tap";
import * as fs from "node:fs";
import { join, relative } from "node:path";
import { DEFAULTS, usage, parseIp, netFromFileName } from "../sentry.ts";
import { SENTRY, requireBinary, tempDir, envFor, sentry, state } from "./lib/run.ts";
import { spawnSync } from "node:child_process";

requireBinary();

const README = fs.readFileSync(join(import.meta.dirname, "..", "README.md"), "utf8");

/** The text of a README section: from its "## title" line to the next "## ". */
function readmeSection(title: string): string {
  const start = README.indexOf(`\n## ${title}`);
  if (start === -1) throw new Error(`README has no section "## ${title}"`);
  const end = README.indexOf("\n## ", start + 1);
  return README.slice(start, end === -1 ? README.length : end);
}

/** A section of usage(): from its heading (a line in capitals) to the next one. */
function usageSection(head: string): string {
  const m = new RegExp(`\\n${head}\\n([\\s\\S]*?)(?=\\n[A-Z][A-Z ]+\\n|$)`).exec(usage());
  if (!m) throw new Error(`usage() has no section ${head}`);
  return m[1];
}

t.test("every setting is in README's configuration table and in the manual", async (t) => {
  // The first cell of each table row: `KEY` or `KEY1`, `KEY2`.
  const rows = readmeSection("Configuration").split("\n").filter((l) => l.startsWith("| `"));
  const inTable = new Set(rows.flatMap((r) => [...r.split("|")[1].matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1])));
  const man = spawnSync(SENTRY, ["--man"], { encoding: "utf8" });
  t.equal(man.status, 0, man.stderr);
  const config = usageSection("CONFIGURATION");
  for (const key of Object.keys(DEFAULTS)) {
    t.ok(inTable.has(key), `README's configuration table has a row for ${key}`);
    t.ok(config.includes(key), `usage()'s CONFIGURATION names ${key}`);
    // The manual's entry: the name, its default, then the DEFAULTS comment build.mjs bakes in.
    t.match(man.stdout, new RegExp(`\\n\\.B ${key}\\n\\.br\\nDefault: [^\\n]*\\.\\n\\S`), `the manual describes ${key}`);
  }
  for (const key of inTable) t.ok(key in DEFAULTS, `README's table names ${key}, which is a setting`);
});

t.test("each number the usage text quotes says which setting it is (the defaults change; the text must not lie)", async (t) => {
  const text = `${usageSection("DESCRIPTION")}\n${usageSection("CONNECT")}`;
  const numbers = [...text.matchAll(/\b\d+\b/g)];
  t.ok(numbers.length >= 2, "DESCRIPTION quotes the thresholds");
  for (const m of numbers) {
    const after = text.slice(m.index + m[0].length, m.index + m[0].length + 80);
    const keys = [...after.matchAll(/\b[A-Z][A-Z0-9_]{3,}\b/g)].map((k) => k[0]).filter((k) => k in DEFAULTS);
    const named = keys.find((k) => DEFAULTS[k as keyof typeof DEFAULTS] === Number(m[0]));
    t.ok(named, `"${m[0]}${after.slice(0, 30)}…" is followed by the setting whose default it is`);
  }
});

t.test("every file the binary writes under ROOT_DIR is in usage()'s FILES and README's files table", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const log = join(dir, "auth.log");
  const lines = [
    "Dec  4 10:00:01 host sshd[100]: Invalid user admin from 203.0.113.5 port 4242",
    "Dec  4 10:00:02 host sshd[101]: Accepted password for alice from 198.51.100.5 port 50000 ssh2",
    // Three of one IPv6 /64: the /64 is blocked as one entry (block/NET_LEN).
    ...[5, 6, 7].map((n) => `Dec  4 10:00:03 host sshd[102]: Invalid user admin from 2001:db8:1:2::${n} port 4242`),
    // A success after failures, held for review (review/IP).
    ...Array.from({ length: 6 }, (_, i) => `Dec  4 10:00:04 host sshd[103]: Failed password for alice from 198.51.100.6 port ${5000 + i} ssh2`),
    "Dec  4 10:00:05 host sshd[104]: Accepted password for alice from 198.51.100.6 port 5007 ssh2",
    "",
  ];
  fs.writeFileSync(log, lines.join("\n"));
  const env = envFor(root, { SSH_LOG: log, ALLOW_AFTER_FAILURES_HOLD: "1", SENTRY_LOG_ROTATE_KB: "1" });
  const ips = ["203.0.113.5", "198.51.100.5", "2001:db8:1:2::5", "2001:db8:1:2::6", "2001:db8:1:2::7", "198.51.100.6", "192.0.2.9"];
  for (let i = 0; i < 3; i++) for (const ip of ips) t.equal(sentry(["--connect", `--ip=${ip}`], env).status, 0);
  t.equal(state(root, "203.0.113.5"), "blocked", "the scene decided (so the files below are the ones deciding writes)");
  // A block that runs out: expiry writes history/IP and delisted/IP.
  t.equal(sentry(["--ip=192.0.2.50", "--block", "--for", "1m"], env).status, 0);
  const old = Date.now() / 1000 - 3600;
  fs.utimesSync(join(root, "block", "192.0.2.50"), old, old);
  t.equal(sentry(["--scan"], env).status, 0);
  t.equal(sentry(["--ip=10.0.0.0/8", "--allow"], env).status, 0);
  t.equal(sentry(["--report"], env).status, 0);

  const written = new Set<string>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else written.add(relative(root, p));
    }
  };
  walk(root);
  // seen/203.0.113.5 → seen/IP, block/2001:db8:1:2::_64 → block/NET_LEN.
  const names = new Set(
    [...written].map((f) => {
      const [a, b] = f.split("/");
      if (b === undefined) return a.replace(/\.log\.\d+$/, ".log.1"); // sentry.log.2 is documented as sentry.log.1 … .N
      return `${a}/${parseIp(b) === b ? "IP" : netFromFileName(b) !== null ? "NET_LEN" : b}`;
    }),
  );
  for (const want of ["seen/IP", "block/IP", "allow/NET_LEN", "block/NET_LEN", "history/IP", "review/IP", "delisted/IP", "connections.log", "sentry.log.1", "scan.stamp"])
    t.ok(names.has(want), `the scene wrote ${want} (so it is checked below)`);
  const files = usageSection("FILES");
  const table = readmeSection("Files");
  for (const n of names) {
    t.ok(files.includes(n), `usage()'s FILES names ${n}`);
    t.ok(table.includes(`\`${n}\``), `README's files table names \`${n}\``);
  }
});
