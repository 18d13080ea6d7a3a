'use strict';
// A Fabric wire-protocol (v1) client for Node.js, written from protocol/SPEC.md alone.
//
// Transport: one ZeroMQ DEALER socket (zeromq v6), requests matched to replies by `cid` (SPEC §1, §4).
// Headers: CBOR via cbor-x (encoder configured so it sends no tags and minimal map lengths; §3).
// Record batches: built and parsed byte for byte (SPEC §6), CRC-32/ISO-HDLC via zlib.crc32 (§6.3).
// Partitioner: Kafka murmur2 (§7).

const zlib = require('node:zlib');
const { Encoder, Decoder } = require('cbor-x');

// ------------------------------------------------------------------------------------------------
// CBOR
// ------------------------------------------------------------------------------------------------

// cbor-x defaults are NOT acceptable on the wire: `useRecords` (default true) wraps objects in its
// private record-structure tags, and `tagUint8Array` (default true) wraps Uint8Array in tag 64.
// SPEC §3 rule 5: clients MUST NOT send tags. `variableMapSize` gives minimal map lengths (without
// it cbor-x writes `ba 00000005`, which is valid but not byte-identical to the spec vectors).
const encoder = new Encoder({
  useRecords: false,
  tagUint8Array: false,
  variableMapSize: true,
  mapsAsObjects: true,
});
const fastDecoder = new Decoder({ useRecords: false, mapsAsObjects: true });

const TWO32 = 2 ** 32;

/** Prepare a JS value for the wire: integral Numbers that cbor-x would write as float64
 *  (|n| > 2^32) become BigInt so they travel as CBOR integers (SPEC §3 rule 6). Buffers,
 *  Uint8Arrays and strings are left alone. */
function wireValue(v) {
  if (typeof v === 'number') {
    if (Number.isInteger(v) && (v >= TWO32 || v < -TWO32)) {
      if (!Number.isSafeInteger(v)) throw new RangeError(`integer ${v} is not exact in JS; pass a BigInt`);
      return BigInt(v);
    }
    return v;
  }
  if (v === null || typeof v !== 'object') return v;
  if (v instanceof Uint8Array) return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(wireValue);
  const out = {};
  for (const k of Object.keys(v)) if (v[k] !== undefined) out[k] = wireValue(v[k]);
  return out;
}

/** Encode one CBOR item (copied out of cbor-x's shared buffer). */
function cborEncode(value) {
  return Buffer.from(encoder.encode(wireValue(value)));
}

/** A small, complete RFC 8949 decoder, used when cbor-x refuses valid input (cbor-x 1.6 cannot read
 *  indefinite-length/chunked text and byte strings, which SPEC §3 rule 1 / §10.4 say a client must
 *  read). Returns JS values: maps as plain objects (text keys only), byte strings as Buffer,
 *  integers as Number (or BigInt beyond 2^53), tags as {tag, value}. */
