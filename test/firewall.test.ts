// test/firewall.test.ts — the firewall backends (nftables, iptables+ipset,
// pf, ipfw).
//
// nftables and iptables+ipset run for real, inside a network namespace each
// test makes (test/lib/netns.ts): the documented rule is loaded, an address
// is added, and a TCP connection from that address must fail while one from
// another address still works. pf and ipfw cannot run on Linux: fake pfctl
// and ipfw (test/fixtures/fake-tools) record every argument vector, which
// is checked exactly.
//
// The last block drives the built binary (dist/sentry --block/--delist/
// --resync) against the same contract; so does the test of which backends
// run at all (the fake tools, no namespace).

import t from "tap";
import type { TT } from "./lib/run.ts";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { DatabaseSync } from "node:sqlite";
import { DEFAULTS, realSys, runCommand, type Config, type Sys, type RunResult } from "../sentry.ts";
import {
  firewallBackends,
  nftablesBackend,
  iptablesBackend,
  pfBackend,
  ipfwBackend,
  parseNftTable,
  parseIpsetSave,
  parsePfShow,
  parseIpfwList,
  tableNameError,
  type Backend,
} from "../sentry.ts";
import { createNetns, listNetns, netnsUnavailable, SERVER4, SERVER6, CLIENTS4, CLIENTS6, type Netns } from "./lib/netns.ts";

const HERE = path.dirname(new URL(import.meta.url).pathname);
const REPO = path.resolve(HERE, "..");
const FAKE_DIR = path.join(HERE, "fixtures", "fake-tools");
const BIN = path.join(REPO, "dist", "sentry");
const T = DEFAULTS.FIREWALL_TABLE;

const cfgOf = (over: Partial<Config> = {}): Config => ({ ...DEFAULTS, ...over });

/** A Sys whose commands run with the fake tools first on PATH and `env` as their settings. */
function fakeSys(env: Record<string, string> = {}): Sys {
  return {
    ...realSys(),
    run: (cmd, args, opts) =>
      runCommand(
        "env",
        [
          `PATH=${FAKE_DIR}:${process.env.PATH ?? "/usr/bin:/bin"}`,
          `FAKE_NODE=${process.execPath}`,
          ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
          cmd,
          ...args,
        ],
        opts,
      ),
  };
}

/** A temporary file the fake tools log their calls to, and a reader of it. */
function callLog(t: TT): { file: string; calls(): { tool: string; argv: string[] }[] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sentry-fw-log-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "calls.jsonl");
  return {
    file,
    calls: () =>
      fs.existsSync(file)
        ? fs
            .readFileSync(file, "utf8")
            .split("\n")
            .filter((l) => l !== "")
            .map((l) => JSON.parse(l) as { tool: string; argv: string[] })
        : [],
  };
}

/** A Sys that records what would run and runs nothing. */
function recordingSys(): { sys: Sys; seen: string[][] } {
  const seen: string[][] = [];
  const sys: Sys = {
    ...realSys(),
    run: (cmd, args): RunResult => {
      seen.push([cmd, ...args]);
      return { status: 1, stdout: "", stderr: "recordingSys runs nothing", error: "" };
    },
  };
  return { sys, seen };
}

// ---- The interface --------------------------------------------------------

t.test("the four backends, each switched on by its own key", async (t) => {
  t.same(
    firewallBackends.map((b) => b.name),
    ["nftables", "iptables", "pf", "ipfw"],
  );
  const keys: Record<Backend["name"], keyof Config> = {
    nftables: "ADD_TO_NFTABLES",
    iptables: "ADD_TO_IPTABLES",
    pf: "ADD_TO_PF",
    ipfw: "ADD_TO_IPFW",
  };
  for (const b of firewallBackends) {
    t.equal(b.enabled(cfgOf()), false, `${b.name} is off by default`);
    t.equal(b.enabled(cfgOf({ [keys[b.name]]: true })), true, `${b.name} follows ${keys[b.name]}`);
    for (const other of firewallBackends) {
      if (other !== b) t.equal(other.enabled(cfgOf({ [keys[b.name]]: true })), false, `${keys[b.name]} leaves ${other.name} off`);
    }
  }
});

