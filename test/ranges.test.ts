// Issue 16 items 3, 4, 6: ranges by hand (--allow/--block/--delist of a CIDR), IPv6 /64 aggregation,
// on hosts.deny (checked with the real tcpdmatch), nftables and ipset (real, in a namespace), and --resync.
import t from "tap";
import * as fs from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import {
  DEFAULTS, parseNet, netFromFileName, netFileName, hostsDenyText, parseAllowList, subnetOf,
  nftablesBackend, iptablesBackend, pfBackend, ipfwBackend, realSys, type Config, type Sys,
} from "../sentry.ts";
import { SENTRY, envFor, requireBinary, sentry, sentryLog, state, tempDir } from "./lib/run.ts";
import type { TT } from "./lib/run.ts";
import { createNetns, netnsUnavailable, CLIENTS4, CLIENTS6, SERVER4, SERVER6, type Netns } from "./lib/netns.ts";

requireBinary();
const TCPDMATCH = "/usr/sbin/tcpdmatch";

/** What the real tcpd decides for sshd from `client` when hosts.allow includes ROOT_DIR/hosts.deny as sentry's line does. */
function tcpd(t: { teardown(fn: () => void): void }, root: string, client: string): string {
  const dir = tempDir(t, "sentry-tcpdmatch-");
  fs.writeFileSync(join(dir, "hosts.allow"), `sshd : ${join(root, "hosts.deny")} : deny\nsshd : ALL : allow\n`);
  fs.writeFileSync(join(dir, "hosts.deny"), "");
  const r = spawnSync(TCPDMATCH, ["-d", "sshd", client], { cwd: dir, encoding: "utf8" });
  const m = /^access:\s+(\w+)/m.exec(r.stdout);
  if (!m) throw new Error(`tcpdmatch -d sshd ${client}: ${r.stderr}${r.stdout}`);
  return m[1];
}

t.test("parseNet: canonical ranges only; file names re-create themselves", async (t) => {
  t.equal(parseNet("2001:DB8:1:2::/64")?.text, "2001:db8:1:2::/64");
  t.equal(parseNet("10.0.0.0/8")?.text, "10.0.0.0/8");
  t.equal(parseNet("2001:db8:0:0::/48")?.text, "2001:db8::/48");
  for (const bad of [
    "0.0.0.0/0", "::/0", "/0", "1.2.3.4/33", "2001:db8::/129", "10.0.0.0/7", "2001::/15", "10.1.2.3/8", "1.2.3.4/32",
    "2001:db8::1/128", "10.0.0.0/08", "10.0.0.0/8/9", "../../etc/passwd/8", "10.0.0.0/8\n", " 10.0.0.0/8", "10.0.0.0_8",
    "fe80::%eth0/64", "::ffff:10.0.0.0/104", "10.0.0.0/", "/8", "010.0.0.0/8", "10.0.0.0/-8", "10.0.0.0/8 ALL",
  ]) t.equal(parseNet(bad), null, `${JSON.stringify(bad)} refused`);
  const n = parseNet("2001:db8:1:2::/64");
  t.equal(n && netFileName(n), "2001:db8:1:2::_64");
  t.equal(netFromFileName("2001:db8:1:2::_64")?.text, "2001:db8:1:2::/64");
  for (const bad of ["2001:DB8:1:2::_64", "2001:db8:1:2:0::_64", "10.0.0.0_08", "0.0.0.0_0", "10.1.2.3_8", "10.0.0.0_8_8", "..", "10.0.0.0"])
    t.equal(netFromFileName(bad), null, `file name ${JSON.stringify(bad)} is not one sentry made`);
  t.equal(subnetOf("2001:db8:1:2:aa:bb:cc:dd").text, "2001:db8:1:2::/64");
});

t.test("hosts.deny: tcpd's forms; a range holding something allowed is left out", async (t) => {
  const nets = ["2001:db8:1:2::/64", "198.51.100.0/24", "203.0.113.0/24"].map((x) => parseNet(x)!);
  t.equal(
    hostsDenyText(["192.0.2.9"], parseAllowList("203.0.113.77"), nets),
    "192.0.2.9\n198.51.100.0/255.255.255.0\n[2001:db8:1:2::]/64\n",
  );
});

