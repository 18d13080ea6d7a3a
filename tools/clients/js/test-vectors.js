'use strict';
// Checks this client against the test vectors of protocol/SPEC.md (section 10, the CRC check value,
// the murmur2 table of section 7 and the batch field table). The vectors are read from SPEC.md
// itself at run time, so this script follows the spec when it is regenerated.
//
//   node test-vectors.js [path/to/SPEC.md]
//
// Offline: needs no broker.

const fs = require('node:fs');
const path = require('node:path');
const fc = require('./fabric-client');

const DEFAULT_SPEC = path.join(__dirname, '..', '..', '..', 'fabric', 'protocol', 'SPEC.md');

// ---- reading SPEC.md -------------------------------------------------------------------------

/** Every fenced block ```kind name=... attr=...``` of the spec, as {kind, name, attrs, text}. */
function parseBlocks(md) {
  const blocks = [];
  const re = /^```(hex|diag|json)[ \t]+([^\n]*)\n([\s\S]*?)^```[ \t]*$/gm;
  let m;
  while ((m = re.exec(md))) {
    const attrs = {};
    const ar = /([\w-]+)=("([^"]*)"|\S+)/g; let a;
    while ((a = ar.exec(m[2]))) attrs[a[1]] = a[3] !== undefined ? a[3] : a[2];
    blocks.push({ kind: m[1], name: attrs.name, attrs, text: m[3] });
  }
  return blocks;
}

function hexOf(block) { return Buffer.from(block.text.replace(/\s+/g, ''), 'hex'); }

/** CBOR diagnostic notation as used by the spec: JSON plus h'..' byte strings. */
function parseDiag(text) {
  const json = text.replace(/h'([0-9a-fA-F]*)'/g, (_, h) => JSON.stringify({ $h: h }));
  return revive(JSON.parse(json));
}
function revive(v) {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object') {
    if (Object.keys(v).length === 1 && typeof v.$h === 'string') return Buffer.from(v.$h, 'hex');
    const o = {}; for (const k of Object.keys(v)) o[k] = revive(v[k]); return o;
  }
  if (typeof v === 'number' && Number.isInteger(v) && !Number.isSafeInteger(v)) throw new Error(`diag number ${v} not exact in JS`);
  return v;
}

/** Rows of the markdown table following `<!-- marker -->`. */
function tableAfter(md, marker) {
  const i = md.indexOf(`<!-- ${marker} -->`);
  if (i < 0) return null;
  const lines = md.slice(i).split('\n').slice(1);
  const rows = [];
  let started = false;
  for (const line of lines) {
    if (!line.startsWith('|')) { if (started) break; continue; }
    started = true;
    rows.push(line.split('|').slice(1, -1).map((c) => c.trim()));
  }
  return rows.slice(2); // drop header and separator
}

function loadSpec(specPath = DEFAULT_SPEC) {
  const md = fs.readFileSync(specPath, 'utf8');
  const blocks = parseBlocks(md);
  const hex = new Map(); const diag = new Map(); const hexBlocks = [];
  for (const b of blocks) {
    if (b.kind === 'hex') { hex.set(b.name, hexOf(b)); hexBlocks.push(b); }
    if (b.kind === 'diag') diag.set(b.name, parseDiag(b.text));
  }
  return { md, blocks, hex, diag, hexBlocks };
}

// ---- comparing -------------------------------------------------------------------------------

function deepEqual(a, b, p = '$') {
  if (Buffer.isBuffer(a) || Buffer.isBuffer(b)) {
    if (!(Buffer.isBuffer(a) && Buffer.isBuffer(b)) || !a.equals(b)) return `${p}: ${fmt(a)} != ${fmt(b)}`;
    return null;
  }
  if (typeof a === 'bigint' || typeof b === 'bigint') return BigInt(a) === BigInt(b) ? null : `${p}: ${a} != ${b}`;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return `${p}: ${fmt(a)} != ${fmt(b)}`;
    for (let i = 0; i < a.length; i++) { const e = deepEqual(a[i], b[i], `${p}[${i}]`); if (e) return e; }
    return null;
  }
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).sort(); const kb = Object.keys(b).sort();
    if (ka.join() !== kb.join()) return `${p}: keys ${ka} != ${kb}`;
    for (const k of ka) { const e = deepEqual(a[k], b[k], `${p}.${k}`); if (e) return e; }
    return null;
  }
  return Object.is(a, b) ? null : `${p}: ${fmt(a)} != ${fmt(b)}`;
}
function fmt(x) { return Buffer.isBuffer(x) ? `h'${x.toString('hex')}'` : JSON.stringify(x, (k, v) => (typeof v === 'bigint' ? `${v}n` : v)); }

