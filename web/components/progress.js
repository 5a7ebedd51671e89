/**
 * The current distributed run: one overall bar with an estimate of the time left, and a row per
 * share (who runs it, which node, step x/y) fed by `distributed.job_update`.
 */

import { h, replaceChildren } from "./dom.js";
import { formatDuration } from "./format.js";

/** How far one share is, 0..1: done counts whole, a running share by its current node's steps. */
export function shareFraction(share) {
  if (share.state === "done") return 1;
  if (share.state !== "running") return 0;
  const { value, max } = share.progress ?? {};
  return max > 0 ? Math.min(Math.max(value / max, 0), 1) : 0;
}

/** The whole run, 0..1; a finished run is 1 whatever its shares last reported. */
export function jobFraction(job) {
  if (!job) return 0;
  if (job.state === "done") return 1;
  if (!job.shares.length) return 0;
  return job.shares.reduce((sum, share) => sum + shareFraction(share), 0) / job.shares.length;
}

/** Seconds left at the rate seen so far, or null while there is too little to go on. */
export function estimateSecondsLeft(job, now) {
  if (!job || job.state !== "running") return null;
  const fraction = jobFraction(job);
  if (fraction < 0.02 || fraction >= 1) return null;
  const elapsed = (now - job.startedAt) / 1000;
  return (elapsed * (1 - fraction)) / fraction;
}

const SHARE_STATE_LABELS = { pending: "Waiting", running: "Running", done: "Done", failed: "Failed" };

function progressBar(label) {
  const fill = h("div", { class: "dgpu-bar-fill" });
  const bar = h("div", { class: "dgpu-bar", role: "progressbar", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100" }, fill);
  return {
    bar,
    set(fraction) {
      const percent = Math.round(fraction * 100);
      bar.setAttribute("aria-valuenow", String(percent));
      fill.style.width = `${percent}%`;
    },
  };
}

/**
 * @param {{store: import("../store.js").DistributedStore, nodeTitle?: (nodeId: string) => string|null}} options
 *   `nodeTitle` turns a node id from a worker's progress into the title the user sees.
 */
export function createProgressView({ store, nodeTitle = () => null }) {
  const heading = h("span", { class: "dgpu-section-title" });
  const percent = h("span", { class: "dgpu-progress-percent" });
  const overall = progressBar("Overall progress");
  const eta = h("p", { class: "dgpu-meta", role: "status" });
  const shares = h("ul", { class: "dgpu-shares", "aria-label": "Shares" });
  const el = h(
    "section",
    { class: "dgpu-section dgpu-progress", "aria-label": "Distributed run", hidden: true },
    h("div", { class: "dgpu-progress-head" }, heading, percent),
    overall.bar,
    eta,
    shares,
  );

  function shareRow(share) {
    const bar = progressBar(`Share ${share.index + 1} progress`);
    bar.set(shareFraction(share));
    const { value, max, node } = share.progress ?? {};
    const nodeText = node !== undefined && node !== null ? nodeTitle(String(node)) ?? `node ${node}` : null;
    const stepText = share.state === "running" && max > 0 ? `step ${value}/${max}` : null;
    const detail = share.state === "running" ? [nodeText, stepText].filter(Boolean).join(" · ") : SHARE_STATE_LABELS[share.state] ?? share.state;
    return h(
      "li",
      { class: ["dgpu-share", `dgpu-share-${share.state}`] },
      h(
        "div",
        { class: "dgpu-share-head" },
        h("span", { class: "dgpu-share-name", text: store.participantName(share.participant) }),
        h("span", { class: "dgpu-meta", text: detail || SHARE_STATE_LABELS[share.state] }),
      ),
      bar.bar,
    );
  }

  function update(state) {
    const job = state.job;
    el.hidden = !job;
    if (!job) return;
    const fraction = jobFraction(job);
    overall.set(fraction);
    percent.textContent = `${Math.round(fraction * 100)}%`;
    el.dataset.state = job.state;
    const participants = new Set(job.shares.map((s) => s.participant)).size;
    if (job.state === "running") {
      heading.textContent = `Running on ${participants} GPU${participants === 1 ? "" : "s"}`;
      const left = estimateSecondsLeft(job, store.now());
      eta.textContent = left === null ? "Estimating time left…" : `About ${formatDuration(left)} left`;
    } else if (job.state === "done") {
      heading.textContent = "Finished";
      eta.textContent = `Took ${formatDuration((job.finishedAt - job.startedAt) / 1000)} on ${participants} GPU${participants === 1 ? "" : "s"}`;
    } else {
      heading.textContent = "Failed";
      eta.textContent = job.error ?? "The run failed.";
    }
    replaceChildren(shares, [...job.shares].sort((a, b) => a.index - b.index).map(shareRow));
  }

  update(store.state);
  return { el, update };
}
