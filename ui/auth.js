// The bearer token a server started with --tokens-file asks for, kept in localStorage so
// that it survives reloads; sent by api.js as "Authorization: Bearer <token>".

const KEY = "podflame.token";
// Where the token lives when localStorage is unavailable.
let memory = "";

export function getToken() {
  try {
    return localStorage.getItem(KEY) || "";
  } catch {
    return ""; // storage disabled: the user types the token again
  }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(KEY, token);
    else localStorage.removeItem(KEY);
  } catch {
    // nothing to do: without storage the token lasts until the page closes
  }
  memory = token;
}

export function currentToken() {
  return getToken() || memory;
}
