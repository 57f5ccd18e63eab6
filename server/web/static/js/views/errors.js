// Errors in words, with what to do next (docs/web.md lists every case).

import { has, t } from "../i18n.js";
import { h, T } from "../dom.js";

/** Content for an alert box describing an ApiError, HubError or TransportError. */
export function describeApiError(err) {
  const code = (err && err.code) || "internal";
  const key = has(`error.${code}`) ? `error.${code}` : "error.unknown";
  const out = [T(key, { code })];
  if (err && err.retryAfterS) out.push(" ", T("error.retry_in", { n: Math.ceil(err.retryAfterS) }));
  return out;
}

/** Count `seconds` down in `box`, then say the person may try again. */
export async function retryCountdown(box, seconds) {
  let left = Math.ceil(seconds);
  const line = h("p", { class: "countdown", "aria-live": "off" });
  box.el.append(line);
  while (left > 0 && line.isConnected) {
    line.textContent = t("error.wait", { n: left });
    await new Promise((r) => setTimeout(r, 1000));
    left -= 1;
  }
  if (line.isConnected) line.textContent = t("error.try_again_now");
}
