// Browser scenarios for muxchatd's chat page, run by tests/browser.rs.
//
//   node chat.mjs SCENARIO
//
// Environment (set by the Rust test):
//   MUXCHAT_URL        the page, e.g. http://127.0.0.1:PORT/ or https://localhost:PORT/
//   MUXCHAT_ADDR       the daemon's address, for the terminal client
//   MUXCHAT_BIN        the muxchat terminal client binary
//   MUXCHAT_VERSION    the protocol version the daemon speaks (1 or 2)
//   MUXCHAT_ARTIFACTS  where screenshots go
//   MUXCHATD_BIN, MUXCHAT_SIGNING_KEY, MUXCHAT_OTHER_KEY
//                      for the account scenarios: the daemon binary (it mints
//                      tokens), the daemon's HS256 secret and another one
//
// A scenario that needs the daemon restarted prints `RESTART` on stdout and
// waits for a line on stdin. Any failure exits non-zero with the reason on
// stderr; the Rust test reports it.

import { chromium } from 'playwright-core';
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';

const URL_ = process.env.MUXCHAT_URL;
const ADDR = process.env.MUXCHAT_ADDR;
const BIN = process.env.MUXCHAT_BIN;
const VERSION = Number(process.env.MUXCHAT_VERSION || '1');
const ART = process.env.MUXCHAT_ARTIFACTS || 'target/browser-artifacts';
const WAIT = 15000; // generous: the machine is shared and slow
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

mkdirSync(ART, { recursive: true });

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const cleanups = [];

// ----- the browser and its pages ------------------------------------------

// Playwright starts Chromium with a fresh temporary --user-data-dir of its
// own and --headless; the rest of the flags are ours.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
  ],
});
cleanups.push(() => browser.close());

const problems = [];
const tokens = []; // every token minted, to catch one in a log

// A token for `sub`, minted by the daemon's own tool with `key`.
function mint(sub, ttl = '1h', key = process.env.MUXCHAT_SIGNING_KEY) {
  if (!process.env.MUXCHATD_BIN || !key) throw new Error('this scenario needs MUXCHATD_BIN and MUXCHAT_SIGNING_KEY (tests/browser.rs sets them)');
  const token = execFileSync(process.env.MUXCHATD_BIN, ['token', '--signing-key', key, '--sub', sub, '--ttl', ttl], { encoding: 'utf8' }).trim();
  tokens.push(token);
  return token;
}

// Signs in with a token on the card (the nick field left empty).
async function signInWithToken(page, token, room = '#room') {
  await page.fill('#nickInput', '');
  await page.fill('#tokenInput', token);
  await page.fill('#roomInput', room);
  await page.click('#loginBtn');
}

// The texts of the messages in the room shown now, in order.
async function texts(page) {
  return page.locator('.log:not([hidden]) .msg:not(.whisper) .text').allInnerTexts();
}

async function joinedRooms(page) {
  return (await page.locator('#joined li button:first-child').allInnerTexts()).map(s => s.replace(/\d+$/, '').trim()).sort();
}

async function openRoom(page, room) {
  // On a phone the room list slides in first.
  if (await page.locator('#sideBtn').isVisible()) {
    await page.click('#sideBtn');
    await new Promise(r => setTimeout(r, 400)); // the slide-in transition
  }
  await page.click(`#joined button[data-room="${room}"]`);
  await waitUntil(`${page.label} to show ${room}`, async () => (await page.locator('#title').innerText()).startsWith(room));
}

// A page in its own browser context (its own storage, like another person).
// `hash` is added to the page's address; `init` runs in the page before its
// own script (an embedding application's hooks).
async function openPage(label, viewport = LAPTOP, colorScheme = 'light', { hash = '', init = null } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, ignoreHTTPSErrors: URL_.startsWith('https:') });
  const page = await context.newPage();
  page.label = label;
  // The page is self-contained: nothing but itself and its WebSocket.
  const origin = new URL(URL_).origin;
  page.sockets = [];
  page.on('websocket', ws => page.sockets.push(ws.url()));
  page.on('request', r => {
    const u = r.url();
    if (!u.startsWith('data:') && new URL(u).origin !== origin) problems.push(`${label}: requested ${u}`);
  });
  page.on('pageerror', e => problems.push(`${label}: uncaught ${e.message}`));
  page.on('console', m => {
    if (m.type() === 'error') problems.push(`${label}: console error ${m.text()}`);
    // A token is a secret: the page never logs one.
    if (tokens.some(t => m.text().includes(t))) problems.push(`${label}: logged a token`);
  });
  if (init) await context.addInitScript(init.fn, init.arg);
  await page.goto(URL_ + hash);
  return page;
}

async function signIn(page, nick, room = '#room') {
  await page.fill('#nickInput', nick);
  await page.fill('#roomInput', room);
  await page.click('#loginBtn');
}

// Opens a page, signs in and waits until it is in `room`.
async function person(nick, room, viewport, colorScheme) {
  const page = await openPage(nick, viewport, colorScheme);
  await signIn(page, nick, room);
  await page.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
  await shows(page, `You joined ${room}.`, '.note');
  return page;
}

