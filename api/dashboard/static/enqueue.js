// A block added by hand: a spec (ArchSpec JSON) the runner trains next, validated by the server
// against the job's space (POST jobs/<id>/candidates: 422 names the field, 409 when the job has
// ended or already has it), and the requests so far (GET jobs/<id>/enqueued). Hidden once the
// job has ended.
import { get, post } from "./api.js";
import { badge, el, fill, FINAL } from "./format.js";

function requestsTable(items) {
  if (!items.length) return el("p", { class: "muted small" }, "No blocks added by hand yet.");
  return el(
    "table",
    { class: "data compact", id: "enqueued-table" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ["Request", "Status", "Candidate", "Spec", "Note"].map((name) =>
          el("th", { scope: "col" }, name),
        ),
      ),
    ),
    el(
      "tbody",
      {},
      items.map((item) =>
        el(
          "tr",
          { "data-request": item.id, "data-status": item.status },
          el("td", {}, `#${item.id}`),
          el("td", {}, badge(item.status)),
          el(
            "td",
            {},
            item.candidate_id
              ? el("a", { href: `#/candidates/${item.candidate_id}` }, `#${item.candidate_id}`)
              : "–",
          ),
          el("td", {}, el("code", {}, item.spec_hash.slice(0, 10))),
          el("td", {}, item.note ? el("span", { class: "clip", title: item.note }, item.note) : ""),
        ),
      ),
    ),
  );
}

export function enqueuePanel(jobId) {
  let job = null;
  let prefilled = false;
  let pending = false; // a request not yet started: the list is reloaded as the job moves
  const spec = el("textarea", {
    id: "enqueue-spec",
    class: "code",
    rows: 16,
    spellcheck: "false",
    "aria-describedby": "enqueue-help",
  });
  const note = el("input", { id: "enqueue-note", type: "text", maxlength: 20000 });
  const submit = el("button", { type: "submit", "data-action": "enqueue" }, "Train it next");
  const error = el("p", { class: "field-error", id: "enqueue-error", role: "alert", hidden: true });
  const done = el("p", { class: "ok", id: "enqueue-done", role: "status", hidden: true });
  const requests = el("div", { id: "enqueued" });
  const form = el(
    "form",
    { class: "stack-form" },
    el("label", { for: "enqueue-spec" }, "Spec (ArchSpec JSON)"),
    el(
      "p",
      { class: "muted small", id: "enqueue-help" },
      "Starts as the best candidate's block: edit it. The server checks it against the job's " +
        "search space; the runner trains it before its own proposals.",
    ),
    spec,
    el("label", { for: "enqueue-note" }, "Note (optional, Markdown)"),
    note,
    error,
    done,
    el("div", { class: "actions" }, submit),
  );
  const node = el(
    "details",
    { class: "card enqueue", id: "enqueue" },
    el("summary", {}, el("h2", {}, "Add a block by hand")),
    form,
    el("h3", {}, "Requests"),
    requests,
  );

  async function reloadList() {
    const { items } = await get(`jobs/${jobId}/enqueued`);
    pending = items.some((item) => item.status === "queued");
    fill(requests, requestsTable(items));
  }

  // The starting spec: the best candidate's, else the job's first (its baseline).
  async function prefill() {
    prefilled = true;
    let id = job?.progress?.best_candidate_id;
    if (!id) {
      const first = await get(`jobs/${jobId}/candidates`, { limit: 1 });
      id = first.items[0]?.id;
    }
    if (!id || spec.value) return;
    const candidate = await get(`candidates/${id}`);
    if (!spec.value) spec.value = JSON.stringify(candidate.spec, null, 2);
  }

  node.addEventListener("toggle", async () => {
    if (!node.open) return;
    await Promise.all([prefilled ? null : prefill(), reloadList()]);
    node.dataset.ready = "true"; // tests wait on it
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    done.hidden = true;
    let body;
    try {
      body = { spec: JSON.parse(spec.value), note: note.value.trim() || null };
    } catch (problem) {
      error.textContent = `spec: not valid JSON (${problem.message})`;
      error.hidden = false;
      return;
    }
    submit.disabled = true;
    try {
      const request = await post(`jobs/${jobId}/candidates`, body);
      done.textContent =
        `Request #${request.id} ${request.status}: the runner trains this block next ` +
        `(spec ${request.spec_hash.slice(0, 10)}).`;
      done.hidden = false;
      note.value = "";
      await reloadList();
    } catch (problem) {
      error.textContent = problem.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });

  return {
    node,
    update(fresh) {
      job = fresh;
      node.hidden = FINAL.has(job.status);
      if (node.open && pending) reloadList(); // a failure shows in the banner
    },
  };
}
