// batchfsm's web view: follows the shown batches by server-sent events.
// No framework, no build step; text goes in as text (textContent), never as HTML.
"use strict";

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function showProgress(cell, counts) {
  const done = counts.completed + counts.failed;
  const bar = cell.querySelector("progress");
  bar.max = counts.total || 1;
  bar.value = done;
  let text = done + "/" + counts.total;
  if (counts.failed) text += " (" + counts.failed + " failed)";
  cell.querySelector(".counts").textContent = text;
}

function showFiles(list, batch) {
  for (const [kind, id] of [["output", batch.output_file_id], ["errors", batch.error_file_id]]) {
    if (!id || list.querySelector('[data-file="' + kind + '"]')) continue;
    const item = el("li", kind + ": ");
    item.append(el("a", id, {href: "/ui/files/" + encodeURIComponent(id), "data-file": kind}));
    list.append(item);
  }
}

function showTimeline(body, timeline) {
  body.replaceChildren(...timeline.map((s) => {
    const row = el("tr", undefined, {"data-stamp": s.name});
    row.append(el("td", s.name), el("td", s.time), el("td", s.since));
    return row;
  }));
}

function show(root, batch) {
  const status = root.querySelector('[data-field="status"]');
  const was = status.dataset.status;
  status.textContent = batch.status;
  status.dataset.status = batch.status;
  showProgress(root.querySelector('[data-field="progress"]'), batch.request_counts);
  root.querySelector('[data-field="model"]').textContent = batch.model || "";
  const timeline = root.querySelector('[data-field="timeline"]');
  if (timeline) showTimeline(timeline, batch.timeline);
  const diagram = root.querySelector('[data-field="diagram"]');
  if (diagram) diagram.dataset.current = batch.status;
  const files = root.querySelector('[data-field="files"]');
  if (files) showFiles(files, batch);
  if (diagram && batch.status === "failed" && was !== "failed") location.reload();  // its errors
}

function follow() {
  const holder = document.querySelector("[data-live]");
  if (!holder || !window.EventSource) return;
  const state = document.querySelector(".live-state");
  const source = new EventSource(holder.dataset.live);
  source.addEventListener("open", () => { state.textContent = "live"; });
  source.addEventListener("batch", (event) => {
    const batch = JSON.parse(event.data);
    for (const root of document.querySelectorAll("[data-batch]")) {
      if (root.dataset.batch === batch.id) show(root, batch);
    }
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      state.textContent = "Live updates stopped (too many live views, or the server is away): reload to try again.";
    } else {
      state.textContent = "reconnecting…";
    }
  });
}

document.addEventListener("DOMContentLoaded", follow);
