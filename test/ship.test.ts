// Shipping like a system tool: the manual (sentry --man, rendered by man and
// linted by mandoc), the bash completion (run in a real bash), the scan timer
// (units checked by systemd-analyze verify, the cron line where systemd does
// not run), and --install/--uninstall/--doctor around them. All against the
// built binary.
import t from "tap";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { SENTRY, requireBinary, systemPaths, tempDir } from "./lib/run.ts";
import { DEFAULTS, scanUnits } from "../sentry.ts";

requireBinary();

const run = (args: string[], env: Record<string, string> = {}) => {
  const r = spawnSync(SENTRY, args, { env, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
};

/**
 * The options --help documents: every word of SYNOPSIS and of the option
 * column of ACTIONS and OPTIONS (their descriptions mention other programs'
 * options, like man -l) that starts with a dash.
 */
function helpOptions(): Set<string> {
  const help = run(["--help"]).stdout;
  const section = (name: string) => help.slice(help.indexOf(`\n${name}\n`) + name.length + 2).split(/\n(?=[A-Z])/)[0];
  const words = [
    ...section("SYNOPSIS").split(/\s+/),
    ...[section("ACTIONS"), section("OPTIONS")].flatMap((s) => s.split("\n").flatMap((l) => (/^ {4}(\S.*?)(\s{2,}|$)/.exec(l)?.[1] ?? "").split(/[\s,]+/))),
  ];
  return new Set(words.map((w) => /^--?[a-z][a-z-]*/.exec(w)?.[0]).filter((w): w is string => w !== undefined));
}

/** `man -l` of a file as plain text (no terminal: no bold, no hyphenation across lines). */
function manText(file: string): { status: number | null; text: string; stderr: string } {
  const r = spawnSync("man", ["-l", "--warnings", file], { env: { PATH: "/usr/bin:/bin", MANWIDTH: "200", MAN_KEEP_FORMATTING: "", LANG: "C.UTF-8" }, encoding: "utf8" });
  return { status: r.status, text: (r.stdout ?? "").replace(/.\x08/g, ""), stderr: r.stderr ?? "" };
}

t.test("sentry --man: mandoc lint is clean, man renders it, every setting of DEFAULTS is documented", async (t) => {
  const dir = tempDir(t);
  const m = run(["--man"]);
  t.equal(m.status, 0, m.stderr);
  const file = join(dir, "sentry.8");
  fs.writeFileSync(file, m.stdout);
  const lint = spawnSync("mandoc", ["-T", "lint", "-W", "style", file], { encoding: "utf8" });
  t.equal(lint.status, 0, `mandoc -T lint:\n${lint.stdout}${lint.stderr}`);
  t.equal(lint.stdout + lint.stderr, "", "mandoc has nothing to say, not even on style");
  const r = manText(file);
  t.equal(r.status, 0);
  t.equal(r.stderr, "", "groff warns about nothing");
  const text = r.text;
  for (const h of ["NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "CONFIGURATION", "EXIT STATUS", "EXAMPLES", "SEE ALSO"])
    t.match(text, new RegExp(`^${h}$`, "m"), `section ${h}`);
  t.match(text, /^ {7}sentry - safe and effective protection/m, "NAME is man's 'name - what' line");
  t.match(text, /hosts_access\(5\), sshd\(8\), tcpdmatch\(8\)/);
  // One source: every option --help documents is in the manual too.
  const options = helpOptions();
  t.ok(options.size > 25, `--help documents ${options.size} options`);
  for (const o of options) t.ok(text.includes(o), `the manual has ${o}, as --help does`);
  // CONFIGURATION: each key an entry of its own, its default, and its comment in DEFAULTS.
  const config = text.slice(text.indexOf("\nCONFIGURATION\n"), text.indexOf("\nEXIT STATUS\n"));
  for (const [key, value] of Object.entries(DEFAULTS)) {
    // " +" after "Default:": groff spreads a wrapped line's spaces from the left or the right, alternately by line.
    const entry = new RegExp(`^ {7}${key}\\n {14}Default: +(.*?)\\. +(\\S.*)$`, "m").exec(config);
    t.ok(entry, `CONFIGURATION has an entry for ${key}`);
    if (!entry) continue;
    const shown = typeof value === "boolean" ? (value ? "1" : "0") : typeof value === "number" ? String(value) : JSON.stringify(value);
    t.equal(entry[1], shown, `${key}: its default`);
    t.ok(entry[2].length > 8, `${key}: described (${entry[2]})`);
  }
});

t.test("sentry --completion bash offers every option, and the parser takes each one", async (t) => {
  const c = run(["--completion", "bash"]);
  t.equal(c.status, 0, c.stderr);
  const offered = (cur: string) => {
    const script = `${c.stdout}\nCOMP_WORDS=(sentry ${JSON.stringify(cur)}); COMP_CWORD=1; _sentry; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = spawnSync("bash", ["--norc", "--noprofile", "-c", script], { encoding: "utf8" });
    t.equal(r.stderr, "", "bash runs the script without a complaint");
    return new Set(r.stdout.split("\n").filter((l) => l !== ""));
  };
  const all = offered("-");
  // Every option of --help is offered ...
  for (const o of helpOptions()) t.ok(all.has(o), `offers ${o}`);
  // ... and every option offered exists: the parser does not call it unknown.
  for (const o of all) t.notMatch(run([o]).stderr, /Unknown option/, `${o} is an option`);
  t.same([...offered("--rep")], ["--report"], "completes a prefix");
  const z = run(["--completion", "zsh"]);
  t.equal(z.status, 0);
  t.match(z.stdout, /^#compdef sentry/);
  const bad = run(["--completion", "fish"]);
  t.equal(bad.status, 1);
  t.match(bad.stderr, /--completion takes bash or zsh, not "fish"/);
});

t.test("the units pass systemd-analyze verify and are hardened", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  fs.mkdirSync(root, { mode: 0o755 });
  fs.copyFileSync(SENTRY, join(root, "sentry")); // ExecStart= must name an executable that exists
  fs.chmodSync(join(root, "sentry"), 0o755);
  const { service, timer } = scanUnits(root);
  fs.writeFileSync(join(dir, "sentry-scan.service"), service);
  fs.writeFileSync(join(dir, "sentry-scan.timer"), timer);
  const v = spawnSync("systemd-analyze", ["verify", "--man=no", join(dir, "sentry-scan.service"), join(dir, "sentry-scan.timer")], { encoding: "utf8", env: { PATH: "/usr/bin:/bin", SYSTEMD_LOG_LEVEL: "notice" } });
  t.equal(v.status, 0, `systemd-analyze verify:\n${v.stdout}${v.stderr}`);
  t.notMatch(v.stderr, /sentry-scan/, `no complaint about the units:\n${v.stderr}`);
  for (const line of ["ProtectSystem=strict", `ReadWritePaths=${root}`, "PrivateTmp=yes", "NoNewPrivileges=yes", "Nice=19", "IOSchedulingClass=idle", `Environment=ROOT_DIR=${root}`, `ExecStart=${root}/sentry --scan`])
    t.match(service, new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}$`, "m"), line);
  t.match(timer, /^OnUnitActiveSec=1min$/m);
  t.match(timer, /^WantedBy=timers\.target$/m);
});

t.test("--install --write --timer (no systemd here): man page, completion, cron line; --doctor checks the scan ran; --uninstall removes them", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const sys = systemPaths(join(dir, "sys"));
  fs.mkdirSync(join(dir, "sys", "cron.d"), { recursive: true });
  const log = join(dir, "auth.log");
  fs.writeFileSync(log, "Invalid user u1 from 203.0.113.1 port 4122\n");
  const env = {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    ROOT_DIR: root,
    HOSTS_ALLOW: join(dir, "hosts.allow"),
    HOSTS_DENY: join(dir, "hosts.deny"),
    SSH_CLIENT: "192.0.2.200 50000 22",
    SSH_LOG: log,
    PROTECT_FTP: "0",
    PROTECT_MUA: "0",
    SSHD_PATH: "/usr/sbin/sshd", // Debian's: links libwrap, so only --timer asks for the timer
    ...sys,
  };
  t.equal(run(["--install", "--timer"], env).status, 1, "--timer needs --write");
  const r = run(["--install", "--write", "--timer"], env);
  t.equal(r.status, 0, r.stderr);
  const man = join(sys.MAN_DIR, "sentry.8");
  t.match(r.stdout, new RegExp(`wrote ${man}`));
  t.equal(fs.readFileSync(man, "utf8"), `${run(["--man"]).stdout}`, "the installed manual is --man's");
  t.match(manText(man).text, /^SENTRY\(8\)/m, "man finds and renders the installed page");
  t.equal(fs.readFileSync(join(sys.COMPLETION_DIR, "sentry"), "utf8"), run(["--completion", "bash"]).stdout);
  t.match(fs.readFileSync(sys.CRON_FILE, "utf8"), new RegExp(`^\\* \\* \\* \\* \\* root ROOT_DIR=${root} nice -n 19 ${root}/sentry --scan`, "m"));
  t.match(fs.readFileSync(env.HOSTS_ALLOW, "utf8"), /spawn/, "hosts.allow written too (sshd links libwrap)");

  // No scan yet since the timer was written: CRITICAL, then OK after one.
  fs.rmSync(join(root, "scan.stamp"), { force: true });
  let d = run(["--doctor"], env);
  t.equal(d.status, 2, d.stdout);
  t.match(d.stdout, /CRITICAL: the timer \(.*cron\.d\/sentry\) has not run sentry --scan yet/);
  t.equal(run(["--scan"], env).status, 0);
  d = run(["--doctor"], env);
  t.match(d.stdout, /OK: the timer \(.*cron\.d\/sentry\) ran sentry --scan 0 minutes ago/);
  const old = new Date(Date.now() - 20 * 60_000);
  fs.utimesSync(join(root, "scan.stamp"), old, old);
  d = run(["--doctor"], env);
  t.match(d.stdout, /CRITICAL: the timer .* has not run sentry --scan for 20 minutes \(SCAN_STALE_MINUTES=15\)/);

  const u = run(["--uninstall"], env);
  t.equal(u.status, 0, u.stderr);
  for (const f of [man, join(sys.COMPLETION_DIR, "sentry"), sys.CRON_FILE]) {
    t.notOk(fs.existsSync(f), `--uninstall removed ${f}`);
    t.match(u.stdout, new RegExp(`removed ${f}`));
  }
});

t.test("--install: a manual that cannot be written is an error (exit 2) naming the setting", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  fs.writeFileSync(join(dir, "file"), "");
  const r = run(["--install"], {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ROOT_DIR: root, HOSTS_ALLOW: join(dir, "hosts.allow"), HOSTS_DENY: join(dir, "hosts.deny"),
    SSH_CLIENT: "192.0.2.200 50000 22", SSH_LOG: join(dir, "none.log"), PROTECT_FTP: "0", PROTECT_MUA: "0",
    ...systemPaths(join(dir, "sys")), MAN_DIR: join(dir, "file", "man8"),
  });
  t.equal(r.status, 2);
  t.match(r.stderr, /man8.*\(set MAN_DIR, or empty to skip it\)/);
  t.ok(fs.existsSync(join(root, "sentry")), "the rest of the install was done");
});
