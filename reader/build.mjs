// `make reader`: bundle src/reader.js (with age-encryption) and inline it, with the CSS, into
// src/page.html, giving ONE self-contained page: bot/reader/reader.html. Its texts stay
// placeholders (__IMRS_TEXTS__, ...) that bot/reader fills from content/<lang>/reader.yaml.
// Also writes bot/reader/NOTICE, the licences of the bundled packages.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";

const here = new URL(".", import.meta.url);
const out = new URL("../bot/reader/", here);
const read = (path) => readFileSync(new URL(path, here), "utf8");

// The sources' digest, written into the page: tests/test_reader.py checks the checked-in page
// was built from the sources as they are (without running Node).
const SOURCES = ["src/page.html", "src/reader.js", "src/style.css", "build.mjs", "package-lock.json"];
const digest = createHash("sha256");
for (const path of SOURCES) digest.update(read(path).replaceAll("\r\n", "\n"));

const bundled = await build({
  entryPoints: [new URL("src/reader.js", here).pathname],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2022"],
  legalComments: "none", // the licences are in NOTICE, and summarised in the page's comment
  write: false,
});
const js = bundled.outputFiles[0].text.replaceAll("</script", "<\\/script");
const packages = ["age-encryption", "@noble/ciphers", "@noble/curves", "@noble/hashes", "@noble/post-quantum", "@scure/base"];
const meta = packages.map((name) => JSON.parse(read(`node_modules/${name}/package.json`)));
const credits = meta.map((p) => `${p.name} ${p.version} (${p.license})`).join(", ");

const page = read("src/page.html")
  .replace("<!-- @BUILD@ -->", `<!-- sources sha256:${digest.digest("hex")}. Bundled: ${credits}; licences in NOTICE beside this file. -->`)
  .replace("/*@CSS@*/", () => read("src/style.css").trim())
  .replace("/*@JS@*/", () => js.trim());
writeFileSync(new URL("reader.html", out), page);

const notice = meta.map((p) => `${"=".repeat(78)}\n${p.name} ${p.version} (${p.license})\n\n${read(`node_modules/${p.name}/LICENSE`).trim()}\n`);
writeFileSync(
  new URL("NOTICE", out),
  "The therapist's reader (reader.html) bundles these packages, under these licences.\n\n" + notice.join("\n"),
);
console.log(`wrote bot/reader/reader.html (${page.length} bytes) and bot/reader/NOTICE`);
