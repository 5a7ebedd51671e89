/**
 * One host (another machine running ComfyUI with this extension, docs/hosts.md) and, grouped under
 * its name, its local workers. The host's card shows its state, its GPUs and who uses each, with
 * "Add worker" on each free GPU; each worker's card shows its GPU, port, where it listens and its
 * status, with Launch / Stop / Restart / View log / Remove. Every action goes to the master, which
 * carries it to the host. A worker that listens on the network is one of this master's workers
 * (its managed entry, whose status and enabled switch are shown here); one that listens on the
 * host only is listed but not used from here.
 */

import { button, h, icon, replaceChildren, toggleSwitch, uniqueId } from "./dom.js";
import { formatBytes, workerAddress } from "./format.js";
import { createLogViewer } from "./log_viewer.js";
import { describeStatus } from "./status.js";

const RUNNING_STATES = new Set(["launching", "online", "busy"]);
const LISTEN_CHOICES = [
  { value: "network", text: "the network" },
  { value: "loopback", text: "the host only" },
];

/** Runs a server action with `control` disabled; errors become a toast naming `who`. */
async function run(store, who, control, action, revert = null) {
  control.disabled = true;
  try {
    return await action();
  } catch (error) {
    revert?.();
    store.notify("error", `${who}: ${error.message}`);
    return null;
  } finally {
    control.disabled = false;
  }
}

/** The entry's warnings (a token over plain http, for instance), as the worker cards show them. */
function renderWarnings(list, entry) {
  const found = Array.isArray(entry?.warnings) ? entry.warnings : [];
  replaceChildren(list, found.map((text) => h("li", { class: "dgpu-warning" }, icon("pi-exclamation-triangle"), h("span", { text }))));
  list.hidden = found.length === 0;
}

/** A yes/no row that asks before something is removed. */
function askFirst(row, question, confirmLabel, onYes) {
  const yes = button({ label: confirmLabel, text: "Remove", variant: "danger", onClick: (e) => onYes(e.currentTarget) });
  const no = button({ label: "Keep", text: "Keep", variant: "secondary", onClick: () => { row.hidden = true; } });
  replaceChildren(row, h("span", { text: question }), h("span", { class: "dgpu-spacer" }), no, yes);
  row.hidden = false;
  no.focus();
}

/**
 * @param {{store: import("../store.js").DistributedStore, host: object, onEdit: (host: object) => void}} options
 *   `host` is the host's entry in the worker list (type "host").
 * @returns {{el: HTMLElement, update: (host: object) => void, destroy: () => void}}
 */