// ---- the checks ------------------------------------------------------------------------------

function run(specPath) {
  const spec = loadSpec(specPath);
  const results = [];
  const check = (name, fn) => {
    try {
      const err = fn();
      results.push({ name, ok: !err, detail: err || '' });
    } catch (e) {
      results.push({ name, ok: false, detail: e.stack || String(e) });
    }
  };
  const need = (m, n) => { if (!m.has(n)) throw new Error(`vector ${n} not found in SPEC.md`); return m.get(n); };

  // §6.3 CRC check value
  check('crc32 check value CRC("123456789") = 0xCBF43926 (zlib.crc32 and pure-JS)', () => {
    const a = fc.crc32(Buffer.from('123456789')); const b = fc.crc32Js(Buffer.from('123456789'));
    if (typeof require('node:zlib').crc32 !== 'function') return 'zlib.crc32 missing (Node < 20.15)';
    return a === 0xcbf43926 && b === 0xcbf43926 ? null : `got ${a.toString(16)} / ${b.toString(16)}`;
  });

  // §7 murmur2 table
  const rows = tableAfter(spec.md, 'murmur2');
  check(`murmur2 table found (${rows ? rows.length : 0} rows)`, () => (rows && rows.length >= 9 ? null : 'missing'));
  for (const r of rows || []) {
    const keyHex = r[0] === '(empty)' ? '' : r[0].replace(/`/g, '');
    const key = Buffer.from(keyHex, 'hex');
    check(`murmur2 ${r[1]}`, () => {
      const h = fc.murmur2(key); const pos = fc.toPositive(h); const part = fc.partitionForKey(key, 1000);
      const want = [Number(r[2]), Number(r[3]), Number(r[4])];
      return h === want[0] && pos === want[1] && part === want[2] ? null : `got ${h}/${pos}/${part}, want ${want.join('/')}`;
    });
  }

  // §10.2 record batches
  const inputToRecords = (inp) => inp.timestamps.map((t, i) => ({
    timestamp: t, key: inp.keys[i], value: inp.values[i], headers: inp.headers === null ? null : inp.headers[i],
  }));
  for (const [inName, outName] of [['record-batch-input', 'record-batch'], ['record-batch-a-input', 'record-batch-a']]) {
    check(`encodeBatch(${inName}) == ${outName} byte for byte`, () => {
      const inp = need(spec.diag, inName);
      const got = fc.encodeBatch(inputToRecords(inp), { compression: inp.compression });
      const want = need(spec.hex, outName);
      return got.equals(want) ? null : `\n   got  ${got.toString('hex')}\n   want ${want.toString('hex')}`;
    });
    check(`decodeBatch(${outName}) == ${inName}`, () => {
      const inp = need(spec.diag, inName);
      const b = fc.decodeBatch(need(spec.hex, outName));
      const got = { timestamps: b.records.map((r) => r.timestamp), keys: b.records.map((r) => r.key), values: b.records.map((r) => r.value), headers: b.records.map((r) => r.headers) };
      const want = { ...inp, headers: inp.headers === null ? inp.timestamps.map(() => null) : inp.headers };
      delete want.compression;
      return deepEqual(got, want);
    });
  }
  check('record-batch-records: hex == CBOR(diag) == bytes 61.. of record-batch', () => {
    const h = need(spec.hex, 'record-batch-records'); const d = need(spec.diag, 'record-batch-records');
    const enc = fc.cborEncode(d);
    if (!enc.equals(h)) return `encode: ${enc.toString('hex')}`;
    if (!need(spec.hex, 'record-batch').subarray(61).equals(h)) return 'not the tail of record-batch';
    return deepEqual(fc.cborDecode(h), d);
  });
  check('batch field table (batch-fields: record-batch) matches parseBatchHeader', () => {
    const t = tableAfter(spec.md, 'batch-fields: record-batch');
    const buf = need(spec.hex, 'record-batch'); const hdr = fc.parseBatchHeader(buf);
    const map = { base_offset: 'baseOffset', batch_length: 'batchLength', leader_epoch: 'leaderEpoch', magic: 'magic', crc: 'crc', attributes: 'attributes', last_offset_delta: 'lastOffsetDelta', base_timestamp: 'baseTimestamp', max_timestamp: 'maxTimestamp', producer_id: 'producerId', producer_epoch: 'producerEpoch', base_sequence: 'baseSequence', record_count: 'recordCount' };
    let n = 0;
    for (const [off, size, field, bytes, value] of t) {
      const f = field.replace(/`/g, '');
      const o = Number(off); const s = Number(size);
      if (f === 'records') { if (buf.length - 61 !== s) return `records size ${buf.length - 61} != ${s}`; continue; }
      if (buf.subarray(o, o + s).toString('hex') !== bytes.replace(/`/g, '')) return `${f}: bytes differ`;
      const v = Number(value.split(' ')[0]);
      if (hdr[map[f]] !== v) return `${f}: parsed ${hdr[map[f]]}, table ${v}`;
      n++;
    }
    return n === 13 ? null : `only ${n} fields checked`;
  });
  check('record-batch-zlib (check=decode): CRC ok, attributes=1, decodes to record-batch-zlib-input', () => {
    const inp = need(spec.diag, 'record-batch-zlib-input');
    const b = fc.decodeBatch(need(spec.hex, 'record-batch-zlib'));
    if (b.compression !== 1) return `compression ${b.compression}`;
    const got = { timestamps: b.records.map((r) => r.timestamp), keys: b.records.map((r) => r.key), values: b.records.map((r) => r.value), headers: b.records.map((r) => r.headers), compression: 1 };
    return deepEqual(got, inp);
  });
  check('encodeBatch(record-batch-zlib-input) round-trips (zlib, RFC 1950 header 78 01)', () => {
    const inp = need(spec.diag, 'record-batch-zlib-input');
    const buf = fc.encodeBatch(inputToRecords(inp), { compression: 1 });
    if (buf[61] !== 0x78) return `records section starts with ${buf[61].toString(16)}, not a zlib header`;
    const plain = need(spec.hex, 'record-batch');
    // identical header except batch_length, crc and attributes
    if (!buf.subarray(23, 61).equals(plain.subarray(23, 61))) return 'header bytes 23..60 differ from the uncompressed batch';
    const b = fc.decodeBatch(buf);
    return deepEqual(b.records.map((r) => [r.timestamp, r.key, r.value, r.headers]), fc.decodeBatch(plain).records.map((r) => [r.timestamp, r.key, r.value, r.headers]));
  });

  // §10.3 requests: our encoder reproduces every request header byte for byte
  for (const b of spec.hexBlocks) {
    const n = b.name;
    if (/-request$/.test(n) && spec.diag.has(n)) {
      check(`request ${n}: cborEncode(diag) == hex`, () => {
        const got = fc.cborEncode(spec.diag.get(n)); const want = spec.hex.get(n);
        return got.equals(want) ? null : `\n   got  ${got.toString('hex')}\n   want ${want.toString('hex')}`;
      });
    }
    if (/-request-frame\d+$/.test(n)) {
      check(`request ${n} is one of the section 10.2 batches (or an idempotent batch we encode identically), and decodes`, () => {
        const f = spec.hex.get(n);
        if (f.equals(spec.hex.get('record-batch')) || f.equals(spec.hex.get('record-batch-a'))) { fc.decodeBatch(f); return null; }
        const b = fc.decodeBatch(f); // section 14: producer id, epoch and sequence in the header
        const h = fc.parseBatchHeader(f);
        if (h.producerId < 0) return 'not a known batch';
        const again = fc.encodeBatch(b.records.map((r) => ({ timestamp: r.timestamp, key: r.key, value: r.value, headers: r.headers })),
          { compression: h.attributes & 7, producerId: h.producerId, producerEpoch: h.producerEpoch, baseSequence: h.baseSequence });
        return again.equals(f) ? null : `re-encoded as ${again.toString('hex')}`;
      });
    }
    if (/-reply$/.test(n) && spec.diag.has(n)) {
      check(`reply ${n}: cborDecode(hex) == diag`, () => deepEqual(fc.cborDecode(spec.hex.get(n)), spec.diag.get(n)));
    }
    if (b.attrs['same-as']) {
      check(`equivalent encoding ${n}: decodes like ${b.attrs['same-as']}`, () => deepEqual(fc.cborDecode(spec.hex.get(n)), need(spec.diag, b.attrs['same-as'])));
    }
  }
  check('error-malformed-request: header is an array (strict decode)', () => (Array.isArray(fc.cborDecode(need(spec.hex, 'error-malformed-request'))) ? null : 'not an array'));

  // §10.3.9 fetch payloads, §6.5 reading
  check('fetch-reply-frame1: batch B as stored (base_offset 1, leader_epoch 0, same CRC)', () => {
    const f = need(spec.hex, 'fetch-reply-frame1'); const b = need(spec.hex, 'record-batch');
    if (!f.subarray(16).equals(b.subarray(16)) || !f.subarray(8, 12).equals(b.subarray(8, 12))) return 'bytes other than base_offset/leader_epoch differ';
    const h = fc.parseBatchHeader(f);
    return h.baseOffset === 1 && h.leaderEpoch === 0 ? null : `base_offset ${h.baseOffset}, leader_epoch ${h.leaderEpoch}`;
  });
  check('fetch-reply-frame1 read from offset 2: skips offset 1, delivers 2 and 3, next offset 4', () => {
    const r = fc.readFetchPayload(need(spec.hex, 'fetch-reply-frame1'), 2);
    const got = r.records.map((x) => [x.offset, x.timestamp, x.key && x.key.toString(), x.value && x.value.toString(), x.headers && x.headers.map(([k, v]) => [k, v.toString('hex')])]);
    const want = [[2, 1700000000001, null, 'world', [['trace-id', '0102']]], [3, 1700000000005, 'user-1', null, null]];
    if (JSON.stringify(got) !== JSON.stringify(want)) return `got ${JSON.stringify(got)}`;
    return r.nextOffset === 4 ? null : `nextOffset ${r.nextOffset}`;
  });
  check('fetch-reply-frame2 (empty payload): no records', () => {
    const r = fc.readFetchPayload(spec.hex.get('fetch-reply-frame2') || Buffer.alloc(0), 0);
    return r.records.length === 0 && r.nextOffset === null ? null : 'not empty';
  });
  check('readFetchPayload: a partial tail batch is ignored, a bad CRC is rejected', () => {
    const f = need(spec.hex, 'fetch-reply-frame1');
    const two = Buffer.concat([f, f.subarray(0, 70)]);
    if (fc.readFetchPayload(two, 0).records.length !== 3) return 'partial tail not ignored';
    const bad = Buffer.from(f); bad[bad.length - 1] ^= 1;
    try { fc.readFetchPayload(bad, 0); return 'corrupt batch accepted'; } catch (e) { return e.name === 'CorruptBatchError' ? null : e.message; }
  });
  check('cid as float64 (equiv-cid-float64) decodes to the integer 3', () => (need(spec.diag, 'metadata-request').cid === fc.cborDecode(need(spec.hex, 'equiv-cid-float64')).cid ? null : 'differs'));
  check('offsets key: 12.4 vector [1, "g", "t", 3] = 84 01 61 67 61 74 03', () => {
    const got = fc.cborEncode([1, 'g', 't', 3]).toString('hex');
    return got === '84016167617403' ? null : got;
  });

  return results;
}

function main() {
  const specPath = process.argv[2] || DEFAULT_SPEC;
  const results = run(specPath);
  let fail = 0;
  for (const r of results) {
    if (!r.ok) fail++;
    console.log(`${r.ok ? 'PASS' : 'FAIL'}  ${r.name}${r.ok ? '' : `  -- ${r.detail}`}`);
  }
  console.log(`\ntest-vectors: ${results.length - fail} passed, ${fail} failed`);
  console.log(fail ? 'RESULT: FAIL' : 'RESULT: PASS');
  process.exit(fail ? 1 : 0);
}

module.exports = { loadSpec, parseBlocks, parseDiag, tableAfter, deepEqual, DEFAULT_SPEC };
if (require.main === module) main();
