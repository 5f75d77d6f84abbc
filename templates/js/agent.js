// {{name}}: an elex plugin in JavaScript. It implements `elex:agent/agent` of
// the `elex:platform/plugin` world (the WIT in `wit/`). Build it with
// `elex build`; load it with `elex load`.
import log from "elex:host/log@0.1.0";

// componentize-qjs runs QuickJS without browser or Node globals (no
// `console`, no `TextEncoder`): log through elex:host/log, and turn strings
// into bytes with these.
const utf8 = (text) => Uint8Array.from(unescape(encodeURIComponent(text)), (c) => c.charCodeAt(0));
const fromUtf8 = (bytes) => decodeURIComponent(escape(String.fromCharCode(...bytes)));

let agentId = "";
let name = "";
let answered = 0;
let rewards = [];

export const agent = {
  init(config) {
    agentId = config.agentId;
    name = config.name;
    log.log("info", `${name} ready`, []);
  },
  handle(query) {
    if (query.text.trim() === "") {
      throw { tag: "invalid-input", val: "the question is empty" };
    }
    answered += 1;
    log.log("debug", `answering ${query.id}`, []);
    const q = rewards.length ? rewards.reduce((a, b) => a + b, 0) / rewards.length : 0;
    return {
      queryId: query.id,
      agentId,
      action: "direct-answer",
      content: `${name} (js) heard: ${query.text}`,
      confidence: 0.5,
      qValue: q,
      sources: [],
    };
  },
  feedback(queryId, reward) {
    if (!(reward >= -1 && reward <= 1)) {
      throw { tag: "invalid-input", val: "reward must be in [-1, 1]" };
    }
    rewards.push(reward);
  },
  validate(parameters) {
    return [];
  },
  kpis(samples) {
    return [];
  },
  snapshot() {
    return utf8(JSON.stringify({ answered, rewards }));
  },
  restore(bytes) {
    try {
      const state = JSON.parse(fromUtf8(bytes));
      answered = state.answered | 0;
      rewards = state.rewards.map(Number);
    } catch (e) {
      throw { tag: "corrupt-state", val: String(e) };
    }
  },
  health() {
    return { status: "healthy", detail: `${answered} answered` };
  },
};