export function createHostGroup({ store, host: initial, onEdit }) {
  let host = initial;
  const rows = new Map();

  const dot = h("span", { class: "dgpu-dot", "aria-hidden": "true" });
  const name = h("h3", { class: "dgpu-card-title" });
  const enabled = toggleSwitch({
    label: "Enabled",
    hideLabel: true,
    checked: host.enabled,
    onChange: (checked, input) => run(store, host.name, input, () => store.updateWorker(host.id, { enabled: checked }), () => {
      input.checked = host.enabled;
    }),
  });
  const addressText = h("span", { class: "dgpu-mono" });
  const address = h("p", { class: "dgpu-meta dgpu-address" }, h("span", { text: "Host" }), " · ", addressText);
  const status = h("p", { class: "dgpu-status" });
  const problems = h("ul", { class: "dgpu-warnings", "aria-label": "Problems" });
  const warnings = h("ul", { class: "dgpu-warnings", "aria-label": "Warnings" });
  const gpuList = h("ul", { class: "dgpu-gpus" });
  const listenSelect = h("select", { class: "dgpu-input dgpu-input-inline" },
    LISTEN_CHOICES.map((choice) => h("option", { value: choice.value, text: choice.text })));
  const listenId = uniqueId("new-listen");
  listenSelect.id = listenId;
  const newWorkers = h("div", {
    class: "dgpu-meta dgpu-new-workers",
    title: "On the network, this master uses them (locked with a token the host makes); on the host only, it does not.",
  }, h("label", { for: listenId, text: "New workers listen on" }), listenSelect);
  const confirmRow = h("div", { class: "dgpu-confirm", hidden: true });
  const card = h(
    "article",
    { class: "dgpu-card dgpu-host-card" },
    h("div", { class: "dgpu-card-head" }, dot, h("div", { class: "dgpu-card-heading" }, name), enabled.root),
    address,
    status,
    warnings,
    problems,
    gpuList,
    newWorkers,
    h(
      "div",
      { class: "dgpu-actions" },
      h("span", { class: "dgpu-spacer" }),
      button({ label: "Edit host", iconName: "pi-pencil", onClick: () => onEdit(host) }),
      button({
        label: "Delete host",
        iconName: "pi-trash",
        onClick: () => askFirst(confirmRow, `Delete ${host.name}? Its workers stop being used here.`, `Delete ${host.name}`,
          (target) => run(store, host.name, target, () => store.deleteWorker(host.id))),
      }),
    ),
    confirmRow,
  );
  const workerList = h("div", { class: "dgpu-hostgroup-workers", role: "list" });
  const el = h("section", { class: "dgpu-hostgroup" }, card, workerList);

  function addWorker(target, cudaDevice) {
    return run(store, host.name, target, () => store.addHostWorker(host.id, { cuda_device: cudaDevice, listen: listenSelect.value }));
  }

  function gpuItem(gpu, view) {
    const used = gpu.used_by === "master"
      ? "used by the host's own ComfyUI"
      : gpu.used_by
        ? `worker ${view.workers.find((w) => w.id === gpu.used_by)?.name ?? gpu.used_by}`
        : "free";
    return h(
      "li",
      { class: "dgpu-gpu" },
      h("span", { class: "dgpu-meta", text: [`GPU ${gpu.index}`, gpu.name, formatBytes(gpu.memory_total), used].filter(Boolean).join(" · ") }),
      gpu.used_by ? null : button({
        label: `Add a worker on GPU ${gpu.index} of ${host.name}`,
        text: "Add worker",
        iconName: "pi-plus",
        variant: "link",
        onClick: (e) => addWorker(e.currentTarget, gpu.index),
      }),
    );
  }

  function renderGpus(view) {
    const gpus = Array.isArray(view.gpus) ? view.gpus : [];
    const items = gpus.map((gpu) => gpuItem(gpu, view));
    if (!gpus.length && view.state === "connected") {
      items.push(h(
        "li",
        { class: "dgpu-gpu" },
        h("span", { class: "dgpu-meta", text: view.gpu_problem ? `No GPUs: ${view.gpu_problem}` : "No GPUs" }),
        button({
          label: `Add a CPU worker on ${host.name}`,
          text: "Add CPU worker",
          iconName: "pi-plus",
          variant: "link",
          onClick: (e) => addWorker(e.currentTarget, null),
        }),
      ));
    }
    replaceChildren(gpuList, items);
    gpuList.setAttribute("aria-label", `GPUs of ${host.name}`);
    gpuList.hidden = items.length === 0;
    newWorkers.hidden = !gpus.some((gpu) => !gpu.used_by) && gpus.length > 0;
  }

  function renderWorkers(view) {
    const workers = Array.isArray(view.workers) ? view.workers : [];
    const seen = new Set();
    workers.forEach((worker, index) => {
      seen.add(worker.id);
      let row = rows.get(worker.id);
      if (!row) {
        row = createHostWorkerCard({ store, hostId: host.id });
        rows.set(worker.id, row);
      }
      row.update(host, worker);
      if (workerList.children[index] !== row.el) workerList.insertBefore(row.el, workerList.children[index] ?? null);
    });
    for (const [workerId, row] of rows) {
      if (seen.has(workerId)) continue;
      row.destroy();
      row.el.remove();
      rows.delete(workerId);
    }
    workerList.setAttribute("aria-label", `Workers of ${host.name}`);
  }

  function update(next) {
    host = next;
    const view = store.state.hosts?.[host.id] ?? { state: host.status?.state ?? "unknown", workers: [], gpus: [] };
    const described = describeStatus(host);
    el.setAttribute("aria-label", `Host ${host.name}`);
    el.dataset.workerId = host.id;
    card.setAttribute("aria-label", `Host ${host.name}`);
    card.dataset.state = described.tone;
    dot.className = `dgpu-dot dgpu-dot-${described.tone}`;
    name.textContent = host.name;
    name.title = host.name;
    if (document.activeElement !== enabled.input) enabled.input.checked = Boolean(host.enabled);
    enabled.root.title = host.enabled ? "Enabled: its workers are used" : "Disabled: its workers are not used";
    addressText.textContent = workerAddress(host);
    status.textContent = described.label;
    status.className = `dgpu-status dgpu-status-${described.tone}`;
    status.title = described.detail ?? "";
    const found = Array.isArray(view.problems) ? view.problems : [];
    replaceChildren(problems, found.map((text) => h("li", { class: "dgpu-warning", text })));
    problems.hidden = found.length === 0;
    renderWarnings(warnings, host);
    renderGpus(view);
    renderWorkers(view);
  }

  update(host);
  return {
    el,
    update,
    destroy() {
      for (const row of rows.values()) row.destroy();
      rows.clear();
    },
  };
}

