'use strict';
// End-to-end demo against a live broker:
//
//   node demo.js [HOST:PORT] [TOPIC]        (default 127.0.0.1:7171, topic js-demo-<time>)
//
// Creates TOPIC with 3 partitions, produces 1000 keyed records (murmur2-partitioned, with headers,
// tombstones, explicit millisecond timestamps > 2^32, out-of-order timestamps, one delta > 2^32,
// half the batches zlib-compressed), fetches them back and checks every key, value, header,
// timestamp and offset; then probes error handling (malformed requests, the spec's rejected-request
// vectors, per-item errors, long poll, timeout + reconnect). Prints PASS/FAIL per check and exits
// non-zero if any failed.

const fc = require('./fabric-client');
const { FabricClient, FabricError, encodeBatch, partitionForKey } = fc;

const T0 = 1700000000000; // ms; > 2^32, so cbor-x alone would send it as a float64
const N_RECORDS = 1000;
const PARTITIONS = 3;
const BATCH_SIZE = 100;

/** The demo's records, deterministic in i. */
function makeDemoRecords(n = N_RECORDS) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const key = `user-${i % 200}`;
    const value = i % 97 === 13 ? null : `value-${i}-${'x'.repeat(i % 17)}`; // a few tombstones
    let headers;
    if (i % 3 === 0) headers = null;
    else if (i % 3 === 1) { const b = Buffer.alloc(4); b.writeUInt32BE(i); headers = [['seq', b], ['trace-id', Buffer.from([i & 255, 0, 255, 0x80])]]; }
    else headers = [['dup', Buffer.from('a')], ['dup', Buffer.from('b')], ['ünï-名', Buffer.alloc(0)]];
    let timestamp = T0 + i * 10;
    if (i % 50 === 49) timestamp -= 5000; // out of order: a negative delta inside its batch
    if (i === 998) timestamp = T0 + 6000000000; // a delta above 2^32 ms within its batch
    out.push({ i, key, value, headers, timestamp });
  }
  return out;
}

/** Where each record goes and which offset it gets, given the batching of this demo. */
function planDemo(records, partitions = PARTITIONS) {
  const perPartition = Array.from({ length: partitions }, () => []);
  for (const r of records) perPartition[partitionForKey(r.key, partitions)].push(r);
  const expected = new Map(); // `${p}/${offset}` -> record
  perPartition.forEach((list, p) => list.forEach((r, off) => expected.set(`${p}/${off}`, { ...r, partition: p, offset: off })));
  return { perPartition, expected };
}

const hdrStr = (h) => (h === null ? 'null' : JSON.stringify(h.map(([k, v]) => [k, Buffer.from(v).toString('hex')])));
const bstr = (b) => (b === null || b === undefined ? null : Buffer.from(b).toString('utf8'));

/** Compare a fetched record with the expected one; returns a problem string or null. */
function compareRecord(got, want) {
  if (got.offset !== want.offset) return `offset ${got.offset} != ${want.offset}`;
  if (bstr(got.key) !== want.key) return `key ${bstr(got.key)} != ${want.key}`;
  if (bstr(got.value) !== want.value) return `value ${bstr(got.value)} != ${want.value}`;
  if (got.timestamp !== want.timestamp) return `timestamp ${got.timestamp} != ${want.timestamp}`;
  const wh = want.headers === null ? null : want.headers.map(([k, v]) => [k, Buffer.from(v)]);
  if (hdrStr(got.headers) !== hdrStr(wh)) return `headers ${hdrStr(got.headers)} != ${hdrStr(wh)}`;
  return null;
}

async function fetchAll(client, topic, partition, { from = 0, partitionMaxBytes = 1048576 } = {}) {
  const hw = (await client.listOffsets(topic, partition, 'latest')).offset;
  const records = []; let offset = from; let round = 0;
  while (offset < hw) {
    const r = await client.fetch(topic, partition, offset, { maxWaitMs: 0, partitionMaxBytes });
    if (r.nextOffset === offset) throw new Error(`no progress at offset ${offset}`);
    records.push(...r.records); offset = r.nextOffset; round++;
    if (round > 10000) throw new Error('too many fetch rounds');
  }
  return { records, rounds: round, highWatermark: hw };
}

