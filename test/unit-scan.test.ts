// The decisions inside --scan and the log reader, as pure functions (issue
// 13): where the next read of a log starts (readStart) and what --scan does
// with one address (scanStep). Tables of cases, no binary, no root, no files:
// the behaviour through the built binary is in scan.test.ts.
import t from "tap";
import { readStart, scanStep } from "../sentry.ts";
import type { Cursor, ReadStart, ScanStep } from "../sentry.ts";

const MB = 1024 * 1024;
const cursor = (over: Partial<Cursor> = {}): Cursor => ({ ident: "8:1", offset: 1000, skipping: 0, head: "4e6f76", ...over });
const file = (over: Partial<{ ident: string; size: number; head: string }> = {}) => ({ ident: "8:1", size: 5000, head: "4e6f7620323920", ...over });

t.test("readStart: the five ways a read of a log file starts", (t) => {
  const cases: [string, Cursor | undefined, ReturnType<typeof file>, number, ReadStart][] = [
    ["first read of a small file: all of it", undefined, file({ size: 5000 }), 50 * MB, { how: "first", start: 0, skipping: false }],
    ["first read of a file exactly the bound: all of it", undefined, file({ size: 50 * MB }), 50 * MB, { how: "first", start: 0, skipping: false }],
    ["first read of a big file: its last bytes, skipping the cut line", undefined, file({ size: 80 * MB }), 50 * MB, { how: "first", start: 30 * MB, skipping: true }],
    ["same file, grown: on from the cursor", cursor(), file(), 50 * MB, { how: "on", start: 1000, skipping: false }],
    ["same file, not grown: on from the cursor (reads nothing)", cursor({ offset: 5000 }), file({ size: 5000 }), 50 * MB, { how: "on", start: 5000, skipping: false }],
    ["same file, inside an over-long line: on, still skipping", cursor({ skipping: 1 }), file(), 50 * MB, { how: "on", start: 1000, skipping: true }],
    ["same file, no head recorded (an older cursor): on", cursor({ head: "" }), file({ head: "ffff" }), 50 * MB, { how: "on", start: 1000, skipping: false }],
    ["same inode, shorter than the cursor: truncated", cursor({ offset: 9000 }), file({ size: 100 }), 50 * MB, { how: "truncated", start: 0, skipping: false }],
    ["truncated wins over a changed head", cursor({ offset: 9000, head: "aa" }), file({ size: 100, head: "bb" }), 50 * MB, { how: "truncated", start: 0, skipping: false }],
    ["same inode, grown past the cursor, other first bytes: copytruncate", cursor(), file({ head: "4a616e" }), 50 * MB, { how: "copytruncate", start: 0, skipping: false }],
    ["copytruncate forgets a skip in progress", cursor({ skipping: 1 }), file({ head: "4a616e" }), 50 * MB, { how: "copytruncate", start: 0, skipping: false }],
    ["another inode: rotated, the new file from its start", cursor(), file({ ident: "8:2" }), 50 * MB, { how: "rotated", start: 0, skipping: false }],
    ["another inode, even if shorter: rotated, not truncated", cursor({ offset: 9000 }), file({ ident: "8:2", size: 10 }), 50 * MB, { how: "rotated", start: 0, skipping: false }],
  ];
  for (const [what, cur, now, bound, want] of cases) t.same(readStart(cur, now, bound), want, what);
  t.end();
});

t.test("scanStep: allow, block, hold or nothing", (t) => {
  type Action = "allow" | "block" | "none";
  type St = "allowed" | "blocked" | null;
  // [action, status, threshold reached, read partial] → step
  const cases: [Action, St, boolean, boolean, ScanStep][] = [
    ["block", null, true, false, "block"],
    ["block", null, true, true, "hold"], // a success may sit in what was not read
    ["block", null, false, false, "none"], // not enough events yet
    ["block", null, false, true, "none"], // below its threshold, nothing to hold
    ["block", "blocked", true, false, "none"], // decided already
    ["block", "allowed", true, false, "none"], // an allowed address is never blocked here
    ["allow", null, true, false, "allow"],
    ["allow", null, true, true, "allow"], // a success read is a success, however much else is unread
    ["allow", null, false, false, "none"],
    ["allow", "blocked", true, false, "none"], // lifting a block is liftAfterSuccess's, not this
    ["allow", "allowed", true, false, "none"],
    ["none", null, true, false, "none"],
    ["none", null, true, true, "none"],
  ];
  for (const [action, status, reached, partial, want] of cases)
    t.equal(scanStep(action, status, reached, partial), want, `${action}, ${status ?? "undecided"}, threshold ${reached ? "reached" : "not reached"}, read ${partial ? "partial" : "complete"}`);
  t.end();
});
