/**
 * A worker's log that follows the tail: re-read every second while open, scrolled to the end
 * unless the reader has scrolled up to look at something. `load(lines)` reads it; by default the
 * master's log route for `worker` (a host's worker is read through its host instead).
 */

import { ApiError } from "../api.js";
import { button, h } from "./dom.js";

const LINES = 300;
const POLL_MS = 1000;

/** @returns {{el: HTMLElement, destroy: () => void}} */
export function createLogViewer({ store, worker, onClose, load = (lines) => store.workerLog(worker.id, lines) }) {
  const pre = h("pre", { class: "dgpu-log-text", tabindex: "0", "aria-label": `Log of ${worker.name}` });
  const note = h("p", { class: "dgpu-hint", role: "status", text: "Loading log…" });
  const el = h(
    "div",
    { class: "dgpu-log", role: "region", "aria-label": `${worker.name} log` },
    h(
      "div",
      { class: "dgpu-log-head" },
      h("span", { class: "dgpu-log-title", text: "Log" }),
      button({ label: "Close log", iconName: "pi-times", onClick: onClose }),
    ),
    pre,
    note,
  );

  let timer = null;
  let stopped = false;

  async function poll() {
    timer = null;
    try {
      const lines = await load(LINES);
      if (stopped) return;
      const following = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
      pre.textContent = lines.join("\n");
      note.textContent = lines.length ? "" : "The log is empty.";
      note.hidden = lines.length > 0;
      if (following) pre.scrollTop = pre.scrollHeight;
    } catch (error) {
      if (stopped) return;
      note.hidden = false;
      note.textContent = error.message;
      // A worker that is gone, or a master without the route, will not grow a log by waiting.
      if (error instanceof ApiError && (error.status === 404 || error.status === 405)) return;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();

  return {
    el,
    destroy() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
    },
  };
}
