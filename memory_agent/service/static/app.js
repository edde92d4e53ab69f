// The memory-agent web page: plain DOM calls against the REST API under /v1.
// Memory text is untrusted: it only ever reaches the page as a text node
// (el() turns strings into text nodes; nothing here sets innerHTML).
"use strict";

(() => {
  const KEY_SLOT = "memory-agent.api-key";
  const $ = (id) => document.getElementById(id);
  const state = { key: "", user: "", memories: [], historyOf: null, poll: null };

  // el("td", {class: "x", "data-testid": "y"}, "text", child, ...): strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setStatus(text, isError) {
    const s = $("status");
    s.textContent = text || "";
    s.classList.toggle("error", !!isError);
  }

  // "2024-05-08T13:56:00" / "...T18:49:49.482289+00:00" -> "2024-05-08 13:56" (the raw value stays in datetime/title).
  function when(iso) {
    if (!iso) return "";
    const shown = String(iso).replace("T", " ").replace(/(\d\d:\d\d)(:\d\d)?(\.\d+)?/, "$1").replace("+00:00", " UTC");
    return el("time", { datetime: iso, title: iso }, shown);
  }

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + state.key, Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch("/v1" + path, init);
    let data = null;
    try { data = await res.json(); } catch (_) { /* an empty or non-JSON body */ }
    if (!res.ok) {
      let detail = data && data.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; ");
      const err = new Error(res.status === 401 ? "The API key was refused (" + (detail || "401") + ")." : (detail || "HTTP " + res.status));
      err.status = res.status;
      throw err;
    }
    return data;
  }

  const userPath = () => "/users/" + encodeURIComponent(state.user);

  function enableUserControls(on) {
    for (const id of ["search-query", "search-button", "refresh"]) $(id).disabled = !on;
  }

  // ------------------------------------------------------------------ key and users
  async function connect() {
    state.key = $("api-key").value.trim();
    if (!state.key) return;
    sessionStorage.setItem(KEY_SLOT, state.key);
    setStatus("Loading users…");
    let users;
    try {
      users = await api("GET", "/users");
    } catch (e) {
      if (e.status === 401) sessionStorage.removeItem(KEY_SLOT); // do not keep a refused key
      $("user-select").replaceChildren(el("option", { value: "" }, "(connect first)"));
      $("user-select").disabled = true;
      await chooseUser("");
      setStatus(e.message, true);
      return;
    }
    const select = $("user-select");
    select.replaceChildren(el("option", { value: "" }, users.length ? "Choose a user…" : "(no users yet)"));
    for (const u of users) {
      select.append(el("option", { value: u.user }, u.user + " (" + u.memories + (u.memories === 1 ? " memory)" : " memories)")));
    }
    select.disabled = users.length === 0;
    setStatus("Connected: " + users.length + (users.length === 1 ? " user." : " users."));
    const keep = users.some((u) => u.user === state.user) ? state.user : (users.length === 1 ? users[0].user : "");
    select.value = keep;
    await chooseUser(keep);
  }

  function forget() {
    sessionStorage.removeItem(KEY_SLOT);
    state.key = ""; state.user = ""; state.memories = [];
    $("api-key").value = "";
    $("user-select").replaceChildren(el("option", { value: "" }, "(connect first)"));
    $("user-select").disabled = true;
    for (const id of ["memories", "jobs", "search-results", "history-list"]) $(id).replaceChildren();
    $("memory-count").textContent = "";
    $("history-hint").hidden = false;
    $("history-title").textContent = "History";
    enableUserControls(false);
    stopPolling();
    setStatus("Key forgotten.");
  }

  async function chooseUser(user) {
    state.user = user;
    state.historyOf = null;
    $("search-results").replaceChildren();
    $("history-list").replaceChildren();
    $("history-title").textContent = "History";
    $("history-hint").hidden = false;
    enableUserControls(!!user);
    if (!user) {
      stopPolling();
      $("memories").replaceChildren();
      $("jobs").replaceChildren();
      $("memory-count").textContent = "";
      $("memories-empty").hidden = $("jobs-empty").hidden = true;
      return;
    }
    await Promise.all([loadMemories(), loadJobs()]);
  }

  // ------------------------------------------------------------------ memories
  function sourceOf(m) {
    const md = m.metadata || {};
    const parts = [];
    if (md.source) parts.push(el("code", {}, md.source));
    if (md.speaker) parts.push(el("span", { class: "speaker" }, (parts.length ? " · " : "") + md.speaker));
    return parts.length ? parts : "—";
  }

  async function loadMemories() {
    let memories;
    try {
      memories = await api("GET", userPath() + "/memories");
    } catch (e) {
      setStatus(e.message, true);
      return;
    }
    state.memories = memories;
    $("memory-count").textContent = "(" + memories.length + ")";
    $("memories-empty").hidden = memories.length > 0;
    $("memories").replaceChildren(...memories.map((m) => {
      const edited = m.updated_at && m.updated_at !== m.created_at;
      return el("tr", { "data-testid": "memory", "data-id": m.id, class: state.historyOf === m.id ? "selected" : null },
        el("td", { class: "num" }, m.id),
        el("td", { class: "text", "data-testid": "memory-text" }, m.text),
        el("td", { class: "src", "data-testid": "memory-source" }, sourceOf(m)),
        el("td", { class: "when", "data-testid": "memory-time" }, when(m.created_at),
           edited ? el("div", { class: "muted" }, "edited ", when(m.updated_at)) : null),
        el("td", {}, el("button", {
          type: "button", class: "link", "data-testid": "history-button", "data-id": m.id,
          "aria-label": "History of memory " + m.id, onclick: () => openHistory(m.id),
        }, "History")));
    }));
  }

  // ------------------------------------------------------------------ search
  async function search(ev) {
    ev.preventDefault();
    const query = $("search-query").value.trim();
    if (!query || !state.user) return;
    const body = { query, k: Math.min(100, Math.max(1, parseInt($("search-k").value, 10) || 5)) };
    if ($("search-mode").value) body.mode = $("search-mode").value;
    let hits;
    try {
      hits = await api("POST", userPath() + "/search", body);
    } catch (e) {
      setStatus(e.message, true);
      return;
    }
    setStatus(hits.length + (hits.length === 1 ? " hit" : " hits") + " for “" + query + "”.");
    const list = $("search-results");
    if (!hits.length) {
      list.replaceChildren(el("li", { class: "muted" }, "No memory matches."));
      return;
    }
    list.replaceChildren(...hits.map((h) => el("li", { "data-testid": "hit", "data-id": h.id },
      el("span", { class: "score", title: "score" }, Number(h.score).toFixed(3)),
      el("span", { class: "text", "data-testid": "hit-text" }, h.text),
      el("button", { type: "button", class: "link", "aria-label": "History of memory " + h.id,
                     onclick: () => openHistory(h.id) }, "History"))));
  }

  // ------------------------------------------------------------------ history
  async function openHistory(id) {
    let entries;
    try {
      entries = await api("GET", userPath() + "/memories/" + encodeURIComponent(id) + "/history");
    } catch (e) {
      setStatus(e.message, true);
      return;
    }
    state.historyOf = id;
    for (const row of $("memories").querySelectorAll("tr")) row.classList.toggle("selected", row.dataset.id === String(id));
    $("history-title").textContent = "History of memory #" + id;
    $("history-hint").hidden = true;
    $("history-list").replaceChildren(...entries.map((h) => el("li", { "data-testid": "history-entry", "data-event": h.event },
      el("div", { class: "meta" },
        el("span", { class: "badge " + h.event, "data-testid": "history-event" }, h.event), " ",
        when(h.at), " · by ", el("span", { "data-testid": "history-actor" }, h.actor),
        h.source ? [" · turn ", el("code", {}, h.source)] : null),
      h.old_text !== null && h.old_text !== undefined
        ? el("p", { class: "change" }, el("span", { class: "sr-only" }, "old text: "), el("del", { "data-testid": "history-old" }, h.old_text)) : null,
      h.new_text !== null && h.new_text !== undefined
        ? el("p", { class: "change" }, el("span", { class: "sr-only" }, "new text: "), el("ins", { "data-testid": "history-new" }, h.new_text)) : null)));
    if (!entries.length) $("history-list").append(el("li", { class: "muted" }, "No history recorded."));
    $("history-title").focus();
  }

  // ------------------------------------------------------------------ jobs
  function stopPolling() {
    if (state.poll) clearTimeout(state.poll);
    state.poll = null;
  }

  function changes(c) {
    if (!c || !Object.keys(c).length) return "—";
    const bits = [];
    for (const k of ["add", "update", "delete", "noop"]) if (c[k]) bits.push(c[k] + " " + k);
    const skipped = (c.skipped_extract || 0) + (c.skipped_manage || 0) + (c.skipped_apply || 0);
    if (skipped) bits.push(skipped + " skipped");
    if (c.already_applied) bits.push(c.already_applied + " already applied");
    return bits.length ? bits.join(", ") : "no change";
  }

  async function loadJobs() {
    stopPolling();
    const user = state.user;
    let jobs;
    try {
      jobs = await api("GET", userPath() + "/jobs?limit=50");
    } catch (e) {
      setStatus(e.message, true);
      return;
    }
    if (user !== state.user) return;
    $("jobs-empty").hidden = jobs.length > 0;
    $("jobs").replaceChildren(...jobs.map((j) => el("tr", { "data-testid": "job", "data-id": j.job_id, "data-status": j.status },
      el("td", {}, el("code", { title: j.job_id }, j.job_id.replace(/^job_/, "").slice(0, 8)),
         j.error ? el("div", { class: "muted" }, j.error) : null),
      el("td", {}, el("span", { class: "badge " + j.status, "data-testid": "job-status" }, j.status),
         j.attempts > 1 ? el("div", { class: "muted" }, j.attempts + " attempts") : null),
      el("td", { class: "when" },
         el("progress", { max: 1, value: j.progress, "aria-label": "progress of job " + j.job_id }), " ",
         el("span", { "data-testid": "job-progress" }, j.turns_done + "/" + j.turns + " turns")),
      el("td", { "data-testid": "job-counts" }, changes(j.counts)),
      el("td", { class: "when wrap" }, when(j.created_at)))));
    if (jobs.some((j) => j.status === "queued" || j.status === "running")) {
      state.poll = setTimeout(async () => {
        await loadJobs();
        if (!state.poll) await loadMemories(); // the last open job just finished
      }, 2000);
    }
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (ev) => { ev.preventDefault(); connect(); });
    $("forget").addEventListener("click", forget);
    $("user-select").addEventListener("change", (ev) => chooseUser(ev.target.value));
    $("refresh").addEventListener("click", async () => {
      await Promise.all([loadMemories(), loadJobs()]);
      if (state.historyOf !== null) await openHistory(state.historyOf);
    });
    $("search-form").addEventListener("submit", search);
    const saved = sessionStorage.getItem(KEY_SLOT);
    if (saved) {
      $("api-key").value = saved;
      connect();
    }
  });
})();
