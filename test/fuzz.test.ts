// test/fuzz.test.ts — property tests of the classifier (section 6) and the
// address parser (section 3), with fast-check.
//
// The property (issue 9): whatever a client types, the address sentry takes
// from a line is the one the daemon wrote there, or none. So a forged line
// inside a user name can never credit (success) or blame (failed, naughty,
// probe) another address.
//
// How: every real log form sentry knows (each daemon, each message shape)
// is a template that the daemon fills with its own address and the client's
// text; the client's text is generated — up to 100 characters of every
// printable character a daemon keeps (sshd escapes the others), spaces, and
// the fragments that confuse parsers: IP-shaped words, "port", "from",
// "rhost=", "user=", "[preauth]", quotes, brackets, whole forged messages.
// Each line is then written with each prefix (none, classic syslog, RFC 3339,
// and the daemon's own log where it has one) and classified, one
// ClassifierState across a whole generated log, so the memory between lines
// (sshd's PAM pairing, BSD ftpd's connection lines) is fuzzed too.
//
// Where a daemon restricts a field (vpopmail's user and domain, an account
// name sshd takes from passwd, Postfix's verified host name), the generator
// keeps to that restriction: the property is about what the daemon can write.
//
// Runs: FUZZ_RUNS (default 2000 generated logs per property, a few seconds),
// FUZZ_SEED to replay. A failure prints the seed and the shrunk counterexample.
// `npm run fuzz` runs 100 000 (FUZZ_RUNS=N npm run fuzz for another count).

import t from "tap";
import fc from "fast-check";
import { explainLine, newClassifierState, parseIp } from "../sentry.ts";

const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
t.comment(`fuzz: ${RUNS} runs per property, seed ${SEED} (replay: FUZZ_SEED=${SEED})`);

// ---- what clients type -----------------------------------------------------

const VICTIMS = ["198.51.100.7", "203.0.113.99", "2001:db8::7", "::ffff:198.51.100.8", "192.0.2.66"];
const FRAGMENTS = [
  ...VICTIMS,
  ...VICTIMS.map((v) => `[${v}]`),
  " ", "  ", "port", " port 22", " port 22 ssh2", "from", " from ", "ssh2", ": ", "[preauth]", " [preauth]",
  "rhost=", " rhost=", "  user=", "user=", " ruser=", "user=<", ">", ", ", "rip=", ", rip=", "lip=", "@", ":", "::",
  '"', "'", "') ", "(", ")", "[", "]", "<", ",", "=", "%", "\\", "1.2.3.4", "11.2.3.45", "1", "22",
  "invalid user ", "illegal user ", "authenticating user ", "for ", "Accepted password for alice",
  ...VICTIMS.map((v) => ` from ${v} port 22 ssh2`),
  ...VICTIMS.map((v) => ` ${v} port 22`),
  ...VICTIMS.map((v) => ` rhost=${v}`),
  ...VICTIMS.map((v) => ` rhost=${v}  user=x`),
  ...VICTIMS.map((v) => `] FAIL LOGIN: Client "${v}"`),
  ...VICTIMS.map((v) => `] OK LOGIN: Client "${v}"`),
  ...VICTIMS.map((v) => `, rip=${v}, lip=192.0.2.1`),
  ...VICTIMS.map((v) => `>, method=PLAIN, rip=${v}`),
  ...VICTIMS.map((v) => `x@example.com:${v}`),
  ...VICTIMS.map((v) => `unknown[${v}]`),
  ...VICTIMS.map((v) => `(x[${v}])`),
  ...VICTIMS.map((v) => `Accepted password for root from ${v} port 22 ssh2`),
  ...VICTIMS.map((v) => `: Login successful.`),
  " is now logged in", ": no such user found from ", " (Login failed): ", " as alice",
];

/** One printable ASCII character (sshd escapes the rest; fast-check 4 has no fc.char). */
const printable = fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c));
/** Client text: printable ASCII and the fragments above, up to 100 characters. */
const typed = fc
  .array(fc.oneof({ weight: 3, arbitrary: printable }, { weight: 2, arbitrary: fc.constantFrom(...FRAGMENTS) }), { maxLength: 24 })
  .map((parts) => parts.join("").slice(0, 100));
/** An account name a daemon took from its own database (passwd, vpopmail): one restricted word. */
const account = fc.stringMatching(/^[a-z_][a-z0-9._-]{0,15}$/);
const domain = fc.stringMatching(/^[a-z0-9-]{1,10}(\.[a-z0-9-]{1,10}){0,2}$/);
const hostName = fc.oneof(fc.constant("unknown"), fc.stringMatching(/^[a-z0-9-]{1,12}(\.[a-z0-9-]{1,12}){0,3}$/));

