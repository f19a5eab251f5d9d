// Readable messages in place of a graph or table: empty results, errors, hints.
import { el } from "./dom.js";

// kind: "empty" | "error" | "info"
export function message(kind, title, detail = "") {
  return el(
    "div",
    { className: `message message-${kind}`, role: kind === "error" ? "alert" : "status" },
    el("p", { className: "message-title" }, title),
    detail ? el("p", { className: "message-detail" }, detail) : null,
  );
}

// What an ApiError means to the person looking at the page.
export function describeError(error) {
  if (error.status === 0) {
    return ["Cannot reach the podflame server", `${error.message}. Is the server running?`];
  }
  if (error.status === 401) {
    return ["This server needs a token", `${error.message}. Enter a token above to continue.`];
  }
  if (error.status === 403) {
    return ["This token may not read this", `${error.message}. Enter a token with the query scope.`];
  }
  if (error.status === 504) {
    return ["The query took too long", `${error.message}. Try a shorter time range or a narrower selector.`];
  }
  if (error.status === 503) {
    return ["Storage is unavailable", `${error.message}. Try again in a few seconds.`];
  }
  const what = error.parameter ? ` (parameter ${error.parameter})` : "";
  return [`The server answered ${error.status}${what}`, error.message];
}

// The title for an error the page shows next to the control it names.
export function fieldErrorTitle(error) {
  const parameter = error.parameter ?? "";
  if (["query", "left", "right"].includes(parameter)) return "The selector has an error";
  if (/(from|until)$/.test(parameter)) return "The time range has an error";
  return describeError(error)[0];
}

export function errorMessage(error) {
  const [title, detail] = describeError(error);
  return message("error", title, detail);
}
