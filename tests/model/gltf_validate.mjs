// Validate a glTF / GLB file with the Khronos glTF-Validator (npm package "gltf-validator").
// Usage: node gltf_validate.mjs FILE [NODE_MODULES_PREFIX]
// Prints the validator's JSON report on stdout; exit status 0 when it reports no errors,
// 1 when it reports errors, 2 when the validator cannot run.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const file = process.argv[2];
const prefix = process.argv[3] ? resolve(process.argv[3]) : process.cwd();
let validator;
try {
  const require = createRequire(join(prefix, "package.json"));
  validator = require("gltf-validator");
} catch (err) {
  console.error(`cannot load gltf-validator from ${prefix}: ${err.message}`);
  process.exit(2);
}
try {
  const data = new Uint8Array(readFileSync(file));
  const report = await validator.validateBytes(data, { uri: file, maxIssues: 100 });
  console.log(JSON.stringify(report, null, 2));
  process.exit(report.issues.numErrors > 0 ? 1 : 0);
} catch (err) {
  console.error(`validation failed: ${err && err.message ? err.message : err}`);
  process.exit(2);
}