// Waits until the visible log shows an element of `sel` containing `text`.
async function shows(page, text, sel = '.msg') {
  try {
    await page.locator(`.log:not([hidden]) ${sel}`, { hasText: text }).first().waitFor({ timeout: WAIT });
  } catch {
    const seen = await page.locator('.log:not([hidden])').innerText().catch(() => '?');
    throw new Error(`${page.label}'s page never showed ${JSON.stringify(text)}; it shows:\n${seen}`);
  }
}

async function count(page, text, sel = '.msg') {
  return page.locator(`.log:not([hidden]) ${sel}`, { hasText: text }).count();
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

async function users(page) {
  return (await page.locator('#userList li').allInnerTexts()).map(s => s.replace(' (you)', ''));
}

async function waitUntil(what, fn, ms = WAIT) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e.message; }
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function shot(page, name) {
  const path = `${ART}/${name}.png`;
  await page.screenshot({ path });
  console.log(`screenshot ${path}`);
}

// ----- the terminal client -------------------------------------------------

function terminal(nick, room) {
  const child = spawn(BIN, ['--connect', ADDR, '--nick', nick, '--join', room, '--no-time'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  cleanups.push(() => child.kill());
  const lines = [];
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', line => {
    lines.push(line);
    for (const w of [...waiters]) if (w.test(line)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  });
  return {
    count(want) { return lines.filter(l => l === want).length; },
    type(line) { child.stdin.write(line + '\n'); },
    expect(want) {
      if (lines.includes(want)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const w = { test: l => l === want, resolve };
        waiters.push(w);
        setTimeout(() => reject(new Error(`terminal ${nick} never printed ${JSON.stringify(want)}; it printed:\n${lines.join('\n')}`)), WAIT);
      });
    },
  };
}

// ----- scenarios -------------------------------------------------------------

