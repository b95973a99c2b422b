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
const CLASSES = { success: "ok", warning: "mid", queued: "mid", running: "mid", error: "bad" };

function follow(log, url) {
  const source = new EventSource(url);
  const hint = document.getElementById("log-hint");
  source.addEventListener("log", (event) => {
    const line = JSON.parse(event.data);
    const item = document.createElement("li");
    item.className = "level-" + String(line.level);
    const at = document.createElement("time");
    at.textContent = String(line.at).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
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
    if (TERMINAL.includes(status)) {
      source.close();
      const error = document.getElementById("task-error");
      if (error && task.error) {
        error.textContent = String(task.error);
        error.hidden = false;
      }
      const finished = document.getElementById("task-finished");
      if (finished && task.finished) {
        finished.textContent = String(task.finished).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
      }
      if (hint) {
        hint.textContent = "The task has ended. ";
        const again = document.createElement("a");
        again.href = window.location.pathname;
        again.textContent = "Reload for its buttons";
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
