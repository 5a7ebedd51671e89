/**
 * Elastic pools: each pool's members and their state (starting, online, idle since, stopping), hours
 * used against the budget, why it does not grow, the last start failure with the command's output,
 * and buttons to start or stop a member now. Cards are updated in place so focus and an open
 * failure report survive the pushes.
 */

import { button, h, replaceChildren } from "./dom.js";
import { formatDuration } from "./format.js";
import { createPoolForm } from "./pool_form.js";

const NEW_POOL = Symbol("new pool");

/** A member's state in words: "online · idle since 14:02:10", "stopping (idle for 600s)". */
export function describeMember(member) {
  switch (member.state) {
    case "starting":
      return { tone: "launching", label: "Starting…" };
    case "online":
      if (member.draining) return { tone: "busy", label: `Stops once its share is done (${member.stop_reason})` };
      if (member.holds_share) return { tone: "busy", label: "Online · running a share" };
      if (typeof member.idle_since === "number") {
        return { tone: "online", label: `Online · idle since ${new Date(member.idle_since * 1000).toLocaleTimeString()}` };
      }
      return { tone: "online", label: "Online" };
    case "stopping":
      return member.stop_error
        ? { tone: "error", label: `Stopping: ${member.stop_error}; retrying` }
        : { tone: "stopped", label: `Stopping (${member.stop_reason ?? "asked"})` };
    default:
      return { tone: "unknown", label: String(member.state) };
  }
}

/** "0.42 of 2 member-hours today", and the share of the budget used (0..1). */
export function describeBudget(pool) {
  const used = Number(pool.hours_used) || 0;
  const budget = Number(pool.budget_hours) || 0;
  const hours = (value) => (value < 10 ? value.toFixed(2) : value.toFixed(1)).replace(/\.?0+$/, "") || "0";
  return { text: `${hours(used)} of ${hours(budget)} member-hours today`, ratio: budget ? Math.min(1, used / budget) : 0 };
}

/** "0–2 members · idle 10m 00s · grows after 30s · 3 starts / 10 min" */
export function describePoolLimits(config) {
  return [
    `${config.min}–${config.max} member${config.max === 1 ? "" : "s"}`,
    `stops after ${formatDuration(config.idle_seconds)} idle`,
    `grows after ${formatDuration(config.grow_after_seconds)} of waiting`,
    `${config.max_starts_per_10min} starts / 10 min`,
  ].join(" · ");
}

/**
 * @param {{store: import("../store.js").DistributedStore}} options
 * @returns {{el: HTMLElement, update: (state: object) => void, destroy: () => void}}
 */
export function createPoolsSection({ store }) {
  const cards = new Map();
  let editing = null; // null, NEW_POOL, or a pool name
  let form = null;

  const addButton = button({ label: "Add pool", iconName: "pi-plus", onClick: () => openForm(NEW_POOL) });
  const count = h("span", { class: "dgpu-count" });
  const formSlot = h("div", { class: "dgpu-form-slot" });
  const list = h("div", { class: "dgpu-list" });
  const empty = h(
    "p",
    { class: "dgpu-empty" },
    "No elastic pools. A pool starts GPUs when work waits and stops them when idle, within a daily budget. ",
    button({ label: "Add a pool", text: "Add a pool", variant: "link", onClick: () => openForm(NEW_POOL) }),
  );
  const el = h(
    "section",
    { class: "dgpu-section", "aria-label": "Elastic pools" },
    h("div", { class: "dgpu-section-head" }, h("h3", { class: "dgpu-section-title", text: "Elastic pools" }), count, addButton),
    formSlot,
    list,
    empty,
  );

  function openForm(target) {
    closeForm();
    editing = target;
    const pool = target === NEW_POOL ? null : store.state.pools.find((p) => p.name === target)?.config ?? null;
    form = createPoolForm({ store, pool, onDone: () => closeForm(true) });
    if (target === NEW_POOL) {
      formSlot.append(form.el);
      empty.hidden = true;
      addButton.setAttribute("aria-pressed", "true");
    } else {
      const card = cards.get(target);
      card.el.hidden = true;
      card.el.before(form.el);
    }
    form.focus();
  }

  function closeForm(restoreFocus = false) {
    if (!form) return;
    const target = editing;
    form.el.remove();
    form = null;
    editing = null;
    addButton.setAttribute("aria-pressed", "false");
    const card = target === NEW_POOL ? null : cards.get(target);
    if (card) card.el.hidden = false;
    empty.hidden = store.state.pools.length > 0;
    if (restoreFocus) (card?.el.querySelector("button") ?? addButton).focus();
  }

  function update(state) {
    const seen = new Set();
    state.pools.forEach((pool, index) => {
      seen.add(pool.name);
      let card = cards.get(pool.name);
      if (card) {
        card.update(pool);
      } else {
        card = createPoolCard({ store, pool, onEdit: (name) => openForm(name) });
        cards.set(pool.name, card);
      }
      if (list.children[index] !== card.el) list.insertBefore(card.el, list.children[index] ?? null);
    });
    for (const [name, card] of cards) {
      if (seen.has(name)) continue;
      if (editing === name) closeForm();
      card.el.remove();
      cards.delete(name);
    }
    count.textContent = state.loaded ? String(state.pools.length) : "";
    empty.hidden = state.pools.length > 0 || editing === NEW_POOL;
  }

  update(store.state);
  return {
    el,
    update,
    destroy: () => closeForm(),
  };
}