function strictDecode(buf) {
  let pos = 0;
  const need = (n) => { if (pos + n > buf.length) throw new Error('CBOR: unexpected end of data'); };
  const BREAK = Symbol('break');
  function readArg(ai) {
    if (ai < 24) return ai;
    if (ai === 24) { need(1); return buf[pos++]; }
    if (ai === 25) { need(2); const v = buf.readUInt16BE(pos); pos += 2; return v; }
    if (ai === 26) { need(4); const v = buf.readUInt32BE(pos); pos += 4; return v; }
    if (ai === 27) { need(8); const v = buf.readBigUInt64BE(pos); pos += 8; return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v; }
    throw new Error(`CBOR: invalid additional info ${ai}`);
  }
  function readChunks(major) {
    const parts = [];
    for (;;) {
      need(1);
      if (buf[pos] === 0xff) { pos++; break; }
      const ib = buf[pos++];
      if ((ib >> 5) !== major || (ib & 31) === 31) throw new Error('CBOR: bad chunk in indefinite string');
      const len = Number(readArg(ib & 31)); need(len);
      parts.push(buf.subarray(pos, pos + len)); pos += len;
    }
    return Buffer.concat(parts);
  }
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  function item(depth) {
    if (depth > 400) throw new Error('CBOR: nesting too deep');
    need(1);
    const ib = buf[pos++]; const major = ib >> 5; const ai = ib & 31;
    switch (major) {
      case 0: return readArg(ai);
      case 1: { const a = readArg(ai); return typeof a === 'bigint' || a >= Number.MAX_SAFE_INTEGER ? -1n - BigInt(a) : -1 - a; }
      case 2: case 3: {
        let b;
        if (ai === 31) b = readChunks(major);
        else { const len = Number(readArg(ai)); need(len); b = Buffer.from(buf.subarray(pos, pos + len)); pos += len; }
        return major === 2 ? b : utf8.decode(b);
      }
      case 4: {
        const out = [];
        if (ai === 31) { for (;;) { const v = item(depth + 1); if (v === BREAK) break; out.push(v); } }
        else { const n = Number(readArg(ai)); for (let i = 0; i < n; i++) { const v = item(depth + 1); if (v === BREAK) throw new Error('CBOR: unexpected break'); out.push(v); } }
        return out;
      }
      case 5: {
        const out = {};
        const n = ai === 31 ? Infinity : Number(readArg(ai));
        for (let i = 0; i < n; i++) {
          const k = item(depth + 1);
          if (k === BREAK) { if (n === Infinity) break; throw new Error('CBOR: unexpected break'); }
          if (typeof k !== 'string') throw new Error('CBOR: map keys must be text');
          const v = item(depth + 1); if (v === BREAK) throw new Error('CBOR: unexpected break');
          Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
        }
        return out;
      }
      case 6: { const tag = readArg(ai); return { tag, value: item(depth + 1) }; }
      case 7:
        if (ai === 20) return false; if (ai === 21) return true; if (ai === 22) return null;
        if (ai === 23) return undefined;
        if (ai === 25) { need(2); const v = halfToFloat(buf.readUInt16BE(pos)); pos += 2; return v; }
        if (ai === 26) { need(4); const v = buf.readFloatBE(pos); pos += 4; return v; }
        if (ai === 27) { need(8); const v = buf.readDoubleBE(pos); pos += 8; return v; }
        if (ai === 31) return BREAK;
        if (ai < 24) return { simple: ai };
        if (ai === 24) { need(1); return { simple: buf[pos++] }; }
        throw new Error('CBOR: invalid simple value');
    }
    throw new Error('unreachable');
  }
  const v = item(0);
  if (v === BREAK) throw new Error('CBOR: unexpected break');
  if (pos !== buf.length) throw new Error(`CBOR: ${buf.length - pos} trailing bytes after the item`);
  return v;
}

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1; const e = (h >> 10) & 0x1f; const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** BigInts within the safe range become Numbers (cbor-x returns every 0x1b integer as BigInt). */
function normalize(v) {
  if (typeof v === 'bigint') return (v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) ? Number(v) : v;
  if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map(normalize);
  if (v instanceof Map) { const o = {}; for (const [k, x] of v) o[k] = normalize(x); return o; }
  const out = {};
  for (const k of Object.keys(v)) out[k] = normalize(v[k]);
  return out;
}

