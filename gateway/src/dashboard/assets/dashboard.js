// The dashboard's only script: it sends the profile choice of the site form, and follows a
// running task's log from its event stream. Text reaches the page only as textContent.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
  const log = document.getElementById("log");
  if (log && log.dataset.events) {
    follow(log, log.dataset.events);
  }
});

const TERMINAL = ["success", "warning", "error"];
const CLASSES = { success: "ok", warning: "mid", queued: "mid", processing: "mid", error: "bad" };

// An RFC 3339 time as the pages write it: 2026-12-01 22:28:15 UTC.
function time(at) {
  return String(at).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
}

function follow(log, url) {
  const source = new EventSource(url);
  const hint = document.getElementById("log-hint");
  // A stream that reconnects starts again from the first line: lines seen are skipped.
  let last = 0;
  source.addEventListener("log", (event) => {
    const line = JSON.parse(event.data);
    if (typeof line.id === "number") {
      if (line.id <= last) return;
      last = line.id;
    }
    const item = document.createElement("li");
    item.className = "level-" + String(line.level);
    const at = document.createElement("time");
    at.textContent = time(line.at);
    item.append(at, " " + String(line.message));
    log.append(item);
    log.dataset.streamed = String(log.children.length);
  });
  source.addEventListener("status", (event) => {
    const task = JSON.parse(event.data);
    const status = String(task.status);
    const badge = document.querySelector("#task-status .badge");
    if (badge) {
      badge.textContent = status;
      badge.className = "badge " + (CLASSES[status] || "");
    }
    for (const [id, when] of [["task-started", task.started], ["task-finished", task.finished]]) {
      const cell = document.getElementById(id);
      if (cell && when) cell.textContent = time(when);
    }
    const cancel = document.getElementById("cancel-form");
    if (cancel) cancel.hidden = status !== "queued";
    const retry = document.getElementById("retry-form");
    if (retry) retry.hidden = status !== "error";
    if (TERMINAL.includes(status)) {
      source.close();
      const error = document.getElementById("task-error");
      if (error && task.error) {
        error.textContent = String(task.error);
        error.hidden = false;
      }
      if (hint) {
        hint.textContent = "The task has ended. ";
        const again = document.createElement("a");
        again.href = window.location.pathname;
        again.textContent = "Reload the page";
        hint.append(again);
      }
      document.body.dataset.taskDone = status;
    }
  });
  // The stream ends with the task; the browser would reconnect and replay it.
  source.addEventListener("error", () => {
    if (document.body.dataset.taskDone) source.close();
  });
}
