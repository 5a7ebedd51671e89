/**
 * The current distributed run: one overall bar with an estimate of the time left, and a row per
 * share (who runs it, which node, step x/y) fed by `distributed.job_update`; for a Distributed Upscale,
 * a map of the tiles too (tile_map.js), in the colours of the participants' rows.
 */

import { h, replaceChildren } from "./dom.js";
import { formatDuration } from "./format.js";
import { createTileMap, participantColor } from "./tile_map.js";

/**
 * How far one share is, 0..1: done counts whole; a running share by the server's node-weighted
 * fraction (every node counts one, the running node by its steps, as ComfyUI's own progress does),
 * else by its current node's steps.
 */
export function shareFraction(share) {
  if (share.state === "done") return 1;
  if (share.state !== "running") return 0;
  const { value, max, fraction } = share.progress ?? {};
  if (Number.isFinite(fraction)) return Math.min(Math.max(fraction, 0), 1);
  return max > 0 ? Math.min(Math.max(value / max, 0), 1) : 0;
}

/** The master's own share: participant "master", always index 0 when the master renders. */
const MASTER = "master";

/**
 * The shares with the master's own share completed: a failure when its prompt ended badly, and its
 * progress from the server (sent whoever queued the prompt), else from ComfyUI's own events to
 * this tab. The job snapshot says "running" until the master's images are in.
 */
export function resolveShares(job, masterRun) {
  const ours = job.promptId !== null && masterRun.promptId === job.promptId;
  return job.shares.map((share) => {
    if (share.participant !== MASTER || share.state !== "running") return share;
    if (job.state === "failed" || (ours && masterRun.outcome === "failed")) return { ...share, state: "failed", progress: null };
    return { ...share, progress: share.progress ?? (ours ? masterRun.progress : null) };
  });
}

/**
 * "3 GPUs", "2 GPUs and 1 CPU", "3 CPUs": what the participants render on, counted from the
 * devices they report (`deviceOf` gives "cpu", "gpu" or null for a participant id).
 */
export function describeDevices(participants, deviceOf) {
  let gpus = 0;
  let cpus = 0;
  let unknown = 0;
  for (const participant of participants) {
    const kind = deviceOf(participant);
    if (kind === "gpu") gpus += 1;
    else if (kind === "cpu") cpus += 1;
    else unknown += 1;
  }
  const parts = [];
  if (gpus) parts.push(`${gpus} GPU${gpus === 1 ? "" : "s"}`);
  if (cpus) parts.push(`${cpus} CPU${cpus === 1 ? "" : "s"}`);
  if (unknown || !parts.length) parts.push(`${unknown} participant${unknown === 1 ? "" : "s"}`);
  return parts.join(" and ");
}

/**
 * The run as the panel shows it: "running" until the job and the master's own share are both
 * finished, its shares, the fraction done (0..1) and its duration in seconds once it ended.
 */
export function describeJob(job, masterRun, now) {
  const shares = resolveShares(job, masterRun);
  const sharesRunning = shares.some((share) => share.state === "running" || share.state === "pending");
  let state = "running";
  if (job.state === "failed" || shares.some((share) => share.participant === MASTER && share.state === "failed")) state = "failed";
  else if (job.state === "done" && !sharesRunning) state = "done";
  const fraction = state === "done" ? 1 : shares.length ? shares.reduce((sum, s) => sum + shareFraction(s), 0) / shares.length : 0;
  return { state, shares, fraction, durationS: state === "running" ? null : runDuration(job, masterRun, now) };
}

/**
 * Seconds the run took. The server's `duration_s` ends when the workers' shares are in; the master's
 * own share may end later, which only the panel's clock saw. A panel opened mid-run saw less than
 * the whole run, so the longer of the two is the better figure.
 */
function runDuration(job, masterRun, now) {
  const masterEnd = job.promptId !== null && masterRun.promptId === job.promptId ? masterRun.endedAt : null;
  const seen = (Math.max(job.finishedAt ?? now, masterEnd ?? 0) - job.startedAt) / 1000;
  return Math.max(job.durationS ?? 0, seen);
}

/**
 * Seconds left, or null while there is too little to go on: until one share has finished, a rate
 * mixes model loading with rendering and misleads more than it tells. The run's rate so far says
 * when the work as a whole is done; but the run also waits for its slowest share, so each running
 * share's own rate (since the panel saw it start) gives a lower bound, and the larger figure wins.
 */
export function estimateSecondsLeft(startedAt, fraction, now, shares = []) {
  const sharesDone = shares.filter((share) => share.state === "done").length;
  if (sharesDone < 1 || fraction < 0.02 || fraction >= 1) return null;
  const overall = (((now - startedAt) / 1000) * (1 - fraction)) / fraction;
  const slowest = shares
    .filter((share) => share.state === "running" && Number.isFinite(share.runningSince))
    .map((share) => ({ done: shareFraction(share), elapsed: (now - share.runningSince) / 1000 }))
    .filter(({ done }) => done >= 0.02 && done < 1)
    .reduce((most, { done, elapsed }) => Math.max(most, (elapsed * (1 - done)) / done), 0);
  return Math.max(overall, slowest);
}

export const MODE_LABELS = { "fan-out": "Fan-out", shares: "Shares", split: "Split batch", upscale: "Upscale" };
const MODE_HINTS = {
  "fan-out": "Every GPU renders the whole prompt with its own seed",
  shares: "A set number of shares, each to whichever GPU finishes it first",
  split: "One batch cut into slices in proportion to each GPU's speed",
  upscale: "The tiles of a Distributed Upscale, each to whichever GPU frees up first",
};

