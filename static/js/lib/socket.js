// One reconnecting websocket for every page that streams: JSON in and out, backoff with jitter,
// an optional acknowledgement per message (the telemetry socket's flow control) and an optional
// silence limit, and its state reported as "connecting", "connected", "reconnecting" or "closed".

// The close code both OpsDash consumers use for "not allowed": signing in again is the way back,
// so reconnecting would only be refused again.
const CLOSE_FORBIDDEN = 4403;
const FIRST_DELAY_MS = 500;
// A connection that stayed open this long was a good one: the next drop starts the backoff over.
// (Not at "open" alone: a server that accepts and closes at once would be asked every 0.5 s.)
const STABLE_MS = 5000;

/**
 * Opens a websocket to `path` on this page's host and keeps it open.
 *
 * options.onMessage(message)       each message, parsed from JSON (others are dropped)
 * options.onState(state, detail)   "connecting" | "connected" | "reconnecting" (detail: the wait
 *                                  in ms) | "closed" (detail: the close code; no more tries)
 * options.ack                      a string sent back after each message, before onMessage
 * options.silenceMs                no message for this long: the link is dead, open a new one
 * options.maxDelayMs               the longest wait between two tries (default 15 s)
 *
 * Returns { send(message) }: send answers false when the socket is not open (nothing is queued).
 */
export function openSocket(path, options) {
  const onMessage = options.onMessage;
  const onState = options.onState || function () {};
  const maxDelay = options.maxDelayMs || 15000;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  let socket = null;
  let delay = FIRST_DELAY_MS;
  let silence = null;
  let stable = null;

  function watch() {
    if (!options.silenceMs) return;
    clearTimeout(silence);
    const watched = socket;
    silence = setTimeout(function () { watched.close(); }, options.silenceMs);
  }

  function open() {
    onState("connecting");
    const current = new WebSocket(url);
    socket = current;
    current.addEventListener("open", function () {
      stable = setTimeout(function () { delay = FIRST_DELAY_MS; }, STABLE_MS);
      onState("connected");
      watch();
    });
    current.addEventListener("message", function (e) {
      watch();
      delay = FIRST_DELAY_MS; // the server is answering
      let message = null;
      try { message = JSON.parse(e.data); } catch (err) { return; }
      if (options.ack) current.send(options.ack);
      onMessage(message);
    });
    current.addEventListener("close", function (e) {
      clearTimeout(silence);
      clearTimeout(stable);
      socket = null;
      if (e.code === CLOSE_FORBIDDEN) { onState("closed", e.code); return; }
      // Servers close every socket on a restart, a stalled one after their stall limit, all
      // of them after a proxy's time limit: come back with backoff, and with jitter so that
      // the pages of one restart do not return in step.
      const wait = Math.round(delay * (0.8 + Math.random() * 0.4));
      onState("reconnecting", wait);
      setTimeout(open, wait);
      delay = Math.min(delay * 2, maxDelay);
    });
  }

  open();
  return {
    send: function (message) {
      if (!socket || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(JSON.stringify(message));
      return true;
    },
  };
}
