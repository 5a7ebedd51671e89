/**
 * Settings shared by every run. Each field saves when it changes (blur or Enter); a value the
 * server refuses shows its message beside the field and the stored value is left alone.
 */

import { ApiError } from "../api.js";
import { h, toggleSwitch, uniqueId } from "./dom.js";
import { createField, fieldForError, numberOrText } from "./field.js";

const NUMBER_SETTINGS = [
  {
    name: "worker_timeout",
    label: "Worker timeout (seconds)",
    hint: "How long a worker may leave its connection's heartbeat unanswered (frozen, cut off) before its share is re-run elsewhere.",
  },
  {
    name: "stall_timeout",
    label: "Stall timeout (seconds)",
    hint: "How long a share may show no progress (stuck in a node) before it is re-run elsewhere.",
  },
  {
    name: "backup_after",
    label: "A worker lags when slower than usual by (×)",
    hint: "A worker this many times slower than usual keeps only the share it runs, which may be copied to an idle worker.",
  },
  {
    name: "assign_timeout",
    label: "Wait for a free GPU (seconds)",
    hint: "How long a share may wait for a participant before the run fails, when the master only orchestrates.",
  },
  { name: "health_interval", label: "Health check every (seconds)" },
];
const SWITCH_SETTINGS = [
  { name: "auto_launch", label: "Launch local workers with ComfyUI" },
  { name: "stop_workers_on_exit", label: "Stop local workers when ComfyUI exits" },
  {
    name: "backup_tasks",
    label: "Copy lagging shares",
    hint: "Start a copy of a share on an idle worker when its own worker lags far behind; the first result wins.",
  },
  {
    name: "distributed_queue",
    label: "Distributed queue",
    hint: "Run prompts without a collector whole on the first free GPU, in list order.",
  },
];

/** @returns {{el: HTMLElement, update: (state: object) => void}} */
export function createSettings({ store }) {
  const numberFields = NUMBER_SETTINGS.map((spec) => {
    const field = createField({ label: spec.label, name: spec.name, hint: spec.hint });
    field.input.inputMode = "decimal";
    field.input.addEventListener("change", () => saveNumber(field));
    field.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") saveNumber(field);
    });
    return field;
  });
  const hostField = createField({
    label: "Master address (as workers see it)",
    name: "host",
    hint: "Only needed by features that call the master back.",
  });
  hostField.input.placeholder = window.location.hostname;
  hostField.input.addEventListener("change", () => save(hostField, { master: { host: hostField.input.value.trim() } }));

  const switches = SWITCH_SETTINGS.map((spec) => {
    const control = toggleSwitch({
      label: spec.label,
      checked: Boolean(store.state.settings[spec.name]),
      onChange: async (checked, input) => {
        input.disabled = true;
        try {
          await store.updateConfig({ settings: { [spec.name]: checked } });
        } catch (error) {
          input.checked = !checked;
          store.notify("error", `Settings: ${error.message}`);
        } finally {
          input.disabled = false;
        }
      },
    });
    if (!spec.hint) return { ...spec, control, root: control.root };
    const hintId = uniqueId(`${spec.name}-hint`);
    control.input.setAttribute("aria-describedby", hintId);
    const root = h("div", { class: "dgpu-switch-field" }, control.root, h("p", { class: "dgpu-hint", id: hintId, text: spec.hint }));
    return { ...spec, control, root };
  });

  const el = h(
    "details",
    { class: "dgpu-section dgpu-settings" },
    h("summary", { class: "dgpu-section-title", text: "Settings" }),
    h(
      "div",
      { class: "dgpu-settings-body" },
      switches.map((s) => s.root),
      numberFields.map((f) => f.root),
      hostField.root,
    ),
  );

  async function save(field, changes) {
    field.setError(null);
    try {
      await store.updateConfig(changes);
    } catch (error) {
      const names = [...NUMBER_SETTINGS.map((s) => s.name), "host"];
      if (error instanceof ApiError && (fieldForError(error.field, names) === field.name || error.status === 400)) {
        field.setError(error.message);
      } else {
        store.notify("error", `Settings: ${error.message}`);
      }
    }
  }

  function saveNumber(field) {
    const value = numberOrText(field.input.value);
    if (value === store.state.settings[field.name]) {
      field.setError(null);
      return;
    }
    save(field, { settings: { [field.name]: value } });
  }

  function update(state) {
    for (const field of numberFields) {
      if (document.activeElement !== field.input && !field.input.getAttribute("aria-invalid")) {
        field.input.value = state.settings[field.name] ?? "";
      }
    }
    if (document.activeElement !== hostField.input) hostField.input.value = state.master.host ?? "";
    for (const { name, control } of switches) {
      if (document.activeElement !== control.input) control.input.checked = Boolean(state.settings[name]);
    }
  }

  update(store.state);
  return { el, update };
}