/** Decode one CBOR item liberally (any valid encoding, SPEC §3 rule 1). */
function cborDecode(buf) {
  let v;
  try { v = fastDecoder.decode(buf); } catch (e) { v = strictDecode(buf); }
  return normalize(v);
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

const ERROR_CODES = {
  1: 'UNKNOWN_ERROR', 2: 'MALFORMED_REQUEST', 3: 'UNKNOWN_OPERATION', 4: 'UNSUPPORTED_VERSION',
  5: 'INVALID_FIELD', 6: 'FRAME_TOO_LARGE', 7: 'TOO_MANY_FRAMES', 8: 'CORRUPT_BATCH', 9: 'INVALID_BATCH',
  10: 'BATCH_TOO_LARGE', 11: 'UNKNOWN_TOPIC_OR_PARTITION', 12: 'TOPIC_ALREADY_EXISTS',
  13: 'INVALID_TOPIC_NAME', 14: 'INVALID_PARTITIONS', 15: 'INVALID_REPLICATION_FACTOR', 16: 'INVALID_CONFIG',
  17: 'OFFSET_OUT_OF_RANGE', 18: 'NOT_LEADER', 19: 'REQUEST_TIMED_OUT', 20: 'LIMIT_EXCEEDED',
  21: 'STORAGE_ERROR', 22: 'NOT_ENOUGH_REPLICAS', 23: 'BROKER_SHUTTING_DOWN', 24: 'TOPIC_AUTHORIZATION_FAILED',
  25: 'POLICY_VIOLATION', 30: 'OUT_OF_ORDER_SEQUENCE', 31: 'DUPLICATE_SEQUENCE', 32: 'INVALID_PRODUCER_EPOCH',
  40: 'COORDINATOR_NOT_AVAILABLE', 41: 'NOT_COORDINATOR', 42: 'ILLEGAL_GENERATION', 43: 'UNKNOWN_MEMBER_ID',
  44: 'REBALANCE_IN_PROGRESS', 45: 'INCONSISTENT_GROUP_PROTOCOL', 46: 'INVALID_GROUP_ID', 47: 'GROUP_NOT_EMPTY',
  48: 'GROUP_ID_NOT_FOUND', 49: 'FENCED_INSTANCE_ID', 50: 'INVALID_SESSION_TIMEOUT', 51: 'MEMBER_ID_REQUIRED',
  52: 'OFFSET_METADATA_TOO_LARGE',
};
const RETRIABLE = new Set([11, 18, 19, 21, 22, 23, 40, 41]);

class FabricError extends Error {
  /** @param {{code:number,name:string,message:string}} err the wire error map */
  constructor(err, context = {}) {
    super(`${err.name || ERROR_CODES[err.code] || 'ERROR'} (${err.code}): ${err.message}`);
    this.name = 'FabricError';
    this.code = err.code;
    this.errorName = err.name || ERROR_CODES[err.code] || `UNKNOWN_CODE_${err.code}`;
    this.brokerMessage = err.message;
    // Unknown codes are treated as non-retriable (SPEC §8).
    this.retriable = RETRIABLE.has(err.code);
    Object.assign(this, context);
  }
}
class TimeoutError extends Error {
  constructor(msg) { super(msg); this.name = 'TimeoutError'; this.retriable = true; }
}
class ConnectionResetError extends Error {
  constructor(msg) { super(msg); this.name = 'ConnectionResetError'; this.retriable = true; }
}
class CorruptBatchError extends Error {
  constructor(msg) { super(msg); this.name = 'CorruptBatchError'; this.code = 8; this.errorName = 'CORRUPT_BATCH'; }
}

// ------------------------------------------------------------------------------------------------
// murmur2 partitioner (SPEC §7)
// ------------------------------------------------------------------------------------------------

function toBytes(x) {
  if (x === null || x === undefined) return null;
  if (typeof x === 'string') return Buffer.from(x, 'utf8');
  if (Buffer.isBuffer(x)) return x;
  if (x instanceof Uint8Array) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  throw new TypeError(`expected string, Buffer, Uint8Array or null, got ${typeof x}`);
}

/** Kafka's murmur2 of raw bytes, as a signed 32-bit integer. */
function murmur2(key) {
  const data = toBytes(key);
  const length = data.length;
  const m = 0x5bd1e995;
  const r = 24;
  let h = (0x9747b28c ^ length) >>> 0;
  const length4 = length & ~3;
  for (let i = 0; i < length4; i += 4) {
    let k = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) >>> 0;
    k = Math.imul(k, m) >>> 0;
    k = (k ^ (k >>> r)) >>> 0;
    k = Math.imul(k, m) >>> 0;
    h = Math.imul(h, m) >>> 0;
    h = (h ^ k) >>> 0;
  }
  switch (length & 3) {
    case 3: h = (h ^ (data[length4 + 2] << 16)) >>> 0; // falls through
    case 2: h = (h ^ (data[length4 + 1] << 8)) >>> 0; // falls through
    case 1: h = (h ^ data[length4]) >>> 0; h = Math.imul(h, m) >>> 0;
  }
  h = (h ^ (h >>> 13)) >>> 0;
  h = Math.imul(h, m) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  return h | 0;
}
const toPositive = (h) => h & 0x7fffffff;
/** partition(key, n) = toPositive(murmur2(key)) % n */
function partitionForKey(key, numPartitions) {
  return toPositive(murmur2(key)) % numPartitions;
}