/** A fake nft/ipset/pfctl/ipfw first on PATH that leaves a mark if it is ever run. */
function markingTools(dir: string): string {
  const bin = join(dir, "bin");
  fs.mkdirSync(bin);
  for (const tool of ["nft", "ipset", "pfctl", "ipfw"]) fs.writeFileSync(join(bin, tool), `#!/bin/sh\necho "$0 $*" >> ${join(dir, "ran")}\n`, { mode: 0o755 });
  return bin;
}

t.test("hostile ranges are refused before any file or command", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const bin = markingTools(dir);
  const env = envFor(root, { PATH: `${bin}:/usr/bin:/bin`, ADD_TO_NFTABLES: "1", ADD_TO_IPTABLES: "1", ADD_TO_PF: "1", ADD_TO_IPFW: "1" });
  for (const bad of ["0.0.0.0/0", "::/0", "1.2.3.4/0", "2001:db8::/129", "1.2.3.4/33", "10.1.2.3/8", "../../etc/passwd", "10.0.0.0/8/../../x", "10.0.0.0_8", "10.0.0.0/8;reboot", "2001:db8::/64%eth0"]) {
    for (const action of ["--block", "--allow", "--delist"]) {
      const r = sentry([action, `--ip=${bad}`], env);
      t.equal(r.status, 1, `${action} ${bad}: exit 1`);
      t.match(r.stderr, /not a valid IP address/, `${action} ${bad}: says why`);
    }
  }
  t.notOk(fs.existsSync(root), "no file or folder was made");
  t.notOk(fs.existsSync(join(dir, "ran")), "no firewall tool was run");
  t.match(sentry(["--connect", "--ip=10.0.0.0/8"], env).stderr, /not a valid IP address/, "a connect takes no range");
});

t.test("--allow of a range by hand: honoured like ALLOW_IPS; --delist lifts it", async (t) => {
  const root = join(tempDir(t), "root");
  const env = envFor(root, { SUDO_USER: "dave" });
  t.equal(sentry(["--block", "--ip=10.1.2.3"], env).status, 0);
  t.equal(tcpd(t, root, "10.1.2.3"), "denied");
  let r = sentry(["--allow", "--ip=10.0.0.0/8", "--reason", "our office"], env);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^allowed 10\.0\.0\.0\/8$/m);
  t.match(fs.readFileSync(join(root, "allow", "10.0.0.0_8"), "utf8"), /^\S+ allow by admin \(dave\): --allow: our office\n$/);
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "", "the address blocked inside it is no longer listed");
  t.equal(tcpd(t, root, "10.1.2.3"), "granted");
  r = sentry(["--connect", "--ip=10.200.0.1"], env);
  t.match(r.stdout, /connections from 10\.200\.0\.1 and it is allowed/, "a connect from inside it is allowed");
  r = sentry(["--block", "--ip=10.9.9.9"], env);
  t.equal(r.status, 1, "an address inside it cannot be blocked");
  t.match(r.stderr, /never blocked/);
  r = sentry(["--block", "--ip=10.0.0.0/16"], env);
  t.equal(r.status, 1, "nor a range that overlaps it");
  t.match(r.stderr, /not blocking 10\.0\.0\.0\/16: 10\.0\.0\.0\/16 overlaps 10\.0\.0\.0\/8, which is allowed/);
  t.notOk(fs.existsSync(join(root, "block", "10.0.0.0_16")));
  r = sentry(["--delist", "--ip=10.0.0.0/8"], env);
  t.equal(r.status, 0);
  t.notOk(fs.existsSync(join(root, "allow", "10.0.0.0_8")));
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "10.1.2.3\n", "the address blocked inside it is listed again");
  t.match(sentryLog(root), /10\.0\.0\.0\/8 delist admin \(dave\): --delist/);
});

