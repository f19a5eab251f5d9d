// window.podflame: what the drawn graphs hold, for browser tests and benchmarks, so they
// never guess from pixels. Read-only views of live objects; nothing here changes the page.

const graphs = new Map();

export function registerGraph(id, view) {
  graphs.set(id, view);
}

window.podflame = {
  graphs: () => [...graphs.keys()],
  // The frames the last render drew: name, depth, position and size in CSS pixels of the
  // canvas, values (and a diff's change of share), fill colour and whether a search or
  // selection highlights them.
  frames: (id) => graphs.get(id)?.renderer.frames() ?? [],
  focus: (id) => {
    const view = graphs.get(id);
    return view?.tree ? view.tree.pathNames(view.focus) : [];
  },
  view: (id) => graphs.get(id),
};
