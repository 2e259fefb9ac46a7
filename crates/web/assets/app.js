// Image Factory dashboard: live refresh of server-rendered fragments, the
// build log over Server-Sent Events grouped by task and step, copy buttons.
// Everything else is plain HTML forms and links.
"use strict";

const TERMINAL = ["succeeded", "failed", "cancelled", "timed_out"];
const REFRESH_MS = 2000;

// Replaces el's content with a fresh render, keeping keyboard focus on the
// same control (by id or link target) when it was inside.
async function refresh(el) {
  const response = await fetch(el.dataset.refresh, { headers: { Accept: "text/html" } });
  if (!response.ok || response.redirected) return false;
  const html = await response.text();
  const active = document.activeElement;
  const inside = active && el.contains(active);
  const key = inside ? (active.id || active.getAttribute("href")) : null;
  el.innerHTML = html;
  if (key) {
    const again = document.getElementById(key) || el.querySelector(`[href="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
  return true;
}

function buildEnded() {
  const status = document.getElementById("build-status");
  return status && TERMINAL.includes(status.textContent.trim());
}

function startRefresh(el) {
  const tick = async () => {
    try { await refresh(el); } catch (e) { /* next tick retries */ }
    if (el.id === "summary" && buildEnded()) return;
    setTimeout(tick, REFRESH_MS);
  };
  if (!(el.id === "summary" && el.dataset.terminal)) setTimeout(tick, REFRESH_MS);
}

// "task/step" -> the <pre> of that step inside its task's section.
function stepBlock(log, source) {
  const slash = source.indexOf("/");
  const task = slash < 0 ? source : source.slice(0, slash);
  const step = slash < 0 ? "" : source.slice(slash + 1);
  let section = Array.from(log.children).find((s) => s.dataset.task === task);
  if (!section) {
    section = document.createElement("section");
    section.className = "log-task";
    section.dataset.task = task;
    const h = document.createElement("h3");
    h.textContent = "Task " + task;
    section.appendChild(h);
    log.appendChild(section);
  }
  let pre = Array.from(section.querySelectorAll("pre")).find((p) => p.dataset.step === step);
  if (!pre) {
    if (step) {
      const h = document.createElement("h4");
      h.textContent = "Step " + step;
      section.appendChild(h);
    }
    pre = document.createElement("pre");
    pre.dataset.step = step;
    section.appendChild(pre);
  }
  return pre;
}

function followLog(log) {
  const state = document.getElementById("log-state");
  const events = new EventSource(log.dataset.events);
  let lines = 0;
  events.addEventListener("log", (e) => {
    const { source, line } = JSON.parse(e.data);
    const row = document.createElement("span");
    row.className = "log-line";
    row.textContent = line + "\n";
    stepBlock(log, source || "log").appendChild(row);
    lines += 1;
    state.textContent = `Following the log live: ${lines} lines so far.`;
  });
  events.addEventListener("end", (e) => {
    events.close();
    state.textContent = `The build ended (${e.data}); ${lines} log lines.`;
    const summary = document.getElementById("summary");
    if (summary) refresh(summary).catch(() => {});
  });
  events.addEventListener("error", () => {
    if (events.readyState === EventSource.CLOSED) {
      state.textContent = "The log stream stopped; reload the page to try again.";
    } else {
      state.textContent = "The log stream was interrupted; reconnecting…";
    }
  });
}

document.addEventListener("click", async (e) => {
  const button = e.target.closest("button.copy");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (err) {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById(button.dataset.copy));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
});

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(startRefresh);
  const log = document.getElementById("log");
  if (log) followLog(log);
});
