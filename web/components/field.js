/** A labelled form field with a slot for the server's validation message beside it. */

import { h, uniqueId } from "./dom.js";

/**
 * @param {{label: string, name: string, input?: HTMLElement, hint?: string}} options
 *   `input` defaults to a text input; its id, name and aria wiring are set here.
 */
export function createField({ label, name, input = null, hint = null }) {
  const control = input ?? h("input", { type: "text", class: "dgpu-input", autocomplete: "off", spellcheck: "false" });
  const id = uniqueId(name);
  control.id = id;
  control.name = name;
  const hintEl = hint ? h("p", { class: "dgpu-hint", id: `${id}-hint`, text: hint }) : null;
  const error = errorSlot(control, id, hintEl?.id ?? null);
  const root = h(
    "div",
    { class: "dgpu-field", dataset: { field: name } },
    h("label", { class: "dgpu-label", for: id, text: label }),
    control,
    hintEl,
    error.el,
  );
  return { root, input: control, setError: error.set, name };
}

/** A checkbox with its label beside it, and a slot for the server's message. */
export function createCheckField({ label, name, checked }) {
  const id = uniqueId(name);
  const control = h("input", { type: "checkbox", id, name, class: "dgpu-check-input", checked: Boolean(checked) });
  const error = errorSlot(control, id, null);
  const root = h(
    "div",
    { class: "dgpu-field dgpu-check-field", dataset: { field: name } },
    h("label", { class: "dgpu-check", for: id }, control, h("span", { text: label })),
    error.el,
  );
  return { root, input: control, setError: error.set, name };
}

/**
 * The message element under a control and the function that shows or clears it, keeping
 * `aria-invalid` and `aria-describedby` (message first, then the hint) in step.
 */
export function errorSlot(control, id, hintId) {
  const errorId = `${id}-error`;
  const el = h("p", { class: "dgpu-field-error", id: errorId, hidden: true });
  if (hintId) control.setAttribute("aria-describedby", hintId);

  function set(message) {
    el.textContent = message ?? "";
    el.hidden = !message;
    if (message) {
      control.setAttribute("aria-invalid", "true");
      control.setAttribute("aria-describedby", [errorId, hintId].filter(Boolean).join(" "));
    } else {
      control.removeAttribute("aria-invalid");
      if (hintId) control.setAttribute("aria-describedby", hintId);
      else control.removeAttribute("aria-describedby");
    }
  }

  return { el, set };
}

/**
 * The form field an API error belongs to. The server names fields by their dotted pydantic path
 * ("port", "body.port", "settings.worker_timeout"); the last segment that is one of `names` wins.
 */
export function fieldForError(errorField, names) {
  if (!errorField) return null;
  const parts = String(errorField).split(".");
  for (let i = parts.length - 1; i >= 0; i -= 1) {
    if (names.includes(parts[i])) return parts[i];
  }
  return null;
}

/** Text from a number-like input: an integer when it is one, else the raw text for the server to refuse. */
export function integerOrText(value) {
  const text = value.trim();
  if (text === "") return null;
  return /^-?\d+$/.test(text) ? Number(text) : text;
}

export function numberOrText(value) {
  const text = value.trim();
  if (text === "") return null;
  const number = Number(text);
  return Number.isFinite(number) ? number : text;
}
