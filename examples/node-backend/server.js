#!/usr/bin/env node
// Reference backend for voicebridge: implements docs/backend-api.md (contract version 1) with nothing
// but Node's standard library, as a rule-based receptionist for "Sunrise Clinic".
//
//   API_KEY=secret node server.js            (see README.md for every setting)
//
// It is also the test double for voicebridge's own tests, hence GET /v1/_received (everything it got)
// and the exact "listening on http://HOST:PORT" line on stdout.
'use strict';

const http = require('node:http');
const fs = require('node:fs');
const crypto = require('node:crypto');

const CONTRACT_VERSION = '1';
const MAX_BODY_BYTES = 1 << 20; // records are small; a bigger body is a bug or an attack
const STREAM_GAP_MS = 20; // pause between NDJSON lines, so the client really sees separate chunks
const WORDS_PER_DELTA = 4;
const TRANSFER_NUMBER = '+919800000000';

// ---------------------------------------------------------------------------------------------------
// Configuration: environment variables, each overridable as --name=value / --name value on argv
// (PORT <-> --port, DENY_FROM <-> --deny-from, ...).

function die(message) {
  process.stderr.write(`node-backend: ${message}\n`);
  process.exit(1);
}

function readSettings(argv, env) {
  const settings = { ...env };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(argv[i]);
    if (!m) die(`unexpected argument ${JSON.stringify(argv[i])} (use --name=value)`);
    const value = m[2] !== undefined ? m[2] : argv[++i];
    if (value === undefined) die(`--${m[1]} needs a value`);
    settings[m[1].toUpperCase().replace(/-/g, '_')] = value;
  }
  const port = Number(settings.PORT ?? 3000);
  if (!Number.isInteger(port) || port < 0 || port > 65535) die(`PORT must be 0..65535, not ${settings.PORT}`);
  const minutesLeft = Number(settings.MINUTES_LEFT ?? 30);
  if (!Number.isFinite(minutesLeft) || minutesLeft < 0) die(`MINUTES_LEFT must be a number >= 0, not ${settings.MINUTES_LEFT}`);
  if (!settings.API_KEY) die('API_KEY is required (voicebridge sends it as X-Api-Key), e.g. API_KEY=secret node server.js');
  return {
    port,
    host: settings.HOST || '127.0.0.1',
    apiKey: settings.API_KEY,
    store: settings.STORE || '', // empty: keep everything in memory only
    denyFrom: new Set((settings.DENY_FROM || '').split(',').map((s) => s.trim()).filter(Boolean)),
    minutesLeft,
  };
}

const cfg = readSettings(process.argv.slice(2), process.env);

// ---------------------------------------------------------------------------------------------------
// The store: everything received, as one JSON document. Small by design, so each change rewrites the
// whole file (tmp + fsync + rename): a crash leaves either the old or the new file, never half of one.
// `deliveries` is a Map in memory so that keys like "__proto__" cannot reach Object.prototype.

const LISTS = ['events', 'costs', 'conversations', 'callbacks', 'messages', 'budget_checks'];

function loadStore(file) {
  const db = { deliveries: new Map() };
  for (const name of LISTS) db[name] = [];
  if (!file) return db;
  let saved;
  try {
    saved = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return db; // first start
    // Refuse rather than start empty and overwrite what is there with nothing.
    die(`cannot load STORE ${file}: ${err.message}`);
  }
  for (const name of LISTS) if (Array.isArray(saved[name])) db[name] = saved[name];
  if (saved.deliveries && typeof saved.deliveries === 'object') db.deliveries = new Map(Object.entries(saved.deliveries));
  return db;
}

function toJson(db) {
  const out = {};
  for (const name of LISTS) out[name] = db[name];
  out.deliveries = Object.fromEntries(db.deliveries);
  return out;
}

function saveStore(file, db) {
  if (!file) return;
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(fd, JSON.stringify(toJson(db)));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true }); // no stray half-written tmp file next to the store
    throw err;
  }
}

let db = loadStore(cfg.store);
try {
  saveStore(cfg.store, db); // find out now, not on the first record, that the STORE cannot be written
} catch (err) {
  die(`cannot write STORE ${cfg.store}: ${err.message}`);
}

// Applies a change to a copy and adopts it only once it is on disk: if the write fails we answer 500,
// voicebridge retries, and the retry must not be mistaken for a duplicate of something never saved.
function commit(change) {
  const next = structuredClone(db);
  const result = change(next);
  saveStore(cfg.store, next);
  db = next;
  return result;
}