/** One worker of a host: its card in the host's group. */
function createHostWorkerCard({ store, hostId }) {
  let host = null;
  let worker = null;
  let log = null;

  const dot = h("span", { class: "dgpu-dot", "aria-hidden": "true" });
  const name = h("h4", { class: "dgpu-card-title" });
  const enabled = toggleSwitch({
    label: "Used by this master",
    hideLabel: true,
    checked: true,
    onChange: (checked, input) => {
      const entry = managedEntry();
      if (!entry) return null;
      return run(store, worker.name, input, () => store.updateWorker(entry.id, { enabled: checked }), () => {
        input.checked = entry.enabled;
      });
    },
  });
  const facts = h("p", { class: "dgpu-meta" });
  const status = h("p", { class: "dgpu-status" });
  const warnings = h("ul", { class: "dgpu-warnings", "aria-label": "Warnings" });
  const listen = toggleSwitch({
    label: "Listens on the network",
    checked: false,
    hint: "On: other machines can reach it, locked with a token the host makes, and this master uses it. Off: the host only.",
    onChange: (checked, input) => run(store, worker.name, input,
      () => store.setHostWorkerListen(hostId, worker.id, checked ? "network" : "loopback"), () => {
        input.checked = worker.listen === "network";
      }),
  });
  const confirmRow = h("div", { class: "dgpu-confirm", hidden: true });
  const logSlot = h("div");
  const control = (action) => (e) => run(store, worker.name, e.currentTarget, () => store.controlHostWorker(hostId, worker.id, action));
  const launch = button({ label: "Launch", iconName: "pi-play", onClick: control("launch") });
  const stop = button({ label: "Stop", iconName: "pi-stop", onClick: control("stop") });
  const restart = button({ label: "Restart", iconName: "pi-replay", onClick: control("restart") });
  const viewLog = button({ label: "View log", iconName: "pi-align-left", onClick: toggleLog });
  const remove = button({
    label: "Remove",
    iconName: "pi-trash",
    onClick: () => askFirst(confirmRow, `Remove ${worker.name} from ${host.name}? The host stops it.`, `Remove ${worker.name}`,
      (target) => run(store, worker.name, target, () => store.removeHostWorker(hostId, worker.id))),
  });
  const el = h(
    "article",
    { class: "dgpu-card dgpu-host-worker", role: "listitem" },
    h("div", { class: "dgpu-card-head" }, dot, h("div", { class: "dgpu-card-heading" }, name), enabled.root),
    facts,
    status,
    warnings,
    h("div", { class: "dgpu-meta dgpu-listen" }, listen.root),
    h(
      "div",
      { class: "dgpu-actions" },
      h("div", { class: "dgpu-actions-group" }, launch, stop, restart, viewLog),
      h("span", { class: "dgpu-spacer" }),
      remove,
    ),
    confirmRow,
    logSlot,
  );

  /** This master's entry for the worker, when it listens on the network (and the id is not another worker's). */
  function managedEntry() {
    const entry = worker?.managed_id ? store.worker(worker.managed_id) : null;
    return entry?.managed_by === `host:${hostId}` ? entry : null;
  }

  function toggleLog() {
    if (log) {
      closeLog();
      return;
    }
    log = createLogViewer({ store, worker, onClose: closeLog, load: (lines) => store.hostWorkerLog(hostId, worker.id, lines) });
    logSlot.append(log.el);
    viewLog.setAttribute("aria-pressed", "true");
  }

  function closeLog() {
    log?.destroy();
    log?.el.remove();
    log = null;
    viewLog.setAttribute("aria-pressed", "false");
  }

  function update(nextHost, next) {
    host = nextHost;
    worker = next;
    const entry = managedEntry();
    // The master's own view once it uses the worker; before that, what the host says.
    const described = entry ? describeStatus(entry) : describeStatus({ enabled: worker.enabled, status: { state: worker.state, error: worker.error } });
    el.setAttribute("aria-label", `Worker ${worker.name} on ${host.name}`);
    el.dataset.workerId = worker.id;
    el.dataset.state = described.tone;
    dot.className = `dgpu-dot dgpu-dot-${described.tone}`;
    name.textContent = worker.name;
    name.title = worker.name;
    enabled.root.hidden = !entry;
    if (entry && document.activeElement !== enabled.input) enabled.input.checked = Boolean(entry.enabled);
    enabled.root.title = entry?.enabled ? "Used by this master" : "Not used by this master";
    const gpu = worker.cuda_device === null || worker.cuda_device === undefined ? "CPU" : `GPU ${worker.cuda_device}`;
    facts.textContent = [gpu, `port ${worker.port}`, entry ? workerAddress(entry) : null].filter(Boolean).join(" · ");
    const onHostOnly = worker.listen !== "network" ? " · listens on the host only, not used here" : "";
    status.textContent = described.label + onHostOnly;
    status.className = `dgpu-status dgpu-status-${described.tone}`;
    status.title = described.detail ?? "";
    renderWarnings(warnings, entry);
    if (document.activeElement !== listen.input) listen.input.checked = worker.listen === "network";
    launch.disabled = RUNNING_STATES.has(worker.state);
    stop.disabled = worker.state === "offline" || worker.state === "stopped";
  }

  return { el, update, destroy: closeLog };
}