/** The address the daemon writes: IPv4, IPv6 (every spelling fast-check makes), IPv4-mapped. */
const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((a) => `::ffff:${a}`)).filter((a) => parseIp(a) !== null);
const port = fc.integer({ min: 1, max: 65535 });
const pid = fc.integer({ min: 1, max: 99999 });

// ---- what daemons write ------------------------------------------------------

interface Fill {
  a: string; // the daemon's address
  p: number; // client port
  u: string; // client text (a typed user name, password, banner, ...)
  v: string; // more client text
  acct: string; // an account name
  dom: string;
  host: string; // a host name the daemon resolved or verified
}

interface Form {
  program: string; // the program field
  msgs: (f: Fill) => string[]; // the messages, in order, of one session
  own?: "vsftpd" | "dovecot"; // also written to the daemon's own log file
}

const u100 = (s: string) => s.slice(0, 100); // sshd: "%.100s"
const SSHD = ["sshd", "sshd-session", "sshd-auth"];

const FORMS: Form[] = [
  // sshd (auth.c, auth2.c, auth-pam.c, packet.c, sshd.c): U is %.100s client text
  ...SSHD.map((program): Form => ({
    program,
    msgs: (f) => [
      `Accepted password for ${u100(f.u)} from ${f.a} port ${f.p} ssh2`,
      `Accepted publickey for ${u100(f.u)} from ${f.a} port ${f.p} ssh2: ED25519-CERT SHA256:abc ID ${f.v} (serial 1) CA ED25519 SHA256:def`,
      `Accepted hostbased for ${u100(f.u)} from ${f.a} port ${f.p} ssh2: RSA SHA256:abc, client user "${f.v}", client host "${f.host}"`,
      `Accepted keyboard-interactive/pam for ${u100(f.u)} from ${f.a} port ${f.p} ssh2`,
      `Failed password for ${u100(f.u)} from ${f.a} port ${f.p} ssh2`,
      `Failed password for invalid user ${u100(f.u)} from ${f.a} port ${f.p} ssh2`,
      `Failed none for invalid user ${u100(f.u)} from ${f.a} port ${f.p} ssh2`,
      `Failed publickey for ${u100(f.u)} from ${f.a} port ${f.p} ssh2: RSA SHA256:${f.v}`,
      `Invalid user ${u100(f.u)} from ${f.a} port ${f.p}`,
      `Postponed keyboard-interactive for ${u100(f.u)} from ${f.a} port ${f.p} ssh2 [preauth]`,
      `error: PAM: Authentication failure for ${u100(f.u)} from ${f.a}`,
      `PAM: Authentication failure for illegal user ${u100(f.u)} from ${f.a}`,
      `Failed keyboard-interactive/pam for ${u100(f.u)} from ${f.a} port ${f.p} ssh2`,
      `Failed keyboard-interactive/pam for invalid user ${u100(f.u)} from ${f.a} port ${f.p} ssh2`,
      `error: maximum authentication attempts exceeded for ${u100(f.u)} from ${f.a} port ${f.p} ssh2 [preauth]`,
      `error: maximum authentication attempts exceeded for invalid user ${u100(f.u)} from ${f.a} port ${f.p} ssh2 [preauth]`,
      `Disconnecting authenticating user ${u100(f.u)} ${f.a} port ${f.p}: Too many authentication failures [preauth]`,
      `Disconnecting invalid user ${u100(f.u)} ${f.a} port ${f.p}: Too many authentication failures [preauth]`,
      `Connection closed by authenticating user ${u100(f.u)} ${f.a} port ${f.p} [preauth]`,
      `Connection closed by invalid user ${u100(f.u)} ${f.a} port ${f.p} [preauth]`,
      `Connection reset by invalid user ${u100(f.u)} ${f.a} port ${f.p} [preauth]`,
      `Disconnected from authenticating user ${u100(f.u)} ${f.a} port ${f.p} [preauth]`,
      `Connection closed by ${f.a} port ${f.p} [preauth]`,
      `Received disconnect from ${f.a} port ${f.p}:11: ${f.u} [preauth]`,
      `User ${f.acct} from ${f.a} not allowed because not listed in AllowUsers`,
      `Did not receive identification string from ${f.a} port ${f.p}`,
      `banner exchange: Connection from ${f.a} port ${f.p}: invalid format`,
      `Bad protocol version identification '${u100(f.u)}' from ${f.a} port ${f.p}`,
      `Unable to negotiate with ${f.a} port ${f.p}: no matching cipher found. Their offer: ${f.u} [preauth]`,
      `Timeout before authentication for ${f.a} port ${f.p}`,
      `Timeout before authentication for connection from ${f.a} to 192.0.2.1, pid = ${f.p}`,
      `drop connection #3 from [${f.a}]:${f.p} on [192.0.2.1]:22 penalty: failed authentication`,
      `pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=${f.a}  user=${f.u}`,
    ],
  })),
  // pam_unix for every service: ruser= and (with `audit`) user= are typed text
  ...["vsftpd", "proftpd", "pure-ftpd", "dovecot"].map((program): Form => ({
    program,
    msgs: (f) => [
      `${program === "dovecot" ? "auth: " : ""}pam_unix(${program}:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=${f.u} rhost=${f.a}`,
      `${program === "dovecot" ? "auth: " : ""}pam_unix(${program}:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=${f.u} rhost=${f.a}  user=${f.v}`,
      `${program === "dovecot" ? "auth: " : ""}pam_unix(${program}:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=${f.u} rhost=${f.a}  user=${f.u}`,
      `${program === "dovecot" ? "auth: " : ""}(pam_unix) authentication failure; logname= uid=0 euid=0 tty= ruser=${f.u} rhost=${f.a}`,
    ],
  })),
  // vsftpd (logging.c): [user] and the anonymous password are typed text
  {
    program: "vsftpd",
    own: "vsftpd",
    msgs: (f) => [
      `[pid ${f.p}] [${f.u}] FAIL LOGIN: Client "${f.a}"`,
      `[pid ${f.p}] [${f.u}] FAIL LOGIN: Client "${f.a}", "User is not in the allow user list."`,
      `[pid ${f.p}] [${f.u}] OK LOGIN: Client "${f.a}"`,
      `[pid ${f.p}] [ftp] OK LOGIN: Client "${f.a}", anon password "${f.v}"`,
      `[${f.u}] FAIL LOGIN: Client "${f.a}"`,
    ],
  },
  // ProFTPD (mod_auth.c): server (host[addr]) first, the USER text after
  {
    program: "proftpd",
    msgs: (f) => [
      `ftp.example.org (${f.host}[${f.a}]) - USER ${f.u}: no such user found from ${f.host} [${f.a}] to 192.0.2.1:21`,
      `ftp.example.org (${f.host}[${f.a}]): USER ${f.u} (Login failed): Incorrect password.`,
      `ftp.example.org (${f.host}[${f.a}]): USER ${f.u} (Login failed): User in /etc/ftpusers`,
      `ftp.example.org (${f.a}[${f.a}]) - USER ${f.acct}: Login successful.`,
      `ftp.example.org (${f.host}[${f.a}]): SECURITY VIOLATION: root login attempted.`,
      `ftp.example.org (${f.host}[${f.a}]) - Maximum login attempts (3) exceeded`,
    ],
  },
  // Pure-FTPd: (?@HOST) until a login succeeds, the typed name in [...] after
  {
    program: "pure-ftpd",
    msgs: (f) => [
      `(?@${f.a}) [WARNING] Authentication failed for user [${f.u}]`,
      `(${f.acct}@${f.a}) [INFO] ${f.acct} is now logged in`,
      `(?@${f.a}) [INFO] New connection from ${f.a}`,
    ],
  },
  // BSD ftpd: the address only on the connection line of the same pid
  {
    program: "ftpd",
    msgs: (f) => [
      `connection from ${f.host} (${f.a})`,
      `FTP LOGIN FAILED FROM ${f.host}, ${f.u}`,
      `FTP LOGIN REFUSED FROM ${f.host}, ${f.u}`,
      `repeated login failures from ${f.host}`,
      `FTP LOGIN FROM ${f.host} as ${f.acct}`,
      `ANONYMOUS FTP LOGIN FROM ${f.host}, ${f.u}`,
    ],
  },
  // Dovecot: user=<U> (str_sanitize(U, 80)) before rip=; auth-worker's pam(USER,ADDR)
  ...["dovecot", "imap-login", "pop3-login"].map((program): Form => ({
    program,
    own: "dovecot",
    msgs: (f) => {
      const head = program === "dovecot" ? "imap-login: " : "";
      const u = f.u.slice(0, 80);
      return [
        `${head}Disconnected (auth failed, 1 attempts in 2 secs): user=<${u}>, method=PLAIN, rip=${f.a}, lip=192.0.2.1, TLS, session=<abc>`,
        `${head}Login aborted: Connection closed (auth failed, 2 attempts in 14 secs) (auth_failed): user=<${u}>, method=PLAIN, rip=${f.a}, lip=192.0.2.1, TLS, session=<abc>`,
        `${head}Login: user=<${u}>, method=PLAIN, rip=${f.a}, lip=192.0.2.1, mpid=42, TLS, session=<abc>`,
        `${head}Disconnected (no auth attempts): rip=${f.a}, lip=192.0.2.1, TLS: Disconnected`,
        ...(program === "dovecot"
          ? [
              `auth-worker(12345): Info: pam(${u},${f.a},<sess>): pam_authenticate() failed: Authentication failure (password mismatch?)`,
              `auth-worker(${u},${f.a})<1489164><8oNS>: request [393]: unix_user: pam_authenticate() failed: Authentication failure`,
            ]
          : []),
      ];
    },
  })),
  // Postfix: HOST[ADDR] first (a verified name or "unknown"), client text after
  ...["postfix/smtpd", "postfix/submission/smtpd"].map((program): Form => ({
    program,
    msgs: (f) => [
      `warning: ${f.host}[${f.a}]: SASL LOGIN authentication failed: ${f.u}`,
      `warning: ${f.host}[${f.a}]: SASL PLAIN authentication failed: authentication failure`,
      `4DXZ3k0Qf2z9sVR: client=${f.host}[${f.a}], sasl_method=PLAIN, sasl_username=${f.u}`,
    ],
  })),
  // vpopmail (vchkpw.c): user and domain restricted by parse_email(), the password is typed text
  {
    program: "vpopmail",
    msgs: (f) => [
      `vchkpw-pop3: vpopmail user not found ${f.acct}@${f.dom}:${f.a}`,
      `vchkpw-smtp: password fail (pass: '${f.u}') ${f.acct}@${f.dom}:${f.a}`,
      `vchkpw-pop3: password fail (pass: '${f.u}') ${f.acct}:${f.a}`,
      `vchkpw-pop3: password fail ${f.acct}@${f.dom}:${f.a}`,
      `vchkpw-pop3: (PLAIN) login success ${f.acct}@${f.dom}:${f.a}`,
      `vchkpw-pop3: system user not found ${f.acct}:${f.a}`,
    ],
  },
];

