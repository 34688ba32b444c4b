// Hash routes: #/ (jobs), #/jobs/<id>, #/jobs/<id>/clone, #/compare?jobs=<id>,<id>,
// #/candidates/<id>. Each view returns { destroy }.
import { setToken, token } from "./api.js";
import { candidateView } from "./candidate.js";
import { cloneView } from "./clone.js";
import { compareView } from "./compare.js";
import { hideBanner, showBanner } from "./format.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";

let current = null;

function route() {
  current?.destroy?.();
  hideBanner();
  const root = document.getElementById("view");
  root.replaceChildren();
  delete root.dataset.loaded; // each view counts its own loads (tests wait on it)
  const path = location.hash.replace(/^#\/?/, "");
  let match;
  if ((match = /^jobs\/(\d+)$/.exec(path))) current = jobView(root, Number(match[1]));
  else if ((match = /^jobs\/(\d+)\/clone$/.exec(path)))
    current = cloneView(root, Number(match[1]));
  else if ((match = /^compare\?(.*)$/.exec(path)))
    current = compareView(root, new URLSearchParams(match[1]).get("jobs") || "");
  else if ((match = /^candidates\/(\d+)$/.exec(path)))
    current = candidateView(root, Number(match[1]));
  else current = jobsView(root);
  root.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function askToken() {
  const value = prompt(
    "API token (NAS_API_TOKENS) for this browser. Leave empty to forget it.",
    token(),
  );
  if (value === null) return;
  setToken(value.trim());
  updateTokenButton();
  route();
}

function updateTokenButton() {
  document.getElementById("token-button").textContent = token() ? "API token ✓" : "API token";
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  showBanner(event.reason?.message || String(event.reason));
});
document.getElementById("token-button").addEventListener("click", askToken);
updateTokenButton();
route();