/**
 * One pool. A pool being removed has no `config` and shows only its members while they stop.
 * @returns {{el: HTMLElement, update: (pool: object) => void}}
 */
function createPoolCard({ store, pool: initial, onEdit }) {
  let pool = initial;
  const dot = h("span", { class: "dgpu-dot", "aria-hidden": "true" });
  const name = h("h3", { class: "dgpu-card-title" });
  const limits = h("p", { class: "dgpu-meta" });
  const budgetText = h("span");
  const budgetFill = h("div", { class: "dgpu-bar-fill" });
  const budgetBar = h("div", { class: "dgpu-bar", role: "meter", "aria-label": "Budget used", "aria-valuemin": "0", "aria-valuemax": "100" }, budgetFill);
  const budget = h("div", { class: "dgpu-pool-budget" }, h("p", { class: "dgpu-meta" }, budgetText), budgetBar);
  const blocked = h("p", { class: "dgpu-status", role: "status" });
  const failureSummary = h("summary");
  const failureOutput = h("pre", { class: "dgpu-log-text" });
  const failure = h("details", { class: "dgpu-pool-failure" }, failureSummary, failureOutput);
  const memberList = h("ul", { class: "dgpu-pool-members", "aria-label": "Members" });
  const confirmRow = h("div", { class: "dgpu-confirm", hidden: true });
  const startButton = button({ label: "Start a member now", text: "Start a member", iconName: "pi-play", variant: "secondary", onClick: (e) => startMember(e.currentTarget) });
  const editButton = button({ label: "Edit", iconName: "pi-pencil", onClick: () => onEdit(pool.name) });
  const deleteButton = button({ label: "Delete", iconName: "pi-trash", onClick: askDelete });
  const actions = h("div", { class: "dgpu-actions" }, startButton, h("span", { class: "dgpu-spacer" }), editButton, deleteButton);
  const el = h(
    "article",
    { class: "dgpu-card dgpu-pool" },
    h("div", { class: "dgpu-card-head" }, dot, h("div", { class: "dgpu-card-heading" }, name, h("span", { class: "dgpu-type", text: "Pool" }))),
    limits,
    budget,
    blocked,
    failure,
    memberList,
    actions,
    confirmRow,
  );

  async function run(control, action) {
    control.disabled = true;
    try {
      return await action();
    } catch (error) {
      store.notify("error", `Pool ${pool.name}: ${error.message}`);
      return null;
    } finally {
      control.disabled = false;
    }
  }

  function startMember(target) {
    return run(target, () => store.startPoolMember(pool.name));
  }

  function askDelete() {
    const yes = button({ label: `Delete pool ${pool.name}`, text: "Delete", variant: "danger", onClick: (e) => run(e.currentTarget, () => store.deletePool(pool.name)) });
    const no = button({ label: "Keep", text: "Keep", variant: "secondary", onClick: () => { confirmRow.hidden = true; } });
    replaceChildren(confirmRow, h("span", { text: `Delete pool ${pool.name} and stop its members?` }), h("span", { class: "dgpu-spacer" }), no, yes);
    confirmRow.hidden = false;
    no.focus();
  }

  const rows = new Map();

  /** A member's row, kept across updates so that a focused Stop button keeps its focus. */
  function memberRow(member) {
    let row = rows.get(member.id);
    if (!row) {
      const rowDot = h("span", { class: "dgpu-dot", "aria-hidden": "true" });
      const label = h("span", { class: "dgpu-meta" });
      const address = h("span", { class: "dgpu-meta dgpu-mono" });
      const stop = button({
        label: `Stop ${member.id}`,
        iconName: "pi-stop",
        onClick: (e) => run(e.currentTarget, () => store.stopPoolMember(pool.name, member.id)),
      });
      const rowEl = h(
        "li",
        { class: "dgpu-pool-member", dataset: { memberId: member.id } },
        rowDot,
        h("div", { class: "dgpu-pool-member-text" }, h("span", { class: "dgpu-mono", text: member.id }), label, address),
        stop,
      );
      row = { el: rowEl, dot: rowDot, label, address, stop };
      rows.set(member.id, row);
    }
    const described = describeMember(member);
    row.el.dataset.state = member.state;
    row.dot.className = `dgpu-dot dgpu-dot-${described.tone}`;
    row.label.textContent = described.label;
    row.address.textContent = member.url ?? "";
    row.address.hidden = !member.url;
    if (document.activeElement !== row.stop) row.stop.disabled = member.state === "stopping" || member.draining;
    return row.el;
  }

  function renderMembers(members) {
    const ids = new Set(members.map((m) => m.id));
    for (const [memberId, row] of rows) {
      if (!ids.has(memberId)) {
        row.el.remove();
        rows.delete(memberId);
      }
    }
    members.forEach((member, index) => {
      const rowEl = memberRow(member);
      if (memberList.children[index] !== rowEl) memberList.insertBefore(rowEl, memberList.children[index] ?? null);
    });
    memberList.hidden = members.length === 0;
  }

  function update(next) {
    pool = next;
    const config = pool.config;
    const removed = config === null || config === undefined;
    const online = pool.members.some((m) => m.state === "online");
    const tone = pool.budget_spent ? "error" : online ? "online" : pool.members.length ? "launching" : "stopped";
    el.setAttribute("aria-label", `Pool ${pool.name}`);
    el.dataset.pool = pool.name;
    dot.className = `dgpu-dot dgpu-dot-${tone}`;
    name.textContent = removed ? `${pool.name} (removed, stopping its members)` : pool.name;
    limits.textContent = removed ? "" : describePoolLimits(config);
    limits.hidden = removed;
    budget.hidden = removed;
    if (!removed) {
      const { text, ratio } = describeBudget(pool);
      budgetText.textContent = text;
      budgetFill.style.width = `${Math.round(ratio * 100)}%`;
      budgetBar.setAttribute("aria-valuenow", String(Math.round(ratio * 100)));
      budget.classList.toggle("dgpu-pool-spent", Boolean(pool.budget_spent));
    }
    blocked.textContent = pool.blocked ? `Not growing: ${pool.blocked}` : "";
    blocked.className = `dgpu-status ${pool.budget_spent ? "dgpu-status-error" : ""}`;
    blocked.hidden = !pool.blocked;
    const last = pool.last_failure;
    failure.hidden = !last;
    if (last) {
      const when = new Date(last.at * 1000).toLocaleTimeString();
      failureSummary.textContent = `Last start failure (${when}), ${last.member_id}: ${last.reason}`;
      failureOutput.textContent = last.output || "(no output)";
    }
    renderMembers(pool.members);
    startButton.hidden = removed;
    editButton.hidden = removed;
    deleteButton.hidden = removed;
  }

  update(pool);
  return { el, update };
}