// ---- the prefixes --------------------------------------------------------------

type Prefix = "none" | "classic" | "rfc3339" | "own";

function prefixed(prefix: Prefix, form: Form, pidN: number, msg: string): { line: string; defaultProgram: string } | null {
  switch (prefix) {
    case "none":
      return { line: msg, defaultProgram: form.program };
    case "classic":
      return { line: `Nov 21 10:00:00 host ${form.program}[${pidN}]: ${msg}`, defaultProgram: "x" };
    case "rfc3339":
      return { line: `2026-11-21T10:00:00.123456+00:00 host ${form.program}[${pidN}]: ${msg}`, defaultProgram: "x" };
    case "own":
      if (form.own === "vsftpd") return { line: `Fri Jan 19 12:20:33 2007 ${msg}`, defaultProgram: "vsftpd" };
      if (form.own === "dovecot") return { line: `Jun 12 19:24:38 ${form.program}: Info: ${msg}`, defaultProgram: "x" };
      return null;
  }
}

// One generated session: a form, the daemon's address, the client's text.
const session = fc.record({
  form: fc.integer({ min: 0, max: FORMS.length - 1 }),
  prefix: fc.constantFrom<Prefix>("none", "classic", "rfc3339", "own"),
  pid,
  fill: fc.record({ a: address, p: port, u: typed, v: typed, acct: account, dom: domain, host: hostName }),
  pick: fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), // which of the form's messages, in which order
});