t.test("--block of a range: tcpd refuses a fresh address of it; refused if it covers an allowed address or the admin's session", async (t) => {
  const root = join(tempDir(t), "root");
  const env = envFor(root, { SUDO_USER: "erin", ALLOW_IPS: "192.0.2.0/28" });
  let r = sentry(["--block", "--ip=2001:db8:1:2::/64", "--for", "4h", "--reason", "a /64 bot"], env);
  t.equal(r.status, 0, r.stderr);
  t.match(fs.readFileSync(join(root, "block", "2001:db8:1:2::_64"), "utf8"), /^\S+ block by admin \(erin\): --block --for 4h: a \/64 bot\nuntil \S+ \(4 hours; --for 4h\)\n$/);
  t.equal(sentry(["--block", "--ip=198.51.100.0/24"], env).status, 0);
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "198.51.100.0/255.255.255.0\n[2001:db8:1:2::]/64\n");
  t.equal(tcpd(t, root, "2001:db8:1:2::abcd"), "denied", "a fresh address of the /64");
  t.equal(tcpd(t, root, "2001:db8:1:3::1"), "granted", "the next /64");
  t.equal(tcpd(t, root, "198.51.100.77"), "denied");
  t.equal(tcpd(t, root, "198.51.101.1"), "granted");
  // Refusals: an allowed address, ALLOW_IPS, loopback, the admin's own session.
  t.equal(sentry(["--allow", "--ip=2001:db8:5::9"], env).status, 0);
  for (const [net, why, extra] of [
    ["2001:db8:5::/64", /holds 2001:db8:5::9, which is allowed/, {}],
    ["192.0.2.0/24", /overlaps 192\.0\.2\.0\/28, which is allowed/, {}],
    ["127.0.0.0/16", /overlaps 127\.0\.0\.0\/8/, {}],
    ["::/16", /overlaps ::1\/128/, {}],
    ["2001:db8:6::/48", /holds 2001:db8:6::7, the address of your own session \(SSH_CLIENT\)/, { SSH_CLIENT: "2001:db8:6::7 50022 22" }],
  ] as const) {
    r = sentry(["--block", `--ip=${net}`], { ...env, ...extra });
    t.equal(r.status, 1, `${net} refused`);
    t.match(r.stderr, why);
    t.notOk(fs.existsSync(join(root, "block", net.replace("/", "_"))), `no block/ file for ${net}`);
  }
  // Delisting the range lifts it; expiry too.
  t.equal(sentry(["--delist", "--ip=198.51.100.0/24"], env).status, 0);
  t.equal(tcpd(t, root, "198.51.100.77"), "granted");
  const past = (Date.now() - 5 * 3_600_000) / 1000;
  fs.utimesSync(join(root, "block", "2001:db8:1:2::_64"), past, past);
  if (fs.existsSync(join(root, "expire.stamp"))) fs.utimesSync(join(root, "expire.stamp"), past, past);
  sentry(["--connect", "--ip=192.0.2.200"], env);
  t.notOk(fs.existsSync(join(root, "block", "2001:db8:1:2::_64")), "the range's 4 hours ran out");
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "");
  t.match(sentryLog(root), /2001:db8:1:2::\/64 delist expiry: blocked since/);
});

t.test("aggregation: SUBNET_THRESHOLD addresses of a /64 blocked by the logs → the /64; never one holding an allowed address", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const log = join(dir, "auth.log");
  const env = envFor(root, { SSH_LOG: log });
  const bot = ["2001:db8:7:7::10", "2001:db8:7:7::20", "2001:db8:7:7::30"];
  const office = ["2001:db8:8:8::10", "2001:db8:8:8::20", "2001:db8:8:8::30"];
  const lines = (ip: string) => ["admin", "oracle", "test"].map((u) => `Invalid user ${u} from ${ip} port 4000\n`).join("");
  fs.writeFileSync(log, [...bot, ...office].map(lines).join(""));
  t.equal(sentry(["--allow", "--ip=2001:db8:8:8::1"], env).status, 0, "someone of the office /64 is allowed");
  for (const ip of [...bot, ...office]) for (let i = 0; i < 3; i++) sentry(["--connect", `--ip=${ip}`], env);
  for (const ip of [...bot, ...office]) t.equal(state(root, ip), "blocked", `${ip} blocked on its own evidence`);
  t.ok(fs.existsSync(join(root, "block", "2001:db8:7:7::_64")), "the bot's /64 is blocked as one entry");
  t.match(fs.readFileSync(join(root, "block", "2001:db8:7:7::_64"), "utf8"), /block by aggregate: 3 addresses of this \/64 are blocked \(SUBNET_THRESHOLD=3\): 2001:db8:7:7::10, 2001:db8:7:7::20, 2001:db8:7:7::30\nuntil /);
  t.equal(tcpd(t, root, "2001:db8:7:7::beef"), "denied", "a fresh address of that /64 is refused");
  t.notOk(fs.existsSync(join(root, "block", "2001:db8:8:8::_64")), "the /64 holding an allowed address is not aggregated");
  t.equal(tcpd(t, root, "2001:db8:8:8::beef"), "granted");
  t.match(sentryLog(root), /2001:db8:8:8::\/64 not-aggregated 3 addresses of it are blocked, but 2001:db8:8:8::\/64 holds 2001:db8:8:8::1, which is allowed/);
  // --report shows the subnet and the addresses behind it, and each address the range that holds it.
  let rep = sentry(["--report", "--ip=2001:db8:7:7::/64"], env);
  t.equal(rep.status, 0, rep.stderr);
  t.match(rep.stdout, /^2001:db8:7:7::\/64 is blocked\n     block: \S+ block by aggregate: 3 addresses/);
  t.match(rep.stdout, /3 blocked addresses inside it: 2001:db8:7:7::10, 2001:db8:7:7::20, 2001:db8:7:7::30/);
  rep = sentry(["--report", `--ip=${bot[0]}`], env);
  t.match(rep.stdout, /inside the range: block 2001:db8:7:7::\/64/);
  const json = JSON.parse(sentry(["--report", "--json", "--ip=2001:db8:7:7::/64"], env).stdout);
  t.same(json.blockedInside, bot);
  // Delisting the subnet lifts it, and it alone.
  t.equal(sentry(["--delist", "--ip=2001:db8:7:7::/64"], env).status, 0);
  t.equal(tcpd(t, root, "2001:db8:7:7::beef"), "granted");
  t.equal(state(root, bot[0]), "blocked", "the addresses behind it stay blocked");
  // IPv4 /24s only when switched on.
  const v4 = ["203.0.113.10", "203.0.113.20", "203.0.113.30"];
  fs.appendFileSync(log, v4.map(lines).join(""));
  for (const ip of v4) for (let i = 0; i < 3; i++) sentry(["--connect", `--ip=${ip}`], env);
  t.notOk(fs.existsSync(join(root, "block", "203.0.113.0_24")), "no /24 by default");
});