/**
 * "images 1–4" (or "image 3") for a split-batch share's slice, "tiles 5–7" for an upscale share's
 * tiles (`unit`); null without a slice.
 */
export function describeBatch(batch, unit = "image") {
  const start = Number(batch?.start);
  const length = Number(batch?.length);
  if (!Number.isInteger(start) || !Number.isInteger(length) || length < 1) return null;
  return length === 1 ? `${unit} ${start + 1}` : `${unit}s ${start + 1}–${start + length}`;
}

const SHARE_STATE_LABELS = { pending: "Waiting", running: "Running", done: "Done", failed: "Failed" };
const COPY_STATE_LABELS = { running: "runs", won: "came first", cancelled: "stopped: the other copy came first", failed: "failed" };

/**
 * What happened to a share beyond its own run, one line each: backup copies started because its
 * worker lagged ("Copied to Laptop: Studio PC is 4x slower than usual · came first"), and, while it
 * still waits or runs, the last failure that sent it elsewhere. `nameOf` turns a participant id into
 * the name people know.
 */
export function describeShareNotes(share, nameOf) {
  const copies = Array.isArray(share.copies) ? share.copies : [];
  const notes = copies.map((copy) => {
    const outcome = COPY_STATE_LABELS[copy.state] ?? copy.state;
    return `Copied to ${nameOf(copy.participant)}: ${copy.reason ?? "its worker lagged"} · ${outcome}`;
  });
  const attempts = Array.isArray(share.attempts) ? share.attempts : [];
  if (attempts.length && share.state !== "done") notes.push(`Re-run after: ${attempts[attempts.length - 1]}`);
  return notes;
}

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
  const mode = h("span", { class: "dgpu-tag" });
  const percent = h("span", { class: "dgpu-progress-percent" });
  const overall = progressBar("Overall progress");
  const eta = h("p", { class: "dgpu-meta", role: "status" });
  const shares = h("ul", { class: "dgpu-shares", "aria-label": "Shares" });
  const colorOf = (participant) => participantColor(store.participantPlace(participant));
  const tileMap = createTileMap({ nameOf: (participant) => store.participantName(participant), colorOf });
  const el = h(
    "section",
    { class: "dgpu-section dgpu-progress", "aria-label": "Distributed run", hidden: true },
    h("div", { class: "dgpu-progress-head" }, h("div", { class: "dgpu-progress-title" }, heading, mode), percent),
    overall.bar,
    eta,
    tileMap.el,
    shares,
  );

  function swatch(color) {
    const dot = h("span", { class: "dgpu-swatch", "aria-hidden": "true" });
    dot.style.background = color;
    return dot;
  }

  function shareRow(share, unit) {
    const bar = progressBar(`Share ${share.index + 1} progress`);
    bar.set(shareFraction(share));
    const { value, max, node } = share.progress ?? {};
    const nodeText = node !== undefined && node !== null ? `node ${node}` : null;
    // A node without steps (anything but a sampler) reports one; "step 0/1" would only look stuck.
    const stepText = share.state === "running" && max > 1 ? `step ${value}/${max}` : null;
    const detail = share.state === "running" ? [nodeText, stepText].filter(Boolean).join(" · ") : SHARE_STATE_LABELS[share.state] ?? share.state;
    const range = describeBatch(share.batch, unit);
    const notes = describeShareNotes(share, (participant) => store.participantName(participant));
    return h(
      "li",
      { class: ["dgpu-share", `dgpu-share-${share.state}`] },
      h(
        "div",
        { class: "dgpu-share-head" },
        h(
          "span",
          { class: "dgpu-share-name" },
          share.participant ? swatch(colorOf(share.participant)) : null,
          share.participant ? store.participantName(share.participant) : `Share ${share.index + 1}`,
          range ? h("span", { class: "dgpu-share-range", text: range }) : null,
        ),
        h("span", { class: "dgpu-meta", text: detail || SHARE_STATE_LABELS[share.state], title: detail || null }),
      ),
      bar.bar,
      notes.map((note) => h("p", { class: "dgpu-meta dgpu-share-note", text: note })),
    );
  }

  function update(state) {
    const job = state.job;
    el.hidden = !job;
    if (!job) return;
    const view = describeJob(job, state.masterRun, store.now());
    overall.set(view.fraction);
    percent.textContent = `${Math.round(view.fraction * 100)}%`;
    el.dataset.state = view.state;
    mode.textContent = MODE_LABELS[job.mode] ?? job.mode ?? "";
    mode.title = MODE_HINTS[job.mode] ?? "";
    mode.hidden = !mode.textContent;
    const participants = new Set(view.shares.map((s) => s.participant).filter(Boolean));
    const gpus = describeDevices(participants, (participant) => store.deviceKind(participant));
    if (view.state === "running") {
      heading.textContent = `Running on ${gpus}`;
      const left = estimateSecondsLeft(job.startedAt, view.fraction, store.now(), view.shares);
      if (left !== null) eta.textContent = `About ${formatDuration(left)} left`;
      else eta.textContent = view.fraction >= 0.99 ? "Finishing…" : "Estimating time left…";
    } else if (view.state === "done") {
      heading.textContent = "Finished";
      const took = formatDuration(view.durationS);
      eta.textContent = took ? `Took ${took} on ${gpus}` : `Done on ${gpus}`;
    } else {
      heading.textContent = "Failed";
      eta.textContent = job.error ?? "The run failed.";
    }
    tileMap.update(job.tiles);
    replaceChildren(shares, [...view.shares].sort((a, b) => a.index - b.index).map((share) => shareRow(share, job.mode === "upscale" ? "tile" : "image")));
  }

  update(store.state);
  return { el, update };
}
