// One editor window. Window 1 owns first_name, window 2 owns last_name; the other
// field is read-only here and follows the live feed.
//
// Rules that keep typing safe:
// - one PATCH in flight at a time; when it returns, whatever was typed since is sent
//   next, so the last keystroke is always the last value saved;
// - the owned field is never overwritten while it holds anything not yet sent, nor
//   by the answer to our own PATCH (the server trims; the person may still be typing);
// - an event or answer with a version lower than the one shown is ignored;
// - 412 (someone else changed the user) refetches, then sends again;
// - a failed send (offline, 503) is retried when the feed reconnects.
// Server text is only ever set with .value / .textContent, never as HTML.
//
// The socket follows this window's user only (?users=), and the window says it is
// there (presence: its window, its field, whether someone is typing in it) and
// shows who else is.

import { bearerToken, createUser, getUser, patchUser } from './api.js';
import { Feed } from './feed.js';

const DEBOUNCE_MS = 150;
// Typing stops counting this long after the last keystroke (and once sent).
const TYPING_FOR_MS = 2000;
// At most one presence message this often (the gateway allows ten a second).
const PRESENCE_EVERY_MS = 250;
const RETRY_MS = 2000;
const LABELS = { first_name: 'first name', last_name: 'last name' };
const STATE_TEXT = {
  connected: 'connected',
  reconnecting: 'reconnecting…',
  offline: 'offline',
  disconnected: 'disconnected',
};

const windowNumber = /\/window\/2(\/|$)/.test(location.pathname) ? 2 : 1;
const owned = windowNumber === 1 ? 'first_name' : 'last_name';
const other = owned === 'first_name' ? 'last_name' : 'first_name';
const otherWindow = windowNumber === 1 ? 2 : 1;

// The accent colour follows the window; inside the start page's frame the window
// drops its own card (the frame is one) and its link back to the start page.
document.documentElement.dataset.window = String(windowNumber);
document.documentElement.classList.toggle('framed', window.self !== window.top);

const $ = (id) => document.getElementById(id);
const inputs = { first_name: $('first_name'), last_name: $('last_name') };
const ownedInput = inputs[owned];
const otherInput = inputs[other];

const state = {
  userId: parseUserId(new URLSearchParams(location.search).get('user')),
  loaded: false,
  version: 0,
  // The last value of the owned field handed to the server (or taken from it).
  lastSent: '',
  inFlight: false,
  debounce: null,
  retryTimer: null,
  failed: false,
  // The feed said the database may be another one (resync, new epoch): the next
  // fetch replaces what is shown whatever its version. Otherwise a fetch older
  // than an event already shown (it was answered before the event, read after)
  // is ignored like an old event.
  databaseChanged: false,
};

function parseUserId(raw) {
  return raw && /^\d+$/.test(raw) && Number(raw) > 0 ? Number(raw) : 1;
}

// This page's own presence: `tab` tells its entry apart from another tab's of the
// same window number.
const presence = {
  tab: Math.random().toString(36).slice(2, 10),
  typing: false,
  typingTimer: null,
  sent: null,
  sendTimer: null,
};

function presenceMeta() {
  return { window: windowNumber, field: owned, typing: presence.typing, tab: presence.tab };
}

/** Sends this window's presence when it changed (or `force`), at most every PRESENCE_EVERY_MS. */
function sendPresence(force = false) {
  if (presence.sendTimer !== null) return;
  const meta = presenceMeta();
  const text = JSON.stringify(meta);
  if (!force && text === presence.sent) return;
  if (feed.send({ type: 'presence', user: state.userId, meta })) presence.sent = text;
  presence.sendTimer = setTimeout(() => {
    presence.sendTimer = null;
    if (JSON.stringify(presenceMeta()) !== presence.sent) sendPresence();
  }, PRESENCE_EVERY_MS);
}

function typed() {
  presence.typing = true;
  clearTimeout(presence.typingTimer);
  presence.typingTimer = setTimeout(stillTyping, TYPING_FOR_MS);
  sendPresence();
}

function stillTyping() {
  presence.typing = hasUnsentTyping();
  if (presence.typing) presence.typingTimer = setTimeout(stillTyping, TYPING_FOR_MS);
  sendPresence();
}

/** Shows the other windows on this user, from a presence list. */
function showPresence(message) {
  if (message.user !== state.userId) return;
  const others = (message.members ?? []).filter((m) => m.meta?.tab !== presence.tab);
  const lines = others.map((m) => {
    const who = [`Window ${Number(m.meta?.window) || '?'}`, m.sub].filter(Boolean).join(' · ');
    const field = LABELS[m.meta?.field];
    return m.meta?.typing && field ? `${who} is here, typing in ${field}…` : `${who} is here`;
  });
  const element = $('presence');
  element.textContent = lines.join('; ');
  element.hidden = lines.length === 0;
}

function hasUnsentTyping() {
  return state.inFlight || state.debounce !== null || ownedInput.value !== state.lastSent;
}

function setupFields() {
  setupTitles();
  $('owner').textContent =
    `This window edits the ${LABELS[owned]}. The ${LABELS[other]} is edited in window ${otherWindow} and shown here live.`;
  $(`${owned}-role`).textContent = '(edited here)';
  $(`${other}-role`).textContent = `(read-only, edited in window ${otherWindow})`;
  otherInput.readOnly = true;
  otherInput.setAttribute('aria-readonly', 'true');
  ownedInput.setAttribute('aria-describedby', `${owned}-error`);
  ownedInput.disabled = true;
  ownedInput.addEventListener('input', () => {
    typed();
    clearTimeout(state.debounce);
    state.debounce = setTimeout(() => {
      state.debounce = null;
      flush();
    }, DEBOUNCE_MS);
    setSaved('editing…');
  });
  $('editor').addEventListener('submit', (event) => {
    event.preventDefault();
    flush();
  });
  $('create').addEventListener('click', create);
}