t.test("aggregation of IPv4 /24 with SUBNET_V4=1, and --resync replays ranges", async (t) => {
  const dir = tempDir(t);
  const root = join(dir, "root");
  const log = join(dir, "auth.log");
  const env = envFor(root, { SSH_LOG: log, SUBNET_V4: "1" });
  const v4 = ["203.0.113.10", "203.0.113.20", "203.0.113.30"];
  fs.writeFileSync(log, v4.map((ip) => `Invalid user admin from ${ip} port 1\nInvalid user oracle from ${ip} port 1\n`).join(""));
  for (const ip of v4) for (let i = 0; i < 3; i++) sentry(["--connect", `--ip=${ip}`], env);
  t.ok(fs.existsSync(join(root, "block", "203.0.113.0_24")));
  fs.writeFileSync(join(root, "hosts.deny"), "");
  const r = sentry(["--resync"], env);
  t.match(r.stdout, /hosts\.deny: 3 addresses, 1 ranges/);
  t.equal(fs.readFileSync(join(root, "hosts.deny"), "utf8"), "203.0.113.10\n203.0.113.20\n203.0.113.30\n203.0.113.0/255.255.255.0\n");
});

// ---- nftables and ipset for real, in a namespace ----------------------------------

function withNetns(t: TT): Netns | null {
  const why = netnsUnavailable();
  if (why) {
    t.fail(`cannot run the namespace tests: ${why}`);
    return null;
  }
  const ns = createNetns("sentry-rng");
  t.teardown(() => ns.destroy());
  return ns;
}
const nsSys = (ns: Netns): Sys => ({ ...realSys(), run: ns.run });
const cfgOf = (over: Partial<Config> = {}): Config => ({ ...DEFAULTS, ...over });
// The namespace's clients are 192.0.2.5-7 and 2001:db8::5-7; the server .1/::1 stays outside these ranges.
const NET4 = "192.0.2.4/30";
const NET6 = "2001:db8::4/126";

function reach(t: TT, ns: Netns, blocked: boolean, label: string) {
  for (const from of [...CLIENTS4, ...CLIENTS6]) {
    const got = ns.probe(from, from.includes(":") ? SERVER6 : SERVER4);
    if (blocked) t.ok(got === "timeout" || got === "refused", `${label}: ${from} is blocked (${got})`);
    else t.equal(got, "connected", `${label}: ${from} connects`);
  }
}

