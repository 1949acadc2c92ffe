// `npm run test:unit` runs the pure tests: those that need no root, no
// Debian package and no built binary, so a contributor can run them
// anywhere. Its list lives in package.json; this test keeps it honest both
// ways: a listed file that starts using the binary, a namespace, a real sshd
// or root fails here, and so does a new pure test file left off the list.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";

const root = path.join(import.meta.dirname, "..");
const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { scripts: Record<string, string> };

/** What makes a test impure: the helpers that run the built binary, namespaces, sshd, CrowdSec; root checks. */
const IMPURE = [/from "\.\/lib\/(?:run|netns|sshd|crowdsec)\.ts"/, /dist\/sentry/, /getuid\(\)/, /deps\.sh/];

function impurities(file: string): string[] {
  const text = fs.readFileSync(path.join(root, file), "utf8");
  return IMPURE.filter((re) => re.test(text)).map((re) => `${file}: ${re}`);
}

const listed = /^tap((?: test\/[\w.-]+\.test\.ts)+)$/.exec(pkg.scripts["test:unit"] ?? "");

t.test("test:unit is a plain list of test files", async (t) => {
  t.ok(listed, `package.json "test:unit" is "tap FILE..." (is ${JSON.stringify(pkg.scripts["test:unit"])})`);
});

const files = listed ? listed[1].trim().split(" ") : [];

t.test("every file test:unit runs is pure", async (t) => {
  t.ok(files.includes("test/unit.test.ts"), "this test is on the list");
  for (const f of files) t.ok(fs.existsSync(path.join(root, f)), `${f} exists`);
  const bad = files.filter((f) => fs.existsSync(path.join(root, f))).flatMap(impurities);
  t.same(bad, [], bad.join("\n"));
});

t.test("every pure test file is on the list", async (t) => {
  const all = fs.readdirSync(path.join(root, "test")).filter((f) => f.endsWith(".test.ts")).map((f) => `test/${f}`);
  const pure = all.filter((f) => impurities(f).length === 0).sort();
  t.same(pure, [...files].sort(), "the pure test files and the test:unit list");
});
