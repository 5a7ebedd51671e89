/**
 * Add / edit form for one elastic pool. Commands are argument lists, one argument per line, never a
 * shell line; each validation error the API returns goes beside the field it names.
 */

import { ApiError } from "../api.js";
import { button, h } from "./dom.js";
import { createField, fieldForError, integerOrText, numberOrText } from "./field.js";

const NUMBER_FIELDS = [
  { name: "min", label: "Min members", hint: "Kept running even when no work waits.", integer: true },
  { name: "max", label: "Max members", hint: "Starting members count too.", integer: true },
  { name: "idle_seconds", label: "Stop a member idle for (seconds)" },
  { name: "grow_after_seconds", label: "Grow after work waited (seconds)", hint: "With every GPU busy." },
  { name: "max_starts_per_10min", label: "Starts per 10 minutes, at most", integer: true },
  { name: "budget_hours_per_day", label: "Budget (member-hours per day)", hint: "No member is started past it; members stop once it is spent." },
  { name: "ready_timeout_seconds", label: "Readiness deadline (seconds)", hint: "From the start command until the member answers." },
];
const COMMAND_FIELDS = [
  {
    name: "start_command",
    label: "Start command",
    hint: "One argument per line, the program first. {member_id} and {pool} are replaced. It prints one JSON line: {\"url\": ...}.",
  },
  { name: "stop_command", label: "Stop command", hint: "One argument per line; gets the member id the same way." },
];
const ALL_FIELDS = ["name", ...NUMBER_FIELDS.map((f) => f.name), ...COMMAND_FIELDS.map((f) => f.name)];
const NEW_POOL = { name: "", min: 0, max: 1, idle_seconds: 600, grow_after_seconds: 30, max_starts_per_10min: 3, ready_timeout_seconds: 900 };

/** Lines of a textarea as an argument list: blank lines are dropped. */
export function argumentLines(text) {
  return text.split("\n").map((line) => line.replace(/\r$/, "")).filter((line) => line.trim() !== "");
}

/**
 * @param {{store: import("../store.js").DistributedStore, pool?: object|null, onDone: () => void}} options
 *   `pool` (a pool's `config`) null means "add"; `onDone` is called after a successful save or on cancel.
 */
export function createPoolForm({ store, pool = null, onDone }) {
  const editing = pool !== null;
  const initial = pool ?? NEW_POOL;
  const fields = { name: createField({ label: "Name", name: "name", hint: "Letters, digits, . _ -; its members are named after it." }) };
  fields.name.input.value = initial.name ?? "";
  fields.name.input.disabled = editing;
  for (const spec of NUMBER_FIELDS) {
    fields[spec.name] = createField({ label: spec.label, name: spec.name, hint: spec.hint ?? null });
    fields[spec.name].input.inputMode = spec.integer ? "numeric" : "decimal";
    fields[spec.name].input.value = initial[spec.name] ?? "";
  }
  for (const spec of COMMAND_FIELDS) {
    const input = h("textarea", { class: "dgpu-input dgpu-mono", rows: "3", spellcheck: "false", autocomplete: "off" });
    fields[spec.name] = createField({ label: spec.label, name: spec.name, hint: spec.hint, input });
    input.value = (initial[spec.name] ?? []).join("\n");
  }

  const formError = h("p", { class: "dgpu-form-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "dgpu-btn dgpu-btn-primary", text: editing ? "Save" : "Add pool" });
  const title = editing ? `Edit pool ${pool.name}` : "Add an elastic pool";
  const form = h(
    "form",
    { class: "dgpu-form dgpu-card", "aria-label": title, novalidate: true },
    h("h3", { class: "dgpu-form-title", text: title }),
    fields.name.root,
    COMMAND_FIELDS.map((spec) => fields[spec.name].root),
    NUMBER_FIELDS.map((spec) => fields[spec.name].root),
    formError,
    h(
      "div",
      { class: "dgpu-form-actions" },
      button({ label: "Cancel", text: "Cancel", variant: "secondary", onClick: () => onDone() }),
      submit,
    ),
  );

  function body() {
    const values = {};
    for (const spec of NUMBER_FIELDS) {
      const raw = fields[spec.name].input.value;
      values[spec.name] = spec.integer ? integerOrText(raw) : numberOrText(raw);
    }
    for (const spec of COMMAND_FIELDS) values[spec.name] = argumentLines(fields[spec.name].input.value);
    if (!editing) values.name = fields.name.input.value.trim();
    return values;
  }

  function showError(error) {
    const name = error instanceof ApiError ? fieldForError(error.field, ALL_FIELDS) : null;
    if (name) {
      const prefix = `${error.field}: `;
      fields[name].setError(error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message);
      fields[name].input.focus();
    } else {
      formError.textContent = error.message;
      formError.hidden = false;
    }
  }

  async function save(event) {
    event.preventDefault();
    for (const field of Object.values(fields)) field.setError(null);
    formError.hidden = true;
    submit.disabled = true;
    try {
      if (editing) await store.updatePool(pool.name, body());
      else await store.createPool(body());
      onDone();
    } catch (error) {
      showError(error);
    } finally {
      submit.disabled = false;
    }
  }
  form.addEventListener("submit", save);
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") onDone();
  });

  return {
    el: form,
    focus: () => (editing ? fields.start_command.input : fields.name.input).focus(),
  };
}