for (const [b, over] of [[nftablesBackend, { ADD_TO_NFTABLES: true }], [iptablesBackend, { ADD_TO_IPTABLES: true }]] as const) {
  t.test(`${b.name} for real: ranges in their own interval / hash:net sets`, async (t) => {
    const ns = withNetns(t);
    if (!ns) return;
    const sys = nsSys(ns);
    const cfg = cfgOf(over);
    if (b.name === "nftables") t.equal(ns.run("nft", ["-f", "-"], { input: b.rules(cfg) }).status, 0, "rules() loads");
    else {
      for (const line of b.rules(cfg).split("\n").filter((l) => l && !l.startsWith("#"))) {
        const r = ns.run("sh", ["-c", line]);
        t.equal(r.status, 0, `${line}: ${r.stderr}`);
      }
    }
    reach(t, ns, false, "before");
    t.same(b.add("192.0.2.9", cfg, sys), { ok: true, error: "" }, "an address outside the ranges");
    t.same(b.add(NET4, cfg, sys), { ok: true, error: "" });
    t.same(b.add(NET4, cfg, sys), { ok: true, error: "" }, "twice is ok");
    t.same(b.add(NET6, cfg, sys), { ok: true, error: "" });
    t.same(b.list(cfg, sys), ["192.0.2.4/30", "192.0.2.9", "2001:db8::4/126"], "list shows the ranges");
    reach(t, ns, true, "ranges added");
    t.same(b.remove(NET4, cfg, sys), { ok: true, error: "" });
    t.same(b.remove(NET4, cfg, sys), { ok: true, error: "" }, "removing twice is ok");
    t.same(b.remove(NET6, cfg, sys), { ok: true, error: "" });
    t.same(b.list(cfg, sys), ["192.0.2.9"]);
    reach(t, ns, false, "ranges removed");
  });
}

t.test("nftables for real: NFT_TIMEOUT gives an address's element its block's own timeout", async (t) => {
  const ns = withNetns(t);
  if (!ns) return;
  const sys = nsSys(ns);
  const cfg = cfgOf({ ADD_TO_NFTABLES: true, NFT_TIMEOUT: true });
  const T = cfg.FIREWALL_TABLE;
  const load = ns.run("nft", ["-f", "-"], { input: nftablesBackend.rules(cfg) });
  t.equal(load.status, 0, `rules() with flags timeout loads: ${load.stderr}`);
  t.match(ns.run("nft", ["list", "set", "inet", T, "v4"]).stdout, /flags timeout/);
  t.same(nftablesBackend.add("192.0.2.5", cfg, sys, 600_000), { ok: true, error: "" });
  t.same(nftablesBackend.add("2001:db8::5", cfg, sys, 4 * 3_600_000), { ok: true, error: "" });
  t.same(nftablesBackend.add("192.0.2.6", cfg, sys, 90 * 86_400_000), { ok: true, error: "" }, "a 90-day block");
  t.same(nftablesBackend.add(NET4, cfg, sys, 600_000), { ok: true, error: "" }, "a range: no timeout (its set is an interval set)");
  const v4 = ns.run("nft", ["list", "set", "inet", T, "v4"]).stdout;
  t.match(v4, /192\.0\.2\.5 timeout 10m expires/, "the kernel will lift it after 10 minutes");
  t.notMatch(v4, /192\.0\.2\.6 timeout/, "past NFT_TIMEOUT_MAX_MS (32-bit kernels' wrap) sentry's expiry lifts it");
  t.match(ns.run("nft", ["list", "set", "inet", T, "v6"]).stdout, /2001:db8::5 timeout 4h expires/);
  t.same(nftablesBackend.list(cfg, sys), ["192.0.2.4/30", "192.0.2.5", "192.0.2.6", "2001:db8::5"], "list reads elements with timeouts");
  t.same(nftablesBackend.remove("192.0.2.5", cfg, sys), { ok: true, error: "" });
  t.same(nftablesBackend.list(cfg, sys), ["192.0.2.4/30", "192.0.2.6", "2001:db8::5"]);
  // Off (the default): no timeout even where the set could take one.
  t.same(nftablesBackend.add("192.0.2.7", cfgOf({ ADD_TO_NFTABLES: true }), sys, 600_000), { ok: true, error: "" });
  t.notMatch(ns.run("nft", ["list", "set", "inet", T, "v4"]).stdout, /192\.0\.2\.7 timeout/);
});

