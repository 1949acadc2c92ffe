// The structure sentry.ts promises in its header (issue 13): one banner style
// (`// ==== N. Title ===` for a section, `// ---- N.M Title ---` for a
// sub-section), sections in order, every level numbered from 1 without gaps,
// and a table of contents that lists exactly those banners, in that order.
// Pure: reads the source, needs no build and no root.
import t from "tap";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const SRC = readFileSync(join(import.meta.dirname, "..", "sentry.ts"), "utf8");
const lines = SRC.split("\n");

const banners: { num: number[]; title: string; line: number }[] = [];
lines.forEach((l, i) => {
  const s = /^\/\/ ==== (\d+)\. (.*?) =+$/.exec(l);
  const sub = /^\/\/ ---- (\d+(?:\.\d+)+) (.*?)(?: -+)?$/.exec(l);
  const m = s ?? sub;
  if (m) banners.push({ num: m[1].split(".").map(Number), title: m[2], line: i + 1 });
});

t.test("banners: twelve sections, every level numbered 1, 2, 3… in file order", async (t) => {
  t.equal(banners.filter((b) => b.num.length === 1).length, 12, "sections 1 to 12");
  let prev: number[] = [0];
  for (const b of banners) {
    const n = b.num;
    // The next number: one more at some level of the previous one, or a first child (.1) of it.
    const child = n.length === prev.length + 1 && n.slice(0, -1).join(".") === prev.join(".") && n.at(-1) === 1;
    const k = n.length - 1;
    const sibling = n.length <= prev.length && n.slice(0, k).join(".") === prev.slice(0, k).join(".") && n[k] === prev[k] + 1;
    t.ok(child || sibling, `sentry.ts:${b.line}: ${n.join(".")} follows ${prev.join(".")}`);
    prev = n;
  }
});

t.test("one banner style: no sub-section titled the old way (a rule line, then `// N.M Title`)", async (t) => {
  const old = lines.map((l, i) => [l, i + 1] as const).filter(([l], i) => /^\/\/ \d+\.\d+(\.\d+)? [A-Z-]/.test(l) && /^\/\/ -{20,}$/.test(lines[i - 1] ?? ""));
  t.same(old.map(([l, n]) => `${n}: ${l}`), []);
});

t.test("the table of contents lists exactly the banners, in order", async (t) => {
  const start = SRC.indexOf(" * CONTENTS");
  t.ok(start > 0, "the header has a CONTENTS");
  const toc = SRC.slice(start, SRC.indexOf(" */", start)).split("\n")
    .map((l) => /^ \*\s+(\d+(?:\.\d+)*)\.?\s{2,}(.*)$/.exec(l)).filter((m) => m !== null)
    .map((m) => m[1]);
  t.same(toc, banners.map((b) => b.num.join(".")));
});