t.test("a bad FIREWALL_TABLE is an error and runs nothing", async (t) => {
  const bad = ["x; rm -rf /", "../x", "x/y", "-x", "1abc", "", "x y", "x\ny", "a".repeat(30), "x$(id)", "x'y", "täble"];
  for (const name of bad) {
    const cfg = cfgOf({ FIREWALL_TABLE: name });
    t.not(tableNameError(cfg), "", `${JSON.stringify(name)} is refused`);
    for (const b of firewallBackends) {
      const { sys, seen } = recordingSys();
      const add = b.add("192.0.2.5", cfg, sys);
      const rm = b.remove("2001:db8::5", cfg, sys);
      t.equal(add.ok, false, `${b.name} add with ${JSON.stringify(name)}`);
      t.equal(rm.ok, false, `${b.name} remove with ${JSON.stringify(name)}`);
      t.match(add.error, /FIREWALL_TABLE/);
      t.notMatch(add.error, /\n/, "one line");
      t.equal(b.list(cfg, sys), null, `${b.name} list with ${JSON.stringify(name)}`);
      t.same(seen, [], `${b.name} ran nothing for ${JSON.stringify(name)}`);
      const rules = b.rules(cfg);
      t.ok(
        rules.split("\n").every((l) => l === "" || l.startsWith("#")),
        `${b.name} rules() for a bad name is only a comment`,
      );
    }
  }
  for (const good of ["sentry_blocklist", "a", "Block-List_2", "a".repeat(29)]) {
    t.equal(tableNameError(cfgOf({ FIREWALL_TABLE: good })), "", `${good} is accepted`);
  }
});

t.test("an address that is not canonical is refused and runs nothing", async (t) => {
  for (const ip of ["192.0.2.05", "2001:DB8::5", "::ffff:192.0.2.5", "192.0.2.5 ", "1.2.3.4; id", "../x"]) {
    for (const b of firewallBackends) {
      const { sys, seen } = recordingSys();
      t.equal(b.add(ip, cfgOf(), sys).ok, false, `${b.name} add ${JSON.stringify(ip)}`);
      t.equal(b.remove(ip, cfgOf(), sys).ok, false, `${b.name} remove ${JSON.stringify(ip)}`);
      t.same(seen, []);
    }
  }
});

t.test("a missing tool is an error naming it", async (t) => {
  const sys: Sys = { ...realSys(), run: (cmd, args, opts) => runCommand(`/nonexistent/${cmd}`, args, opts) };
  const tools: Record<Backend["name"], string> = { nftables: "nft", iptables: "ipset", pf: "pfctl", ipfw: "ipfw" };
  for (const b of firewallBackends) {
    const r = b.add("192.0.2.5", cfgOf(), sys);
    t.equal(r.ok, false, b.name);
    t.match(r.error, new RegExp(`${tools[b.name]}.*not found`), `${b.name}: ${r.error}`);
    t.equal(b.list(cfgOf(), sys), null, `${b.name} list`);
  }
});

// ---- Parsers (pure) -------------------------------------------------------

t.test("parseNftTable reads the members of sets v4 and v6 only", async (t) => {
  const text = `table inet sentry_blocklist {
	set v4 {
		type ipv4_addr
		elements = { 192.0.2.5, 192.0.2.6,
			     192.0.2.7 }
	}

	set v6 {
		type ipv6_addr
		flags timeout
		elements = { 2001:db8::5 timeout 1h expires 59m58s, 2001:db8::6 comment "10.0.0.1" }
	}

	set other {
		type ipv4_addr
		elements = { 198.51.100.1 }
	}

	chain input {
		type filter hook input priority filter - 10; policy accept;
		ip saddr @v4 drop
		ip6 saddr @v6 drop
		ip saddr 203.0.113.9 accept
	}
}
`;
  t.same(parseNftTable(text), ["192.0.2.5", "192.0.2.6", "192.0.2.7", "2001:db8::5", "2001:db8::6"]);
  t.same(parseNftTable("table inet x {\n\tset v4 {\n\t\ttype ipv4_addr\n\t}\n}\n"), []);
  const interval = `table inet x {
	set v4 {
		type ipv4_addr
		flags interval
		counter
		elements = { 10.0.0.0/8 counter packets 0 bytes 0, 192.0.2.9 counter packets 3 bytes 180,
			     198.51.100.1-198.51.100.9 counter packets 0 bytes 0 }
	}
}
`;
  t.same(parseNftTable(interval), ["192.0.2.9"], "prefixes and ranges are not sentry's members");
  t.same(parseNftTable("table inet x {\n\tset v6 {\n\t\ttype ipv6_addr\n\t\telements = { 192.0.2.1 }\n\t}\n}\n"), [], "family must match the set");
});

t.test("parseIpsetSave, parsePfShow, parseIpfwList", async (t) => {
  t.same(
    parseIpsetSave(
      "create s-4 hash:ip family inet hashsize 1024 maxelem 65536\nadd s-4 192.0.2.6\nadd s-4 192.0.2.5\nadd other 192.0.2.7\n",
      "s-4",
    ),
    ["192.0.2.5", "192.0.2.6"],
  );
  // Ranges are members too (issue 16: --block of a range, /64 aggregation); --resync leaves left-over ones in pf and ipfw alone.
  t.same(parsePfShow("   192.0.2.5\n   2001:db8::5\n   10.0.0.0/8\n  !192.0.2.9\n   10.1.2.3/8\n   0.0.0.0/0\n"), ["10.0.0.0/8", "192.0.2.5", "2001:db8::5"]);
  t.same(parseIpfwList("192.0.2.5/32 0\n2001:db8::5/128 0\n10.0.0.0/8 0\n192.0.2.6/32 0\n0.0.0.0/0 0\n"), ["10.0.0.0/8", "192.0.2.5", "192.0.2.6", "2001:db8::5"]);
  t.same(parsePfShow(""), []);
});