t.test("pf and ipfw get the range as it is; a range that is not canonical runs nothing", async (t) => {
  const ran: string[][] = [];
  const sys: Sys = { ...realSys(), run: (cmd, args) => (ran.push([cmd, ...args]), { status: 0, stdout: "", stderr: "", error: "" }) };
  const cfg = cfgOf();
  t.same(pfBackend.add("2001:db8:1:2::/64", cfg, sys), { ok: true, error: "" });
  t.same(ipfwBackend.add("10.0.0.0/8", cfg, sys), { ok: true, error: "" });
  t.same(ran, [
    ["pfctl", "-t", cfg.FIREWALL_TABLE, "-T", "add", "2001:db8:1:2::/64"],
    ["pfctl", "-k", "2001:db8:1:2::/64"],
    ["ipfw", "-q", "table", cfg.FIREWALL_TABLE, "add", "10.0.0.0/8"],
  ]);
  ran.length = 0;
  for (const b of [nftablesBackend, iptablesBackend, pfBackend, ipfwBackend])
    for (const bad of ["0.0.0.0/0", "10.1.2.3/8", "2001:DB8::/64", "10.0.0.0/8 ; flush ruleset", "::/0"]) {
      t.equal(b.add(bad, cfg, sys).ok, false, `${b.name} add ${bad} refused`);
      t.equal(b.remove(bad, cfg, sys).ok, false, `${b.name} remove ${bad} refused`);
    }
  t.same(ran, [], "nothing was run");
});

t.test("--test-log of many addresses: allowed ranges found from one listing of allow/, not by probing each prefix of each address", async (t) => {
  const root = tempDir(t);
  const env = envFor(root);
  for (const net of ["198.51.100.0/24", "2001:db8:1::/48"]) t.equal(sentry([`--ip=${net}`, "--allow"], env).status, 0, `--allow ${net}`);
  t.equal(sentry(["--ip=203.0.113.250", "--allow"], env).status, 0, "and one address");
  // 200 addresses in each range and 200 in none: ~14,800 probes the old way, at most 64 x 112 now.
  const ips = [
    ...Array.from({ length: 200 }, (_, i) => `198.51.100.${i + 1}`),
    ...Array.from({ length: 200 }, (_, i) => `2001:db8:1::${(i + 1).toString(16)}`),
    ...Array.from({ length: 200 }, (_, i) => `198.18.${i >> 8}.${(i & 255) + 1}`),
  ];
  const log = join(root, "auth.log");
  fs.writeFileSync(log, ips.map((ip, i) => `Dec  6 10:00:00 host sshd[${1000 + i}]: Invalid user admin from ${ip} port ${40000 + i}\n`).join(""));
  const run = (what: string) => {
    const trace = join(root, "strace.out");
    const r = spawnSync("strace", ["-f", "-qq", "-e", "trace=statx,newfstatat,lstat,stat", "-o", trace, SENTRY, "--test-log", log], { env, encoding: "utf8", timeout: 120_000 });
    t.equal(r.status, 0, r.stderr);
    const verdict = new Map<string, string>();
    for (const m of r.stdout.matchAll(/^(\S+)\s+ssh: .* → (.*)$/gm)) verdict.set(m[1], m[2]);
    t.equal(verdict.size, 600, `${what}: a verdict for each address`);
    const wrong = ips.filter((ip, i) => {
      const v = verdict.get(ip) ?? "";
      if (i < 200) return v !== "in the allowed range 198.51.100.0/24 (allow/): nothing to do";
      if (i < 400) return v !== "in the allowed range 2001:db8:1::/48 (allow/): nothing to do";
      return !v.startsWith("would ");
    });
    t.same(wrong.map((ip) => `${ip} → ${verdict.get(ip)}`), [], `${what}: every address in a range says which range; the others are weighed`);
    return fs.readFileSync(trace, "utf8").split("\n").filter((l) => /\/allow\/[0-9a-f:.]+_\d+"/.test(l) && /ENOENT/.test(l)).length;
  };
  // allow/ unchanged for a minute, as on a server between two --allow: listed once.
  const allow = join(root, "allow");
  const past = new Date(Date.now() - 60_000);
  fs.utimesSync(allow, past, past);
  const settled = run("allow/ settled");
  t.ok(settled <= 64 * 112, `${settled} failed stats of allow/NET_LEN names (at most 64 addresses probed, 112 prefixes each)`);
  // allow/ changed a moment ago (an --allow while this runs): every address probed, no list that could be stale.
  t.equal(sentry(["--ip=203.0.113.251", "--allow"], env).status, 0, "one more address allowed");
  const soon = new Date(Date.now() + 30_000); // "changed under 2 s ago" for the whole run, however slow the machine
  fs.utimesSync(allow, soon, soon);
  const changing = run("allow/ just changed");
  t.ok(changing > 64 * 112, `${changing} failed stats: a folder that is changing is probed, not listed`);
});
