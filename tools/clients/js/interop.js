'use strict';
// Interop checks between this JS client and the Python tools (used as black boxes).
//
//   node interop.js check-consume HOST:PORT TOPIC FILE.jsonl
//       FILE = output of `python3 -m fabric consume TOPIC --from-beginning --max 1000 --format json`
//       on the topic that demo.js wrote; every line must match what demo.js produced.
//   node interop.js create HOST:PORT TOPIC PARTITIONS
//       create a topic (so that a Python producer has several partitions to choose from)
//   node interop.js check-produced HOST:PORT TOPIC KEY:VALUE [KEY:VALUE ...]
//       fetch every partition of TOPIC (written by `fabric produce --key-separator :`) with the JS
//       client; each key must hold its value, on the partition murmur2 gives it.

const fs = require('node:fs');
const { FabricClient, partitionForKey } = require('./fabric-client');
const { makeDemoRecords, planDemo, fetchAll } = require('./demo');

let passed = 0; let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}${detail ? `  -- ${detail}` : ''}`);
}

/** Python's bytes.decode('utf-8', 'backslashreplace'), which the CLI's JSON output appears to use
 *  for keys/values/header values that are not valid UTF-8. */
function pyBackslashReplace(buf) {
  let out = ''; let i = 0;
  while (i < buf.length) {
    const b = buf[i]; let n = 0; let lo = 0x80; let hi = 0xbf;
    if (b < 0x80) { out += String.fromCharCode(b); i++; continue; }
    if (b >= 0xc2 && b <= 0xdf) n = 1;
    else if (b >= 0xe0 && b <= 0xef) { n = 2; if (b === 0xe0) lo = 0xa0; if (b === 0xed) hi = 0x9f; }
    else if (b >= 0xf0 && b <= 0xf4) { n = 3; if (b === 0xf0) lo = 0x90; if (b === 0xf4) hi = 0x8f; }
    let ok = n > 0;
    if (ok) {
      for (let k = 1; k <= n; k++) {
        const c = buf[i + k];
        if (c === undefined || c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) { ok = false; break; }
      }
    }
    if (!ok) { out += `\\x${b.toString(16).padStart(2, '0')}`; i++; continue; }
    out += buf.subarray(i, i + n + 1).toString('utf8'); i += n + 1;
  }
  return out;
}

async function checkConsume(bootstrap, topic, file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
  const rows = lines.map((l) => JSON.parse(l));
  const { expected } = planDemo(makeDemoRecords());
  check(`python consume printed ${rows.length} records (expected ${expected.size})`, rows.length === expected.size);
  const seen = new Set(); const probs = []; let headerLossy = 0;
  for (const r of rows) {
    const id = `${r.partition}/${r.offset}`;
    const w = expected.get(id);
    if (!w || r.topic !== topic) { probs.push(`unexpected ${r.topic} ${id}`); continue; }
    if (seen.has(id)) probs.push(`duplicate ${id}`);
    seen.add(id);
    if (r.key !== w.key) probs.push(`${id} key ${r.key} != ${w.key}`);
    if (r.value !== w.value) probs.push(`${id} value ${r.value} != ${w.value}`);
    if (r.timestamp !== w.timestamp) probs.push(`${id} timestamp ${r.timestamp} != ${w.timestamp}`);
    // The CLI prints headers as a JSON object: repeated names collapse (last wins) and bytes are
    // shown as text. Compare against that lossy view of what we sent.
    const view = {};
    for (const [k, v] of w.headers || []) view[k] = pyBackslashReplace(Buffer.from(v));
    if (JSON.stringify(Object.entries(r.headers || {}).sort()) !== JSON.stringify(Object.entries(view).sort())) probs.push(`${id} headers ${JSON.stringify(r.headers)} != ${JSON.stringify(view)}`);
    if ((w.headers || []).length !== Object.keys(r.headers || {}).length) headerLossy++;
  }
  check('python consume: every record matches topic/partition/offset/timestamp/key/value/headers', probs.length === 0 && seen.size === expected.size,
    probs.length ? probs.slice(0, 5).join('; ') : `${seen.size} distinct records`);
  console.log(`note: ${headerLossy} records have repeated header names, which the CLI's JSON object shows once (last value)`);

  // Also cross-check against what the JS client itself fetches now.
  const c = new FabricClient(bootstrap).connect();
  try {
    let same = 0;
    for (let p = 0; p < 3; p++) {
      const { records } = await fetchAll(c, topic, p);
      for (const rec of records) {
        const row = rows.find((x) => x.partition === p && x.offset === rec.offset);
        if (row && row.timestamp === rec.timestamp && row.key === (rec.key && rec.key.toString()) && row.value === (rec.value === null ? null : rec.value.toString())) same++;
      }
    }
    check('JS fetch and python consume agree record for record', same === rows.length, `${same}/${rows.length}`);
  } finally { c.close(); }
}

async function create(bootstrap, topic, partitions) {
  const c = new FabricClient(bootstrap).connect();
  try { const r = await c.createTopic(topic, Number(partitions)); console.log(`created ${JSON.stringify(r)}`); } finally { c.close(); }
}

async function checkProduced(bootstrap, topic, pairs) {
  const want = pairs.map((p) => { const i = p.indexOf(':'); return [p.slice(0, i), p.slice(i + 1)]; });
  const c = new FabricClient(bootstrap).connect();
  try {
    const n = await c.partitionCount(topic);
    const got = [];
    for (let p = 0; p < n; p++) {
      const { records } = await fetchAll(c, topic, p);
      for (const r of records) got.push({ partition: p, offset: r.offset, key: r.key && r.key.toString(), value: r.value && r.value.toString(), timestamp: r.timestamp, headers: r.headers });
    }
    console.log(`fetched from ${topic} (${n} partitions): ${JSON.stringify(got)}`);
    check(`JS fetch of python-produced ${topic}: exactly ${want.length} records`, got.length === want.length);
    for (const [k, v] of want) {
      const r = got.find((x) => x.key === k);
      const part = partitionForKey(k, n);
      check(`key ${k} -> value ${v} on partition ${part} (murmur2 % ${n})`, r && r.value === v && r.partition === part,
        r ? `partition ${r.partition}, offset ${r.offset}, timestamp ${r.timestamp} (${new Date(r.timestamp).toISOString()}), headers ${JSON.stringify(r.headers)}` : 'missing');
    }
  } finally { c.close(); }
}

async function main() {
  const [cmd, bootstrap, topic, ...rest] = process.argv.slice(2);
  if (cmd === 'check-consume') await checkConsume(bootstrap, topic, rest[0]);
  else if (cmd === 'create') { await create(bootstrap, topic, rest[0]); return; }
  else if (cmd === 'check-produced') await checkProduced(bootstrap, topic, rest);
  else { console.error('usage: see the header of interop.js'); process.exit(2); }
  console.log(`\ninterop: ${passed} passed, ${failed} failed`);
  console.log(failed ? 'RESULT: FAIL' : 'RESULT: PASS');
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => { console.error(e); process.exit(1); });
