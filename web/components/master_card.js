/** The master's own card: whether it renders a share or only orchestrates, and its GPU. */

import { h, toggleSwitch } from "./dom.js";
import { describeDevice } from "./format.js";

/** @returns {{el: HTMLElement, update: (state: object) => void}} */
export function createMasterCard({ store }) {
  const participate = toggleSwitch({
    label: "Participates",
    hideLabel: true,
    checked: store.state.master.participate,
    onChange: async (checked, input) => {
      input.disabled = true;
      try {
        await store.updateConfig({ master: { participate: checked } });
      } catch (error) {
        input.checked = !checked;
        store.notify("error", `Master: ${error.message}`);
      } finally {
        input.disabled = false;
      }
    },
  });
  const role = h("p", { class: "dgpu-status" });
  const addressText = h("span", { class: "dgpu-mono" });
  const address = h("p", { class: "dgpu-meta dgpu-address" }, h("span", { text: "This ComfyUI" }), " · ", addressText);
  const device = h("p", { class: "dgpu-meta" });
  const el = h(
    "article",
    { class: "dgpu-card dgpu-master", "aria-label": "Master" },
    h(
      "div",
      { class: "dgpu-card-head" },
      h("span", { class: "dgpu-dot dgpu-dot-online", "aria-hidden": "true" }),
      h("div", { class: "dgpu-card-heading" }, h("h3", { class: "dgpu-card-title", text: "Master" })),
      participate.root,
    ),
    address,
    device,
    role,
  );

  function update(state) {
    const master = state.master;
    if (document.activeElement !== participate.input) participate.input.checked = Boolean(master.participate);
    participate.root.title = "Render a share on the master too (off: only orchestrate and collect)";
    role.textContent = master.participate ? "Renders a share of each run" : "Orchestrates only";
    addressText.textContent = master.host || window.location.host;
    address.title = master.host ? "The master's address as workers see it" : "";
    const deviceText = describeDevice(state.masterDevice ?? {});
    const cuda = master.cuda_device !== null && master.cuda_device !== undefined ? `CUDA ${master.cuda_device}` : null;
    device.textContent = [cuda, deviceText].filter(Boolean).join(" · ");
    device.hidden = !device.textContent;
  }

  update(store.state);
  return { el, update };
}
