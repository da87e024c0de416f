// The chatsessions web console: plain JS, no build step. Third-party code: marked and
// DOMPurify, vendored under /static/vendor (see VERSIONS there).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  // el("button", {className, onclick, data: {testid}}, ...children)
  const el = (tag, { data = {}, ...props } = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    Object.assign(node.dataset, data);
    node.append(...children);
    return node;
  };
  const KEY_STORAGE = "chatsessions.apiKey";

  const state = {
    chats: [],            // newest first, as the server orders them
    nextCursor: null,
    selected: null,       // chat id
    loaded: false,        // the selected chat's history is on screen
    lastSeq: 0,           // highest seq shown for the selected chat
    loadToken: 0,         // discards history responses for a chat we already left
    streams: new Map(),   // chat id -> {user, text, baseSeq}: turns still streaming
    unread: new Set(),    // chats whose answer finished while we looked elsewhere
    armed: null,          // chat id whose Delete was clicked once: the next click deletes
  };

  // ---- API -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, type, message) { super(message); Object.assign(this, { status, type }); }
  }
  const isStatus = (err, status) => err instanceof ApiError && err.status === status;

  function headers(extra = {}) {
    const key = localStorage.getItem(KEY_STORAGE);
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  }

  async function toError(res) {
    let type = `http_${res.status}`, message = res.statusText || "request failed";
    const body = await res.json().catch(() => null);  // not JSON: keep the status line
    if (body?.error) ({ type = type, message = message } = body.error);
    if (res.status === 401) showKeyForm();
    return new ApiError(res.status, type, message);
  }

  async function api(method, path, body) {
    const json = body !== undefined;
    const res = await fetch(path, {
      method,
      headers: headers(json ? { "Content-Type": "application/json" } : {}),
      body: json ? JSON.stringify(body) : undefined,
    });
    if (!res.ok) throw await toError(res);
    return res.status === 204 ? null : res.json();
  }

  const chatPath = (id) => `/chats/${encodeURIComponent(id)}`;

  // Server-sent events over fetch (EventSource cannot POST). Follows the SSE line
  // rules: CR, LF or CRLF end a line, a blank line ends an event.
  async function readEvents(res, onEvent) {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", event = "message", data = [], lastId = null;
    const line = (text) => {
      if (text === "") {
        if (data.length) onEvent(event, data.join("\n"), lastId);
        [event, data] = ["message", []];
      } else if (!text.startsWith(":")) {
        const [, field, value] = text.match(/^([^:]*):? ?(.*)$/s);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
        else if (field === "id") lastId = value;
      }
    };
    for (let chunk; !(chunk = await reader.read()).done;) {
      // A trailing "\r" may be half of a "\r\n" split across chunks: keep it for later.
      const lines = (buf + chunk.value).split(/\r\n|\r(?!$)|\n/);
      buf = lines.pop();
      lines.forEach(line);
    }
    if (buf) line(buf.replace(/\r$/, ""));
    line("");
  }

  // ---- Markdown ------------------------------------------------------------------
  // Model output is untrusted. marked (GFM: tables, block quotes, nested lists, fenced
  // code) renders it, with any raw HTML in it shown as text; DOMPurify then keeps only
  // the elements markdown makes, and links only to http(s) and mailto. The page's
  // Content-Security-Policy would still refuse any script that got through.

  const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  const markdown = new marked.Marked({ gfm: true, breaks: true, async: false }, {
    renderer: {
      // "<b>" in an answer is something the model wrote, not markup for us to run.
      html: ({ text, block }) => (block
        ? `<p>${escapeHtml(text.trimEnd()).replace(/\n/g, "<br>")}</p>` : escapeHtml(text)),
      // No images: nothing is fetched on a model's say-so; a link to it instead.
      image: ({ href, text }) => `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`,
    },
  });

  const SANITIZE = {
    ALLOWED_TAGS: ["a", "p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote",
      "ul", "ol", "li", "input", "h1", "h2", "h3", "h4", "h5", "h6",
      "table", "thead", "tbody", "tr", "th", "td"],
    ALLOWED_ATTR: ["href", "title", "start", "align", "type", "checked", "disabled", "class"],
    // Every attribute value is held to this, not only href's: DOMPurify's default pattern
    // without the schemes other than http(s) and mailto.
    ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  };
  const WEB_LINK = /^(?:https?|mailto):/i;

  // Nodes, not a string: nothing sanitized is parsed as HTML a second time.
  function renderMarkdown(source) {
    const nodes = DOMPurify.sanitize(markdown.parse(source), { ...SANITIZE, RETURN_DOM_FRAGMENT: true });
    for (const a of nodes.querySelectorAll("a")) {
      if (WEB_LINK.test(a.getAttribute("href") ?? "")) Object.assign(a, { target: "_blank", rel: "noopener noreferrer" });
      else a.replaceWith(...a.childNodes);  // a link we refused is its text
    }
    nodes.querySelectorAll("input:not([type=checkbox])").forEach((node) => node.remove());
    return nodes;
  }

  let bannerTimer = 0;
  function showError(err) {
    const text = err instanceof ApiError ? `${err.message} (${err.type})` : String(err.message || err);
    $("banner-text").textContent = text;
    $("banner").hidden = false;
    clearTimeout(bannerTimer);
    bannerTimer = setTimeout(() => { $("banner").hidden = true; }, 8000);
  }
  const unless404 = (err) => { if (!isStatus(err, 404)) showError(err); };

  const showKeyForm = () => { $("key-form").hidden = false; $("key-input").focus(); };

  // ---- chat list -------------------------------------------------------------

  const chatTitle = (chat) => chat.title || "Untitled chat";
  const chatById = (id) => state.chats.find((c) => c.id === id);

  function ago(iso) {
    const min = Math.floor((Date.now() - Date.parse(iso)) / 60000);
    if (!(min >= 1)) return "just now";  // also a clock slightly ahead of ours
    return min < 60 ? `${min} min ago` : min < 1440 ? `${Math.floor(min / 60)} h ago`
      : new Date(iso).toLocaleDateString();
  }

  function renderChatList() {
    // Re-rendering would throw away a title being typed; finishing the rename redraws.
    if (document.activeElement?.classList.contains("rename-input")) return;
    const items = state.chats.map((chat) => {
      const count = `${chat.message_count} message${chat.message_count === 1 ? "" : "s"}`;
      const open = el("button", {
        className: "chat-open", type: "button", title: chatTitle(chat), onclick: () => selectChat(chat.id),
      },
      el("span", { className: "chat-title", textContent: chatTitle(chat) }),
      el("span", { className: "chat-sub", textContent: `${count} · ${ago(chat.created_at)}` }));
      const rename = el("button", {
        className: "icon", type: "button", title: "Rename", textContent: "✎",
        data: { testid: "rename" }, onclick: () => startRename(item, chat),
      });
      const armed = state.armed === chat.id;
      const del = el("button", {
        className: `icon danger${armed ? " armed" : ""}`, type: "button", title: "Delete",
        textContent: armed ? "Delete?" : "✕", data: { testid: "delete" }, onclick: () => confirmDelete(chat),
      });
      const item = el("li", { className: "chat-item", data: { testid: "chat-item", id: chat.id } },
        open, rename, del);
      item.classList.toggle("selected", chat.id === state.selected);
      item.classList.toggle("streaming", state.streams.has(chat.id));
      item.classList.toggle("unread", state.unread.has(chat.id));
      if (chat.id === state.selected) open.setAttribute("aria-current", "true");
      return item;
    });
    $("chat-list").replaceChildren(...items);
    $("more-chats").hidden = !state.nextCursor || !$("search-results").hidden;
  }

  async function loadChats(more = false) {
    const query = new URLSearchParams({ limit: "50" });
    if (more && state.nextCursor) query.set("cursor", state.nextCursor);
    const page = await api("GET", `/chats?${query}`);
    const known = new Set(state.chats.map((c) => c.id));
    state.chats = more ? state.chats.concat(page.data.filter((c) => !known.has(c.id))) : page.data;
    state.nextCursor = page.next_cursor;
    renderChatList();
  }

  function putChat(chat) {
    const i = state.chats.findIndex((c) => c.id === chat.id);
    if (i >= 0) state.chats[i] = chat;
    else state.chats.unshift(chat);
    renderChatList();
    if (chat.id === state.selected) renderHeader();
  }

  // Shared while in flight: a message typed right after clicking "New chat" goes to that chat.
  let creating = null;
  const newChat = () => (creating ??= api("POST", "/chats", {}).then(async (chat) => {
    putChat(chat);
    await selectChat(chat.id);
    return chat;
  }).finally(() => { creating = null; }));

  function startRename(item, chat) {
    const open = item.querySelector(".chat-open");
    if (!open) return;  // already renaming
    const input = el("input", {
      className: "rename-input", value: chat.title || "", maxLength: 200, data: { testid: "rename-input" },
    });
    let finished = false;
    const finish = async (save) => {
      if (finished) return;
      finished = true;
      const title = input.value.trim();
      if (save && title !== (chat.title || "")) {
        await api("PATCH", chatPath(chat.id), { title: title || null }).then(putChat, showError);
      }
      input.blur();
      renderChatList();
    };
    input.onkeydown = (e) => {
      if (e.key === "Enter") { e.preventDefault(); finish(true); }
      if (e.key === "Escape") finish(false);
    };
    input.onblur = () => finish(true);
    open.replaceWith(input);
    input.focus();
    input.select();
  }

  // Two clicks instead of confirm(): a native dialog would block the page. The armed state
  // lives in `state`, so a redraw of the list in between (a title, new counts) keeps it.
  let disarmTimer = 0;
  async function confirmDelete(chat) {
    clearTimeout(disarmTimer);
    if (state.armed !== chat.id) {
      state.armed = chat.id;
      renderChatList();
      disarmTimer = setTimeout(() => { state.armed = null; renderChatList(); }, 3000);
      return;
    }
    state.armed = null;
    try {
      await api("DELETE", chatPath(chat.id));
    } catch (err) {
      if (!isStatus(err, 404)) return showError(err);
    }
    forget(chat.id);
  }

  function forget(id) {
    state.chats = state.chats.filter((c) => c.id !== id);
    if (state.selected === id) selectChat(null);
    else renderChatList();
  }

  // ---- messages --------------------------------------------------------------

  function renderHeader() {
    const chat = state.chats.find((c) => c.id === state.selected);
    $("chat-title").textContent = chat ? chatTitle(chat) : "No chat selected";
    const tokens = chat ? chat.prompt_tokens + chat.completion_tokens : 0;
    $("chat-meta").textContent = chat ? `${chat.model} · ${tokens} tokens used` : "";
  }

  // A message's images: an inline one (a data: URL) is shown; one on the web is a link to
  // it, never fetched, as images in answers are (the page loads nothing from elsewhere).
  function imagesOf(msg) {
    const urls = (msg.parts || [])
      .filter((part) => part.type === "image_url" && part.image_url && part.image_url.url)
      .map((part) => String(part.image_url.url));
    if (!urls.length) return null;
    return el("div", { className: "msg-images", data: { testid: "message-images" } },
      ...urls.map((url) => url.startsWith("data:image/")
        ? el("img", { src: url, alt: "image", className: "msg-image" })
        : el("a", { href: url, textContent: url, rel: "noopener noreferrer", target: "_blank" })));
  }

  // actions: {edit, regenerate, retry} flags, set by renderHistory for stored messages.
  function messageEl(msg, actions = {}) {
    const bubble = el("div", { className: "bubble" });
    if (msg.role === "assistant") bubble.replaceChildren(renderMarkdown(msg.content));  // sanitized
    else bubble.textContent = msg.content;
    const images = imagesOf(msg);
    if (images) bubble.append(images);
    // An answer superseded by a regenerate is kept, folded away.
    const body = msg.status === "replaced"
      ? el("details", { className: "earlier" }, el("summary", { textContent: "Earlier answer" }), bubble)
      : bubble;
    const node = el("article", {
      className: `msg ${msg.role} ${msg.status}`,
      data: { testid: "message", role: msg.role, status: msg.status, seq: msg.seq ?? "" },
    }, body);
    const note = (className, textContent) => node.append(el("div", { className, textContent }));
    const buttons = [
      actions.edit && actionButton("Edit", "edit", () => startEdit(node, msg)),
      actions.retry && actionButton("Retry", "retry", () => again("retry", msg.content)),
      actions.regenerate && actionButton("Regenerate", "regenerate", () => again("regenerate")),
    ].filter(Boolean);
    if (msg.status === "replaced") {
      // no note: the answer that replaced it follows
    } else if (msg.status === "failed") {
      const what = msg.role === "user" ? "Not answered" : "Answer interrupted";
      note("msg-error", `⚠ ${what}: ${msg.error || "unknown error"}`);
    } else if (msg.status === "pending" && !state.streams.has(state.selected)) {
      note("msg-note", "waiting for the answer…");  // a turn running elsewhere
    } else if (msg.role === "assistant" && msg.model) {
      const bits = [msg.model, `${msg.completion_tokens} tokens`];
      if (msg.latency_ms != null) bits.push(`${(msg.latency_ms / 1000).toFixed(1)} s`);
      note("msg-note", bits.join(" · "));
    }
    if (buttons.length) node.append(el("div", { className: "msg-actions" }, ...buttons));
    return node;
  }

  // A summary written under the "summarize" policy stands in for earlier turns in what
  // the model is shown; those turns stay on screen, so it is folded away, after the last
  // message it stands for.
  const isSummary = (msg) => msg.role === "system" && msg.covers_seq != null;
  function summaryEl(msg) {
    const details = el("details", { className: "summary-block" },
      el("summary", { textContent: "Summary of earlier messages" }),
      el("div", { className: "bubble", textContent: msg.content }),
      el("div", { className: "msg-note", textContent: `the model is shown this instead of messages 1–${msg.covers_seq}` }));
    return el("article", {
      className: "msg summary",
      data: { testid: "summary", seq: msg.seq, covers: msg.covers_seq },
    }, details);
  }
  const shownAt = (msg) => (isSummary(msg) ? msg.covers_seq + 0.5 : msg.seq);

  // Tool calls and their outputs are how an answer was found: they are folded under the
  // answer they led to (or shown on their own while the chat waits for outputs).
  const isToolStep = (msg) => msg.role === "tool" || (msg.role === "assistant" && msg.tool_calls?.length);
  function toolsEl(steps) {
    const outputs = new Map(steps.filter((m) => m.role === "tool").map((m) => [m.tool_call_id, m]));
    // each call as /chats serves it, in OpenAI's chat shape: {id, type, function: {name, arguments}}
    const calls = steps.flatMap((m) => (m.tool_calls || []).map(({ id, function: fn }) => (
      { call: { id, name: fn.name, arguments: fn.arguments }, said: m.content })));
    const rows = calls.map(({ call, said }) => {
      const output = outputs.get(call.id);
      return el("div", { className: "tool-call", data: { testid: "tool-call", callId: call.id } },
        said ? el("div", { className: "tool-said", textContent: said }) : "",
        el("code", { className: "tool-name", textContent: `${call.name}(${call.arguments})` }),
        output
          ? el("pre", { className: "tool-output", textContent: output.content, data: { testid: "tool-output" } })
          : el("div", { className: "msg-note", textContent: "waiting for its output…" }));
    });
    const names = calls.map(({ call }) => call.name).join(", ");
    const label = `${calls.length} tool call${calls.length === 1 ? "" : "s"}: ${names}`;
    return el("details", { className: "tool-calls", data: { testid: "tool-calls" } },
      el("summary", { textContent: label }), ...rows);
  }

  const actionButton = (textContent, testid, onclick) =>
    el("button", { className: "link", type: "button", textContent, onclick, data: { testid } });

  const pane = () => $("messages");
  const nearBottom = () => pane().scrollHeight - pane().scrollTop - pane().clientHeight < 80;
  const toBottom = () => { pane().scrollTop = pane().scrollHeight; };
  const notice = (textContent) => el("p", { className: "empty", textContent });
  const liveBubble = (stream) => Object.assign(
    messageEl({ role: "assistant", content: stream.text, status: "streaming" }), { id: "live" });

  // History from the server, plus the turn this tab is still streaming (if any).
  function renderHistory(messages) {
    const stream = state.streams.get(state.selected);
    // What the server would regenerate (the last ok message, if an answer) or retry (the
    // last user message among the last three rows, if it failed: a summary and a partial
    // answer may follow it); nothing while a turn is running.
    const lastOk = messages.filter((m) => m.status === "ok").pop();
    const asked = messages.slice(-3).filter((m) => m.role === "user").pop();
    const failed = asked?.status === "failed" ? asked : null;
    const ordered = [...messages].sort((a, b) => shownAt(a) - shownAt(b));
    const nodes = [];
    let steps = [];  // tool calls and outputs not yet shown under an answer
    const flush = () => {
      if (steps.length) nodes.push(el("article", { className: "msg tools" }, toolsEl(steps)));
      steps = [];
    };
    for (const m of ordered) {
      if (m.status === "ok" && isToolStep(m)) { steps.push(m); continue; }
      if (isSummary(m)) { nodes.push(summaryEl(m)); continue; }
      const led = m.role === "assistant" && m.status !== "replaced" && steps.length;
      if (!led) flush();
      const node = messageEl(m, stream ? {} : {
        edit: m.role === "user",
        regenerate: m === lastOk && m.role === "assistant",
        retry: m === failed,
      });
      if (led) { node.querySelector(".bubble").after(toolsEl(steps)); steps = []; }
      nodes.push(node);
    }
    flush();
    const turn = stream ? messages.filter((m) => m.seq > stream.baseSeq) : [];
    if (stream && !turn.some((m) => m.role === "assistant" && m.status !== "replaced")) {
      const asked = stream.user != null;  // a regenerate asks nothing new
      if (!turn.length && asked) nodes.push(messageEl({ role: "user", content: stream.user, status: "pending" }));
      nodes.push(liveBubble(stream));
    }
    pane().replaceChildren(...(nodes.length ? nodes : [notice("No messages yet. Say hello!")]));
    state.lastSeq = messages.reduce((max, m) => Math.max(max, m.seq), 0);
    toBottom();
  }

  async function loadMessages(id) {
    const token = ++state.loadToken;
    let messages = [], after = 0;
    do {
      const page = await api("GET", `${chatPath(id)}/messages?limit=200&after=${after}`);
      if (token !== state.loadToken) return null;  // the user moved on meanwhile
      messages = messages.concat(page.data);
      after = page.next_after;
    } while (after != null);
    state.loaded = true;
    renderHistory(messages);
    updateComposer();
    return messages;
  }

  async function selectChat(id) {
    Object.assign(state, { selected: id, loaded: id === null, loadToken: state.loadToken + 1 });
    state.unread.delete(id);
    history.replaceState(null, "", id ? `#${encodeURIComponent(id)}` : location.pathname);
    renderChatList();
    renderHeader();
    updateComposer();
    pane().replaceChildren(notice(id === null
      ? "Pick a chat on the left, or just type below to start a new one." : "Loading…"));
    if (id === null) return;
    await loadMessages(id).catch((err) => {
      showError(err);
      if (isStatus(err, 404)) forget(id);  // deleted elsewhere
    });
  }

  // ---- sending ---------------------------------------------------------------

  function updateComposer() {
    const busy = !state.loaded || state.streams.has(state.selected);
    $("message-input").disabled = $("send").disabled = busy;
    pane().classList.toggle("busy", busy);
    if (!busy && document.activeElement === document.body) $("message-input").focus();
  }

  // Repaint the live answer at most once per frame, however fast deltas come.
  let paintQueued = false;
  function paintLive() {
    if (paintQueued) return;
    paintQueued = true;
    requestAnimationFrame(() => {
      paintQueued = false;
      const stream = state.streams.get(state.selected), live = $("live");
      if (!stream || !live) return;
      const stick = nearBottom();
      live.replaceWith(liveBubble(stream));
      if (stick) toBottom();
    });
  }

  // One streamed turn; returns why it failed, or null.
  async function streamTurn(id, stream) {
    // No AbortController on purpose: leaving the chat must not cancel the turn.
    // stream.action: "regenerate" or "retry" ask again what the chat already holds.
    const res = await fetch(`${chatPath(id)}/${stream.action || "messages"}`, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(stream.action ? { stream: true } : { content: stream.user, stream: true }),
    });
    if (!res.ok) return toError(res);
    const dropped = new Error("the connection closed before the answer was complete");
    let outcome = dropped, lastId = null;
    const onEvent = (event, data, eventId) => {
      if (eventId) lastId = eventId;
      if (event === "delta") {
        stream.text += JSON.parse(data).content || "";
        if (state.selected === id) paintLive();
      } else if (event === "done") {
        outcome = null;
      } else if (event === "error") {
        const { type = "error", message = "the turn failed" } = JSON.parse(data).error || {};
        outcome = new ApiError(0, type, message);
      }
    };
    await readEvents(res, onEvent).catch(() => {});
    for (let tries = 0; outcome === dropped && lastId && tries < 5; tries++) {
      outcome = (await resumeTurn(id, lastId, onEvent)) || outcome;
    }
    return outcome;
  }

  // A dropped turn stream goes on from its last event id ("<seq>:<n>"): the turn itself
  // kept running on the server. Returns an error if the server refuses, else null.
  async function resumeTurn(id, lastId, onEvent) {
    const seq = lastId.split(":")[0];
    try {
      const res = await fetch(`${chatPath(id)}/messages/${encodeURIComponent(seq)}/events`, {
        headers: headers({ Accept: "text/event-stream", "Last-Event-ID": lastId }),
      });
      if (!res.ok) return toError(res);
      await readEvents(res, onEvent);
    } catch {
      await new Promise((done) => setTimeout(done, 500));  // offline a moment: try again
    }
    return null;
  }

  async function send(text) {
    const baseSeq = state.lastSeq;  // the selected chat's history is loaded (see updateComposer)
    const chat = state.chats.find((c) => c.id === state.selected) || await newChat();
    const id = chat.id;
    const stream = { user: text, text: "", baseSeq: chat.message_count ? baseSeq : 0 };
    state.streams.set(id, stream);
    renderChatList();
    updateComposer();
    if (state.selected === id) {
      pane().querySelector(".empty")?.remove();
      pane().append(messageEl({ role: "user", content: text, status: "pending" }), liveBubble(stream));
      toBottom();
    }
    const failure = await streamTurn(id, stream).catch((err) => err);
    state.streams.delete(id);
    if (failure) showError(failure);
    if (state.selected !== id) {
      state.unread.add(id);
    } else {
      // The stored messages replace what was streamed: they are the truth (and show failures).
      const shown = await loadMessages(id).catch((err) => showError(err));
      // Refused before it was stored (bad input, busy, no key): give the text back.
      const input = $("message-input");
      if (failure && shown && !shown.some((m) => m.seq > stream.baseSeq) && !input.value) {
        input.value = text;
        autosize();
      }
    }
    await api("GET", chatPath(id)).then(putChat, unless404);  // new counts for the list
    updateComposer();
    if (!failure) awaitTitle(id);
  }

  // The server titles an untitled chat after its first exchange, in the background, with
  // the chat's own model: look again for a few seconds. Its title is the one shown (and
  // the one a reload shows); renaming stays possible at any time.
  async function awaitTitle(id) {
    for (const wait of [300, 700, 1500, 3000]) {
      if (chatById(id)?.title !== null) return;  // titled, or no longer listed
      await new Promise((resolve) => setTimeout(resolve, wait));
      const fresh = await api("GET", chatPath(id)).catch(() => null);
      if (fresh && chatById(id)) putChat(fresh);
    }
  }

  // ---- regenerate, retry, edit --------------------------------------------------

  // Ask again in the selected chat: "regenerate" the last answer (the earlier one stays,
  // folded) or "retry" the failed last message (text: what it said, shown while waiting).
  async function again(action, text = null) {
    const id = state.selected;
    if (!id || !state.loaded || state.streams.has(id)) return;
    const stream = { user: text, text: "", baseSeq: state.lastSeq, action };
    state.streams.set(id, stream);
    renderChatList();
    updateComposer();
    pane().querySelectorAll(".msg-actions").forEach((node) => node.remove());
    if (text != null) pane().append(messageEl({ role: "user", content: text, status: "pending" }));
    pane().append(liveBubble(stream));
    toBottom();
    const failure = await streamTurn(id, stream).catch((err) => err);
    state.streams.delete(id);
    if (failure) showError(failure);
    if (state.selected === id) await loadMessages(id).catch(showError);
    else state.unread.add(id);
    await api("GET", chatPath(id)).then(putChat, unless404);
    updateComposer();
  }

  // Edit a user message in place; saving asks the new text in a fork of the chat made
  // just before that message, and opens it. The chat itself does not change.
  function startEdit(node, msg) {
    if (node.querySelector(".edit-input")) return;
    const input = el("textarea", {
      className: "edit-input", value: msg.content, rows: 3, data: { testid: "edit-input" },
    });
    const save = actionButton("Save & ask", "edit-save", () => finish(true));
    const cancel = actionButton("Cancel", "edit-cancel", () => finish(false));
    const editor = el("div", { className: "editor" }, input, el("div", { className: "msg-actions" }, save, cancel));
    const shown = [...node.children];
    const finish = (keep) => {
      const text = input.value;
      editor.replaceWith(...shown);
      if (keep && text.trim() && text !== msg.content) editInFork(msg, text).catch(showError);
    };
    input.onkeydown = (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); finish(true); }
      if (e.key === "Escape") finish(false);
    };
    node.replaceChildren(editor);
    input.focus();
  }

  async function editInFork(msg, text) {
    const fork = await api("POST", `${chatPath(msg.chat_id)}/fork`, { up_to_seq: msg.seq - 1 });
    putChat(fork);
    await selectChat(fork.id);  // the URL fragment follows
    if (state.selected === fork.id) await send(text);
  }

  function submit() {
    const input = $("message-input");
    const text = input.value;
    if (!text.trim() || input.disabled) return;
    input.value = "";
    autosize();
    send(text).catch(showError);
  }

  function autosize() {
    const input = $("message-input");
    input.style.height = "auto";  // shrink first, so scrollHeight measures the content
    input.style.height = `${Math.min(input.scrollHeight, 220)}px`;
  }

  // ---- search ----------------------------------------------------------------

  const search = { timer: 0, token: 0, chats: new Map() };
  const wordsOf = (text) => text.toLowerCase().match(/[\p{L}\p{N}_]+/gu) || [];

  // The server marks matched words [like this]. Only brackets around words of the query
  // count as marks, and every piece becomes a text node: a snippet is never parsed as HTML.
  function snippetNodes(snippet, query) {
    const wanted = new Set(wordsOf(query));
    const nodes = [];
    let last = 0;
    for (const m of snippet.matchAll(/\[([^[\]]+)\]/g)) {
      const words = wordsOf(m[1]);
      if (!words.length || !words.every((w) => wanted.has(w))) continue;
      nodes.push(snippet.slice(last, m.index), el("mark", { textContent: m[1] }));
      last = m.index + m[0].length;
    }
    nodes.push(snippet.slice(last));
    return nodes;
  }

  function showSearch(on) {
    $("search-results").hidden = !on;
    $("chat-list").hidden = on;
    $("more-chats").hidden = on || !state.nextCursor;
  }

  async function runSearch(query) {
    const token = ++search.token;
    if (!query.trim()) return showSearch(false);
    const page = await api("GET", `/search?${new URLSearchParams({ q: query, limit: "30" })}`);
    // Titles of chats the list has not loaded (older pages, archived chats).
    const unknown = [...new Set(page.data.map((hit) => hit.chat_id))]
      .filter((id) => !chatById(id) && !search.chats.has(id));
    await Promise.all(unknown.map((id) =>
      api("GET", chatPath(id)).then((chat) => search.chats.set(id, chat), () => {})));
    if (token !== search.token) return;  // typed on meanwhile
    const items = page.data.map((hit) => {
      const chat = chatById(hit.chat_id) || search.chats.get(hit.chat_id);
      const open = el("button", { className: "hit-open", type: "button", onclick: () => openHit(hit) },
        el("span", { className: "chat-title", textContent: chat ? chatTitle(chat) : "Deleted chat" }),
        el("span", { className: "hit-snippet" }, ...snippetNodes(hit.snippet, query)));
      return el("li", { className: "hit", data: { testid: "search-hit", chat: hit.chat_id, seq: hit.seq } }, open);
    });
    $("search-results").replaceChildren(...(items.length ? items : [notice("No message matches.")]));
    showSearch(true);
  }

  // Open the hit's chat, then bring its message into view, marked.
  async function openHit(hit) {
    if (!chatById(hit.chat_id)) {
      const chat = search.chats.get(hit.chat_id) ?? await api("GET", chatPath(hit.chat_id));
      state.chats.unshift(chat);
    }
    await selectChat(hit.chat_id);
    if (state.selected !== hit.chat_id) return;
    const node = pane().querySelector(`[data-seq="${Number(hit.seq)}"]`);
    if (!node) return showError(new Error("that message is no longer in the chat"));
    node.querySelector("details")?.setAttribute("open", "");  // a summary, or an earlier answer
    node.classList.add("found");
    node.scrollIntoView({ block: "center" });
  }

  function clearSearch() {
    $("search-input").value = "";
    search.token++;
    showSearch(false);
  }

  // ---- wiring ----------------------------------------------------------------

  async function start() {
    const loaded = await loadChats().then(() => true, showError);
    if (!loaded) return;
    $("key-form").hidden = true;
    const wanted = decodeURIComponent(location.hash.slice(1));
    await selectChat(state.chats.some((c) => c.id === wanted) ? wanted : null);
  }

  $("composer").onsubmit = (e) => { e.preventDefault(); submit(); };
  $("message-input").onkeydown = (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
  };
  $("message-input").oninput = autosize;
  $("new-chat").onclick = () => newChat().catch(showError);
  $("search-form").onsubmit = (e) => {
    e.preventDefault();
    clearTimeout(search.timer);
    runSearch($("search-input").value).catch(showError);
  };
  $("search-input").oninput = () => {
    clearTimeout(search.timer);
    search.timer = setTimeout(() => runSearch($("search-input").value).catch(showError), 250);
  };
  $("search-input").onkeydown = (e) => { if (e.key === "Escape") clearSearch(); };
  $("more-chats").onclick = () => loadChats(true).catch(showError);
  $("banner-close").onclick = () => { $("banner").hidden = true; };
  $("key-toggle").onclick = () => { $("key-form").hidden = !$("key-form").hidden; };
  $("key-forget").onclick = () => { localStorage.removeItem(KEY_STORAGE); start(); };
  $("key-form").onsubmit = (e) => {
    e.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    localStorage.setItem(KEY_STORAGE, key);
    $("key-input").value = "";
    $("banner").hidden = true;
    start();
  };

  start();
})();