// ------------------------------------------------------------------------------------------------
// Record batches (SPEC §6)
// ------------------------------------------------------------------------------------------------

const BATCH_HEADER_BYTES = 61;

function crc32(buf) {
  if (typeof zlib.crc32 === 'function') return zlib.crc32(buf) >>> 0; // Node >= 20.15
  return crc32Js(buf);
}
let CRC_TABLE = null;
function crc32Js(buf) {
  if (!CRC_TABLE) {
    CRC_TABLE = new Uint32Array(256);
    for (let n = 0; n < 256; n++) { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; CRC_TABLE[n] = c >>> 0; }
  }
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const toBig = (x) => (typeof x === 'bigint' ? x : BigInt(x));
/** BigInt -> Number when exact, else keep BigInt */
const fromBig = (b) => (b >= -BigInt(Number.MAX_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b);

function normHeaders(h) {
  if (h === null || h === undefined) return null;
  if (!Array.isArray(h)) h = Object.entries(h); // {name: value} convenience
  if (h.length === 0) return null;
  return h.map(([name, value]) => {
    if (typeof name !== 'string') throw new TypeError('header names must be strings');
    const b = toBytes(value);
    if (b === null) throw new TypeError(`header ${name}: values must be bytes (null is not allowed by SPEC §6.4)`);
    return [name, b];
  });
}

/**
 * Build one record batch exactly as SPEC §6.1/§11 step 4.
 * @param {Array<{key?:any, value?:any, headers?:any, timestamp?:number|bigint}>} records
 * @param {{compression?:0|1, now?:number}} opts
 * @returns {Buffer}
 */
function encodeBatch(records, opts = {}) {
  const count = records.length;
  if (count < 1) throw new RangeError('a batch needs at least one record');
  const compression = opts.compression || 0;
  if (compression !== 0 && compression !== 1) throw new RangeError('compression must be 0 (none) or 1 (zlib)');
  const now = opts.now !== undefined ? opts.now : Date.now();
  const ts = records.map((r) => toBig(r.timestamp !== undefined && r.timestamp !== null ? r.timestamp : now));
  const ts0 = ts[0];
  let tsMax = ts0;
  for (const t of ts) { if (t < 0n) throw new RangeError('timestamps must be >= 0'); if (t > tsMax) tsMax = t; }
  // Deltas as CBOR integers: Numbers within ±2^32 (cbor-x writes them as ints), else BigInt.
  const deltas = ts.map((t) => { const d = t - ts0; return (d < BigInt(TWO32) && d > -BigInt(TWO32)) ? Number(d) : d; });
  const keys = records.map((r) => toBytes(r.key));
  const values = records.map((r) => toBytes(r.value));
  const headers = records.map((r) => normHeaders(r.headers));
  let section = Buffer.from(encoder.encode([deltas, keys, values, headers]));
  if (compression === 1) section = zlib.deflateSync(section, { level: opts.level !== undefined ? opts.level : 1 });

  const rest = Buffer.alloc(40 + section.length); // bytes 21..end
  rest.writeInt16BE(compression, 0); // attributes (bit 3 = 0: create time)
  rest.writeInt32BE(count - 1, 2); // last_offset_delta
  rest.writeBigInt64BE(ts0, 6); // base_timestamp
  rest.writeBigInt64BE(tsMax, 14); // max_timestamp
  // SPEC 14: an idempotent producer's id, epoch and first sequence; -1 otherwise
  rest.writeBigInt64BE(toBig(opts.producerId !== undefined ? opts.producerId : -1), 22); // producer_id
  rest.writeInt16BE(opts.producerEpoch !== undefined ? opts.producerEpoch : -1, 30); // producer_epoch
  rest.writeInt32BE(opts.baseSequence !== undefined ? opts.baseSequence : -1, 32); // base_sequence
  rest.writeInt32BE(count, 36); // record_count
  section.copy(rest, 40);

  const head = Buffer.alloc(21);
  head.writeBigInt64BE(0n, 0); // base_offset: clients send 0
  head.writeInt32BE(rest.length + 9, 8); // batch_length = total - 12
  head.writeInt32BE(-1, 12); // leader_epoch: clients send -1
  head.writeInt8(1, 16); // magic
  head.writeUInt32BE(crc32(rest), 17);
  return Buffer.concat([head, rest]);
}

function checkColumns(cols, count) {
  if (!Array.isArray(cols) || cols.length !== 4) throw new CorruptBatchError('records section is not an array of 4 columns');
  for (let c = 0; c < 4; c++) {
    if (!Array.isArray(cols[c]) || cols[c].length !== count) throw new CorruptBatchError(`column ${c} does not have record_count (${count}) elements`);
  }
}

/** Parse the fixed header of the batch at `buf` (a Buffer holding exactly one batch). */
function parseBatchHeader(buf) {
  return {
    baseOffset: fromBig(buf.readBigInt64BE(0)),
    batchLength: buf.readInt32BE(8),
    leaderEpoch: buf.readInt32BE(12),
    magic: buf.readInt8(16),
    crc: buf.readUInt32BE(17),
    attributes: buf.readInt16BE(21),
    lastOffsetDelta: buf.readInt32BE(23),
    baseTimestamp: fromBig(buf.readBigInt64BE(27)),
    maxTimestamp: fromBig(buf.readBigInt64BE(35)),
    producerId: fromBig(buf.readBigInt64BE(43)),
    producerEpoch: buf.readInt16BE(51),
    baseSequence: buf.readInt32BE(53),
    recordCount: buf.readInt32BE(57),
  };
}

/** Decode one whole batch (CRC verified) into its header and records (SPEC §6.4). */
function decodeBatch(buf, { verifyCrc = true } = {}) {
  if (buf.length < 62) throw new CorruptBatchError(`batch of ${buf.length} bytes is shorter than 62`);
  const h = parseBatchHeader(buf);
  if (h.batchLength + 12 !== buf.length) throw new CorruptBatchError('batch_length does not match the batch size');
  if (verifyCrc) {
    const actual = crc32(buf.subarray(21));
    if (actual !== h.crc) throw new CorruptBatchError(`CRC mismatch: stored ${h.crc.toString(16)}, computed ${actual.toString(16)}`);
  }
  if (h.magic !== 1) throw new CorruptBatchError(`unknown magic ${h.magic}`);
  const compression = h.attributes & 7;
  let section = buf.subarray(61);
  if (compression === 1) {
    try { section = zlib.inflateSync(section); } catch (e) { throw new CorruptBatchError(`zlib: ${e.message}`); }
  } else if (compression !== 0) throw new CorruptBatchError(`unknown compression ${compression}`);
  let cols;
  try { cols = cborDecode(section); } catch (e) { throw new CorruptBatchError(`records CBOR: ${e.message}`); }
  checkColumns(cols, h.recordCount);
  const logAppend = (h.attributes & 8) !== 0;
  const base = toBig(h.baseOffset);
  const baseTs = toBig(h.baseTimestamp);
  const records = [];
  for (let i = 0; i < h.recordCount; i++) {
    let d = cols[0][i];
    // Column 0 is "int"; accept integral floats as section 3 rule 6 allows for headers.
    if (typeof d === 'number' && !Number.isInteger(d)) throw new CorruptBatchError(`record ${i}: timestamp delta ${d} is not an integer`);
    if (typeof d !== 'number' && typeof d !== 'bigint') throw new CorruptBatchError(`record ${i}: timestamp delta is not an integer`);
    const key = cols[1][i]; const value = cols[2][i]; const hdrs = cols[3][i];
    if (key !== null && !Buffer.isBuffer(key)) throw new CorruptBatchError(`record ${i}: key is not bytes or null`);
    if (value !== null && !Buffer.isBuffer(value)) throw new CorruptBatchError(`record ${i}: value is not bytes or null`);
    if (hdrs !== null) {
      if (!Array.isArray(hdrs)) throw new CorruptBatchError(`record ${i}: headers are not an array or null`);
      for (const p of hdrs) {
        if (!Array.isArray(p) || p.length !== 2 || typeof p[0] !== 'string' || !Buffer.isBuffer(p[1])) throw new CorruptBatchError(`record ${i}: a header is not [text, bytes]`);
      }
    }
    records.push({
      offset: fromBig(base + BigInt(i)),
      timestamp: logAppend ? h.maxTimestamp : fromBig(baseTs + toBig(d)),
      key, value, headers: hdrs,
    });
  }
  return { ...h, compression, logAppendTime: logAppend, records };
}

/**
 * Read a fetch payload frame: whole batches back to back (SPEC §6.5). Records below
 * `requestedOffset` are skipped. Returns {records, batches, nextOffset}; nextOffset is null when
 * the payload held no complete batch.
 */
function readFetchPayload(data, requestedOffset = 0) {
  const req = toBig(requestedOffset);
  const out = []; const batches = [];
  let pos = 0; let nextOffset = null;
  while (data.length - pos >= BATCH_HEADER_BYTES) {
    const batchLength = data.readInt32BE(pos + 8);
    const size = batchLength + 12;
    if (size < 62 || pos + size > data.length) break; // corrupt, or a partial tail: stop
    const batchBuf = data.subarray(pos, pos + size);
    const baseOffset = batchBuf.readBigInt64BE(0);
    const lastOffset = baseOffset + BigInt(batchBuf.readInt32BE(23));
    const stored = batchBuf.readUInt32BE(17);
    const actual = crc32(batchBuf.subarray(21));
    if (stored !== actual) throw new CorruptBatchError(`batch at offset ${baseOffset}: CRC mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})`);
    if (lastOffset >= req) {
      const b = decodeBatch(batchBuf, { verifyCrc: false });
      for (const r of b.records) if (toBig(r.offset) >= req) out.push(r);
      batches.push({ ...b, records: undefined });
    }
    nextOffset = fromBig(lastOffset + 1n);
    pos += size;
  }
  return { records: out, batches, nextOffset };
}

// ------------------------------------------------------------------------------------------------
// The client
// ------------------------------------------------------------------------------------------------

let zmq = null;
function loadZmq() { if (!zmq) zmq = require('zeromq'); return zmq; }

class FabricClient {
  /**
   * @param {string} bootstrap "host:port" or "tcp://host:port"
   * @param {{timeoutMs?:number, clientName?:string}} opts
   */
  constructor(bootstrap = '127.0.0.1:7171', opts = {}) {
    this.endpoint = bootstrap.startsWith('tcp://') ? bootstrap : `tcp://${bootstrap}`;
    this.timeoutMs = opts.timeoutMs || 30000;
    this.clientName = opts.clientName || 'fabric-js/0.1.0';
    this.nextCid = 1; // one counter per client, starting at 1 (SPEC §1)
    this.pending = new Map(); // cid -> {resolve, reject, timer, op}
    this.socket = null;
    this.sendChain = Promise.resolve();
    this.closed = false;
    this.log = opts.log || ((...a) => console.error('[fabric-client]', ...a));
  }

  connect() {
    const { Dealer } = loadZmq();
    const sock = new Dealer({ linger: 0 });
    sock.connect(this.endpoint);
    this.socket = sock;
    this.sendChain = Promise.resolve();
    this._receiveLoop(sock);
    return this;
  }

  async _receiveLoop(sock) {
    try {
      for await (const frames of sock) this._onReply(frames);
    } catch (e) {
      if (sock === this.socket && !this.closed) this.log('receive loop ended:', e.message);
    }
  }

  _onReply(frames) {
    let header;
    try { header = cborDecode(frames[0]); } catch (e) { this.log('undecodable reply header:', e.message); return; }
    if (header === null || typeof header !== 'object' || Array.isArray(header)) { this.log('reply header is not a map'); return; }
    let cid = header.cid;
    if (cid === null || cid === undefined) {
      // SPEC §4.2: unmatched; fail the single in-flight request if there is exactly one.
      this.log('reply with cid null:', JSON.stringify(header.error || header));
      if (this.pending.size !== 1) return;
      cid = this.pending.keys().next().value;
    }
    const p = this.pending.get(cid);
    if (!p) { this.log(`ignoring reply for unknown cid ${cid}`); return; }
    this.pending.delete(cid);
    clearTimeout(p.timer);
    const reply = { header, payload: frames.slice(1) };
    if (header.error) p.reject(Object.assign(new FabricError(header.error, { op: header.op, cid: header.cid }), { reply }));
    else p.resolve(reply);
  }

  _send(frames) {
    // zeromq v6 allows one send() at a time per socket: serialise.
    const sock = this.socket;
    const next = this.sendChain.then(() => sock.send(frames));
    this.sendChain = next.catch(() => {});
    return next;
  }

  /** Lazy pirate (SPEC §1): close with linger 0, reconnect, fail whatever was in flight. */
  _reset(reason) {
    const old = this.socket;
    this.socket = null;
    try { if (old) old.close(); } catch (e) { /* ignore */ }
    const pend = [...this.pending.values()];
    this.pending.clear();
    for (const p of pend) { clearTimeout(p.timer); p.reject(new ConnectionResetError(`connection reset (${reason}); request ${p.op} abandoned`)); }
    if (!this.closed) this.connect();
  }

  /**
   * Send one request. `fields` are the operation's own fields; envelope (op, v, cid) is added first.
   * @returns {Promise<{header:object, payload:Buffer[]}>} rejects with FabricError on an error reply
   */
  request(op, fields = {}, { payload = [], v = 1, timeoutMs, expectReply = true } = {}) {
    if (!this.socket) throw new Error('not connected');
    const cid = this.nextCid++;
    const header = cborEncode({ op, v, cid, ...fields });
    return this._dispatch(cid, op, [header, ...payload], timeoutMs, expectReply);
  }

  /**
   * Send pre-encoded frames (for tests of malformed requests). `cid` is what the raw header carries
   * (replies are matched by it), or null when the broker cannot read it (the reply's cid is null and
   * is matched only if this is the only request in flight).
   */
  rawRequest(frames, { cid = null, timeoutMs } = {}) {
    const key = cid === null ? Symbol('raw') : cid;
    return this._dispatch(key, '(raw)', frames.map((f) => Buffer.from(f)), timeoutMs, true);
  }

  _dispatch(cid, op, frames, timeoutMs, expectReply) {
    const deadline = timeoutMs || this.timeoutMs;
    if (!expectReply) return this._send(frames).then(() => null);
    return new Promise((resolve, reject) => {
      if (this.pending.has(cid)) { reject(new Error(`cid ${String(cid)} already in flight`)); return; }
      const timer = setTimeout(() => {
        if (!this.pending.has(cid)) return;
        this.pending.delete(cid);
        reject(new TimeoutError(`${op} (cid ${String(cid)}) got no reply within ${deadline} ms`));
        this._reset(`timeout of ${op}`);
      }, deadline);
      this.pending.set(cid, { resolve, reject, timer, op });
      this._send(frames).catch((e) => {
        if (!this.pending.has(cid)) return;
        this.pending.delete(cid); clearTimeout(timer); reject(e);
      });
    });
  }

  close() {
    this.closed = true;
    for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(new ConnectionResetError('client closed')); }
    this.pending.clear();
    if (this.socket) { try { this.socket.close(); } catch (e) { /* ignore */ } this.socket = null; }
  }

  // ---- operations --------------------------------------------------------------------------

  async apiVersions(client = this.clientName) {
    return (await this.request('api_versions', { client })).header;
  }

  async metadata(topics = null, { allowAutoCreate = false } = {}) {
    return (await this.request('metadata', { topics, allow_auto_create: allowAutoCreate })).header;
  }

  /** Partition count of a topic (throws the per-topic error). */
  async partitionCount(topic, opts) {
    const md = await this.metadata([topic], opts);
    const t = md.topics[0];
    if (t.error) throw new FabricError(t.error, { topic });
    return t.partitions.length;
  }

  async createTopics(topics, { validateOnly = false, timeoutMs = 30000 } = {}) {
    return (await this.request('create_topics', { topics, validate_only: validateOnly, timeout_ms: timeoutMs })).header;
  }

  /** Create one topic; throws its per-topic error (e.g. TOPIC_ALREADY_EXISTS). */
  async createTopic(name, partitions = null, { configs = {}, replicationFactor = null } = {}) {
    const r = await this.createTopics([{ name, partitions, replication_factor: replicationFactor, configs }]);
    const t = r.topics[0];
    if (t.error) throw new FabricError(t.error, { topic: name });
    return t;
  }

  async deleteTopics(topics) { return (await this.request('delete_topics', { topics })).header; }
  async listTopics(internal = false) { return (await this.request('list_topics', { internal })).header; }
  async describeTopics(topics = null) { return (await this.request('describe_topics', { topics })).header; }
  async brokerStats() { return (await this.request('broker_stats', {})).header; }

  /**
   * Produce several batches in one request. Each item: {topic, partition, records} or
   * {topic, partition, batch: Buffer}. Returns the reply's `results` (per-batch errors are
   * left in `results[i].error`, not thrown). With acks = 0 resolves to null once sent.
   */
  async produceBatches(items, { acks = 1, timeoutMs = 30000, compression = 0 } = {}) {
    const batches = items.map(({ topic, partition }) => ({ topic, partition }));
    const payload = items.map((it) => it.batch || encodeBatch(it.records, { compression: it.compression !== undefined ? it.compression : compression }));
    const r = await this.request('produce', { acks, timeout_ms: timeoutMs, batches }, { payload, expectReply: acks !== 0 });
    return r ? r.header.results : null;
  }

  /** Produce one batch of records to one partition; throws the per-batch error. */
  async produce(topic, partition, records, opts = {}) {
    const results = await this.produceBatches([{ topic, partition, records }], opts);
    if (results === null) return null;
    const r = results[0];
    if (r.error) throw new FabricError(r.error, { topic, partition });
    return r;
  }

  /**
   * Fetch several partitions. parts: [{topic, partition, offset, maxBytes?}]. Returns per-partition
   * {topic, partition, highWatermark, logStartOffset, error, records, batches, nextOffset}.
   */
  async fetchPartitions(parts, { maxWaitMs = 0, minBytes = 1, maxBytes = 16777216, timeoutMs } = {}) {
    const partitions = parts.map((p) => ({ topic: p.topic, partition: p.partition, offset: p.offset, max_bytes: p.maxBytes || 1048576 }));
    const r = await this.request('fetch', { max_wait_ms: maxWaitMs, min_bytes: minBytes, max_bytes: maxBytes, partitions },
      { timeoutMs: (timeoutMs || this.timeoutMs) + maxWaitMs });
    const meta = r.header.partitions;
    if (r.payload.length !== meta.length) throw new Error(`fetch reply has ${r.payload.length} payload frames for ${meta.length} partitions`);
    return meta.map((m, i) => {
      const base = { topic: m.topic, partition: m.partition, highWatermark: m.high_watermark, logStartOffset: m.log_start_offset, error: m.error || null };
      if (m.error) return { ...base, records: [], batches: [], nextOffset: parts[i].offset };
      const data = r.payload[i];
      const { records, batches, nextOffset } = readFetchPayload(data, parts[i].offset);
      return { ...base, records, batches, nextOffset: nextOffset === null ? parts[i].offset : nextOffset, payloadBytes: data.length };
    });
  }

  /** Fetch one partition from `offset`; throws the per-partition error. */
  async fetch(topic, partition, offset, opts = {}) {
    const [p] = await this.fetchPartitions([{ topic, partition, offset, maxBytes: opts.partitionMaxBytes }], opts);
    if (p.error) throw new FabricError(p.error, { topic, partition });
    return p;
  }

  /** queries: [{topic, partition, at}] with at = "earliest" | "latest" | timestamp ms. */
  async listOffsetsMany(queries) {
    return (await this.request('list_offsets', { partitions: queries.map((q) => ({ topic: q.topic, partition: q.partition, at: q.at === undefined ? 'latest' : q.at })) })).header.partitions;
  }

  async listOffsets(topic, partition, at = 'latest') {
    const [r] = await this.listOffsetsMany([{ topic, partition, at }]);
    if (r.error) throw new FabricError(r.error, { topic, partition });
    return r;
  }
}

module.exports = {
  FabricClient, FabricError, TimeoutError, ConnectionResetError, CorruptBatchError, ERROR_CODES,
  murmur2, toPositive, partitionForKey,
  encodeBatch, decodeBatch, parseBatchHeader, readFetchPayload, crc32, crc32Js,
  cborEncode, cborDecode, strictDecode, wireValue,
};
