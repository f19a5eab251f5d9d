// Label selectors ({k="v", k=~"re"}) read and written on the client, only so that the
// label pickers can show and edit the equality matchers; the server stays the judge of
// what parses (its error message is what the user sees).

const OPERATORS = ["=~", "!~", "!=", "="];
const NAME = /[A-Za-z_][A-Za-z0-9_]*/y;

function readString(text, at) {
  const quote = text[at];
  if (quote === "`") {
    const end = text.indexOf("`", at + 1);
    if (end < 0) return null;
    return { value: text.slice(at + 1, end), next: end + 1 };
  }
  if (quote !== '"' && quote !== "'") return null;
  let value = "";
  for (let i = at + 1; i < text.length; i++) {
    const char = text[i];
    if (char === quote) return { value, next: i + 1 };
    if (char !== "\\") {
      value += char;
      continue;
    }
    const escaped = text[++i];
    const simple = { n: "\n", t: "\t", r: "\r", "\\": "\\", '"': '"', "'": "'" }[escaped];
    if (simple === undefined) return null; // \x.. and friends: leave them to the server
    value += simple;
  }
  return null;
}

function skipSpace(text, at) {
  while (at < text.length && /\s/.test(text[at])) at++;
  return at;
}

// [{name, op, value}] or null when the text is not a selector this reader understands.
export function parseSelector(text) {
  const source = text.trim();
  if (source === "" || source === "{}") return [];
  if (source[0] !== "{") return null;
  const matchers = [];
  let at = skipSpace(source, 1);
  while (source[at] !== "}") {
    NAME.lastIndex = at;
    const name = NAME.exec(source);
    if (!name) return null;
    at = skipSpace(source, at + name[0].length);
    const op = OPERATORS.find((candidate) => source.startsWith(candidate, at));
    if (!op) return null;
    const string = readString(source, skipSpace(source, at + op.length));
    if (!string) return null;
    matchers.push({ name: name[0], op, value: string.value });
    at = skipSpace(source, string.next);
    if (source[at] === ",") at = skipSpace(source, at + 1);
    else if (source[at] !== "}") return null;
  }
  return skipSpace(source, at + 1) === source.length ? matchers : null;
}

function quote(value) {
  return `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}

export function formatSelector(matchers) {
  if (matchers.length === 0) return "";
  return `{${matchers.map((m) => `${m.name}${m.op}${quote(m.value)}`).join(", ")}}`;
}

// The value of `name` when the selector pins it with an equality, else "".
export function equalityValue(matchers, name) {
  const found = matchers.find((m) => m.name === name && m.op === "=");
  return found ? found.value : "";
}