t.test("rules() is the admin's text and names the table", async (t) => {
  const cfg = cfgOf({ FIREWALL_TABLE: "my_list" });
  t.match(nftablesBackend.rules(cfg), /table inet my_list \{/);
  t.match(nftablesBackend.rules(cfg), /ip saddr @v4 drop/);
  t.match(nftablesBackend.rules(cfg), /ip6 saddr @v6 drop/);
  t.match(iptablesBackend.rules(cfg), /iptables -I INPUT -m set --match-set my_list-4 src -j DROP/);
  t.match(iptablesBackend.rules(cfg), /ip6tables -I INPUT -m set --match-set my_list-6 src -j DROP/);
  t.match(pfBackend.rules(cfg), /^table <my_list> persist$/m);
  t.match(pfBackend.rules(cfg), /^block in quick from <my_list>$/m);
  t.match(ipfwBackend.rules(cfg), /deny ip from 'table\(my_list\)' to any/);
});

// ---- pf and ipfw through fake tools --------------------------------------

t.test("pf: exact commands, -k after add, idempotent remove, list", async (t) => {
  const log = callLog(t);
  const cfg = cfgOf({ ADD_TO_PF: true });
  const sys = fakeSys({ FAKE_TOOL_LOG: log.file, FAKE_TOOL_STDERR: "1/1 addresses added.\n" });
  t.same(pfBackend.add("192.0.2.5", cfg, sys), { ok: true, error: "" });
  t.same(pfBackend.add("2001:db8::5", cfg, sys), { ok: true, error: "" });
  t.same(pfBackend.remove("192.0.2.5", cfg, sys), { ok: true, error: "" });
  t.same(log.calls(), [
    { tool: "pfctl", argv: ["-t", T, "-T", "add", "192.0.2.5"] },
    { tool: "pfctl", argv: ["-k", "192.0.2.5"] },
    { tool: "pfctl", argv: ["-t", T, "-T", "add", "2001:db8::5"] },
    { tool: "pfctl", argv: ["-k", "2001:db8::5"] },
    { tool: "pfctl", argv: ["-t", T, "-T", "delete", "192.0.2.5"] },
  ]);

  // Removing from a table that does not exist is removing an absent address.
  const noTable = fakeSys({ FAKE_TOOL_STATUS: "1", FAKE_TOOL_STDERR: "pfctl: Table does not exist.\n" });
  t.same(pfBackend.remove("192.0.2.5", cfg, noTable), { ok: true, error: "" });
  t.same(pfBackend.list(cfg, noTable), []);

  const show = fakeSys({ FAKE_TOOL_LOG: log.file, FAKE_TOOL_STDOUT: "   192.0.2.6\n   2001:db8::5\n   192.0.2.5\n" });
  t.same(pfBackend.list(cfg, show), ["192.0.2.5", "192.0.2.6", "2001:db8::5"]);
  t.same(log.calls().at(-1), { tool: "pfctl", argv: ["-t", T, "-T", "show"] });

  // A failed add is reported, and no -k follows it.
  const before = log.calls().length;
  const refused = fakeSys({ FAKE_TOOL_LOG: log.file, FAKE_TOOL_STATUS: "1", FAKE_TOOL_STDERR: "pfctl: Permission denied\n" });
  const r = pfBackend.add("192.0.2.7", cfg, refused);
  t.equal(r.ok, false);
  t.match(r.error, /pfctl -t sentry_blocklist -T add 192\.0\.2\.7: exit 1: pfctl: Permission denied/);
  t.same(log.calls().slice(before), [{ tool: "pfctl", argv: ["-t", T, "-T", "add", "192.0.2.7"] }]);

  // An add whose state kill fails is reported too: the open session lives on.
  const killFails = fakeSys({ FAKE_TOOL_MATCH: "-k", FAKE_TOOL_STATUS: "1", FAKE_TOOL_STDERR: "pfctl: kill failed\n" });
  const k = pfBackend.add("192.0.2.8", cfg, killFails);
  t.equal(k.ok, false);
  t.match(k.error, /pfctl -k 192\.0\.2\.8/);

  const unreadable = fakeSys({ FAKE_TOOL_STATUS: "1", FAKE_TOOL_STDERR: "pfctl: /dev/pf: Permission denied\n" });
  t.equal(pfBackend.list(cfg, unreadable), null);
});

t.test("ipfw: exact commands, idempotent remove, list", async (t) => {
  const log = callLog(t);
  const cfg = cfgOf({ ADD_TO_IPFW: true, FIREWALL_TABLE: "blk" });
  const sys = fakeSys({ FAKE_TOOL_LOG: log.file });
  t.same(ipfwBackend.add("192.0.2.5", cfg, sys), { ok: true, error: "" });
  t.same(ipfwBackend.add("2001:db8::5", cfg, sys), { ok: true, error: "" });
  t.same(ipfwBackend.remove("2001:db8::5", cfg, sys), { ok: true, error: "" });
  t.same(log.calls(), [
    { tool: "ipfw", argv: ["-q", "table", "blk", "add", "192.0.2.5"] },
    { tool: "ipfw", argv: ["-q", "table", "blk", "add", "2001:db8::5"] },
    { tool: "ipfw", argv: ["-q", "table", "blk", "delete", "2001:db8::5"] },
  ]);
  const noTable = fakeSys({ FAKE_TOOL_STATUS: "65", FAKE_TOOL_STDERR: "ipfw: Table blk does not exist\n" });
  t.same(ipfwBackend.remove("192.0.2.5", cfg, noTable), { ok: true, error: "" });
  const add = ipfwBackend.add("192.0.2.5", cfg, noTable);
  t.equal(add.ok, false, "an add that fails is not excused");
  t.match(add.error, /ipfw -q table blk add 192\.0\.2\.5: exit 65/);

  const list = fakeSys({ FAKE_TOOL_LOG: log.file, FAKE_TOOL_STDOUT: "192.0.2.5/32 0\n2001:db8::6/128 0\n" });
  t.same(ipfwBackend.list(cfg, list), ["192.0.2.5", "2001:db8::6"]);
  t.same(log.calls().at(-1), { tool: "ipfw", argv: ["table", "blk", "list"] });
  const listNoTable = fakeSys({
    FAKE_TOOL_STATUS: "71",
    FAKE_TOOL_STDERR: "ipfw: failed to request table info: No such process\n",
  });
  t.same(ipfwBackend.list(cfg, listNoTable), []);
});

t.test("the binary runs only the enabled backends; ADD_TO_TCPWRAPPERS=0 leaves hosts.deny unwritten", async (t) => {
  // Through dist/sentry's own --block and --delist (no loop of the test's
  // own), with the fake pfctl and ipfw first on PATH: every call is logged.
  const log = callLog(t);
  const run = (root: string, over: Record<string, string>, ...args: string[]) => {
    const r = spawnSync(BIN, args, {
      encoding: "utf8",
      timeout: 60_000,
      env: {
        PATH: `${FAKE_DIR}:/usr/sbin:/usr/bin:/sbin:/bin`,
        FAKE_NODE: process.execPath,
        FAKE_TOOL_LOG: log.file,
        ROOT_DIR: root,
        PROTECT_FTP: "0",
        PROTECT_MUA: "0",
        SSH_LOG: path.join(root, "no-such.log"),
        ...over,
      },
    });
    t.equal(r.status, 0, `sentry ${args.join(" ")} ${JSON.stringify(over)}: ${r.stderr}`);
  };
  const root = (): string => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), "sentry-fw-root-"));
    t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
    return d;
  };
  const deny = (r: string): string | null => (fs.existsSync(path.join(r, "hosts.deny")) ? fs.readFileSync(path.join(r, "hosts.deny"), "utf8") : null);

  // Every firewall off (the default): no tool runs, hosts.deny carries the block.
  const a = root();
  run(a, {}, "--block", "--ip=192.0.2.5");
  t.same(log.calls(), [], "all firewalls off: no tool ran");
  t.match(deny(a), /^192\.0\.2\.5$/m, "hosts.deny lists the block");
  run(a, {}, "--delist", "--ip=192.0.2.5");
  t.same(log.calls(), [], "nor for the delist");

  // ipfw alone, tcpwrappers off: the firewall still gets the block, hosts.deny is never written.
  const b = root();
  const only = { ADD_TO_IPFW: "1", ADD_TO_TCPWRAPPERS: "0" };
  run(b, only, "--block", "--ip=192.0.2.6");
  t.ok(fs.existsSync(path.join(b, "block", "192.0.2.6")), "block/IP is written");
  t.equal(deny(b), null, "no hosts.deny with ADD_TO_TCPWRAPPERS=0");
  run(b, only, "--delist", "--ip=192.0.2.6");
  t.same(
    log.calls(),
    [
      { tool: "ipfw", argv: ["-q", "table", T, "add", "192.0.2.6"] },
      { tool: "ipfw", argv: ["-q", "table", T, "delete", "192.0.2.6"] },
    ],
    "only ipfw ran: the add, then the delete",
  );
  t.equal(deny(b), null, "still no hosts.deny after the delist");
});