interface Line {
  line: string;
  defaultProgram: string;
  daemon: string; // parseIp of the address the daemon wrote
}

/** A generated log: several sessions' lines, interleaved as concurrent connections are. */
const log = fc
  .tuple(fc.array(session, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 60 }))
  .map(([sessions, order]) => {
    const queues: Line[][] = sessions.map((s) => {
      const form = FORMS[s.form];
      const msgs = form.msgs(s.fill);
      const out: Line[] = [];
      // BSD ftpd's login lines need their connection line first.
      const picks = form.program === "ftpd" ? [0, ...s.pick] : s.pick;
      for (const k of picks) {
        const p = prefixed(s.prefix, form, s.pid, msgs[k % msgs.length]);
        if (p) out.push({ ...p, daemon: parseIp(s.fill.a) as string });
      }
      return out;
    });
    const lines: Line[] = [];
    let i = 0;
    while (queues.some((q) => q.length > 0)) {
      const live = queues.filter((q) => q.length > 0);
      const q = live[(order[i++] ?? 0) % live.length];
      lines.push(q.shift() as Line);
    }
    return lines;
  });

// ---- the properties -------------------------------------------------------------

function check(t: { fail(m: string): void; pass(m: string): void }, name: string, prop: fc.IProperty<[Line[]]>): void {
  const r = fc.check(prop, { numRuns: RUNS, seed: SEED });
  if (r.failed) {
    t.fail(`${name}: seed ${SEED}, path ${r.counterexamplePath}\n${fc.defaultReportMessage(r)}`);
  } else {
    t.pass(`${name}: ${r.numRuns} generated logs`);
  }
}

