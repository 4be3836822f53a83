// Renders chat-template cases with @huggingface/jinja, the reference ming's Jinja interpreter is
// compared against (tests/test_jinja.cpp).
// Usage: node render.mjs PACKAGE_DIR CASES.json OUT.json
//   CASES.json: {"templates": {name: source}, "cases": [{"template": name, "context": {...}}]}
//   OUT.json:   [{"text": rendered} | {"error": message}], one per case, in order.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const [packageDir, casesPath, outPath] = process.argv.slice(2);
const require = createRequire(join(packageDir, "package.json"));
const { Template } = require("@huggingface/jinja");

const input = JSON.parse(readFileSync(casesPath, "utf8"));
const compiled = {};
for (const [name, source] of Object.entries(input.templates)) {
  try {
    compiled[name] = { template: new Template(source) };
  } catch (e) {
    compiled[name] = { error: String(e.message ?? e) };
  }
}
const out = input.cases.map(({ template, context }) => {
  const t = compiled[template];
  if (t.error) return { error: t.error };
  try {
    return { text: t.template.render(context) };
  } catch (e) {
    return { error: String(e.message ?? e) };
  }
});
writeFileSync(outPath, JSON.stringify(out));