// ---------------------------------------------------------------------------------------------------
// The receptionist.

const BUSINESS = {
  greeting: 'Welcome to Sunrise Clinic. How can I help?',
  voice: '',
  language: 'en',
  system_prompt: 'You are the receptionist of Sunrise Clinic.',
  transfer_number: TRANSFER_NUMBER,
  max_call_minutes: 10,
};

// First match wins, so "thanks, but I want a person" transfers rather than hangs up. Plain substring
// matching on purpose: "opening", "booking", "goodbye" and "thanks" should all count.
const RULES = [
  [/hours|open/i, { reply: 'We are open from nine to six, Monday to Saturday.', action: null }],
  [/book|appointment/i, { reply: 'I can book that for you. Which day suits you?', action: null }],
  [/human|person|agent/i, { reply: 'Let me connect you to our front desk.', action: { type: 'transfer', number: TRANSFER_NUMBER } }],
  [/bye|thank/i, { reply: 'Thank you for calling Sunrise Clinic. Goodbye.', action: { type: 'hangup' } }],
];

function answerText(text) {
  for (const [pattern, answer] of RULES) if (pattern.test(text)) return structuredClone(answer);
  const said = text.trim();
  if (!said) return { reply: "Sunrise Clinic here. I didn't catch that. How can I help?", action: null };
  return { reply: `Sunrise Clinic here. You said: ${said}. How can I help?`, action: null };
}

function answerDigits(digits) {
  return { reply: `You entered ${[...digits].join(' ')}.`, action: null };
}

// Splits at spaces into deltas of a few words; the deltas concatenate back to exactly `reply`, later
// ones carrying their leading space as in the contract's example.
function splitDeltas(reply) {
  const words = reply.split(' ');
  const count = Math.max(2, Math.ceil(words.length / WORDS_PER_DELTA));
  const size = Math.ceil(words.length / count);
  const deltas = [];
  for (let i = 0; i < words.length; i += size) deltas.push((i ? ' ' : '') + words.slice(i, i + size).join(' '));
  return deltas;
}

// ---------------------------------------------------------------------------------------------------
// HTTP plumbing.

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => Date.now() / 1000; // epoch seconds, like the contract's "at" fields

function sendJson(res, status, body, headers = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(data),
    'X-Voicebridge-Version': CONTRACT_VERSION,
    ...headers,
  });
  res.end(data);
}

// Compares digests, so neither the time taken nor a length mismatch tells anything about the key.
function keyMatches(given) {
  const digest = (s) => crypto.createHash('sha256').update(String(s)).digest();
  return typeof given === 'string' && crypto.timingSafeEqual(digest(given), digest(cfg.apiKey));
}