t.test("a hanging tool is killed after COMMAND_TIMEOUT_SECONDS and reported", async (t) => {
  const log = callLog(t);
  const cfg = cfgOf({ COMMAND_TIMEOUT_SECONDS: 1 });
  const sys = fakeSys({ FAKE_TOOL_LOG: log.file, FAKE_TOOL_MODE: "hang" });
  for (const [b, op] of [
    [pfBackend, "add"],
    [pfBackend, "remove"],
    [ipfwBackend, "add"],
    [ipfwBackend, "remove"],
  ] as const) {
    const started = Date.now();
    const r = op === "add" ? b.add("192.0.2.5", cfg, sys) : b.remove("192.0.2.5", cfg, sys);
    const elapsed = Date.now() - started;
    t.equal(r.ok, false, `${b.name} ${op}`);
    t.match(r.error, /timed out after 1 s/, `${b.name} ${op}: ${r.error}`);
    t.comment(`${b.name} ${op} took ${elapsed} ms`);
    const started2 = Date.now();
    t.equal(b.list(cfg, sys), null, `${b.name} list`);
    t.comment(`${b.name} list took ${Date.now() - started2} ms`);
  }
  // A timed-out pfctl add is not followed by -k (that would double the wait).
  t.same(
    log.calls().filter((c) => c.tool === "pfctl" && c.argv[0] === "-k"),
    [],
  );
});