function setStatus(name) {
  const status = $('status');
  status.dataset.state = name;
  status.textContent = STATE_TEXT[name] ?? name;
}

function setSaved(text) {
  $('saved').textContent = text;
}

function showMessage(text) {
  const message = $('message');
  message.textContent = text;
  message.hidden = !text;
}

function showFieldError(field, text) {
  const element = $(`${field}-error`);
  element.textContent = text;
  element.hidden = !text;
  inputs[field].setAttribute('aria-invalid', text ? 'true' : 'false');
}

/**
 * Shows a user from the server, unless it is older than what is shown. A
 * `fetched` user after the database changed always wins: versions may restart.
 */
function applyUser(user, { ownAnswer = false, fetched = false } = {}) {
  if (!user || user.id !== state.userId) return;
  if (state.loaded && !fetched && user.version < state.version) return;
  state.loaded = true;
  state.version = user.version;
  $('version').textContent = String(user.version);
  otherInput.value = user[other];
  if (!ownAnswer && !hasUnsentTyping()) {
    ownedInput.value = user[owned];
    state.lastSent = user[owned];
  }
  $('editor').hidden = false;
  $('missing').hidden = true;
  ownedInput.disabled = false;
}

function showMissing(text) {
  state.loaded = false;
  $('editor').hidden = true;
  $('missing-text').textContent = text;
  $('missing').hidden = false;
}

async function load() {
  const answer = await getUser(state.userId);
  if (answer.status === 404) {
    showMissing(`User ${state.userId} does not exist.`);
    return;
  }
  if (!answer.ok) {
    showMessage(answer.body?.detail ?? `Loading the user failed (${answer.status}).`);
    setTimeout(load, RETRY_MS);
    return;
  }
  showMessage('');
  const replace = state.databaseChanged;
  state.databaseChanged = false;
  applyUser(answer.body, { fetched: replace });
  if (!hasUnsentTyping()) setSaved('saved');
}

async function create() {
  $('create').disabled = true;
  const answer = await createUser({ first_name: 'New', last_name: 'User' });
  $('create').disabled = false;
  if (answer.status !== 201) {
    showMessage(answer.body?.detail ?? `Creating the user failed (${answer.status}).`);
    return;
  }
  feed.follow(state.userId, answer.body.id);
  state.userId = answer.body.id;
  state.version = 0;
  showPresence({ user: state.userId, members: [] });
  sendPresence(true);
  state.lastSent = answer.body[owned];
  ownedInput.value = answer.body[owned];
  const url = new URL(location.href);
  url.searchParams.set('user', String(state.userId));
  history.replaceState(null, '', url);
  setupTitles();
  showMessage('');
  applyUser(answer.body, { fetched: true });
  setSaved('saved');
}

function setupTitles() {
  document.title = `Window ${windowNumber}: ${LABELS[owned]} of user ${state.userId}`;
  $('title').textContent = `Window ${windowNumber}: user ${state.userId}`;
}

/** Sends the owned field if it holds something unsent; one request at a time. */
async function flush() {
  if (state.inFlight || !state.loaded) return;
  const value = ownedInput.value;
  if (value === state.lastSent && !state.failed) return;
  state.inFlight = true;
  clearTimeout(state.retryTimer);
  setSaved('saving…');
  const answer = await patchUser(state.userId, { [owned]: value }, state.version);
  state.inFlight = false;
  switch (answer.status) {
    case 200:
      state.lastSent = value;
      state.failed = false;
      showFieldError(owned, '');
      applyUser(answer.body, { ownAnswer: true });
      break;
    case 400:
      // Keep what the person typed; say why the server refused it.
      state.lastSent = value;
      state.failed = false;
      showFieldError(owned, (answer.body?.[owned] ?? [answer.body?.detail ?? 'Invalid value.']).join(' '));
      setSaved('not saved');
      return;
    case 404:
      showMissing(`User ${state.userId} no longer exists.`);
      return;
    case 412:
      await load();
      state.failed = true;
      break;
    default:
      state.failed = true;
      setSaved('not saved yet: will retry');
      state.retryTimer = setTimeout(flush, RETRY_MS);
      return;
  }
  if (ownedInput.value !== state.lastSent || state.failed) {
    flush();
  } else if (state.debounce === null) {
    setSaved('saved');
  }
}

function onEvent(message) {
  const data = message.data ?? {};
  if (data.user?.id !== state.userId) return;
  if (data.action === 'delete') {
    showMissing(`User ${state.userId} was deleted.`);
    return;
  }
  applyUser(data.user);
}

setupFields();
setStatus('disconnected');
const feed = new Feed({
  token: bearerToken,
  onState: (name) => {
    setStatus(name);
  },
  users: () => [state.userId],
  onPresence: showPresence,
  onHello: (_message, epochChanged) => {
    // A new socket: this window is on no one's list until it says so again.
    presence.sent = null;
    sendPresence(true);
    if (epochChanged) state.databaseChanged = true;
    if (epochChanged || !state.loaded) load();
    if (state.failed) flush();
  },
  onResync: () => {
    state.databaseChanged = true;
    load();
  },
  onEvent,
});
feed.start();
load();