async function readJsonObject(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `body larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  let body;
  try {
    body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks)));
  } catch (err) {
    throw new HttpError(400, `body is not valid UTF-8 JSON: ${err.message}`);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'body must be a JSON object');
  return body;
}

// Answers a message or keypad entry as one object, or as NDJSON lines when the client asked for them.
async function sendAnswer(req, res, answer) {
  if (!/application\/x-ndjson/i.test(req.headers.accept || '')) return sendJson(res, 200, answer);
  res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-cache', 'X-Voicebridge-Version': CONTRACT_VERSION });
  for (const line of [...splitDeltas(answer.reply).map((delta) => ({ delta })), { done: true, action: answer.action }]) {
    if (res.destroyed) return; // the caller hung up or voicebridge gave up; nobody to write to
    res.write(JSON.stringify(line) + '\n');
    if (!line.done) await sleep(STREAM_GAP_MS);
  }
  res.end();
}

// ---------------------------------------------------------------------------------------------------
// Endpoints. Each gets (req, res, params, url); the call SID, where there is one, is params[0].

async function callerTurn(req, res, [callSid], kind) {
  const body = await readJsonObject(req);
  const field = kind === 'message' ? 'text' : 'digits';
  let input = body[field];
  if (kind === 'dtmf' && typeof input === 'number') input = String(input);
  if (typeof input !== 'string') throw new HttpError(400, `"${field}" must be a string`);
  const answer = kind === 'message' ? answerText(input) : answerDigits(input);
  commit((next) => next.messages.push({ kind, call_sid: callSid, idempotency_key: null, body, received_at: now(), answer }));
  await sendAnswer(req, res, answer);
}

const RECORD_LISTS = { events: 'events', cost: 'costs', conversation: 'conversations', callbacks: 'callbacks' };

// Records are stored once per Idempotency-Key (one namespace across all record kinds, as the keys
// already name their kind); every delivery is counted, so tests can see that retries happened.
async function record(req, res, [callSid, kind]) {
  const key = req.headers['idempotency-key'];
  if (!key) throw new HttpError(400, 'Idempotency-Key header is required for records');
  const body = await readJsonObject(req);
  const duplicate = commit((next) => {
    const seen = next.deliveries.has(key);
    next.deliveries.set(key, (next.deliveries.get(key) || 0) + 1);
    if (!seen) next[RECORD_LISTS[kind]].push({ call_sid: callSid, idempotency_key: key, body, received_at: now() });
    return seen;
  });
  sendJson(res, 200, { ok: true, duplicate });
}

async function budgetCheck(req, res) {
  const body = await readJsonObject(req);
  const denied = cfg.denyFrom.has(String(body.from ?? '').trim());
  const answer = denied
    ? { allow: false, reason: 'blocked caller', minutes_left: 0 }
    : { allow: true, reason: '', minutes_left: cfg.minutesLeft };
  commit((next) => next.budget_checks.push({
    call_sid: body.call_sid ?? null, idempotency_key: req.headers['idempotency-key'] || null, body, received_at: now(), answer,
  }));
  sendJson(res, 200, answer);
}

const ROUTES = [
  ['GET', /^\/v1\/health$/, (req, res) => sendJson(res, 200, { ok: true, version: 1 })],
  ['GET', /^\/v1\/business$/, (req, res) => sendJson(res, 200, BUSINESS)], // same clinic for every ?to=
  ['POST', /^\/v1\/budget\/check$/, budgetCheck],
  ['POST', /^\/v1\/calls\/([^/]+)\/messages$/, (req, res, params) => callerTurn(req, res, params, 'message')],
  ['POST', /^\/v1\/calls\/([^/]+)\/dtmf$/, (req, res, params) => callerTurn(req, res, params, 'dtmf')],
  ['POST', /^\/v1\/calls\/([^/]+)\/(events|cost|conversation|callbacks)$/, record],
  ['GET', /^\/v1\/_received$/, (req, res) => sendJson(res, 200, toJson(db))], // for tests, not the contract
];

async function handle(req, res) {
  const url = new URL(req.url, 'http://backend.invalid');
  // Authenticate before routing, so a caller without the key learns nothing, not even which paths exist.
  if (!keyMatches(req.headers['x-api-key'])) throw new HttpError(401, 'missing or wrong X-Api-Key');
  const version = req.headers['x-voicebridge-version'];
  if (version !== undefined && version !== CONTRACT_VERSION) {
    throw new HttpError(400, `this server speaks contract version ${CONTRACT_VERSION}, not ${version}`);
  }
  const matching = ROUTES.filter(([, pattern]) => pattern.test(url.pathname));
  if (!matching.length) throw new HttpError(404, `no such path: ${url.pathname}`);
  const route = matching.find(([method]) => method === req.method);
  if (!route) {
    const allow = matching.map(([method]) => method).join(', ');
    return sendJson(res, 405, { error: `${req.method} not allowed here; use ${allow}` }, { Allow: allow });
  }
  let params;
  try {
    params = route[1].exec(url.pathname).slice(1).map(decodeURIComponent);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in path');
  }
  await route[2](req, res, params, url);
}

let stopping = false;
const server = http.createServer((req, res) => {
  // While stopping, a keep-alive connection that just finished its answer would hold server.close().
  res.on('finish', () => stopping && setImmediate(() => server.closeIdleConnections()));
  handle(req, res).catch((err) => {
    const status = err instanceof HttpError ? err.status : 500;
    if (status === 500) process.stderr.write(`node-backend: ${req.method} ${req.url}: ${err.stack || err}\n`);
    if (res.headersSent) return res.destroy(); // mid-stream: a cut stream is how the client learns of it
    // Unread body (401, 413, ...): close rather than drain whatever the client still wants to send.
    sendJson(res, status, { error: err.message }, req.complete ? {} : { Connection: 'close' });
  });
});

server.on('error', (err) => die(`cannot listen on ${cfg.host}:${cfg.port}: ${err.message}`));
server.listen(cfg.port, cfg.host, () => {
  process.stdout.write(`listening on http://${cfg.host}:${server.address().port}\n`);
});

// Stop accepting, let in-flight answers finish, then exit 0. Idle keep-alive connections would hold
// server.close() open, so they are closed at once (and busy ones as they finish, above); whatever is
// still running after 2 s is cut.
function stop() {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => {
    server.closeAllConnections();
    process.exit(0);
  }, 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