// ---- nftables and iptables for real, in a namespace ----------------------

function withNetns(t: TT): Netns | null {
  const why = netnsUnavailable();
  if (why) {
    t.fail(`cannot run the namespace tests: ${why}`);
    return null;
  }
  const ns = createNetns();
  t.teardown(() => ns.destroy());
  return ns;
}

/** A Sys whose commands run inside `ns`, through the real runner. */
const nsSys = (ns: Netns): Sys => ({ ...realSys(), run: ns.run });

function expectReachability(t: TT, ns: Netns, blocked: string[], label: string) {
  for (const from of [...CLIENTS4, ...CLIENTS6]) {
    const to = from.includes(":") ? SERVER6 : SERVER4;
    const got = ns.probe(from, to);
    if (blocked.includes(from)) t.ok(got === "timeout" || got === "refused", `${label}: ${from} is blocked (${got})`);
    else t.equal(got, "connected", `${label}: ${from} connects`);
  }
}

/** Adds an IPv4 and an IPv6 member (the first twice): listed, and refused at the door. */
function addBoth(t: TT, ns: Netns, b: Backend, cfg: Config, sys: Sys) {
  const [a4] = CLIENTS4;
  const [a6] = CLIENTS6;
  t.same(b.add(a4, cfg, sys), { ok: true, error: "" });
  t.same(b.add(a4, cfg, sys), { ok: true, error: "" }, "adding twice is ok");
  t.same(b.add(a6, cfg, sys), { ok: true, error: "" });
  t.same(b.list(cfg, sys), [a4, a6]);
  expectReachability(t, ns, [a4, a6], "after add");
}

/** Removes them again, twice and absent ones too: nothing listed, nobody refused. */
function removeBoth(t: TT, ns: Netns, b: Backend, cfg: Config, sys: Sys) {
  const [a4, , c4] = CLIENTS4;
  const [a6, , c6] = CLIENTS6;
  t.same(b.remove(a4, cfg, sys), { ok: true, error: "" });
  t.same(b.remove(a4, cfg, sys), { ok: true, error: "" }, "removing twice is ok");
  t.same(b.remove(c4, cfg, sys), { ok: true, error: "" }, "removing an absent address is ok");
  t.same(b.remove(c6, cfg, sys), { ok: true, error: "" });
  t.same(b.list(cfg, sys), [a6]);
  expectReachability(t, ns, [a6], "after removing the IPv4 one");
  t.same(b.remove(a6, cfg, sys), { ok: true, error: "" });
  t.same(b.list(cfg, sys), []);
  expectReachability(t, ns, [], "after removing both");
}

t.test("nftables for real: the rule, add, list, remove, IPv4 and IPv6", async (t) => {
  const ns = withNetns(t);
  if (!ns) return;
  const sys = nsSys(ns);
  const cfg = cfgOf({ ADD_TO_NFTABLES: true });
  const b = nftablesBackend;
  const [a4, , c4] = CLIENTS4;
  const [a6, , c6] = CLIENTS6;

  const load = ns.run("nft", ["-f", "-"], { input: b.rules(cfg) });
  t.equal(load.status, 0, `rules() loads: ${load.stderr}`);
  t.same(b.list(cfg, sys), [], "empty after loading the rule");
  expectReachability(t, ns, [], "before any block");

  addBoth(t, ns, b, cfg, sys);

  // Loading the rule again neither repeats it nor empties the sets.
  t.equal(ns.run("nft", ["-f", "-"], { input: b.rules(cfg) }).status, 0);
  t.same(b.list(cfg, sys), [a4, a6], "members survive a reload of the rule");
  const chain = ns.run("nft", ["list", "chain", "inet", T, "input"]).stdout;
  t.equal(chain.split("\n").filter((l) => /saddr @v[46] drop/.test(l)).length, 2, "two rules, not four");

  removeBoth(t, ns, b, cfg, sys);
});