const scenarios = {
  // Two pages (a laptop and a phone) and the terminal client in one room.
  async chat() {
    const alice = await person('alice', '#room', LAPTOP);
    const term = terminal('term', '#room');
    await term.expect('* you joined #room');
    await shows(alice, 'term joined.', '.note');
    // The phone is in dark mode, as many are.
    const bob = await person('bob', '#room', PHONE, 'dark');
    await shows(alice, 'bob joined.', '.note');
    await term.expect('* bob joined #room');

    assert.equal(alice.sockets[0], URL_.replace(/^http/, 'ws') + 'ws', 'the WebSocket URL');
    // The page negotiated the version the daemon speaks.
    assert.equal(await alice.evaluate(() => window.muxchat.version), VERSION, 'negotiated protocol version');

    await say(alice, 'hello from alice');
    await shows(bob, 'hello from alice');
    await term.expect('[#room] alice: hello from alice');
    await say(bob, 'hi from the phone');
    await shows(alice, 'hi from the phone');
    await term.expect('[#room] bob: hi from the phone');
    term.type('hello from the terminal');
    await shows(alice, 'hello from the terminal');
    await shows(bob, 'hello from the terminal');
    // Messages carry a time.
    const time = await alice.locator('.log:not([hidden]) .msg', { hasText: 'hello from the terminal' }).locator('time').innerText();
    assert.match(time, /^\d\d:\d\d$/, 'message time');

    // The user list has everyone.
    await waitUntil('alice to list three people', async () => (await users(alice)).sort().join() === 'alice,bob,term');

    // Whispers: page to page, terminal to page, page to terminal.
    await say(bob, '/msg alice psst, alice');
    await shows(alice, 'psst, alice', '.msg.whisper');
    await shows(alice, 'bob → you', '.msg.whisper');
    await shows(bob, 'you → alice', '.msg.whisper');
    assert.equal(await count(alice, 'psst, alice', '.msg:not(.whisper)'), 0, 'a whisper is not said in the room');
    term.type('/msg alice from the terminal, quietly');
    await shows(alice, 'from the terminal, quietly', '.msg.whisper');
    await say(alice, '/msg term back to the terminal');
    await term.expect('-> (whisper) alice: back to the terminal');

    // Errors read as sentences.
    await say(alice, '/msg nobody hello?');
    await shows(alice, 'Whisper not sent: nobody by that nick is connected.', '.note.error');

    // Version 2: a late joiner sees what was said before it came.
    if (VERSION >= 2) {
      const carol = await person('carol', '#room', LAPTOP);
      await shows(carol, 'hello from alice', '.msg.hist');
      await shows(carol, 'hello from the terminal', '.msg.hist');
      await shows(carol, 'Earlier messages', '.divider');
      await shot(carol, 'chat-history');
    }

    await shot(alice, 'chat-laptop');
    await shot(bob, 'chat-phone');
    // The phone's room list slides in over the chat.
    await bob.click('#sideBtn');
    await bob.locator('#side').waitFor();
    await new Promise(r => setTimeout(r, 400)); // the slide-in transition
    await shot(bob, 'chat-phone-rooms');
    // Leaving from the room list.
    await bob.click('#joined button.leave');
    await term.expect('* bob left #room');
    await shows(alice, 'bob left.', '.note');
    await waitUntil('bob to be in no room', async () => (await bob.locator('#joined li.empty').count()) === 1);

    // The page's codec against the protocol's own example: HELLO from alice.
    const hello = await alice.evaluate(() => Array.from(window.muxchat.codec.encodeFrame(100, [['u8', 1], ['str', 'alice']])));
    assert.deepEqual(hello, [0, 0x64, 0, 0, 0, 0, 0, 8, 1, 0, 5, 0x61, 0x6c, 0x69, 0x63, 0x65]);
    // Server frames packed in one buffer and split at every offset decode
    // the same; a 64-bit epoch survives exactly; trailing bytes are refused.
    const codec = await alice.evaluate(() => {
      const { encodeFrame, decodeFrame, FrameReader } = window.muxchat.codec;
      const frames = [
        encodeFrame(203, [['str', '#room'], ['u64', 7], ['str', 'bob'], ['str', 'héllo ✓']]),
        encodeFrame(213, [['str', '#room'], ['u64', (1n << 63n) + 5n], ['u64', 7], ['u64', 1]]),
        encodeFrame(208, [['u64', 0xfedcba9876543210n]]),
      ];
      const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
      let o = 0;
      for (const f of frames) { all.set(f, o); o += f.length; }
      const show = m => JSON.stringify(m, (k, v) => (typeof v === 'bigint' ? v.toString() : v));
      const results = new Set();
      for (let cut = 0; cut <= all.length; cut++) {
        const r = new FrameReader(1 << 20);
        const got = [];
        for (const part of [all.subarray(0, cut), all.subarray(cut)]) {
          r.push(part);
          for (let f; (f = r.next());) got.push(decodeFrame(f));
        }
        results.add(show(got));
      }
      let trailing = 'accepted';
      try { decodeFrame({ code: 208, flags: 0, payload: new Uint8Array(9) }); } catch (e) { trailing = e.message; }
      return { results: [...results], trailing };
    });
    assert.equal(codec.results.length, 1, 'the same frames whatever the split');
    const [message, state, ping] = JSON.parse(codec.results[0]);
    assert.deepEqual(message, { room: '#room', seq: 7, from: 'bob', text: 'héllo ✓', code: 203 });
    assert.equal(state.epoch, ((1n << 63n) + 5n).toString());
    assert.equal(ping.token, 0xfedcba9876543210n.toString());
    assert.equal(codec.trailing, 'trailing bytes');
  },

  // A nick that is taken is refused with a sentence, and another one works.
  async taken() {
    const term = terminal('alice', '#room');
    await term.expect('* you joined #room');
    const page = await openPage('second alice', LAPTOP);
    await signIn(page, 'Alice', '#room');
    try {
      await page.locator('#loginError', { hasText: 'that nick is taken' }).waitFor({ timeout: WAIT });
    } catch {
      throw new Error(`no "nick taken" error; the card says ${JSON.stringify(await page.locator('#loginError').innerText())}`);
    }
    assert.equal(await page.locator('#login').isVisible(), true, 'the sign-in card stays up');
    await shot(page, 'taken-nick');
    // A bad nick is caught before it is sent; then a free one gets in.
    await signIn(page, 'alice!', '#room');
    await page.locator('#loginError', { hasText: 'nicks are 1 to 32 characters' }).waitFor({ timeout: WAIT });
    await signIn(page, 'alice2', '#room');
    await page.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    await shows(page, 'You joined #room.', '.note');
    term.type('welcome alice2');
    await shows(page, 'welcome alice2');
  },

  // The daemon restarts on the same port: the pages reconnect by themselves,
  // re-join their room and chat again.
  async reconnect() {
    const alice = await person('alice', '#room', LAPTOP);
    const bob = await person('bob', '#room', PHONE);
    await say(alice, 'before the restart');
    await shows(bob, 'before the restart');

    await restartDaemon();

    for (const page of [alice, bob]) {
      await shows(page, 'Connection lost. Reconnecting…', '.note');
      await waitUntil(`${page.label} to reconnect`, () => page.evaluate(() => window.muxchat.connected));
      await waitUntil(`${page.label} to be back in #room`, () => page.evaluate(() => window.muxchat.room('#room')?.users.length === 2));
    }
    if (VERSION >= 2) {
      await shows(alice, 'This room was re-created while you were away', '.note.error');
    } else {
      await shows(alice, 'This server keeps no history', '.note');
    }
    assert.equal(await alice.locator('#banner').isVisible(), false, 'the banner is gone once reconnected');
    await say(alice, 'after the restart');
    await shows(bob, 'after the restart');
    await say(bob, 'welcome back');
    await shows(alice, 'welcome back');
    await shot(alice, 'reconnect-laptop');
    await shot(bob, 'reconnect-phone');
  },

  // A page loses its connection (the daemon keeps running) and, on
  // reconnecting, shows what it missed exactly once (version 2) or says it
  // cannot (version 1).
  async resume() {
    const alice = await person('alice', '#room', LAPTOP);
    const term = terminal('term', '#room');
    await term.expect('* you joined #room');
    await shows(alice, 'term joined.', '.note');
    term.type('one');
    await shows(alice, 'one');

    // Offline, so the page's reconnect attempts fail until we say so.
    await alice.context().setOffline(true);
    await alice.evaluate(() => window.muxchat.drop());
    await shows(alice, 'Connection lost. Reconnecting…', '.note');
    await term.expect('* alice left #room (connection closed)');
    await alice.locator('#banner', { hasText: 'Reconnecting' }).waitFor({ timeout: WAIT });
    await shot(alice, 'resume-offline');
    term.type('two');
    term.type('three');
    await term.expect('[#room] term: three');
    await alice.context().setOffline(false);

    await waitUntil('alice to reconnect', () => alice.evaluate(() => window.muxchat.connected));
    await term.expect('* alice joined #room');
    if (VERSION >= 2) {
      await shows(alice, 'Reconnected: 2 messages you missed', '.divider');
      await shows(alice, 'three', '.msg.hist');
      const texts = await alice.locator('.log:not([hidden]) .msg .text').allInnerTexts();
      assert.deepEqual(texts, ['one', 'two', 'three'], 'every message exactly once, in order');
    } else {
      await shows(alice, 'This server keeps no history', '.note');
    }
    term.type('four');
    await shows(alice, 'four');
    await shot(alice, 'resume');
  },

  // The same page over TLS: https:// serves it, wss:// carries the chat.
  async wss() {
    const alice = await person('alice', '#secure', LAPTOP);
    assert.equal(await alice.evaluate(() => location.protocol), 'https:');
    assert.ok(alice.sockets.length > 0 && alice.sockets.every(u => u.startsWith('wss://')), `wss only: ${alice.sockets}`);
    const bob = await person('bob', '#secure', PHONE);
    const term = terminal('term', '#secure');
    await term.expect('* you joined #secure');
    await say(alice, 'hello over wss');
    await shows(bob, 'hello over wss');
    await term.expect('[#secure] alice: hello over wss');
    term.type('plain tcp says hi');
    await shows(alice, 'plain tcp says hi');
    await shot(alice, 'wss-laptop');
    await shot(bob, 'wss-phone');
  },

  // A guest (no token: version 2, as before) reloads: the tab signs in
  // again by itself with its nick, is back in its rooms, shows each message
  // once (one said during the reload too) and keeps its whispers.
  async guest_reload() {
    const alice = await person('alice', '#room', LAPTOP);
    const term = terminal('term', '#room');
    await term.expect('* you joined #room');
    await say(alice, '/join #other');
    await shows(alice, 'You joined #other.', '.note');
    await openRoom(alice, '#room');
    await say(alice, 'one');
    await term.expect('[#room] alice: one');
    term.type('two');
    await shows(alice, 'two');
    term.type('/msg alice psst');
    await shows(alice, 'psst', '.msg.whisper');

    const reloading = alice.reload();
    term.type('three');
    await reloading;
    await waitUntil('alice to sign in again after the reload', () => alice.evaluate(() => window.muxchat.connected));
    assert.equal(await alice.locator('#login').isVisible(), false, 'no sign-in card after a reload');
    assert.equal(await alice.evaluate(() => window.muxchat.nick), 'alice');
    assert.equal(await alice.evaluate(() => window.muxchat.version), VERSION, 'a guest speaks the version it spoke before');
    await waitUntil('alice back in #other and #room', async () => (await joinedRooms(alice)).join() === '#other,#room');
    if (VERSION >= 2) {
      await waitUntil('#room to show its messages once each', async () => (await texts(alice)).join() === 'one,two,three');
    }
    assert.equal(await count(alice, 'psst', '.msg.whisper'), 1, 'the whisper is kept for the tab, once');
    term.type('four');
    await shows(alice, 'four');
    await shot(alice, 'guest-reload');
  },

  // ----- protocol version 3: accounts by token (issue 20) -------------------

  // The page's version-3 codec against the daemon's: frames encoded by
  // src/codec/v3.rs (tests/browser.rs passes them in hex) decode to the
  // values chosen there, and the page's HELLO and SAY (v3) are byte for
  // byte the daemon's. Needs no version-3 daemon: it runs on any.
  async codec3() {
    const page = await openPage('codec', LAPTOP);
    const got = await page.evaluate(({ server, hello, say }) => {
      const { encodeFrame, decodeFrame, FrameReader } = window.muxchat.codec;
      const bytes = h => new Uint8Array(h.match(/../g).map(x => parseInt(x, 16)));
      const hex = b => Array.from(b, x => x.toString(16).padStart(2, '0')).join('');
      const r = new FrameReader(1 << 20);
      r.push(bytes(server));
      const frames = [];
      for (let f; (f = r.next());) frames.push(decodeFrame(f));
      return {
        frames: JSON.stringify(frames, (k, v) => (typeof v === 'bigint' ? v.toString() : v)),
        hello: hex(encodeFrame(100, [['u8', 3], ['str', ''], ['str', 'a.b.c'], ['str', '0123456789abcdef0123456789abcdef']])),
        say: hex(encodeFrame(103, [['str', '#a'], ['str', 'héllo'], ['u64', 9]])),
      };
    }, { server: process.env.MUXCHAT_V3_SERVER, hello: process.env.MUXCHAT_V3_HELLO, say: process.env.MUXCHAT_V3_SAY });
    assert.equal(got.hello, process.env.MUXCHAT_V3_HELLO, 'HELLO (v3) as the daemon encodes it');
    assert.equal(got.say, process.env.MUXCHAT_V3_SAY, 'SAY (v3) as the daemon encodes it');
    assert.deepEqual(JSON.parse(got.frames), [
      { version: 3, nick: 'alice', server: 'muxchatd test', heartbeatMs: 30000, maxPayload: 65536, account: 'alice', role: 1, sessionKey: '0123456789abcdef0123456789abcdef', tokenExpMs: 1900000000000, code: 200 },
      { msgId: 7, room: '#a', epoch: ((1n << 63n) + 5n).toString(), seq: 42, error: 0, code: 216 },
      { tokenExpMs: 1900000360000, code: 217 },
      { room: '#a', topic: 'topic ✓', topicBy: 'bob', topicTimeMs: 1800000000000, modes: 5, code: 218 },
      { to: '~term', text: 'hi', code: 219 },
      { room: '#a', actor: 'bob', action: 2, target: 'carol', reason: 'spam', untilMs: 1900000000000, code: 220 },
      { room: '#a', bans: [{ mask: 'nick:x*', by: 'bob', reason: '', untilMs: 0 }], code: 221 },
      { room: '#b', by: 'bob', code: 222 },
    ]);
  },

  // Sign-in through a link with a minted token, the account shown, SAY v3
  // answered; a reload comes back in every room with every message once
  // (one said during the reload too) and the tab's whispers; a message typed
  // while offline is sent once on reconnecting; a refused one says why.
  async account() {
    const token = mint('alice');
    const termA = terminal('ta', '#a');
    const termB = terminal('tb', '#b');
    await termA.expect('* you joined #a');
    await termB.expect('* you joined #b');
    const alice = await openPage('alice', LAPTOP, 'light', { hash: `#token=${token}&room=%23a` });
    await alice.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    await shows(alice, 'You joined #a.', '.note');
    // The token left the address bar at once, and never went to localStorage.
    assert.equal(await alice.evaluate(() => location.hash), '', 'the token is removed from the address');
    assert.ok(!(await alice.evaluate(() => location.href)).includes(token), 'no token in the address');
    assert.equal(await alice.evaluate(t => Object.values(localStorage).some(v => v.includes(t)), token), false, 'no token in localStorage');
    assert.equal(await alice.evaluate(() => window.muxchat.version), 3, 'version 3 with a token');
    assert.equal(await alice.evaluate(() => window.muxchat.account), 'alice');
    assert.equal(await alice.evaluate(() => window.muxchat.role), 1);
    assert.equal(await alice.locator('#meWho').innerText(), '(account)');
    await termA.expect('* alice joined #a');
    await say(alice, '/join #b');
    await shows(alice, 'You joined #b.', '.note');
    await termB.expect('* alice joined #b');

    await openRoom(alice, '#a');
    await say(alice, 'one');
    await termA.expect('[#a] alice: one');
    termA.type('two');
    await shows(alice, 'two');
    await waitUntil('every SAY answered', () => alice.evaluate(() => window.muxchat.unanswered === 0));
    assert.equal(await alice.locator('.msg.pending').count(), 0, 'nothing left as sending');
    assert.deepEqual(await texts(alice), ['one', 'two']);
    termB.type('/msg alice psst');
    await shows(alice, 'psst', '.msg.whisper');
    await openRoom(alice, '#b');
    termB.type('bee');
    await shows(alice, 'bee');
    await openRoom(alice, '#a');

    // A reload, with a message said while it happens.
    const reloading = alice.reload();
    termA.type('three');
    await reloading;
    await waitUntil('alice to reconnect after the reload', () => alice.evaluate(() => window.muxchat.connected));
    assert.equal(await alice.locator('#login').isVisible(), false, 'no sign-in card after a reload');
    await waitUntil('alice back in #a and #b', async () => (await joinedRooms(alice)).join() === '#a,#b');
    await shows(alice, 'three');
    await waitUntil('#a to show its messages once each', async () => (await texts(alice)).join() === 'one,two,three');
    assert.equal(await count(alice, 'psst', '.msg.whisper'), 1, 'the whisper is kept for the tab, once');
    await openRoom(alice, '#b');
    await shows(alice, 'bee');
    assert.deepEqual(await texts(alice), ['bee'], '#b once');
    await openRoom(alice, '#a');
    await shot(alice, 'account-reloaded');

    // Typed while offline: shown as sending, sent once on reconnecting.
    await alice.context().setOffline(true);
    await alice.evaluate(() => window.muxchat.drop());
    await shows(alice, 'Connection lost. Reconnecting…', '.note');
    await say(alice, 'four');
    await shows(alice, 'four', '.msg.pending');
    await alice.context().setOffline(false);
    await waitUntil('alice to reconnect', () => alice.evaluate(() => window.muxchat.connected));
    await termA.expect('[#a] alice: four');
    await waitUntil('four answered', () => alice.evaluate(() => window.muxchat.unanswered === 0));
    await say(alice, 'five');
    await termA.expect('[#a] alice: five');
    await shows(alice, 'five');
    assert.equal(termA.count('[#a] alice: four'), 1, 'four reached the room once');
    await waitUntil('#a to show every message once', async () => (await texts(alice)).join() === 'one,two,three,four,five');

    // A refused SAY says why, on the message itself.
    await say(alice, 'x'.repeat(300));
    await shows(alice, 'Not sent: that message is too long.', '.msg.failed .why');
    assert.equal(await alice.evaluate(() => window.muxchat.unanswered), 0);
    await shot(alice, 'account');
  },

  // Two tabs of one account (two contexts: two sessionStorages, no key in
  // common): the second is in the first's rooms, joins and leaves reach
  // both, and a whisper one tab sends shows in the other.
  async second_tab() {
    const token = mint('alice');
    const term = terminal('term', '#a');
    await term.expect('* you joined #a');
    const one = await openPage('alice tab 1', LAPTOP);
    await signInWithToken(one, token, '#a');
    await one.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    await shows(one, 'You joined #a.', '.note');
    await say(one, '/join #b');
    await shows(one, 'You joined #b.', '.note');
    await term.expect('* alice joined #a');

    const two = await openPage('alice tab 2', PHONE);
    await signInWithToken(two, token, '#a');
    await two.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    await waitUntil('the second tab in #a and #b', async () => (await joinedRooms(two)).join() === '#a,#b');
    assert.equal(await two.evaluate(() => window.muxchat.account), 'alice');
    await say(one, '/join #c');
    await shows(one, 'You joined #c.', '.note');
    await waitUntil('the second tab in #c too', async () => (await joinedRooms(two)).join() === '#a,#b,#c');

    // One tab says, both show it as their own.
    await openRoom(one, '#a');
    await openRoom(two, '#a');
    await say(one, 'from tab one');
    await term.expect('[#a] alice: from tab one');
    await shows(two, 'from tab one', '.msg.mine');

    // Whispers: to the account reach both tabs; from one tab show in the other.
    term.type('/msg alice to both tabs');
    await shows(one, 'to both tabs', '.msg.whisper');
    await shows(two, 'to both tabs', '.msg.whisper');
    await say(one, '/msg ~term hello from tab one');
    await term.expect('-> (whisper) alice: hello from tab one');
    await shows(two, 'you → ~term', '.msg.whisper');
    await shows(two, 'hello from tab one', '.msg.whisper');

    // Leaving from one tab leaves for the account.
    await say(two, '/leave #c');
    await waitUntil('the first tab out of #c', async () => (await joinedRooms(one)).join() === '#a,#b');
    // The second tab's arrival told nobody: one JOINED for the account.
    assert.equal(term.count('* alice joined #a'), 1, 'the terminal saw alice join once');
    assert.equal(await count(one, 'alice joined.', '.note'), 0, 'the first tab saw no one join');
    await shot(one, 'second-tab-laptop');
    await shot(two, 'second-tab-phone');
  },

  // A token the daemon refuses: a sentence on the card, no reconnect loop;
  // then a good one gets in.
  async bad_token() {
    const page = await openPage('bad token', LAPTOP);
    for (const bad of ['not-a-token', mint('alice', '1h', process.env.MUXCHAT_OTHER_KEY)]) {
      const before = page.sockets.length;
      await signInWithToken(page, bad, '#room');
      try {
        await page.locator('#loginError', { hasText: 'the account token was refused' }).waitFor({ timeout: WAIT });
      } catch {
        throw new Error(`no "token refused" sentence; the card says ${JSON.stringify(await page.locator('#loginError').innerText())}`);
      }
      assert.equal(await page.locator('#login').isVisible(), true, 'the sign-in card stays up');
      await new Promise(r => setTimeout(r, 3000));
      assert.equal(page.sockets.length, before + 1, 'one connection per try: no reconnect loop');
      assert.equal(await page.evaluate(() => window.muxchat.connected), false);
    }
    await shot(page, 'bad-token');
    await signInWithToken(page, mint('alice'), '#room');
    await page.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    await shows(page, 'You joined #room.', '.note');
  },

  // `--auth required`: a guest is told, on the card, that it needs a token
  // (no reconnect loop); with one it gets in.
  async required() {
    const page = await openPage('guest', LAPTOP);
    await signIn(page, 'bob', '#room');
    await page.locator('#loginError', { hasText: 'this server takes accounts only' }).waitFor({ timeout: WAIT });
    await new Promise(r => setTimeout(r, 3000));
    assert.equal(page.sockets.length, 1, 'one connection: no reconnect loop');
    await signInWithToken(page, mint('bob'), '#room');
    await page.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    await shows(page, 'You joined #room.', '.note');
  },

  // `--max-sessions-per-account 1`: a second tab of the account is told
  // why on its card, and the first tab goes on.
  async session_limit() {
    const token = mint('alice');
    const one = await openPage('alice tab 1', LAPTOP, 'light', { hash: `#token=${token}&room=%23room` });
    await one.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    await shows(one, 'You joined #room.', '.note');
    const two = await openPage('alice tab 2', LAPTOP, 'light', { hash: `#token=${token}&room=%23room` });
    await two.locator('#loginError', { hasText: 'your account has the most sessions it may have open' }).waitFor({ timeout: WAIT });
    await new Promise(r => setTimeout(r, 3000));
    assert.equal(two.sockets.length, 1, 'one connection: no reconnect loop');
    assert.equal(await one.evaluate(() => window.muxchat.connected), true, 'the first tab goes on');
    await shot(two, 'session-limit');
  },

  // The embedding application's hook renews the token a minute before it
  // expires: REFRESH, and REFRESHED moves the expiry on.
  async refresh() {
    const short = mint('alice', '70s');
    const long = mint('alice', '2h');
    const page = await openPage('refresh', LAPTOP, 'light', {
      hash: `#token=${short}&room=%23room`,
      init: { fn: t => { window.muxchatRefreshToken = async () => t; }, arg: long },
    });
    await page.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    const first = await page.evaluate(() => window.muxchat.tokenExpMs);
    assert.ok(first > Date.now() && first < Date.now() + 75000, `a 70 s token (${first})`);
    await waitUntil('the token renewed', async () => (await page.evaluate(() => window.muxchat.tokenExpMs)) > Date.now() + 3600000, 45000);
    assert.equal(await page.evaluate(() => window.muxchat.connected), true);
  },

  // Moderation (issue 21) from the page: alice creates #mod (so she is its
  // operator), sets a topic and the moderated mode from the settings; bob
  // sees the topic in the header and his SAY refused with a sentence; alice
  // grants and takes back his rights, kicks him and bans him for 10 minutes
  // from his nick's menu; both timelines show each event, and bob's JOIN is
  // then refused with a sentence. The settings then list the ban, lift it
  // with its Unban button, make the room invite-only and invite bob by
  // nick, who is then let in.
  async moderation() {
    const alice = await accountPage('alice', '#mod');
    await alice.locator('#settingsBtn').waitFor({ state: 'visible', timeout: WAIT });
    await waitUntil('alice marked as an operator', async () => (await users(alice)).includes('@alice'));
    await alice.click('#settingsBtn');
    await alice.fill('#topicInput', 'Be kind, stay on topic');
    await alice.check('#modeModerated');
    await alice.click('#settingsSave');
    await shows(alice, 'alice set the topic: Be kind, stay on topic', '.note');
    await shows(alice, 'The room is now moderated.', '.note');
    await alice.locator('#title small.modes', { hasText: 'moderated' }).waitFor({ timeout: WAIT });

    const bob = await accountPage('bob', '#mod');
    await bob.locator('#title small.topic', { hasText: 'Be kind, stay on topic' }).waitFor({ timeout: WAIT });
    await bob.locator('#title small.modes', { hasText: 'moderated' }).waitFor({ timeout: WAIT });
    assert.equal(await bob.locator('#settingsBtn').isVisible(), false, 'bob is no operator: no settings');
    await waitUntil('bob sees alice as an operator', async () => (await users(bob)).join() === '@alice,bob');
    await say(bob, 'can anyone hear me');
    await shows(bob, 'Not sent: #mod is moderated, so only its operators may speak.', '.msg.failed .why');
    await shows(alice, 'bob joined.', '.note');
    assert.equal(await count(alice, 'can anyone hear me'), 0, 'the refused message reached nobody');

    // A nick that is not an operator: a click whispers, no menu.
    await bob.click('#userList button[data-nick="alice"]');
    assert.equal(await bob.inputValue('#text'), '/msg alice ');
    assert.equal(await bob.locator('#nickMenu').isVisible(), false);

    // Op and deop from the menu.
    await nickMenu(alice, 'bob');
    await shot(alice, 'moderation-menu');
    await alice.click('#opBtn');
    await shows(alice, 'alice made bob an operator', '.note');
    await shows(bob, 'alice made bob an operator', '.note');
    await waitUntil('bob marked as an operator', async () => (await users(alice)).includes('@bob'));
    await nickMenu(alice, 'bob');
    assert.equal(await alice.locator('#opBtn').innerText(), 'Remove operator');
    await alice.click('#opBtn');
    await shows(bob, 'alice took operator rights from bob', '.note');
    await waitUntil('bob no longer an operator', async () => (await users(alice)).includes('bob'));

    // Kick, with a reason: one line in each timeline.
    await nickMenu(alice, 'bob');
    await alice.fill('#reasonInput', 'spam');
    await alice.click('#kickBtn');
    await shows(alice, 'alice kicked bob: spam', '.note');
    await shows(bob, 'kicked by alice: spam', '.note');
    await waitUntil('bob out of #mod', async () => (await joinedRooms(bob)).length === 0);
    await shot(bob, 'moderation-kicked');

    // Ban for 10 minutes: bob is out again and cannot come back.
    await say(bob, '/join #mod');
    await shows(bob, 'You joined #mod.', '.note');
    await waitUntil('bob back in alice\'s list', async () => (await users(alice)).includes('bob'));
    await nickMenu(alice, 'bob');
    await alice.selectOption('#banLength', '600');
    await alice.fill('#reasonInput', 'flood');
    await alice.click('#banBtn');
    await shows(alice, 'alice banned bob until', '.note');
    await shows(alice, ': flood', '.note');
    await shows(bob, 'banned by alice: flood', '.note');
    await say(bob, '/join #mod');
    await shows(bob, 'Cannot join #mod: you are banned', '.note.error');
    assert.deepEqual(await joinedRooms(bob), []);
    await shot(alice, 'moderation-operator');
    await shot(bob, 'moderation-banned');

    // The room's settings list the bans (LIST_BANS, BAN_LIST), each with
    // an Unban button (UNBAN); the list follows.
    await alice.click('#settingsBtn');
    await alice.locator('#banList li', { hasText: 'nick:bob' }).waitFor({ timeout: WAIT });
    assert.match(await alice.locator('#banList li').first().innerText(), /nick:bob by alice, until .*: flood/);
    await shot(alice, 'moderation-bans');
    await alice.click('#banList button[data-mask="nick:bob"]');
    await shows(alice, 'alice lifted the ban on bob', '.note');
    await alice.locator('#banList li.empty', { hasText: 'none' }).waitFor({ timeout: WAIT });
    assert.equal(await alice.locator('#banList button').count(), 0);

    // Invite-only from the same settings: bob is refused, then invited
    // by nick (INVITE), told so (INVITED), and let in.
    await alice.check('#modeInvite');
    await alice.click('#settingsSave');
    await shows(alice, 'The room is now moderated, invite-only.', '.note');
    await say(bob, '/join #mod');
    await shows(bob, 'Cannot join #mod: that room is invite-only', '.note.error');
    await alice.click('#settingsBtn');
    await alice.fill('#inviteInput', 'bob');
    await alice.click('#inviteBtn');
    await shows(alice, 'alice invited bob', '.note');
    await shows(bob, 'alice invited you to #mod', '.note');
    assert.equal(await alice.inputValue('#inviteInput'), '', 'the nick is cleared once sent');
    await alice.click('#settingsCancel');
    await say(bob, '/join #mod');
    await waitUntil('bob let in by the invitation', async () => (await joinedRooms(bob)).length === 1);
    await waitUntil('bob in alice\'s list again', async () => (await users(alice)).includes('bob'));
    await shot(bob, 'moderation-invited');
  },
};

