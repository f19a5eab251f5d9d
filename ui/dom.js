// A small element factory: el("button", {type: "button", onclick}, "text", child).
// Properties that exist on the element are set as properties, the rest as attributes.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key in node && !key.includes("-")) {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

let counter = 0;

// A unique id, for label/for and aria-describedby pairs.
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

// A labelled form control: <label for=id>text</label> + control.
export function field(text, control, { className = "field" } = {}) {
  if (!control.id) control.id = uid("field");
  return el("div", { className }, el("label", { htmlFor: control.id }, text), control);
}

export function select(options, { value, label, ...props } = {}) {
  const node = el(
    "select",
    props,
    options.map(([optionValue, text]) => el("option", { value: optionValue }, text)),
  );
  if (value !== undefined) node.value = value;
  if (label) node.setAttribute("aria-label", label);
  return node;
}
