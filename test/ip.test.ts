// Addresses are a security boundary: they become file names and command arguments.
import t from "tap";
import fc from "fast-check";
import { parseIpReference } from "./lib/ip-reference.ts";
import { parseIp, parseCidr, parseAllowList, inRanges, ipFamily, prefixMask, netAround, rangesOverlap, ALWAYS_ALLOWED, ALWAYS_ALLOWED_CIDRS } from "../sentry.ts";

t.test("canonical spellings", async (t) => {
  const cases: [string, string][] = [
    ["192.0.2.7", "192.0.2.7"],
    ["::ffff:192.0.2.7", "192.0.2.7"], // tcpd may hand over the mapped form
    ["::FFFF:C000:0207", "192.0.2.7"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:db8::0:1", "2001:db8::1"],
    ["2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"], // first longest run
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // a single 0 group is not compressed
    ["fe80::1%eth0", "fe80::1"], // zone id dropped
    ["::1", "::1"],
    ["1::", "1::"],
    ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
    ["1.2.3.4", "1.2.3.4"],
    ["127.0.0.1", "127.0.0.1"],
  ];
  for (const [input, want] of cases) t.equal(parseIp(input), want, input);
});

t.test("everything else is refused", async (t) => {
  const bad = [
    "", " ", "0.0.0.0", "255.255.255.255", "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04",
    "../../etc/passwd", "1.2.3.4;cmd", "$(cmd)", "`id`", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\n", "1:2::3::4",
    "::", "1.2.3.4/24", "2001:db8::1/64", "[2001:db8::1]", "fe80::1%", "fe80::1%eth0/../x", "1:2:3:4:5:6:7:8:9",
    "12345::1", "g::1", "1.2.3.-4", "+1.2.3.4", "0x1.2.3.4", "1e2.1.1.1", "ALL", "localhost", "::ffff:256.1.1.1",
    "1:2:3:4:5:6:7::8", "1.2.3.4%eth0x;rm", "x".repeat(100),
  ];
  for (const b of bad) t.equal(parseIp(b), null, JSON.stringify(b));
});

t.test("families and ranges", async (t) => {
  t.equal(ipFamily("192.0.2.1"), 4);
  t.equal(ipFamily("2001:db8::1"), 6);
  const r = parseAllowList("192.0.2.0/24, 2001:db8:1::/48 198.51.100.7");
  t.ok(inRanges("192.0.2.200", r));
  t.notOk(inRanges("192.0.3.1", r));
  t.ok(inRanges("2001:db8:1:ffff::1", r));
  t.notOk(inRanges("2001:db8:2::1", r));
  t.ok(inRanges("198.51.100.7", r));
  t.notOk(inRanges("198.51.100.8", r));
  t.ok(inRanges("127.0.0.2", r), "loopback is always in");
  t.ok(inRanges("::1", r), "IPv6 loopback is always in");
  t.ok(inRanges("10.1.2.3", parseAllowList("0.0.0.0/0")), "0.0.0.0/0 covers every IPv4");
  t.notOk(inRanges("2001:db8::1", parseAllowList("0.0.0.0/0")), "but no IPv6");
  t.equal(parseCidr("192.0.2.9/24")?.text, "192.0.2.9/24", "text keeps the given address");
  t.equal(parseCidr("192.0.2.0/33"), null);
  t.equal(parseCidr("192.0.2.0/024"), null);
  t.throws(() => parseAllowList("192.0.2.0/24 nonsense"), /ALLOW_IPS: "nonsense"/);
});

t.test("loopback's ranges, written out, are what parseCidr makes of their text", async (t) => {
  t.strictSame(ALWAYS_ALLOWED.map((r) => parseCidr(r)), ALWAYS_ALLOWED_CIDRS);
  t.strictSame(parseAllowList("").slice(0, ALWAYS_ALLOWED.length), ALWAYS_ALLOWED_CIDRS, "every list starts with them");
});

t.test("one prefix mask for every range test: /0, a byte boundary, odd lengths, both families", async (t) => {
  t.equal(prefixMask(4, 0), 0n, "/0 masks nothing in");
  t.equal(prefixMask(4, 24), 0xffffff00n);
  t.equal(prefixMask(4, 23), 0xfffffe00n);
  t.equal(prefixMask(4, 32), 0xffffffffn);
  t.equal(prefixMask(6, 64), 0xffffffffffffffffn << 64n);
  t.equal(prefixMask(6, 0), 0n);
  t.equal(netAround(0xc0000207n, 4, 23).text, "192.0.2.0/23", "host bits cleared");
  t.equal(netAround(0xc0000207n, 4, 30).text, "192.0.2.4/30");
  t.equal(inRanges("192.0.3.255", [parseCidr("192.0.2.0/23")!]), true);
  t.equal(inRanges("192.0.4.0", [parseCidr("192.0.2.0/23")!]), false);
  t.equal(inRanges("2001:db8::1", [parseCidr("::/0")!]), true, "::/0 holds every IPv6 address");
  t.equal(rangesOverlap(parseCidr("10.0.0.0/8")!, parseCidr("10.9.0.0/16")!), true);
  t.equal(rangesOverlap(parseCidr("10.0.0.0/16")!, parseCidr("10.1.0.0/16")!), false);
});

// parseIp reads by character codes (issue 15); the plain split()-and-regex
// version it replaced is kept in test/lib/ip-reference.ts. Both must give
// the same answer (an address or null) for every text: every spelling of an
// address (upper case, leading zeros, "::" anywhere, an IPv4 tail, a zone),
// and the same texts with characters added, dropped or changed.
t.test("parseIp answers as the plain reference version on every spelling and every near miss", async (t) => {
  const runs = Number(process.env.FUZZ_RUNS ?? 20_000);
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
  const group = fc.tuple(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), fc.boolean(), fc.boolean())
    .map(([v, pad, upper]) => {
      const h = pad ? v.toString(16).padStart(4, "0") : v.toString(16);
      return upper ? h.toUpperCase() : h;
    });
  const quad = fc.tuple(fc.integer({ min: 0, max: 300 }), fc.nat(255), fc.nat(255), fc.nat(255)).map((b) => b.join("."));
  // Eight groups (six and an IPv4 tail), with "::" in place of any run of them, or none.
  const spelled = fc.tuple(fc.array(group, { minLength: 8, maxLength: 8 }), fc.option(quad), fc.nat(8), fc.nat(8), fc.boolean(), fc.option(fc.constantFrom("eth0", "1", "", "a;b")))
    .map(([g, tail, a, len, gap, zone]) => {
      const parts = tail === null ? g : g.slice(0, 6);
      const from = Math.min(a, parts.length);
      const to = Math.min(from + len, parts.length);
      let s = gap ? `${parts.slice(0, from).join(":")}::${parts.slice(to).join(":")}` : parts.join(":");
      if (tail !== null) s += s.endsWith(":") ? tail : `:${tail}`;
      return zone === null ? s : `${s}%${zone}`;
    });
  const edits = fc.array(fc.tuple(fc.nat(), fc.constantFrom("add", "drop", "change"), fc.constantFrom(..."0123456789abcdefF:.% x")), { maxLength: 3 });
  const text = fc.tuple(fc.oneof(spelled, quad, fc.ipV4(), fc.ipV6(), quad.map((q) => `::ffff:${q}`)), edits).map(([s, ed]) => {
    for (const [at, how, c] of ed) {
      const i = at % (s.length + 1);
      s = how === "add" ? s.slice(0, i) + c + s.slice(i) : how === "drop" ? s.slice(0, i) + s.slice(i + 1) : s.slice(0, i) + c + s.slice(i + 1);
    }
    return s;
  });
  let valid = 0;
  const r = fc.check(
    fc.property(text, (s) => {
      const got = parseIp(s);
      if (got !== null) valid++;
      return got === parseIpReference(s);
    }),
    { numRuns: runs, seed },
  );
  t.notOk(r.failed, r.failed ? `seed ${seed}: ${fc.defaultReportMessage(r)}` : `${r.numRuns} texts, ${valid} of them addresses (seed ${seed})`);
  t.ok(valid > runs / 10, `the texts include addresses, not only junk (${valid} of ${runs})`);
});
