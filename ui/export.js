// Export buttons: the server's formats (downloaded with the token, so not plain links)
// and a PNG of the drawn graph.
import { el } from "./dom.js";

const FORMATS = [
  ["pprof", "pprof", "pb.gz"],
  ["folded", "Folded", "folded.txt"],
  ["speedscope", "speedscope", "speedscope.json"],
];

export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function filenameFrom(disposition, fallback) {
  const found = disposition && /filename="?([^";]+)"?/.exec(disposition);
  return found ? found[1] : fallback;
}

// params(): the current {type, query, from, until}, or null to offer only PNG.
export class ExportButtons {
  constructor({ api, params, png, name, onError }) {
    this.api = api;
    this.params = params;
    this.png = png;
    this.name = name;
    this.onError = onError;
    const buttons = [];
    if (params) {
      for (const [format, label, extension] of FORMATS) {
        buttons.push(
          el("button", { type: "button", title: `Download as ${label}`, onclick: () => this.download(format, extension) }, label),
        );
      }
    }
    buttons.push(el("button", { type: "button", title: "Save the graph as a PNG image", onclick: () => this.savePng() }, "PNG"));
    this.element = el("div", { className: "exports", role: "group", "aria-label": "Export" }, el("span", { className: "group-label" }, "Export"), buttons);
  }

  async download(format, extension) {
    const params = this.params();
    try {
      const { blob, disposition } = await this.api.blob("export", { ...params, format });
      saveBlob(blob, filenameFrom(disposition, `podflame-${params.type}.${extension}`));
    } catch (error) {
      this.onError(error);
    }
  }

  async savePng() {
    const blob = await this.png();
    if (blob) saveBlob(blob, `podflame-${this.name()}.png`);
  }
}
