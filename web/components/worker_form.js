/**
 * Add / edit form for one worker. Shows the fields the chosen type needs, sends them to the
 * master, and puts each validation error the API returns beside the field it names.
 */

import { ApiError } from "../api.js";
import { ACCESS_FIELDS, createAccessFields } from "./access_fields.js";
import { button, h } from "./dom.js";
import { createField, fieldForError, integerOrText } from "./field.js";
import { describeTestResult } from "./status.js";

const FIELDS_BY_TYPE = {
  local: ["name", "type", "cuda_device", "port", "listen", "extra_args"],
  remote: ["name", "type", "host", "port"],
  cloud: ["name", "type", "url"],
  host: ["name", "type", "url"],
};
const BASIC_FIELDS = ["name", "type", "host", "port", "url", "cuda_device", "listen", "extra_args"];
const ALL_FIELDS = [...BASIC_FIELDS, ...ACCESS_FIELDS];
/** Types reached over a network that may need a token, headers or TLS settings. */
const WITH_ACCESS = new Set(["remote", "cloud", "host"]);
const URL_HINTS = {
  cloud: "Full address, e.g. https://my-pod-8188.proxy.example.net",
  host: "The host's ComfyUI, e.g. http://192.168.1.30:8188. Its access token is the DISTRIBUTED_API_TOKEN it runs with.",
};

/** "port: Input should be ≤ 65535" beside the Port field reads better without its "port: ". */
function withoutLocation(message, location) {
  const prefix = `${location}: `;
  return location && message.startsWith(prefix) ? message.slice(prefix.length) : message;
}

/**
 * @param {{store: import("../store.js").DistributedStore, worker?: object|null, onDone: () => void}} options
 *   `worker` null means "add"; `onDone` is called after a successful save or on cancel.
 */
