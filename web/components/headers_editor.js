/**
 * Custom headers as name/value rows. Saved values arrive masked ("••••abcd"); a masked value left
 * as it is keeps the stored one on the server, so the rows are sent back only when they changed.
 */

import { button, h, uniqueId } from "./dom.js";
import { errorSlot } from "./field.js";

const MASK = "\u2022\u2022\u2022\u2022";

/**
 * @param {{headers: Record<string, string>}} options the worker's headers as the API shows them
 * @returns {{root: HTMLElement, input: HTMLElement, setError: (message: string|null) => void,
 *   name: string, value: () => Record<string, string>, changed: () => boolean}}
 */
export function createHeadersEditor({ headers = {} }) {
  const id = uniqueId("headers");
  const labelId = `${id}-label`;
  const hintId = `${id}-hint`;
  const rows = h("div", { class: "dgpu-header-rows" });
  const addButton = button({ label: "Add header", text: "Add header", iconName: "pi-plus", variant: "secondary", onClick: () => addRow("", "").name.focus() });
  const group = h("div", { class: "dgpu-header-group", role: "group", "aria-labelledby": labelId }, rows, addButton);
  const error = errorSlot(group, id, hintId);
  const root = h(
    "div",
    { class: "dgpu-field", dataset: { field: "headers" } },
    h("span", { class: "dgpu-label", id: labelId, text: "Custom headers" }),
    group,
    h("p", { class: "dgpu-hint", id: hintId, text: "Sent with every request to the worker, e.g. a tunnel's access keys. Saved values stay hidden." }),
    error.el,
  );

  function addRow(name, value) {
    const nameInput = h("input", { type: "text", class: "dgpu-input", "aria-label": "Header name", placeholder: "Name", autocomplete: "off", spellcheck: "false", value: name });
    const valueInput = h("input", { type: "text", class: "dgpu-input", "aria-label": "Header value", placeholder: "Value", autocomplete: "off", spellcheck: "false", value });
    // A masked value is replaced as a whole: typing into it would send a value the server refuses.
    valueInput.addEventListener("focus", () => {
      if (valueInput.value.startsWith(MASK)) valueInput.select();
    });
    const row = h("div", { class: "dgpu-header-row" }, nameInput, valueInput);
    row.append(button({
      label: "Remove header",
      iconName: "pi-times",
      onClick: () => {
        row.remove();
        addButton.focus();
      },
    }));
    rows.append(row);
    return { name: nameInput, value: valueInput };
  }

  for (const [name, value] of Object.entries(headers ?? {})) addRow(name, value);
  const initial = JSON.stringify(headers ?? {});

  /** The rows as an object; a row with neither name nor value is ignored. */
  function value() {
    const result = {};
    for (const row of rows.children) {
      const [nameInput, valueInput] = row.querySelectorAll("input");
      const name = nameInput.value.trim();
      if (name || valueInput.value) result[name] = valueInput.value;
    }
    return result;
  }

  return {
    root,
    get input() {
      return rows.querySelector("input") ?? addButton;
    },
    setError: error.set,
    name: "headers",
    value,
    changed: () => JSON.stringify(value()) !== initial,
  };
}