t.test("nftables for real: no table yet, and a set the admin declared differently", async (t) => {
  const ns = withNetns(t);
  if (!ns) return;
  const sys = nsSys(ns);
  t.same(nftablesBackend.list(cfgOf({ FIREWALL_TABLE: "never_made" }), sys), [], "no table: no members");

  const fresh = cfgOf({ FIREWALL_TABLE: "fresh" });
  t.same(nftablesBackend.remove("192.0.2.5", fresh, sys), { ok: true, error: "" }, "remove with no table is ok");
  t.same(nftablesBackend.add("192.0.2.5", fresh, sys), { ok: true, error: "" }, "add creates table and set");
  t.same(nftablesBackend.add("2001:db8::5", fresh, sys), { ok: true, error: "" });
  t.same(nftablesBackend.list(fresh, sys), ["192.0.2.5", "2001:db8::5"]);

  // An interval set with counters: `add set` would conflict, adding an element does not.
  const custom = cfgOf({ FIREWALL_TABLE: "custom" });
  const decl = "table inet custom {\n\tset v4 {\n\t\ttype ipv4_addr; flags interval; counter\n\t\telements = { 10.0.0.0/8 }\n\t}\n}\n";
  const declared = ns.run("nft", ["-f", "-"], { input: decl });
  t.equal(declared.status, 0, `the admin's set is declared: ${declared.stderr}`);
  t.not(ns.run("nft", ["add", "set", "inet", "custom", "v4", "{", "type", "ipv4_addr", ";", "}"]).status, 0, "`add set` conflicts with it");
  t.same(nftablesBackend.add("192.0.2.6", custom, sys), { ok: true, error: "" });
  t.same(nftablesBackend.list(custom, sys), ["192.0.2.6"], "the admin's prefix is not listed");
  t.same(nftablesBackend.remove("192.0.2.6", custom, sys), { ok: true, error: "" });
  t.same(nftablesBackend.remove("192.0.2.6", custom, sys), { ok: true, error: "" });
  t.same(nftablesBackend.list(custom, sys), []);
  t.match(ns.run("nft", ["list", "set", "inet", "custom", "v4"]).stdout, /10\.0\.0\.0\/8/, "the admin's element is untouched");
});

t.test("iptables+ipset for real: the rules, add, list, remove, IPv4 and IPv6", async (t) => {
  const ns = withNetns(t);
  if (!ns) return;
  const sys = nsSys(ns);
  const cfg = cfgOf({ ADD_TO_IPTABLES: true });
  const b = iptablesBackend;
  const [a4, , c4] = CLIENTS4;
  const [a6, , c6] = CLIENTS6;

  t.same(b.list(cfg, sys), [], "no sets yet: no members");
  const load = ns.run("sh", ["-ec", b.rules(cfg)]);
  t.equal(load.status, 0, `rules() runs: ${load.stderr}`);
  t.equal(ns.run("sh", ["-ec", b.rules(cfg)]).status, 0, "and runs again");
  const rules4 = ns.run("iptables", ["-S", "INPUT"]).stdout;
  t.equal(rules4.split("\n").filter((l) => l.includes(`--match-set ${T}-4 src -j DROP`)).length, 1, "one iptables rule");
  const rules6 = ns.run("ip6tables", ["-S", "INPUT"]).stdout;
  t.equal(rules6.split("\n").filter((l) => l.includes(`--match-set ${T}-6 src -j DROP`)).length, 1, "one ip6tables rule");
  expectReachability(t, ns, [], "before any block");

  addBoth(t, ns, b, cfg, sys);

  removeBoth(t, ns, b, cfg, sys);

  // With no set at all, add creates it and remove is a no-op.
  const other = cfgOf({ FIREWALL_TABLE: "other" });
  t.same(b.remove("192.0.2.5", other, sys), { ok: true, error: "" });
  t.same(b.add("192.0.2.5", other, sys), { ok: true, error: "" });
  t.same(b.add("2001:db8::5", other, sys), { ok: true, error: "" });
  t.same(b.list(other, sys), ["192.0.2.5", "2001:db8::5"]);
});

t.test("the namespaces are gone afterwards", async (t) => {
  if (netnsUnavailable()) return t.fail(`cannot run the namespace tests: ${netnsUnavailable()}`);
  // One left behind by a test process that was killed: its PID is gone.
  const dead = spawnSync("true").pid;
  const stale = `sentry-fw-${dead}-0000dead`;
  t.equal(spawnSync("ip", ["netns", "add", stale]).status, 0);
  const ns = createNetns();
  t.ok(listNetns().includes(ns.name), "created");
  t.notOk(listNetns().includes(stale), "a dead run's namespace was swept");
  ns.destroy();
  ns.destroy();
  t.notOk(listNetns().includes(ns.name), "deleted, and a second destroy is harmless");
});

