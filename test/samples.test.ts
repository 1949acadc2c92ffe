// The sample log lines in sentry.ts's comments are executable: each one is
// followed by "=> PROGRAM: SERVICE ADDRESS KIND RULE" or "=> PROGRAM: none:
// REASON" (the form is described at the top of section 6), and this test
// runs every one through the classifier. A comment can no longer say one
// thing while the code does another. Pure: imports ../sentry.ts, no root.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { classifyLine, explainLine, newClassifierState, DAEMONS } from "../sentry.ts";
import type { ClassifierState } from "../sentry.ts";
import { readSamples, SYSLOG_HEAD, type CodeSample } from "./lib/samples.ts";

const source = fs.readFileSync(path.join(import.meta.dirname, "..", "sentry.ts"), "utf8");

// As many samples as sentry.ts holds today. Raise it when you add one: it
// is there so that a broken extraction, finding nothing, cannot pass.
const SAMPLES_AT_LEAST = 86;

/** What is wrong with one sample, or null when the classifier agrees with its comment. */
function mismatch(s: CodeSample, state: ClassifierState): string | null {
  const { ev, why } = explainLine(s.input, s.program, state);
  const where = `sentry.ts:${s.lineNo}: ${s.quoted.slice(0, 120)}`;
  if ("why" in s.expect) {
    if (ev) return `${where}\n  comment says none (${s.expect.why}), classifier says ${ev.service} ${ev.ip} ${ev.kind} ${ev.rule} (${why})`;
    if (why !== s.expect.why) return `${where}\n  comment says none: ${s.expect.why}\n  classifier says none: ${why}`;
    return null;
  }
  const e = s.expect;
  if (!ev) return `${where}\n  comment says ${e.service} ${e.ip} ${e.kind} ${e.rule}, classifier says none: ${why}`;
  const got = `${ev.service} ${ev.ip} ${ev.kind} ${ev.rule}`;
  const want = `${e.service} ${e.ip} ${e.kind} ${e.rule}`;
  return got === want ? null : `${where}\n  comment says ${want}\n  classifier says ${got} (${why})`;
}

/** Runs every sample, one ClassifierState per block of consecutive samples; returns the mismatches. */
function check(samples: CodeSample[]): string[] {
  const out: string[] = [];
  let state = newClassifierState();
  let block = -1;
  for (const s of samples) {
    if (s.block !== block) {
      state = newClassifierState();
      block = s.block;
    }
    // classifyLine is what the scanner calls: it must agree with explainLine
    // (checked on a state of its own, so the pair does not count lines twice).
    const twin = classifyLine(s.input, s.program, newClassifierState());
    const alone = explainLine(s.input, s.program, newClassifierState()).ev;
    if (JSON.stringify(twin) !== JSON.stringify(alone)) out.push(`sentry.ts:${s.lineNo}: classifyLine and explainLine disagree`);
    const m = mismatch(s, state);
    if (m) out.push(m);
  }
  return out;
}

const { samples, errors } = readSamples(source);

t.test("every expectation in sentry.ts is well-formed and follows its sample", async (t) => {
  t.same(errors, [], errors.join("\n"));
  t.ok(samples.length >= SAMPLES_AT_LEAST, `${samples.length} samples found, at least ${SAMPLES_AT_LEAST} expected`);
});

t.test("every sample in sentry.ts classifies as its comment says", async (t) => {
  const bad = check(samples);
  t.same(bad, [], bad.join("\n"));
  // Every service, kind and "none" appears: the samples cover the classifier's outputs.
  const seen = new Set(samples.map((s) => ("why" in s.expect ? "none" : `${s.expect.service} ${s.expect.kind}`)));
  for (const k of ["none", "ssh success", "ssh failed", "ssh naughty", "ssh probe", "ftp success", "ftp failed", "ftp naughty", "mua success", "mua naughty", "mua probe", "smtp success", "smtp naughty"]) {
    t.ok(seen.has(k), `a sample shows ${k}`);
  }
});

t.test("no comment line that the classifier takes as evidence lacks its expectation", async (t) => {
  // A log line quoted in a comment without "=>" under it would be prose
  // again. Any comment line that some daemon's parser reads as evidence
  // (bare, or as the tail of a syslog line) must be a sample.
  const lines = source.split("\n");
  const lacking: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const c = /^\s*(?:\/\/|\*)\s+(\S.*)$/.exec(lines[i]);
    if (!c || c[1].startsWith("=> ")) continue;
    if (/^\s*(?:\/\/|\*)\s+=> /.test(lines[i + 1] ?? "")) continue;
    const text = c[1].replace(/^"(.*)"$/, "$1");
    for (const d of DAEMONS) {
      if (classifyLine(text, d.program, newClassifierState()) || classifyLine(SYSLOG_HEAD + text, d.program, newClassifierState())) {
        lacking.push(`sentry.ts:${i + 1} (read as ${d.program}): ${text.slice(0, 120)}`);
        break;
      }
    }
  }
  t.same(lacking, [], lacking.join("\n"));
});

t.test("the reader and the check refuse what they must", async (t) => {
  // The same machinery on a made-up source: a malformed expectation, one
  // with nothing above it, and a sample whose comment lies.
  const fake = [
    "//   Invalid user ftp from 192.0.2.2 port 37220",
    "//     => sshd: ssh 192.0.2.2 failed ssh.invalid-user",
    "//     => sshd: ssh 192.0.2.2 naughty",
    "",
    "//     => sshd: none: empty line",
    "//   postfix/smtpd[1]: warning: unknown[1.1.1.1]: SASL LOGIN authentication failed: Connection lost to authentication server",
    "//     => postfix/smtpd: none: postfix line not about SASL authentication",
    "//   Invalid user ftp from 192.0.2.2 port 37220",
    "//     => sshd: ssh 192.0.2.2 naughty ssh.invalid-user   (a remark)",
  ].join("\n");
  const r = readSamples(fake);
  t.same(r.errors, ["sentry.ts:3: malformed expectation \"//     => sshd: ssh 192.0.2.2 naughty\"", "sentry.ts:5: expectation without a sample line directly above it"]);
  t.equal(r.samples.length, 3);
  t.equal(r.samples[1].input, `${SYSLOG_HEAD}postfix/smtpd[1]: warning: unknown[1.1.1.1]: SASL LOGIN authentication failed: Connection lost to authentication server`, "a syslog tail is read after a timestamp and host");
  t.equal(r.samples[2].input, "Invalid user ftp from 192.0.2.2 port 37220", "a bare sample is read as it stands");
  const bad = check(r.samples);
  t.equal(bad.length, 2, bad.join("\n"));
  t.match(bad[0], /sentry\.ts:1: .*\n  comment says ssh 192\.0\.2\.2 failed ssh\.invalid-user\n  classifier says ssh 192\.0\.2\.2 naughty ssh\.invalid-user/);
  t.match(bad[1], /comment says none: postfix line not about SASL authentication\n  classifier says none: postfix: SASL server unreachable, not the client's failure/);
});