async function main() {
  const bootstrap = process.argv[2] || '127.0.0.1:7171';
  const topic = process.argv[3] || `js-demo-${Date.now()}`;
  const results = [];
  const check = (name, ok, detail = '') => {
    results.push({ name, ok: !!ok });
    console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}${detail ? `  -- ${detail}` : ''}`);
  };
  const expectError = async (name, promise, code, extra) => {
    try { const v = await promise; check(name, false, `expected error ${code}, got ${JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? String(x) : x))}`); return null; } catch (e) {
      const ok = e instanceof FabricError && e.code === code && (!extra || extra(e));
      check(name, ok, ok ? `${e.errorName}: ${e.brokerMessage}` : `${e.name}: ${e.message}`);
      return e;
    }
  };

  const client = new FabricClient(bootstrap, { timeoutMs: 10000 }).connect();
  console.log(`# Fabric JS client demo: broker ${bootstrap}, topic ${topic}\n`);
  try {
    // ---- api_versions -------------------------------------------------------------------------
    const av = await client.apiVersions('fabric-js-demo/0.1');
    const need = ['api_versions', 'metadata', 'create_topics', 'produce', 'fetch', 'list_offsets'];
    check('api_versions: produce/fetch/metadata/... served at v1', need.every((op) => av.ops[op] && av.ops[op][0] <= 1 && av.ops[op][1] >= 1),
      `broker ${av.broker.version}, node ${av.broker.node_id}, cluster ${av.broker.cluster_id}, batch_bytes_max ${av.limits.batch_bytes_max}`);

    // ---- create_topics + metadata -------------------------------------------------------------
    const ct = await client.createTopic(topic, PARTITIONS);
    check(`create_topics ${topic} with ${PARTITIONS} partitions`, ct.partitions === PARTITIONS && ct.replication_factor === 1, JSON.stringify(ct));
    await expectError('create_topics again: per-topic TOPIC_ALREADY_EXISTS (12)', client.createTopic(topic, PARTITIONS), 12);
    const md = await client.metadata([topic, `${topic}-missing`]);
    check('metadata: partition count 3, leader = broker, unknown topic has per-topic error 11',
      md.topics[0].partitions.length === PARTITIONS && md.topics[0].partitions.every((p) => p.leader === md.brokers[0].node_id) &&
      /^[0-9a-f]{32}$/.test(md.topics[0].topic_id) && md.topics[1].error && md.topics[1].error.code === 11,
      `brokers ${JSON.stringify(md.brokers)}`);

    // ---- produce 1000 records --------------------------------------------------------------------
    const records = makeDemoRecords();
    const { perPartition, expected } = planDemo(records);
    check('murmur2 spreads the 1000 keyed records over all 3 partitions', perPartition.every((l) => l.length > 0), perPartition.map((l) => l.length).join(' / '));
    const t0 = Date.now();
    // One produce request per partition, each with several batches (alternately plain and zlib),
    // all three requests in flight at once on one connection (replies matched by cid).
    const produced = await Promise.all(perPartition.map((list, p) => {
      const items = [];
      for (let b = 0; b * BATCH_SIZE < list.length; b++) {
        items.push({ topic, partition: p, records: list.slice(b * BATCH_SIZE, (b + 1) * BATCH_SIZE), compression: b % 2 });
      }
      return client.produceBatches(items, { acks: 1 });
    }));
    let okBase = true; let detail = [];
    produced.forEach((res, p) => {
      let expect = 0;
      for (const r of res) {
        if (r.error || r.base_offset !== expect || r.partition !== p || r.log_append_time !== -1) { okBase = false; detail.push(JSON.stringify(r)); }
        expect += Math.min(BATCH_SIZE, perPartition[p].length - expect);
      }
    });
    check(`produce: ${N_RECORDS} records in ${produced.flat().length} batches (3 requests in flight), consecutive base_offsets`, okBase,
      okBase ? `${Date.now() - t0} ms` : detail.join('; '));

    // ---- list_offsets -------------------------------------------------------------------------
    const lo = await client.listOffsetsMany([0, 1, 2].flatMap((p) => [{ topic, partition: p, at: 'earliest' }, { topic, partition: p, at: 'latest' }]));
    check('list_offsets earliest = 0 and latest = records per partition',
      [0, 1, 2].every((p) => lo[2 * p].offset === 0 && lo[2 * p + 1].offset === perPartition[p].length && lo[2 * p].timestamp === -1),
      lo.map((x) => `${x.partition}:${x.offset}`).join(' '));

    // by timestamp: the first record (offset order) with timestamp >= target
    const p0 = perPartition[0];
    const target = p0[Math.floor(p0.length / 2)].timestamp; // an in-order record's timestamp
    const firstAtOrAfter = (list, t) => { const i = list.findIndex((r) => r.timestamp >= t); return i < 0 ? [-1, -1] : [i, list[i].timestamp]; };
    const [wantOff, wantTs] = firstAtOrAfter(p0, target);
    const byTs = await client.listOffsets(topic, 0, target); // sent as a CBOR integer (BigInt)
    check(`list_offsets at=${target} (int64) -> first record with timestamp >= it`, byTs.offset === wantOff && byTs.timestamp === wantTs,
      `got offset ${byTs.offset} ts ${byTs.timestamp}, expected ${wantOff} ts ${wantTs}`);
    // The same question with `at` as a float64, as plain cbor-x would send it (SPEC §3 rule 6).
    const { Encoder } = require('cbor-x');
    const plainCborX = new Encoder({ useRecords: false, tagUint8Array: false, variableMapSize: true });
    const floatHdr = Buffer.from(plainCborX.encode({ op: 'list_offsets', v: 1, cid: 900001, partitions: [{ topic, partition: 0, at: target }] }));
    check('(cbor-x writes the timestamp as float64: fb...)', floatHdr.includes(Buffer.from('fb', 'hex')), '');
    const byTsFloat = (await client.rawRequest([floatHdr], { cid: 900001 })).header.partitions[0];
    check('list_offsets with `at` as integral float64: same answer', byTsFloat.offset === byTs.offset && byTsFloat.timestamp === byTs.timestamp, JSON.stringify(byTsFloat));
    // A timestamp before an out-of-order record: p0 holds records with negative deltas.
    const ooo = p0.findIndex((r, i) => i > 0 && r.timestamp < p0[i - 1].timestamp);
    if (ooo > 0) {
      const t = p0[ooo].timestamp; const [wo, wt] = firstAtOrAfter(p0, t);
      const r = await client.listOffsets(topic, 0, t);
      check(`list_offsets at an out-of-order timestamp (${t}) -> first offset with timestamp >= it`, r.offset === wo && r.timestamp === wt,
        `got offset ${r.offset} ts ${r.timestamp}, expected ${wo} ts ${wt}`);
    }
    const future = await client.listOffsets(topic, 0, T0 + 10 * 6000000000);
    check('list_offsets at a future timestamp -> offset -1, timestamp -1', future.offset === -1 && future.timestamp === -1, JSON.stringify(future));

    // ---- fetch everything back ------------------------------------------------------------------
    let fetched = 0; let bad = []; let rounds = 0;
    for (let p = 0; p < PARTITIONS; p++) {
      const all = await fetchAll(client, topic, p, { partitionMaxBytes: 2048 }); // small: about one batch per fetch
      rounds += all.rounds;
      if (all.records.length !== perPartition[p].length) bad.push(`p${p}: ${all.records.length} records, expected ${perPartition[p].length}`);
      for (const got of all.records) {
        const want = expected.get(`${p}/${got.offset}`);
        const prob = want ? compareRecord(got, want) : `unexpected offset ${got.offset}`;
        if (prob) bad.push(`p${p}@${got.offset}: ${prob}`);
        fetched++;
      }
    }
    check(`fetch: all ${N_RECORDS} records back with exact key/value/headers/timestamp/offset (${rounds} fetches)`, fetched === N_RECORDS && bad.length === 0,
      bad.length ? bad.slice(0, 5).join('; ') : `${fetched} records`);

    // one fetch request for all three partitions, big limits: multi-batch payload frames
    const multi = await client.fetchPartitions([0, 1, 2].map((p) => ({ topic, partition: p, offset: 0, maxBytes: 16 << 20 })), { maxWaitMs: 0 });
    check('fetch 3 partitions in one request: one payload frame each, whole logs, CRCs verified',
      multi.every((m, p) => !m.error && m.records.length === perPartition[p].length && m.highWatermark === perPartition[p].length && m.logStartOffset === 0 && m.batches.length === Math.ceil(perPartition[p].length / BATCH_SIZE)),
      multi.map((m) => `p${m.partition}: ${m.records.length} recs / ${m.batches.length} batches / ${m.payloadBytes} B`).join(', '));
    check('fetched batches carry compression flags as produced (even batches plain, odd zlib)',
      multi.every((m) => m.batches.every((b, i) => b.compression === i % 2 && b.leaderEpoch === 0)), '');

    // mid-batch fetch: the broker returns the whole batch, the client skips the records below
    const mid = BATCH_SIZE + 37;
    const mr = await client.fetch(topic, 0, mid, { maxWaitMs: 0, partitionMaxBytes: 1 });
    check(`fetch from mid-batch offset ${mid}: batch starts at ${mr.batches[0] && mr.batches[0].baseOffset}, first delivered record is ${mr.records[0] && mr.records[0].offset}`,
      mr.batches[0].baseOffset === BATCH_SIZE && mr.records[0].offset === mid && mr.nextOffset === 2 * BATCH_SIZE && !compareRecord(mr.records[0], expected.get(`0/${mid}`)), '');

    await expectError('fetch beyond the high watermark: per-partition OFFSET_OUT_OF_RANGE (17)',
      client.fetch(topic, 0, perPartition[0].length + 5, { maxWaitMs: 0 }), 17);
    await expectError('fetch from a partition that does not exist: UNKNOWN_TOPIC_OR_PARTITION (11), retriable',
      client.fetch(topic, 7, 0, { maxWaitMs: 0 }), 11, (e) => e.retriable);

    // ---- long poll on a side topic ------------------------------------------------------------
    const lpTopic = `${topic}-lp`;
    await client.createTopic(lpTopic, 1);
    let t1 = Date.now();
    const empty = await client.fetch(lpTopic, 0, 0, { maxWaitMs: 300, minBytes: 1 });
    const waited = Date.now() - t1;
    check('fetch at the high watermark with max_wait_ms 300: empty payload after the wait', empty.records.length === 0 && empty.payloadBytes === 0 && waited >= 250, `${waited} ms`);
    t1 = Date.now();
    const parked = client.fetch(lpTopic, 0, 0, { maxWaitMs: 5000, minBytes: 1 });
    await new Promise((r) => setTimeout(r, 200));
    const prodRes = await client.produce(lpTopic, 0, [{ key: 'k', value: 'woke', timestamp: T0 }]);
    const woke = await parked;
    check('long poll: a parked fetch is answered by an append (reply order != request order)',
      woke.records.length === 1 && bstr(woke.records[0].value) === 'woke' && Date.now() - t1 < 3000 && prodRes.base_offset === 0, `${Date.now() - t1} ms`);
    await client.produceBatches([{ topic: lpTopic, partition: 0, records: [{ value: 'acks0', timestamp: T0 }] }], { acks: 0 });
    const afterAcks0 = await client.listOffsets(lpTopic, 0, 'latest');
    check('produce acks=0: no reply, record appended (seen by a later list_offsets on the same connection)', afterAcks0.offset === 2, `latest ${afterAcks0.offset}`);

    // ---- per-batch produce errors -------------------------------------------------------------
    const good = encodeBatch([{ key: 'x', value: 'y', timestamp: T0 }]);
    const badCrc = Buffer.from(good); badCrc[badCrc.length - 1] ^= 0x01;
    const badLen = Buffer.from(good); badLen.writeInt32BE(good.length - 12 + 1, 8);
    const badMagic = Buffer.from(good); badMagic[16] = 2;
    const badCount = Buffer.from(good); badCount.writeInt32BE(2, 57); badCount.writeUInt32BE(fc.crc32(badCount.subarray(21)), 17);
    const badTs = Buffer.from(good); badTs.writeBigInt64BE(BigInt(T0 - 1), 35); badTs.writeUInt32BE(fc.crc32(badTs.subarray(21)), 17);
    const badFirst = Buffer.from(good); badFirst[61] = 0xa1; badFirst.writeUInt32BE(fc.crc32(badFirst.subarray(21)), 17);
    const pr = await client.produceBatches([
      { topic: lpTopic, partition: 0, batch: good },
      { topic: lpTopic, partition: 0, batch: badCrc },
      { topic: lpTopic, partition: 0, batch: badLen },
      { topic: lpTopic, partition: 0, batch: badMagic },
      { topic: lpTopic, partition: 0, batch: badCount },
      { topic: lpTopic, partition: 0, batch: badTs },
      { topic: lpTopic, partition: 0, batch: badFirst },
      { topic: lpTopic, partition: 5, batch: good },
      { topic: lpTopic, partition: 0, batch: good },
    ]);
    const codes = pr.map((r) => (r.error ? r.error.code : r.base_offset));
    const wantCodes = [2, 8, 8, 9, 9, 9, 9, 11, 3];
    check('produce with 9 batches: good, bad CRC(8), bad length(8), magic 2(9), count != last_offset_delta+1(9), max_ts < base_ts(9), records not an array(9), missing partition(11), good',
      JSON.stringify(codes) === JSON.stringify(wantCodes) && pr.slice(1, 8).every((r) => r.base_offset === -1),
      `got ${JSON.stringify(codes)}; e.g. ${pr[1].error && pr[1].error.message}`);
    await expectError('produce with 2 batch entries but 1 payload frame: INVALID_FIELD (5)',
      client.request('produce', { acks: 1, batches: [{ topic: lpTopic, partition: 0 }, { topic: lpTopic, partition: 0 }] }, { payload: [good] }), 5);

    // ---- request-level errors -----------------------------------------------------------------
    // A deliberately malformed request: the header is a CBOR array, not a map.
    console.log('\n# malformed request: frame 0 = CBOR ["op", "metadata"] (hex 82626f70686d65746164617461)');
    try {
      await client.rawRequest([Buffer.from('82626f70686d65746164617461', 'hex')]);
      check('malformed header gets an error reply', false, 'no error');
    } catch (e) {
      console.log('  error reply header:', JSON.stringify(e.reply && e.reply.header));
      check('malformed header (array): MALFORMED_REQUEST (2), op null, cid null', e.code === 2 && e.reply.header.cid === null && e.reply.header.op === null, e.message);
    }
    await expectError('REQ-style empty delimiter frame before the header: MALFORMED_REQUEST (2)',
      client.rawRequest([Buffer.alloc(0), fc.cborEncode({ op: 'api_versions', v: 1, cid: 900002 })]), 2);
    await expectError('unknown op: UNKNOWN_OPERATION (3)', client.request('frobnicate', {}), 3);
    await expectError('metadata v2: UNSUPPORTED_VERSION (4)', client.request('metadata', {}, { v: 2 }), 4);
    await expectError('fetch offset -1: INVALID_FIELD (5) naming partitions[0].offset',
      client.request('fetch', { partitions: [{ topic, partition: 0, offset: -1 }] }), 5, (e) => e.brokerMessage.includes('partitions[0].offset'));
    await expectError('api_versions with a payload frame: MALFORMED_REQUEST (2)', client.request('api_versions', {}, { payload: [Buffer.from('x')] }), 2);
    await expectError('true where an integer is expected: INVALID_FIELD (5)', client.request('fetch', { partitions: [{ topic, partition: true, offset: 0 }] }), 5);

    // The spec's rejected-request vectors (10.5) and equivalent encodings (10.4), sent raw on their
    // own connection (their cids collide with nothing there).
    const tv = require('./test-vectors');
    const spec = tv.loadSpec();
    const raw = new FabricClient(bootstrap, { timeoutMs: 5000, log: () => {} }).connect();
    try {
      for (const b of spec.hexBlocks.filter((x) => x.attrs.expect)) {
        const frame = spec.hex.get(b.name);
        let cid = null;
        try { const h = fc.strictDecode(frame); if (h && typeof h.cid === 'number') cid = h.cid; } catch (e) { /* unreadable */ }
        try {
          await raw.rawRequest([frame], { cid });
          check(`10.5 ${b.name}: rejected`, false, 'accepted');
        } catch (e) {
          const ok = e instanceof FabricError && e.errorName === b.attrs.expect && (!b.attrs.message || e.brokerMessage.includes(b.attrs.message));
          check(`10.5 ${b.name}: ${b.attrs.expect} with "${b.attrs.message}"`, ok, `${e.message} [reply cid ${e.reply ? JSON.stringify(e.reply.header.cid) : '?'}]`);
        }
      }
      const replies = [];
      for (const name of ['metadata-request', ...spec.hexBlocks.filter((x) => x.attrs['same-as'] === 'metadata-request').map((x) => x.name)]) {
        const r = await raw.rawRequest([spec.hex.get(name)], { cid: 3 });
        replies.push([name, JSON.stringify(r.header)]);
      }
      check(`10.4 equivalent encodings: ${replies.length - 1} variants get the same reply as metadata-request`, replies.every(([, r]) => r === replies[0][1]),
        replies.filter(([, r]) => r !== replies[0][1]).map(([n]) => n).join(', '));
    } finally { raw.close(); }

    // ---- timeout, close, reconnect ("lazy pirate") --------------------------------------------
    const lp = new FabricClient(bootstrap, { timeoutMs: 10000, log: () => {} }).connect();
    try {
      const tStart = Date.now();
      let timedOut = false;
      // a long poll at the log end (parked for 3 s by the broker) with a 200 ms client deadline
      const end = (await lp.listOffsets(lpTopic, 0, 'latest')).offset;
      let late = null;
      try { late = await lp.request('fetch', { max_wait_ms: 3000, min_bytes: 1, partitions: [{ topic: lpTopic, partition: 0, offset: end }] }, { timeoutMs: 200 }); } catch (e) { timedOut = e.name === 'TimeoutError'; }
      if (late) console.log('  unexpected reply:', JSON.stringify(late.header));
      const again = await lp.apiVersions();
      check('request deadline passes -> TimeoutError, socket closed and reopened, next request works', timedOut && again.ops && Date.now() - tStart < 2500, `${Date.now() - tStart} ms`);
    } finally { lp.close(); }

    const stats = await client.brokerStats();
    check('broker_stats: records_in counts what we wrote', stats.records_in >= N_RECORDS + 2, `records_in ${stats.records_in}, bytes_in ${stats.bytes_in}`);
  } catch (e) {
    check('demo ran to completion', false, e.stack);
  } finally {
    client.close();
  }

  const fail = results.filter((r) => !r.ok).length;
  console.log(`\ndemo: ${results.length - fail} passed, ${fail} failed`);
  console.log(`topic: ${topic}`);
  console.log(fail ? 'RESULT: FAIL' : 'RESULT: PASS');
  process.exitCode = fail ? 1 : 0;
}

module.exports = { makeDemoRecords, planDemo, compareRecord, fetchAll, T0 };
if (require.main === module) main();
