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

/**
 * The shares with the master's own ("local") share filled in from ComfyUI's progress for the
 * master's prompt, which the job snapshot cannot know.
 */
export function resolveShares(job, masterRun) {
  return job.shares.map((share) => {
    if (share.state !== "local") return share;
    const ours = job.masterPromptId !== null && masterRun.promptId === job.masterPromptId;
    if (ours && masterRun.running === false) return { ...share, state: masterRun.outcome ?? "done", progress: null };
    if (ours && masterRun.running === true) return { ...share, state: "running", progress: masterRun.progress };
    if (job.state === "done" || job.state === "failed") return { ...share, state: job.state, progress: null };
    return { ...share, state: "running", progress: ours ? masterRun.progress : null };
  });
}

/**
 * The run as the panel shows it: "running" until the job and the master's own share are both
 * finished, its shares, the fraction done (0..1) and when it ended.
 */
export function describeJob(job, masterRun) {
  const shares = resolveShares(job, masterRun);
  const sharesRunning = shares.some((share) => share.state === "running" || share.state === "pending");
  let state = "running";
  if (job.state === "failed") state = "failed";
  else if (job.state === "done" && !sharesRunning) state = "done";
  const fraction = state === "done" ? 1 : shares.length ? shares.reduce((sum, s) => sum + shareFraction(s), 0) / shares.length : 0;
  const masterEnd = job.masterPromptId !== null && masterRun.promptId === job.masterPromptId ? masterRun.endedAt : null;
  const endedAt = state === "running" ? null : Math.max(job.finishedAt ?? 0, masterEnd ?? 0) || null;
  return { state, shares, fraction, endedAt };
}

/** Seconds left at the rate seen so far, or null while there is too little to go on. */
export function estimateSecondsLeft(startedAt, fraction, now) {
  if (fraction < 0.02 || fraction >= 1) return null;
  const elapsed = (now - startedAt) / 1000;
  return (elapsed * (1 - fraction)) / fraction;
}

const SHARE_STATE_LABELS = { pending: "Waiting", running: "Running", done: "Done", failed: "Failed", local: "Running" };

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

/** @param {{store: import("../store.js").DistributedStore}} options */
export function createProgressView({ store }) {
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
    const nodeText = node !== undefined && node !== null ? `node ${node}` : null;
    const stepText = share.state === "running" && max > 0 ? `step ${value}/${max}` : null;
    const detail = share.state === "running" ? [nodeText, stepText].filter(Boolean).join(" · ") : SHARE_STATE_LABELS[share.state] ?? share.state;
    return h(
      "li",
      { class: ["dgpu-share", `dgpu-share-${share.state}`] },
      h(
        "div",
        { class: "dgpu-share-head" },
        h("span", { class: "dgpu-share-name", text: share.participant ? store.participantName(share.participant) : `Share ${share.index + 1}` }),
        h("span", { class: "dgpu-meta", text: detail || SHARE_STATE_LABELS[share.state] }),
      ),
      bar.bar,
    );
  }

  function update(state) {
    const job = state.job;
    el.hidden = !job;
    if (!job) return;
    const view = describeJob(job, state.masterRun);
    overall.set(view.fraction);
    percent.textContent = `${Math.round(view.fraction * 100)}%`;
    el.dataset.state = view.state;
    const participants = new Set(view.shares.map((s) => s.participant)).size;
    const gpus = `${participants} GPU${participants === 1 ? "" : "s"}`;
    if (view.state === "running") {
      heading.textContent = `Running on ${gpus}`;
      const left = estimateSecondsLeft(job.startedAt, view.fraction, store.now());
      if (left !== null) eta.textContent = `About ${formatDuration(left)} left`;
      else eta.textContent = view.fraction >= 0.99 ? "Finishing…" : "Estimating time left…";
    } else if (view.state === "done") {
      heading.textContent = "Finished";
      eta.textContent = `Took ${formatDuration(((view.endedAt ?? store.now()) - job.startedAt) / 1000)} on ${gpus}`;
    } else {
      heading.textContent = "Failed";
      eta.textContent = job.error ?? "The run failed.";
    }
    replaceChildren(shares, [...view.shares].sort((a, b) => a.index - b.index).map(shareRow));
  }

  update(store.state);
  return { el, update };
}
