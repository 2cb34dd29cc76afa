// The live feed: one WebSocket to /ws/user-updates/, reconnecting after 3 s and then
// backing off (capped at 30 s, with jitter), resuming with since/epoch so no event
// is missed across a reconnect. With `users` it follows only those users
// (`?users=`), and carries presence both ways.

const FIRST_RETRY_MS = 3000;
const MAX_RETRY_MS = 30000;

export class Feed {
  /**
   * @param {object} handlers onEvent(message), onHello(message, epochChanged),
   *   onResync(), onState(state) where state is connected | reconnecting | offline | disconnected,
   *   onPresence(message), users() → the ids to follow (null: every user).
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.since = null;
    this.epoch = null;
    this.retryMs = FIRST_RETRY_MS;
    this.timer = null;
    this.socket = null;
    addEventListener('online', () => this.connectSoon(0));
    addEventListener('offline', () => this.setState('offline'));
  }

  start() {
    this.connect();
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = new URLSearchParams();
    if (this.since !== null && this.epoch) {
      query.set('since', String(this.since));
      query.set('epoch', this.epoch);
    }
    const users = this.handlers.users?.();
    if (users) query.set('users', users.join(','));
    const token = this.handlers.token?.();
    if (token) query.set('token', token);
    const qs = query.toString();
    return `${scheme}://${location.host}/ws/user-updates/${qs ? `?${qs}` : ''}`;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    let socket;
    try {
      socket = new WebSocket(this.url());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onmessage = (message) => this.receive(message.data);
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.scheduleReconnect();
    };
  }

  receive(text) {
    let message;
    try { message = JSON.parse(text); } catch { return; }
    switch (message.type) {
      case 'hello': {
        const epochChanged = this.epoch !== null && this.epoch !== message.epoch;
        this.epoch = message.epoch;
        if (this.since === null || epochChanged) this.since = message.seq;
        this.retryMs = FIRST_RETRY_MS;
        this.setState('connected');
        this.handlers.onHello?.(message, epochChanged);
        break;
      }
      case 'user_update':
        if (typeof message.seq === 'number') this.since = message.seq;
        this.handlers.onEvent?.(message);
        break;
      case 'presence':
        this.handlers.onPresence?.(message);
        break;
      case 'resync':
        // Our position is meaningless now: start again from the live edge.
        this.since = null;
        this.handlers.onResync?.();
        break;
      default:
        break;
    }
  }

  /** Sends `message` as JSON if the socket is open; whether it was sent. */
  send(message) {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  /** Follows `to` instead of `from` on the open socket (the next connect's query follows `users()`). */
  follow(from, to) {
    if (from === to) return;
    this.send({ type: 'unsubscribe', users: [from] });
    this.send({ type: 'subscribe', users: [to] });
  }

  scheduleReconnect() {
    if (!navigator.onLine) {
      this.setState('offline');
    } else {
      this.setState('reconnecting');
    }
    const jitter = 0.8 + Math.random() * 0.4;
    this.connectSoon(Math.round(this.retryMs * jitter));
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }

  connectSoon(delayMs) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  setState(state) {
    this.handlers.onState?.(state);
  }
}