t.test("the address taken is always the one the daemon wrote, or none", async (t) => {
  let lines = 0;
  let withEvidence = 0;
  const kinds = new Map<string, number>();
  check(
    t,
    "classifier",
    fc.property(log, (ls) => {
      const state = newClassifierState();
      for (const l of ls) {
        const { ev, why } = explainLine(l.line, l.defaultProgram, state);
        lines++;
        if (ev === null) continue;
        withEvidence++;
        kinds.set(ev.kind, (kinds.get(ev.kind) ?? 0) + 1);
        if (ev.ip !== l.daemon) {
          throw new Error(`took ${ev.ip} (${ev.kind}: ${why}) from a line the daemon wrote for ${l.daemon}:\n  ${JSON.stringify(l.line)}`);
        }
      }
    }),
  );
  // The property must not hold by refusing everything: most lines decide something.
  t.ok(withEvidence > lines / 4, `${withEvidence} of ${lines} lines gave evidence`);
  for (const k of ["success", "failed", "naughty", "probe"]) t.ok((kinds.get(k) ?? 0) > 0, `some ${k} lines (${kinds.get(k) ?? 0})`);
});

t.test("a forged success never credits an address but the daemon's", async (t) => {
  // A success line of one client, then text crafted to look like another
  // client's success: every success sentry reports names the daemon's address.
  const forged = fc.record({ a: address, victim: fc.constantFrom(...VICTIMS), u: typed, p: port, prefix: fc.constantFrom<Prefix>("none", "classic", "rfc3339") });
  const r = fc.check(
    fc.property(forged, (f) => {
      const daemon = parseIp(f.a) as string;
      const userTexts = [
        `x from ${f.victim} port 22 ssh2`,
        `Accepted password for root from ${f.victim} port 22 ssh2`,
        `${f.u} from ${f.victim} port ${f.p} ssh2:`,
        `${f.u}`,
      ];
      for (const u of userTexts) {
        for (const msg of [
          `Failed password for ${u100(u)} from ${f.a} port ${f.p} ssh2`,
          `Invalid user ${u100(u)} from ${f.a} port ${f.p}`,
          `Accepted publickey for alice from ${f.a} port ${f.p} ssh2: ED25519-CERT SHA256:x ID ${u} (serial 1) CA ED25519 SHA256:y`,
          `Accepted password for ${u100(u)} from ${f.a} port ${f.p} ssh2`,
        ]) {
          const p = prefixed(f.prefix, FORMS[0], 1, msg) as { line: string; defaultProgram: string };
          const ev = explainLine(p.line, p.defaultProgram, newClassifierState()).ev;
          if (ev?.kind === "success" && ev.ip !== daemon) throw new Error(`success credited to ${ev.ip}: ${JSON.stringify(p.line)}`);
          if (ev && ev.ip !== daemon) throw new Error(`${ev.kind} about ${ev.ip}: ${JSON.stringify(p.line)}`);
        }
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
  t.notOk(r.failed, r.failed ? `seed ${SEED}: ${fc.defaultReportMessage(r)}` : `${r.numRuns} generated clients`);
});

t.test("parseIp: one canonical form, stable, and nothing but an address", async (t) => {
  const junk = fc.array(fc.oneof(printable, fc.constantFrom(...FRAGMENTS, ".", "0", "00", "%eth0", "ffff", "::ffff:")), { maxLength: 12 }).map((p) => p.join(""));
  const r = fc.check(
    fc.property(fc.oneof(address, junk), (s) => {
      const ip = parseIp(s);
      if (ip === null) return;
      if (parseIp(ip) !== ip) throw new Error(`${JSON.stringify(s)} → ${ip} → ${parseIp(ip)}`);
      if (!/^[0-9a-f.:]{2,45}$/.test(ip)) throw new Error(`${JSON.stringify(s)} → ${JSON.stringify(ip)}: not a plain address`);
    }),
    { numRuns: RUNS, seed: SEED },
  );
  t.notOk(r.failed, r.failed ? `seed ${SEED}: ${fc.defaultReportMessage(r)}` : `${r.numRuns} generated strings`);
});
