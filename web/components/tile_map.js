/**
 * The tile map of a Distributed Upscale: one box per tile of a frame, at its place and size,
 * coloured by the participant that has it (the same colour as that participant's share rows),
 * hatched while it waits, outlined while it renders, filled once done.
 */

import { h, replaceChildren } from "./dom.js";

/**
 * A participant's colour from its place in the list (the master first, then the workers in the
 * registry's order), so it stays the same for the whole run and on every row. Hues step by the
 * golden angle, which keeps neighbours in the list far apart on the colour wheel.
 */
export function participantColor(place) {
  const hue = Math.round((210 + place * 137.508) % 360);
  return `hsl(${hue} 62% 52%)`;
}

/**
 * What the map shows: the frame being worked on (the first with a tile not done; the last once all
 * are done), its tiles placed relative to the frame's size, and the count of done tiles overall.
 * `tiles` is the job snapshot's list ({tile, frame, x, y, width, height, state, participant}).
 */
export function describeTileMap(tiles) {
  const valid = (Array.isArray(tiles) ? tiles : []).filter(
    (t) => Number.isInteger(t?.frame) && [t.x, t.y].every(Number.isFinite) && t.width > 0 && t.height > 0,
  );
  if (!valid.length) return null;
  const frames = [...new Set(valid.map((t) => t.frame))].sort((a, b) => a - b);
  const unfinished = frames.find((frame) => valid.some((t) => t.frame === frame && t.state !== "done"));
  const frame = unfinished ?? frames[frames.length - 1];
  const shown = valid.filter((t) => t.frame === frame);
  const width = Math.max(...shown.map((t) => t.x + t.width));
  const height = Math.max(...shown.map((t) => t.y + t.height));
  return {
    frameNumber: frames.indexOf(frame) + 1,
    frameCount: frames.length,
    width,
    height,
    done: valid.filter((t) => t.state === "done").length,
    total: valid.length,
    tiles: shown.map((t) => ({
      tile: t.tile,
      state: t.state,
      participant: t.participant ?? null,
      left: t.x / width,
      top: t.y / height,
      width: t.width / width,
      height: t.height / height,
    })),
  };
}

/** "Tile map: 5 of 16 tiles done" (and the frame when there are several): the map's accessible name. */
export function tileMapLabel(view) {
  const frame = view.frameCount > 1 ? `, frame ${view.frameNumber} of ${view.frameCount}` : "";
  return `Tile map${frame}: ${view.done} of ${view.total} tiles done`;
}

const MAP_HEIGHT_PX = 180;
const percent = (fraction) => `${(fraction * 100).toFixed(3)}%`;

/**
 * @param {{nameOf: (participant: string) => string, colorOf: (participant: string) => string}} options
 */
export function createTileMap({ nameOf, colorOf }) {
  const caption = h("p", { class: "dgpu-meta dgpu-tilemap-caption" });
  const map = h("div", { class: "dgpu-tilemap", role: "img" });
  const legend = h("ul", { class: "dgpu-tilemap-legend", "aria-label": "Tile colours" });
  const el = h("div", { class: "dgpu-tilemap-block", hidden: true }, caption, map, legend);

  function tileBox(tile) {
    const box = h("div", { class: ["dgpu-tile", `dgpu-tile-${tile.state}`], dataset: { state: tile.state }, "aria-hidden": "true" });
    box.style.left = percent(tile.left);
    box.style.top = percent(tile.top);
    box.style.width = percent(tile.width);
    box.style.height = percent(tile.height);
    if (tile.participant) box.style.setProperty("--dgpu-tile-color", colorOf(tile.participant));
    return box;
  }

  function legendRow(participant, count) {
    const swatch = h("span", { class: "dgpu-swatch", "aria-hidden": "true" });
    swatch.style.background = colorOf(participant);
    return h("li", { class: "dgpu-tilemap-key" }, swatch, h("span", { text: `${nameOf(participant)} · ${count} tile${count === 1 ? "" : "s"}` }));
  }

  function update(tiles) {
    const view = describeTileMap(tiles);
    el.hidden = !view;
    if (!view) return;
    caption.textContent = view.frameCount > 1 ? `Frame ${view.frameNumber} of ${view.frameCount}` : "";
    caption.hidden = view.frameCount < 2;
    map.setAttribute("aria-label", tileMapLabel(view));
    // As wide as the panel, but no taller than MAP_HEIGHT_PX: a tall frame stays a small map.
    map.style.aspectRatio = `${view.width} / ${view.height}`;
    map.style.width = `min(100%, ${Math.round((MAP_HEIGHT_PX * view.width) / view.height)}px)`;
    replaceChildren(map, view.tiles.map(tileBox));
    const counts = new Map();
    for (const tile of tiles) {
      if (tile?.participant) counts.set(tile.participant, (counts.get(tile.participant) ?? 0) + 1);
    }
    replaceChildren(legend, [...counts].map(([participant, count]) => legendRow(participant, count)));
  }

  return { el, update };
}