// An account's page, signed in with its token and in `room`.
async function accountPage(sub, room, viewport = LAPTOP) {
  const page = await openPage(sub, viewport);
  await signInWithToken(page, mint(sub), room);
  await page.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
  await shows(page, `You joined ${room}.`, '.note');
  return page;
}

// Opens the operator's menu on `nick` in the member list.
async function nickMenu(page, nick) {
  await page.click(`#userList button[data-nick="${nick}"]`);
  await page.locator('#nickMenu').waitFor({ state: 'visible', timeout: WAIT });
}

async function restartDaemon() {
  console.log('RESTART');
  const { value, done } = await stdinLines.next();
  if (done || value.trim() !== 'RESTARTED') throw new Error(`the test did not restart the daemon (${value})`);
}

// ----- main ----------------------------------------------------------------

const name = process.argv[2];
let failed = false;
try {
  if (!scenarios[name]) throw new Error(`no scenario ${name}; there are ${Object.keys(scenarios).join(', ')}`);
  await scenarios[name]();
  assert.deepEqual(problems, [], 'the pages logged errors');
  console.log(`PASS ${name}`);
} catch (e) {
  failed = true;
  console.error(`FAIL ${name}: ${e.stack || e}`);
  for (const p of problems) console.error(`  ${p}`);
  // What the pages looked like when it failed.
  for (const ctx of browser.contexts()) {
    for (const page of ctx.pages()) {
      await page.screenshot({ path: `${ART}/${name}-failed-${page.label.replace(/\W+/g, '_')}.png` }).catch(() => {});
    }
  }
} finally {
  for (const c of cleanups.reverse()) { try { await c(); } catch { /* already gone */ } }
}
process.exit(failed ? 1 : 0);
