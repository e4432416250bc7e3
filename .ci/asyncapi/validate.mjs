// Validate an AsyncAPI document with the official parser (@asyncapi/parser, pinned in
// package-lock.json). Offline: the document has no remote $refs. Exit 0 when it parses without
// errors; warnings are printed but do not fail. Usage: node validate.mjs ../../docs/asyncapi.yaml
import { Parser, fromFile } from '@asyncapi/parser';

const path = process.argv[2];
if (!path) {
  console.error('usage: node validate.mjs ASYNCAPI_FILE');
  process.exit(2);
}
const severities = ['error', 'warning', 'info', 'hint'];
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
let errors = 0;
for (const d of diagnostics) {
  const level = severities[d.severity] ?? String(d.severity);
  if (d.severity === 0) errors += 1;
  console.log(`${level}: ${d.code}: ${d.message} at ${(d.path || []).join('.')}`);
}
if (!document || errors) {
  console.error(`${path}: INVALID (${errors} error(s))`);
  process.exit(1);
}
const channels = document.channels().length;
const messages = document.components().messages().length;
console.log(`${path}: valid AsyncAPI ${document.version()} (${channels} channels, ${messages} messages)`);