export function createWorkerForm({ store, worker = null, onDone }) {
  const editing = worker !== null;
  const typeSelect = h(
    "select",
    { class: "dgpu-input" },
    h("option", { value: "local", text: "Local (a GPU in this machine)" }),
    h("option", { value: "remote", text: "Remote (another machine)" }),
    h("option", { value: "cloud", text: "Cloud (https address)" }),
    h("option", { value: "host", text: "Host (another machine with this extension)" }),
  );
  const listenSelect = h(
    "select",
    { class: "dgpu-input" },
    h("option", { value: "loopback", text: "This machine only" }),
    h("option", { value: "network", text: "The network (locked with a token made for it)" }),
  );
  const fields = {
    name: createField({ label: "Name", name: "name" }),
    type: createField({ label: "Type", name: "type", input: typeSelect }),
    host: createField({ label: "Host", name: "host", hint: "Host name or IP address, without http:// or port." }),
    port: createField({ label: "Port", name: "port" }),
    url: createField({ label: "URL", name: "url", hint: URL_HINTS.cloud }),
    cuda_device: createField({ label: "CUDA device", name: "cuda_device", hint: "GPU index; leave empty for the default GPU." }),
    listen: createField({
      label: "Listens on",
      name: "listen",
      input: listenSelect,
      hint: "The network lets other machines reach it (a master that uses this machine as a host).",
    }),
    extra_args: createField({ label: "Extra arguments", name: "extra_args", hint: "Added to the worker's ComfyUI command line." }),
  };
  const access = createAccessFields({ worker });
  Object.assign(fields, access.fields);
  fields.port.input.inputMode = "numeric";
  fields.cuda_device.input.inputMode = "numeric";
  fields.port.input.placeholder = "8189";
  fields.host.input.placeholder = "192.168.1.20";
  fields.url.input.placeholder = "https://";

  const initial = worker ?? { name: "", type: "remote", host: "127.0.0.1", port: null, url: null, cuda_device: null, extra_args: "" };
  fields.name.input.value = initial.name ?? "";
  typeSelect.value = initial.type ?? "remote";
  fields.host.input.value = initial.host ?? "";
  fields.port.input.value = initial.port ?? "";
  fields.url.input.value = initial.url ?? "";
  fields.cuda_device.input.value = initial.cuda_device ?? "";
  fields.extra_args.input.value = initial.extra_args ?? "";
  listenSelect.value = initial.listen ?? "loopback";
  const urlHint = fields.url.root.querySelector(".dgpu-hint");

  const formError = h("p", { class: "dgpu-form-error", role: "alert", hidden: true });
  const testResult = h("p", { class: "dgpu-test-result", role: "status", hidden: true });
  const submit = h("button", { type: "submit", class: "dgpu-btn dgpu-btn-primary", text: editing ? "Save" : "Add worker" });
  const title = editing ? `Edit ${worker.name}` : "Add a worker";
  const form = h(
    "form",
    { class: "dgpu-form dgpu-card", "aria-label": title, novalidate: true },
    h("h3", { class: "dgpu-form-title", text: title }),
    BASIC_FIELDS.map((name) => fields[name].root),
    access.root,
    h(
      "div",
      { class: "dgpu-form-test" },
      button({ label: "Test connection", text: "Test connection", iconName: "pi-wifi", variant: "secondary", onClick: testConnection }),
      testResult,
    ),
    formError,
    h(
      "div",
      { class: "dgpu-form-actions" },
      button({ label: "Cancel", text: "Cancel", variant: "secondary", onClick: () => onDone() }),
      submit,
    ),
  );

  function showTypeFields() {
    const visible = FIELDS_BY_TYPE[typeSelect.value];
    for (const name of BASIC_FIELDS) fields[name].root.hidden = !visible.includes(name);
    access.root.hidden = !WITH_ACCESS.has(typeSelect.value);
    urlHint.textContent = URL_HINTS[typeSelect.value] ?? URL_HINTS.cloud;
  }
  typeSelect.addEventListener("change", showTypeFields);
  showTypeFields();

  function clearErrors() {
    for (const field of Object.values(fields)) field.setError(null);
    formError.hidden = true;
  }

  function body() {
    const type = typeSelect.value;
    const values = {
      name: fields.name.input.value.trim(),
      type,
      host: fields.host.input.value.trim(),
      port: integerOrText(fields.port.input.value),
      url: fields.url.input.value.trim() || null,
      cuda_device: integerOrText(fields.cuda_device.input.value),
      listen: listenSelect.value,
      extra_args: fields.extra_args.input.value,
    };
    const result = {};
    for (const name of FIELDS_BY_TYPE[type]) {
      if (editing || (values[name] !== null && values[name] !== "")) result[name] = values[name];
    }
    // A worker that stops being "cloud" or a host must lose its URL, or the master would keep using it;
    // one that stops being local has no listen choice any more.
    if (editing && !FIELDS_BY_TYPE[type].includes("url") && worker.url) result.url = null;
    if (editing && type !== "local" && worker.listen === "network") result.listen = "loopback";
    return WITH_ACCESS.has(type) ? { ...result, ...access.changes({ editing }) } : result;
  }

  function showError(error) {
    const name = error instanceof ApiError ? fieldForError(error.field, ALL_FIELDS) : null;
    const hidden = name && (fields[name].root.hidden || (ACCESS_FIELDS.includes(name) && access.root.hidden));
    if (name && !hidden) {
      fields[name].setError(withoutLocation(error.message, error.field));
      fields[name].input.focus();
    } else {
      formError.textContent = error.message;
      formError.hidden = false;
    }
  }

  async function save(event) {
    event.preventDefault();
    clearErrors();
    submit.disabled = true;
    try {
      if (editing) await store.updateWorker(worker.id, body());
      else await store.createWorker(body());
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

  /** Whether the form still describes the saved worker, as far as reaching it goes. */
  function sameAsSaved(values) {
    if (!editing || !access.secretsUnchanged()) return false;
    return Object.entries(values).every(([name, value]) => name === "name" || (value ?? null) === (worker[name] ?? null));
  }

  /**
   * Tests what the form holds now, saved or not: the master makes the call, not the browser. An
   * unchanged saved worker is tested as saved, which also uses its stored secrets.
   */
  async function testConnection() {
    clearErrors();
    testResult.hidden = false;
    testResult.className = "dgpu-test-result";
    testResult.textContent = "Testing…";
    const values = body();
    const unsaved = { ...values, ...(WITH_ACCESS.has(values.type) ? access.forTest() : {}) };
    if (editing) unsaved.id = worker.id;
    try {
      const answer = sameAsSaved(values)
        ? await store.testWorker(worker.id)
        : await store.testUnsavedWorker(Object.fromEntries(Object.entries(unsaved).filter(([, value]) => value !== null)));
      const result = describeTestResult(answer);
      testResult.classList.add(result.ok ? "dgpu-ok" : "dgpu-bad");
      testResult.textContent = result.text;
    } catch (error) {
      testResult.hidden = true;
      showError(error);
    }
  }

  return {
    el: form,
    focus: () => fields.name.input.focus(),
  };
}
