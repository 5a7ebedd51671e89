/**
 * "This workflow on each worker": what each worker lacks for the workflow open in the editor (node
 * classes, model files), checked on request, with per worker a "Copy missing models" button (workers
 * that run this extension), a progress bar while a copy runs (speed, time left), and a "Set-up
 * script" button that shows the script for that worker and downloads it.
 * Every name here comes from workflows and workers: it reaches the page as text only.
 */

import { button, h, replaceChildren } from "./dom.js";
import { formatBytes, formatDuration } from "./format.js";

const OS_SHELLS = { nt: "powershell" };

/** "42% · 85 MB/s · 12s left" for a running copy; what happened for a finished one. */
export function describeCopy(copy) {
  const total = copy.total_bytes || 0;
  const fraction = total > 0 ? Math.min(copy.done_bytes / total, 1) : 1;
  if (copy.state === "copying") {
    const parts = [`${Math.floor(fraction * 100)}%`];
    const speed = formatBytes(copy.bytes_per_s);
    if (speed) parts.push(`${speed}/s`);
    const left = formatDuration(copy.seconds_left);
    parts.push(left ? `${left} left` : "estimating time left…");
    const current = copy.files.find((file) => file.state === "copying" || file.state === "verifying");
    if (current) parts.push(current.state === "verifying" ? `checking ${current.name}` : current.name);
    return { fraction, text: parts.join(" · "), tone: "running" };
  }
  if (copy.state === "done") {
    const copied = copy.files.filter((file) => file.state === "done").length;
    const present = copy.files.length - copied;
    const text = `Copied ${copied} file${copied === 1 ? "" : "s"} (${formatBytes(total) ?? "0 MB"})` + (present ? `, ${present} there already` : "");
    return { fraction: 1, text, tone: "done" };
  }
  return { fraction, text: copy.error ?? `Copy ${copy.state}`, tone: copy.state === "cancelled" ? "cancelled" : "failed" };
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

function missingModelsText(row) {
  return row.missing_models.map((model) => {
    const size = formatBytes(model.size);
    return `${model.name}${model.folder ? ` (${model.folder}${size ? `, ${size}` : ""})` : ""}`;
  });
}

/** @param {{store: import("../store.js").DistributedStore}} options */
export function createInventory({ store }) {
  const checkButton = button({ label: "Check the open workflow", text: "Check workflow", iconName: "pi-search", variant: "secondary",
    onClick: () => store.checkWorkflow() });
  const summary = h("p", { class: "dgpu-meta", role: "status" });
  const problems = h("ul", { class: "dgpu-warnings", "aria-label": "Workflow metadata problems", hidden: true });
  const body = h("tbody");
  const table = h(
    "table",
    { class: "dgpu-inventory", hidden: true },
    h("caption", { class: "dgpu-visually-hidden", text: "What each worker lacks for the open workflow" }),
    h("thead", {}, h("tr", {}, ...["Worker", "Nodes missing", "Models missing", "Actions"].map((text) => h("th", { scope: "col", text })))),
    body,
  );
  const scriptSlot = h("div", { class: "dgpu-script", hidden: true });
  const el = h(
    "section",
    { class: "dgpu-section dgpu-inventory-section", "aria-label": "This workflow on each worker" },
    h("div", { class: "dgpu-section-head" }, h("h3", { class: "dgpu-section-title", text: "This workflow on each worker" }),
      h("span", { class: "dgpu-spacer" }), checkButton),
    summary,
    problems,
    table,
    scriptSlot,
  );

  async function run(control, action) {
    control.disabled = true;
    try {
      return await action();
    } catch (error) {
      store.notify("error", error.message);
      return null;
    } finally {
      control.disabled = false;
    }
  }

  async function showScript(row, shell, control) {
    const answer = await run(control, () => store.setupScript(row.worker_id, shell));
    if (!answer) return;
    const code = h("pre", { class: "dgpu-script-text", tabindex: "0", "aria-label": `${answer.filename} for ${row.name}`, text: answer.script });
    const download = button({ label: `Download ${answer.filename}`, text: "Download", iconName: "pi-download", variant: "secondary",
      onClick: () => downloadText(answer.filename, answer.script) });
    const other = shell === "bash" ? "powershell" : "bash";
    const switchShell = button({ label: other === "bash" ? "Show the bash script" : "Show the PowerShell script",
      text: other === "bash" ? "bash" : "PowerShell", variant: "secondary", onClick: (e) => showScript(row, other, e.currentTarget) });
    const close = button({ label: "Close the script", iconName: "pi-times", onClick: () => { scriptSlot.hidden = true; replaceChildren(scriptSlot); } });
    const unresolved = answer.unresolved?.length
      ? h("p", { class: "dgpu-meta dgpu-warning", text: `${answer.unresolved.length} thing(s) could not be resolved; they are listed at the top of the script.` })
      : null;
    replaceChildren(scriptSlot,
      h("div", { class: "dgpu-section-head" }, h("span", { class: "dgpu-script-title", text: `${answer.filename} for ${row.name}` }),
        h("span", { class: "dgpu-spacer" }), switchShell, download, close),
      unresolved, code);
    scriptSlot.hidden = false;
  }

  /** A copy's row; `set` updates it in place, so progress never rebuilds the table (focus stays). */
  function copyRow(row, copy) {
    const bar = progressBar(`Copy to ${row.name}`);
    const text = h("p", { class: "dgpu-meta", role: "status" });
    const cancel = copy.state === "copying"
      ? button({ label: `Cancel the copy to ${row.name}`, iconName: "pi-times", onClick: (e) => run(e.currentTarget, () => store.cancelCopy(row.worker_id)) })
      : null;
    const tr = h("tr", { class: "dgpu-copy-row" }, h("td", { colspan: "4" }, h("div", { class: "dgpu-copy" }, bar.bar, cancel), text));
    const set = (next) => {
      const described = describeCopy(next);
      bar.set(described.fraction);
      text.textContent = described.text;
      tr.className = `dgpu-copy-row dgpu-copy-${described.tone}`;
    };
    set(copy);
    copyViews.set(row.worker_id, set);
    return tr;
  }

  function workerRows(row, copy) {
    const nodes = row.error ? [] : row.missing_nodes;
    const models = row.error ? [] : missingModelsText(row);
    const actions = h("div", { class: "dgpu-inventory-actions" });
    const copying = copy?.state === "copying";
    if (row.extension && row.copyable_bytes > 0) {
      actions.append(button({ label: `Copy missing models to ${row.name}`, text: "Copy missing models", iconName: "pi-copy", variant: "secondary",
        disabled: copying, title: `Stream ${formatBytes(row.copyable_bytes)} from the master's model folders`,
        onClick: (e) => run(e.currentTarget, () => store.copyModels(row.worker_id)) }));
    }
    if (!row.ready) {
      const worker = store.worker(row.worker_id);
      const shell = OS_SHELLS[worker?.status?.os] ?? "bash";
      actions.append(button({ label: `Set-up script for ${row.name}`, text: "Set-up script", iconName: "pi-file", variant: "secondary",
        onClick: (e) => showScript(row, shell, e.currentTarget) }));
    }
    const cell = (items, none) => h("td", {}, items.length ? h("ul", { class: "dgpu-inventory-list" }, items.map((text) => h("li", { text }))) : none);
    const rows = [h(
      "tr",
      { class: row.ready ? "dgpu-inventory-ready" : "dgpu-inventory-lacking", dataset: { workerId: row.worker_id } },
      h("th", { scope: "row", text: row.name, title: row.extension ? "Runs this extension: can receive models" : "Stock ComfyUI" }),
      row.error ? h("td", { colspan: "2", class: "dgpu-bad", text: row.error }) : cell(nodes, h("span", { class: "dgpu-ok", text: "none" })),
      row.error ? null : cell(models, h("span", { class: "dgpu-ok", text: "none" })),
      h("td", {}, actions),
    )];
    if (copy) rows.push(copyRow(row, copy));
    return rows;
  }

  const copyViews = new Map();
  let shown = { inventory: null, copyShape: "" };

  function update(state) {
    const { inventory, copies } = state;
    // Progress of a running copy changes only its own row; anything else rebuilds the table.
    const copyShape = Object.values(copies).map((copy) => `${copy.worker_id}:${copy.started_at}:${copy.state}`).join("|");
    if (shown.inventory === inventory && shown.copyShape === copyShape) {
      for (const copy of Object.values(copies)) copyViews.get(copy.worker_id)?.(copy);
      return;
    }
    shown = { inventory, copyShape };
    copyViews.clear();
    checkButton.disabled = inventory.checking;
    if (inventory.checking) summary.textContent = "Checking the open workflow on each worker…";
    else if (inventory.error) summary.textContent = `Could not check the workflow: ${inventory.error}`;
    else if (inventory.checkedAt === null) summary.textContent = "Check which nodes and model files each worker lacks before you queue.";
    else {
      const lacking = inventory.rows.filter((row) => !row.ready).length;
      summary.textContent = lacking ? `${lacking} of ${inventory.rows.length} workers lack something.` : "Every worker has what the workflow needs.";
    }
    summary.classList.toggle("dgpu-bad", Boolean(inventory.error));
    replaceChildren(problems, inventory.problems.map((text) => h("li", { class: "dgpu-warning", text })));
    problems.hidden = inventory.problems.length === 0;
    const rows = inventory.rows;
    const copyOnly = Object.values(copies).filter((copy) => !rows.some((row) => row.worker_id === copy.worker_id));
    replaceChildren(body,
      rows.flatMap((row) => workerRows(row, copies[row.worker_id])),
      copyOnly.flatMap((copy) => workerRows({ worker_id: copy.worker_id, name: copy.worker_name, missing_nodes: [], missing_models: [], ready: true,
        extension: true, copyable_bytes: 0, error: null }, copy)));
    table.hidden = body.children.length === 0;
  }

  update(store.state);
  return { el, update };
}

function downloadText(filename, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
