// The executable samples of sentry.ts: every log line quoted in a comment is
// followed by what the classifier makes of it (the form is described at the
// top of section 6 of sentry.ts):
//
//   //   Invalid user ftp from 192.0.2.2 port 37220
//   //     => sshd: ssh 192.0.2.2 naughty ssh.invalid-user
//   //   postfix/smtpd[21022]: warning: unknown[1.1.1.1]: SASL LOGIN authentication failed: Connection lost to authentication server
//   //     => postfix/smtpd: none: postfix: SASL server unreachable, not the client's failure
//
// readSamples() finds them all; test/samples.test.ts runs each through
// explainLine. A line that looks like an expectation but does not parse, or
// an expectation with no sample above it, is an error, never skipped.

export interface CodeSample {
  /** 1-based line number of the sample in sentry.ts. */
  lineNo: number;
  /** The line as quoted in the comment. */
  quoted: string;
  /** What explainLine is given: the quoted line, after a timestamp and host when it is a syslog tail. */
  input: string;
  program: string;
  expect: { service: string; ip: string; kind: string; rule: string } | { why: string };
  /** Samples with the same block number are consecutive: read in order with one ClassifierState. */
  block: number;
}

/** A comment line: `//` or a JSDoc ` *`, then the text. */
const COMMENT = /^\s*(?:\/\/|\*)(.*)$/;
/** The start of an expectation: the comment text is spaces then "=> ". */
const EXPECT_START = /^\s+=> /;
const EXPECT =
  /^\s+=> ([^\s:]+): (?:(ssh|ftp|smtp|mua) (\S+) (success|failed|naughty|probe) ([a-z]+\.[a-z0-9-]+)|none: (\S.*?))(?: {3,}\(.+\))?$/;
/** The prefix put before a sample that is the tail of a syslog line ("PROGRAM[PID]: ..."). */
export const SYSLOG_HEAD = "Nov 21 10:00:00 host ";

export function readSamples(source: string): { samples: CodeSample[]; errors: string[] } {
  const lines = source.split("\n");
  const samples: CodeSample[] = [];
  const errors: string[] = [];
  let block = 0;
  let lastSampleLine = -2;
  lines.forEach((raw, i) => {
    const c = COMMENT.exec(raw);
    if (!c || !EXPECT_START.test(c[1])) return;
    const lineNo = i + 1;
    const e = EXPECT.exec(c[1]);
    if (!e) {
      errors.push(`sentry.ts:${lineNo}: malformed expectation ${JSON.stringify(raw.trim())}`);
      return;
    }
    const above = i > 0 ? COMMENT.exec(lines[i - 1]) : null;
    const quoted = above ? /^ {2,}(\S.*)$/.exec(above[1]) : null;
    if (!quoted || EXPECT_START.test(above![1])) {
      errors.push(`sentry.ts:${lineNo}: expectation without a sample line directly above it`);
      return;
    }
    const program = e[1];
    const line = quoted[1];
    const tail = line.startsWith(`${program}: `) || new RegExp(`^${program.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}\\[\\d+\\]: `).test(line);
    // A sample two lines below the previous one (its expectation between) is the same log.
    if (i - 1 !== lastSampleLine + 2) block++;
    lastSampleLine = i - 1;
    samples.push({
      lineNo: i,
      quoted: line,
      input: tail ? SYSLOG_HEAD + line : line,
      program,
      expect: e[6] !== undefined ? { why: e[6] } : { service: e[2], ip: e[3], kind: e[4], rule: e[5] },
      block,
    });
  });
  return { samples, errors };
}
