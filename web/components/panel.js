/**
 * The whole sidebar panel: toolbar, problems banner, current run, master card, worker cards with
 * the add/edit form, hosts with their workers grouped under each, elastic pools, and settings. `mount` may be called again with the same element (ComfyUI
 * re-renders the tab); `unmount` drops every listener and timer the panel holds.
 */

import { button, h, replaceChildren } from "./dom.js";
import { createInventory } from "./inventory.js";
import { createHostGroup } from "./host_group.js";
import { createMasterCard } from "./master_card.js";
import { createPoolsSection } from "./pools.js";
import { createProgressView } from "./progress.js";
import { createSettings } from "./settings.js";
import { createWorkerCard } from "./worker_card.js";
import { createWorkerForm } from "./worker_form.js";

const NEW_WORKER = Symbol("new worker");
const HOST_MANAGED = "host:";

/** A host, or a worker the master keeps for a host: shown in the host's group, not in the list. */
function inHostGroup(worker) {
  return worker.type === "host" || String(worker.managed_by ?? "").startsWith(HOST_MANAGED);
}

/**
 * @param {import("../store.js").DistributedStore} store
 */
export function createPanel(store) {
  let host = null;
  let view = null;

  return {
    mount(el) {
      if (host === el && view) return;
      this.unmount();
      host = el;
      view = buildView(store);
      el.classList.add("dgpu-host");
      el.replaceChildren(view.root);
    },
    unmount() {
      if (!view) return;
      view.destroy();
      view.root.remove();
      host?.classList.remove("dgpu-host");
      view = null;
      host = null;
    },
  };
}

function buildView(store) {
  const cards = new Map();
  const groups = new Map();
  let editing = null; // null, NEW_WORKER, or a worker id
  let form = null;

  const addButton = button({ label: "Add worker", iconName: "pi-plus", onClick: () => openForm(NEW_WORKER) });
  const toolbar = h(
    "div",
    { class: "dgpu-toolbar" },
    h("h2", { class: "dgpu-toolbar-title", text: "Distributed" }),
    h(
      "div",
      { class: "dgpu-toolbar-buttons" },
      button({ label: "Refresh", iconName: "pi-refresh", onClick: () => store.refresh() }),
      addButton,
    ),
  );
  const banner = h("div", { class: "dgpu-banner", role: "alert", hidden: true });
  const progress = createProgressView({ store });
  const master = createMasterCard({ store });
  const count = h("span", { class: "dgpu-count" });
  const formSlot = h("div", { class: "dgpu-form-slot" });
  const list = h("div", { class: "dgpu-list" });
  const empty = h(
    "p",
    { class: "dgpu-empty", hidden: true },
    "No workers yet. ",
    button({ label: "Add a worker", text: "Add a worker", variant: "link", onClick: () => openForm(NEW_WORKER) }),
    " — a spare GPU in this machine, another machine on your network, or a cloud pod.",
  );
  const hostCount = h("span", { class: "dgpu-count" });
  const hostList = h("div", { class: "dgpu-list" });
  const hostSection = h(
    "section",
    { class: "dgpu-section", "aria-label": "Hosts", hidden: true },
    h("div", { class: "dgpu-section-head" }, h("h3", { class: "dgpu-section-title", text: "Hosts" }), hostCount),
    hostList,
  );
  const pools = createPoolsSection({ store });
  const settings = createSettings({ store });
  const inventory = createInventory({ store });
  const root = h(
    "div",
    { class: "dgpu-panel" },
    toolbar,
    h(
      "div",
      { class: "dgpu-body" },
      banner,
      progress.el,
      master.el,
      h(
        "section",
        { class: "dgpu-section", "aria-label": "Workers" },
        h("div", { class: "dgpu-section-head" }, h("h3", { class: "dgpu-section-title", text: "Workers" }), count),
        formSlot,
        list,
        empty,
      ),
      inventory.el,
      hostSection,
      pools.el,
      settings.el,
    ),
  );

  function openForm(target) {
    closeForm();
    editing = target;
    const worker = target === NEW_WORKER ? null : store.worker(target);
    form = createWorkerForm({ store, worker, onDone: () => closeForm(true) });
    if (target === NEW_WORKER) {
      formSlot.append(form.el);
      empty.hidden = true;
      addButton.setAttribute("aria-pressed", "true");
    } else {
      const card = cards.get(target) ?? groups.get(target);
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
    const card = target === NEW_WORKER ? null : cards.get(target) ?? groups.get(target);
    if (card) card.el.hidden = false;
    empty.hidden = !store.state.loaded || store.state.workers.length > 0;
    if (restoreFocus) (card?.el.querySelector("button") ?? addButton).focus();
  }

  function renderBanner(state) {
    if (state.loadError) {
      replaceChildren(
        banner,
        h("span", { text: `Cannot load the worker list: ${state.loadError}` }),
        button({ label: "Retry", text: "Retry", variant: "secondary", onClick: () => store.refresh() }),
      );
    } else if (state.registryError) {
      replaceChildren(banner, h("span", { text: `${state.registryError}. Until then, nothing changed here is saved.` }));
    } else {
      replaceChildren(banner);
    }
    banner.hidden = !banner.firstChild;
  }

  function renderWorkers(state) {
    const seen = new Set();
    const workers = state.workers.filter((worker) => !inHostGroup(worker));
    workers.forEach((worker, index) => {
      seen.add(worker.id);
      let card = cards.get(worker.id);
      if (card) {
        card.update(worker);
      } else {
        card = createWorkerCard({ store, worker, onEdit: (w) => openForm(w.id) });
        cards.set(worker.id, card);
      }
      // Move only what is out of place: moving a node that holds focus would drop the focus.
      if (list.children[index] !== card.el) list.insertBefore(card.el, list.children[index] ?? null);
    });
    for (const [workerId, card] of cards) {
      if (seen.has(workerId)) continue;
      if (editing === workerId) closeForm();
      card.destroy();
      card.el.remove();
      cards.delete(workerId);
    }
    count.textContent = state.loaded ? String(workers.length) : "";
    empty.hidden = !state.loaded || state.workers.length > 0 || editing === NEW_WORKER;
  }

  function renderHosts(state) {
    const hosts = state.workers.filter((worker) => worker.type === "host");
    hosts.forEach((host, index) => {
      let group = groups.get(host.id);
      if (group) {
        group.update(host);
      } else {
        group = createHostGroup({ store, host, onEdit: (entry) => openForm(entry.id) });
        groups.set(host.id, group);
      }
      if (hostList.children[index] !== group.el) hostList.insertBefore(group.el, hostList.children[index] ?? null);
    });
    const seen = new Set(hosts.map((host) => host.id));
    for (const [hostId, group] of groups) {
      if (seen.has(hostId)) continue;
      if (editing === hostId) closeForm();
      group.destroy();
      group.el.remove();
      groups.delete(hostId);
    }
    hostCount.textContent = String(hosts.length);
    hostSection.hidden = hosts.length === 0;
  }

  function update() {
    const state = store.state;
    renderBanner(state);
    progress.update(state);
    master.update(state);
    renderWorkers(state);
    inventory.update(state);
    renderHosts(state);
    pools.update(state);
    settings.update(state);
  }

  store.addEventListener("change", update);
  update();

  return {
    root,
    destroy() {
      store.removeEventListener("change", update);
      closeForm();
      pools.destroy();
      for (const card of cards.values()) card.destroy();
      cards.clear();
      for (const group of groups.values()) group.destroy();
      groups.clear();
    },
  };
}
