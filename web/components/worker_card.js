/**
 * One worker: name, type, address, GPU, speed and round trip, status dot, enable switch, warnings
 * (such as TLS checks turned off), and its actions
 * (Launch / Stop / Restart / View log for local workers; Test connection, Edit for all; Delete for
 * all but a pool's members, which their pool stops).
 * The card is updated in place so focus and an open log survive status pushes.
 */

import { button, h, icon, replaceChildren, toggleSwitch } from "./dom.js";
import { describeAccess, describeDevice, describeWorkerFacts, WORKER_TYPE_LABELS, workerAddress } from "./format.js";
import { createLogViewer } from "./log_viewer.js";
import { describeStatus, describeTestResult } from "./status.js";

const RUNNING_STATES = new Set(["launching", "online", "busy"]);

/**
 * @param {{store: import("../store.js").DistributedStore, worker: object, onEdit: (worker: object) => void}} options
 * @returns {{el: HTMLElement, update: (worker: object) => void, destroy: () => void}}
 */
export function createWorkerCard({ store, worker: initial, onEdit }) {
  let worker = initial;
  let log = null;

  const dot = h("span", { class: "dgpu-dot", "aria-hidden": "true" });
  const name = h("h3", { class: "dgpu-card-title" });
  const typeLabel = h("span", { class: "dgpu-type" });
  const addressText = h("span", { class: "dgpu-mono" });
  const enabled = toggleSwitch({
    label: "Enabled",
    checked: worker.enabled,
    hideLabel: true,
    onChange: (checked, input) => run(input, () => store.updateWorker(worker.id, { enabled: checked }), () => {
      input.checked = worker.enabled;
    }),
  });
  const address = h("p", { class: "dgpu-meta dgpu-address" }, typeLabel, " · ", addressText);
  const device = h("p", { class: "dgpu-meta" });
  const facts = h("p", { class: "dgpu-meta dgpu-facts" });
  const access = h("p", { class: "dgpu-meta dgpu-access" });
  const status = h("p", { class: "dgpu-status" });
  const warnings = h("ul", { class: "dgpu-warnings", "aria-label": "Warnings" });
  const feedback = h("p", { class: "dgpu-test-result", role: "status", hidden: true });
  const confirmRow = h("div", { class: "dgpu-confirm", hidden: true });
  const logSlot = h("div");

  const launch = button({ label: "Launch", iconName: "pi-play", onClick: (e) => control(e.currentTarget, "launch") });
  const stop = button({ label: "Stop", iconName: "pi-stop", onClick: (e) => control(e.currentTarget, "stop") });
  const restart = button({ label: "Restart", iconName: "pi-replay", onClick: (e) => control(e.currentTarget, "restart") });
  const viewLog = button({ label: "View log", iconName: "pi-align-left", onClick: toggleLog });
  // A pool's member is stopped by its pool (the pool's Stop button), never deleted by hand.
  const deleteButton = button({ label: "Delete", iconName: "pi-trash", onClick: askDelete });
  const localActions = h("div", { class: "dgpu-actions-group" }, launch, stop, restart, viewLog);
  const actions = h(
    "div",
    { class: "dgpu-actions" },
    localActions,
    h("span", { class: "dgpu-spacer" }),
    button({ label: "Test connection", iconName: "pi-wifi", onClick: (e) => testConnection(e.currentTarget) }),
    button({ label: "Edit", iconName: "pi-pencil", onClick: () => onEdit(worker) }),
    deleteButton,
  );

  const el = h(
    "article",
    { class: "dgpu-card dgpu-worker", "aria-label": `Worker ${worker.name}` },
    h("div", { class: "dgpu-card-head" }, dot, h("div", { class: "dgpu-card-heading" }, name), enabled.root),
    address,
    device,
    facts,
    access,
    status,
    warnings,
    actions,
    feedback,
    confirmRow,
    logSlot,
  );

  /** Runs a server action with `control` disabled; errors become a toast, `revert` undoes the UI. */
  async function run(control, action, revert = null) {
    control.disabled = true;
    try {
      return await action();
    } catch (error) {
      revert?.();
      store.notify("error", `${worker.name}: ${error.message}`);
      return null;
    } finally {
      control.disabled = false;
      update(worker);
    }
  }

  function control(target, action) {
    return run(target, () => store.controlWorker(worker.id, action));
  }

  async function testConnection(target) {
    feedback.hidden = false;
    feedback.className = "dgpu-test-result";
    feedback.textContent = "Testing…";
    const result = await run(target, () => store.testWorker(worker.id));
    if (!result) {
      feedback.hidden = true;
      return;
    }
    const { ok, text } = describeTestResult(result);
    feedback.classList.add(ok ? "dgpu-ok" : "dgpu-bad");
    feedback.textContent = text;
  }

  function askDelete() {
    const yes = button({ label: `Delete ${worker.name}`, text: "Delete", variant: "danger", onClick: (e) => remove(e.currentTarget) });
    const no = button({ label: "Keep", text: "Keep", variant: "secondary", onClick: () => { confirmRow.hidden = true; } });
    replaceChildren(confirmRow, h("span", { text: `Delete ${worker.name}?` }), h("span", { class: "dgpu-spacer" }), no, yes);
    confirmRow.hidden = false;
    no.focus();
  }

  async function remove(target) {
    await run(target, () => store.deleteWorker(worker.id));
  }

  function toggleLog() {
    if (log) {
      closeLog();
      return;
    }
    log = createLogViewer({ store, worker, onClose: closeLog });
    logSlot.append(log.el);
    viewLog.setAttribute("aria-pressed", "true");
  }

  function closeLog() {
    log?.destroy();
    log?.el.remove();
    log = null;
    viewLog.setAttribute("aria-pressed", "false");
  }

  function update(next) {
    worker = next;
    const described = describeStatus(worker);
    el.setAttribute("aria-label", `Worker ${worker.name}`);
    el.dataset.workerId = worker.id;
    el.dataset.state = described.tone;
    dot.className = `dgpu-dot dgpu-dot-${described.tone}`;
    name.textContent = worker.name;
    name.title = worker.name;
    const typeText = WORKER_TYPE_LABELS[worker.type] ?? worker.type;
    const managedBy = String(worker.managed_by ?? "");
    const pool = managedBy.startsWith("pool:") ? managedBy.slice("pool:".length) : null;
    typeLabel.textContent = pool ? `${typeText} · pool ${pool}` : typeText;
    deleteButton.hidden = Boolean(pool);
    if (document.activeElement !== enabled.input) enabled.input.checked = Boolean(worker.enabled);
    enabled.root.title = worker.enabled ? "Enabled: takes shares of distributed runs" : "Disabled: never used";
    addressText.textContent = workerAddress(worker);
    address.title = addressText.textContent;
    const deviceText = describeDevice(worker.status ?? {});
    const isLocal = worker.type === "local";
    const cuda = isLocal && worker.cuda_device !== null && worker.cuda_device !== undefined ? `CUDA ${worker.cuda_device}` : null;
    device.textContent = [cuda, deviceText].filter(Boolean).join(" · ");
    device.hidden = !device.textContent;
    replaceChildren(facts, describeWorkerFacts(worker).flatMap((fact, i) => [i ? " · " : null, h("span", { text: fact.text, title: fact.title })]));
    facts.hidden = !facts.firstChild;
    access.textContent = describeAccess(worker);
    access.title = worker.tls_ca_file ? `CA bundle: ${worker.tls_ca_file}` : "";
    access.hidden = !access.textContent;
    const warningList = Array.isArray(worker.warnings) ? worker.warnings : [];
    replaceChildren(warnings, warningList.map((text) => h("li", { class: "dgpu-warning" }, icon("pi-exclamation-triangle"), h("span", { text }))));
    warnings.hidden = warningList.length === 0;
    status.textContent = described.label;
    status.className = `dgpu-status dgpu-status-${described.tone}`;
    status.title = described.detail ?? "";
    localActions.hidden = !isLocal;
    const state = worker.status?.state;
    launch.disabled = RUNNING_STATES.has(state);
    stop.disabled = state === "offline" || state === "stopped";
    if (!isLocal && log) closeLog();
  }

  update(worker);
  return {
    el,
    update,
    destroy: closeLog,
  };
}