// ---- The built binary: sentry --block / --delist / --resync -----------------
//
// The contract: ADD_TO_NFTABLES=1 (or ADD_TO_IPTABLES=1)
// makes --block put the address in the set, --delist take it out, and
// --resync put back every address of block/ after the set was emptied; a
// firewall tool that hangs delays a block by COMMAND_TIMEOUT_SECONDS at
// most and never stops it reaching hosts.deny.

t.test("binary: dist/sentry --block/--delist/--resync fill the firewall", async (t) => {
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} does not exist: npm run build first`);

  const flushes: Record<string, string[][]> = {
    ADD_TO_NFTABLES: [
      ["nft", "flush", "set", "inet", T, "v4"],
      ["nft", "flush", "set", "inet", T, "v6"],
    ],
    ADD_TO_IPTABLES: [
      ["ipset", "flush", `${T}-4`],
      ["ipset", "flush", `${T}-6`],
    ],
  };
  for (const [key, backend] of [
    ["ADD_TO_NFTABLES", nftablesBackend],
    ["ADD_TO_IPTABLES", iptablesBackend],
  ] as const) {
    t.test(`${backend.name} (${key}=1)`, async (t) => {
      const ns = withNetns(t);
      if (!ns) return;
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "sentry-fw-root-"));
      t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
      const cfg = cfgOf({ [key]: true });
      const load =
        backend === nftablesBackend
          ? ns.run("nft", ["-f", "-"], { input: backend.rules(cfg) })
          : ns.run("sh", ["-ec", backend.rules(cfg)]);
      t.equal(load.status, 0, `rules load: ${load.stderr}`);
      const sentryEnv = (extra: string[], ...args: string[]) => {
        const only = ["ADD_TO_NFTABLES", "ADD_TO_IPTABLES", "ADD_TO_PF", "ADD_TO_IPFW"].map((k) => `${k}=${k === key ? 1 : 0}`);
        const r = ns.run("env", [`ROOT_DIR=${root}`, ...only, ...extra, BIN, ...args], { timeoutMs: 30_000 });
        t.equal(r.status, 0, `sentry ${args.join(" ")}: ${r.stderr.trim()}`);
        return r;
      };
      const sentry = (...args: string[]) => sentryEnv([], ...args);
      const [a4, b4] = CLIENTS4;
      const [a6] = CLIENTS6;

      sentry("--block", `--ip=${a4}`);
      sentry("--block", `--ip=${a6}`);
      t.same(backend.list(cfg, nsSys(ns)), [a4, a6], "the set holds both");
      expectReachability(t, ns, [a4, a6], "after --block");

      sentry("--delist", `--ip=${a4}`);
      t.same(backend.list(cfg, nsSys(ns)), [a6]);
      expectReachability(t, ns, [a6], "after --delist");

      for (const [cmd, ...args] of flushes[key]) t.equal(ns.run(cmd, args).status, 0, `${cmd} ${args.join(" ")}`);
      expectReachability(t, ns, [], "after the set was emptied behind sentry's back");
      sentry("--resync");
      t.same(backend.list(cfg, nsSys(ns)), [a6], "--resync puts back what block/ holds, and only that");
      expectReachability(t, ns, [a6], "after --resync");
      t.equal(ns.probe(b4, SERVER4), "connected");

      // Blocks the logs decide, by a connect and by --scan, reach the firewall
      // too; expiry, run by any later connect, lifts them from it.
      const c4 = CLIENTS4[2];
      const b6 = CLIENTS6[1];
      const log = path.join(root, "auth.log");
      fs.writeFileSync(
        log,
        `Invalid user admin from ${c4} port 40000\n` +
          [1, 2, 3].map((i) => `Invalid user u${i} from ${b6} port 4100${i}\n`).join(""),
      );
      const logs = [`SSH_LOG=${log}`, "PROTECT_FTP=0", "PROTECT_MUA=0"];
      for (let i = 0; i < 3; i++) sentryEnv(logs, "--connect", `--ip=${c4}`);
      t.ok(fs.existsSync(path.join(root, "block", c4)), "the third connect blocked it");
      t.same(backend.list(cfg, nsSys(ns)), [c4, a6], "and the set holds it");
      expectReachability(t, ns, [a6, c4], "after a block by --connect");
      sentryEnv(logs, "--scan");
      t.same(backend.list(cfg, nsSys(ns)), [c4, a6, b6], "--scan blocked the other attacker");
      expectReachability(t, ns, [a6, c4, b6], "after a block by --scan");
      // Each block file holds its own length (c4: thin, 10 minutes; b6: 90 days): 91 days ago ends both.
      const old = Date.now() / 1000 - 91 * 86400;
      fs.utimesSync(path.join(root, "block", c4), old, old);
      fs.utimesSync(path.join(root, "block", b6), old, old);
      fs.rmSync(path.join(root, "expire.stamp"), { force: true });
      sentryEnv(logs, "--connect", `--ip=${b4}`);
      t.notOk(fs.existsSync(path.join(root, "block", c4)), "expired");
      t.same(backend.list(cfg, nsSys(ns)), [a6], "expiry lifted both from the set, and only them");
      expectReachability(t, ns, [a6], "after expiry");
    });

    t.test(`${backend.name} (${key}=1): the blocks a sentry.sh 2.00 sentry.db held reach the set on import`, async (t) => {
      const ns = withNetns(t);
      if (!ns) return;
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "sentry-fw-root-"));
      t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
      const cfg = cfgOf({ [key]: true });
      const load =
        backend === nftablesBackend
          ? ns.run("nft", ["-f", "-"], { input: backend.rules(cfg) })
          : ns.run("sh", ["-ec", backend.rules(cfg)]);
      t.equal(load.status, 0, `rules load: ${load.stderr}`);
      // The old script's one table: two blocks (IPv4, IPv6 as it spelled
      // them), an allow, an address only seen.
      const [a4, b4, c4] = CLIENTS4;
      const [a6] = CLIENTS6;
      const then = Math.floor(Date.now() / 1000) - 86_400;
      const db = new DatabaseSync(path.join(root, "sentry.db"));
      db.exec("CREATE TABLE ip_records(ip TEXT PRIMARY KEY, seen INTEGER DEFAULT 0, allow INTEGER DEFAULT 0, block INTEGER DEFAULT 0)");
      const ins = db.prepare("INSERT INTO ip_records (ip, seen, allow, block) VALUES (?, ?, ?, ?)");
      ins.run(a4, 5, 0, then);
      ins.run(a6.toUpperCase(), 4, 0, then);
      ins.run(b4, 3, then, 0);
      ins.run(c4, 1, 0, 0);
      db.close();
      const log = path.join(root, "auth.log");
      fs.writeFileSync(log, "");
      const only = ["ADD_TO_NFTABLES", "ADD_TO_IPTABLES", "ADD_TO_PF", "ADD_TO_IPFW"].map((k) => `${k}=${k === key ? 1 : 0}`);
      // The first run of sentry 3 meets the table: here the timer's --scan.
      const r = ns.run("env", [`ROOT_DIR=${root}`, ...only, `SSH_LOG=${log}`, "PROTECT_FTP=0", "PROTECT_MUA=0", BIN, "--scan"], { timeoutMs: 60_000 });
      t.equal(r.status, 0, `--scan: ${r.stderr.trim()}`);
      t.ok(fs.existsSync(path.join(root, "block", a4)) && fs.existsSync(path.join(root, "block", a6)), "block/ holds both imported blocks");
      t.same(backend.list(cfg, nsSys(ns)), [a4, a6], "and so does the set, without a --resync");
      expectReachability(t, ns, [a4, a6], "after the import");
    });
  }

  t.test("a hanging firewall tool delays the block, never loses it", async (t) => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "sentry-fw-root-"));
    t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
    const ip = "192.0.2.9";
    const started = Date.now();
    const r = runCommand(
      "env",
      [
        `PATH=${FAKE_DIR}:${process.env.PATH ?? "/usr/bin:/bin"}`,
        `FAKE_NODE=${process.execPath}`,
        "FAKE_TOOL_MODE=hang",
        `ROOT_DIR=${root}`,
        "ADD_TO_PF=1",
        // Only the fake pfctl may run: this sentry is not inside a namespace.
        "ADD_TO_NFTABLES=0",
        "ADD_TO_IPTABLES=0",
        "ADD_TO_IPFW=0",
        "COMMAND_TIMEOUT_SECONDS=1",
        BIN,
        "--block",
        `--ip=${ip}`,
      ],
      { timeoutMs: 30_000 },
    );
    const elapsed = Date.now() - started;
    t.equal(r.error, "", "sentry finished");
    // The admin asked for a block and one backend did not take it: exit 2,
    // while the block itself is recorded and in hosts.deny (below).
    t.equal(r.status, 2, `a firewall failure is exit 2 with a warning: ${r.stderr.trim()}`);
    t.match(r.stderr, /pfctl/, "the warning names the tool");
    t.match(r.stderr, /timed out/, "and says it timed out");
    t.comment(`finished in ${elapsed} ms (r.error "" above: not killed by the 30 s cap; timing is npm run bench's)`);
    const deny = fs.existsSync(path.join(root, "hosts.deny")) ? fs.readFileSync(path.join(root, "hosts.deny"), "utf8") : "";
    t.ok(deny.split("\n").includes(ip), "hosts.deny has the address");
    t.ok(fs.existsSync(path.join(root, "block", ip)), "block/IP exists");
  });
});
