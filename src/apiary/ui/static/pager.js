// Pages of a list as the API serves them: `limit` items and a `continue` token for the next.
// The tokens of the pages seen are kept per tab (sessionStorage), so Previous and a reload of
// page N work without reading the pages before it again.
import { h } from "./dom.js";

export function continueOf(key, pageNo) {
  const conts = JSON.parse(sessionStorage.getItem(key) || "[null]");
  return conts[pageNo] ?? null;
}

export function rememberNext(key, pageNo, next) {
  const conts = JSON.parse(sessionStorage.getItem(key) || "[null]").slice(0, pageNo + 1);
  conts[pageNo + 1] = next;
  sessionStorage.setItem(key, JSON.stringify(conts));
}

/** Previous / "Page N: what a–b" / Next links; `base` is the page's hash without its number. */
export function pagerLinks(base, pageNo, size, shown, next, what) {
  const first = pageNo * size + 1;
  return [
    pageNo > 0 ? h("a", { href: pageNo === 1 ? base : `${base}/${pageNo - 1}`, rel: "prev" }, "‹ Previous") : null,
    h("span", {}, shown ? `Page ${pageNo + 1}: ${what} ${first}–${first + shown - 1}` : `Page ${pageNo + 1}: no ${what}`),
    next ? h("a", { href: `${base}/${pageNo + 1}`, rel: "next", id: "next-page" }, "Next ›") : null,
  ].filter(Boolean);
}
