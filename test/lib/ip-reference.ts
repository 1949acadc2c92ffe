// The reference spelling of addresses: parseIp as sentry 3.0.0 wrote it, with
// split() and regular expressions, plain to read. sentry.ts now parses by
// character codes (issue 15: the report index's walk and --test-log call it
// for every name and line); test/ip.test.ts holds the two to the same answer
// on every input it generates. Test-only.

/** Parses IPv4 dotted quad into 4 bytes, or null. No leading zeros (010 is octal to some tools). */
export function parseV4Bytes(s: string): number[] | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out.push(n);
  }
  return out;
}

/** Parses an IPv6 text form into 8 16-bit groups, or null. */
export function parseV6Groups(s: string): number[] | null {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return null;
  let tail: number[] = [];
  // An embedded IPv4 may end the address (::ffff:1.2.3.4, 64:ff9b::1.2.3.4).
  const lastColon = s.lastIndexOf(":");
  if (s.indexOf(".") !== -1) {
    const v4 = parseV4Bytes(s.slice(lastColon + 1));
    if (!v4) return null;
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]];
    s = s.slice(0, lastColon + 1);
    // "::1.2.3.4" leaves "::"; "ffff:1.2.3.4" would leave "ffff:" — give it its missing group end.
    if (s.endsWith(":") && !s.endsWith("::")) s = s.slice(0, -1);
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (h: string): number[] | null => {
    if (h === "") return [];
    const out: number[] = [];
    for (const g of h.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = groups(halves[0]);
  if (!head) return null;
  if (halves.length === 1) {
    const all = [...head, ...tail];
    return all.length === 8 ? all : null;
  }
  const rest = groups(halves[1]);
  if (!rest) return null;
  const known = head.length + rest.length + tail.length;
  if (known > 7) return null; // "::" stands for at least one zero group
  return [...head, ...new Array<number>(8 - known).fill(0), ...rest, ...tail];
}

/** RFC 5952 text of 8 groups: lower case, longest run of 2+ zero groups as "::". */
export function formatV6(g: number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(":");
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/**
 * The canonical spelling of an address, or null if `text` is not exactly
 * one. IPv4-mapped IPv6 becomes IPv4; a zone id (%eth0) is dropped; the
 * unspecified, broadcast and multicast addresses, which no client can have, are refused.
 */
export function parseIpReference(text: string): string | null {
  if (typeof text !== "string" || text.length === 0 || text.length > 64) return null;
  let s = text;
  const pct = s.indexOf("%");
  if (pct !== -1) {
    // A zone id names an interface: letters, digits and . _ - only.
    if (!/^[A-Za-z0-9._-]{1,32}$/.test(s.slice(pct + 1))) return null;
    s = s.slice(0, pct);
  }
  if (s.indexOf(":") === -1) {
    const b = parseV4Bytes(s);
    if (!b) return null;
    const ip = b.join(".");
    if (ip === "0.0.0.0" || ip === "255.255.255.255") return null;
    // 224.0.0.0/4 is multicast: no TCP client ever has such a source address,
    // so one can only come from a forged argument or a misread log.
    if (b[0] >= 224 && b[0] <= 239) return null;
    return ip;
  }
  const g = parseV6Groups(s);
  if (!g) return null;
  if (g.every((x) => x === 0)) return null; // "::" is no client
  if (g[0] >> 8 === 0xff) return null; // ff00::/8 is multicast: no client either
  // ::ffff:a.b.c.d is an IPv4 client on a dual-stack socket.
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return parseIpReference(`${g[6] >> 8}.${g[6] & 255}.${g[7] >> 8}.${g[7] & 255}`);
  }
  return formatV6(g);
}

