// The trials table of a job: sorted, filtered and paginated on the server, keyboard-usable.
import { get } from "./api.js";
import { add, badge, count, el, fill, num, showBanner } from "./format.js";

const STATUSES = ["queued", "running", "completed", "failed", "pruned", "diverged", "cancelled"];
const COLUMNS = [
  { key: "birth", label: "Trial", sort: "birth", cell: (c) => `#${c.birth}` },
  { key: "status", label: "Status", sort: "status", cell: (c) => badge(c.status, c.feasible) },
  {
    key: "perplexity",
    label: "Perplexity",
    sort: "perplexity",
    num: true,
    cell: (c) => num(c.perplexity, 3),
  },
  {
    key: "step_time_ratio",
    label: "Step / base",
    title: "Step time over the baseline's, timed on the same worker slot (1.0 = the baseline)",
    sort: "step_time_ratio",
    num: true,
    cell: (c) => num(c.step_time_ratio, 3),
  },
  {
    key: "step_time_ms",
    label: "Step (ms)",
    sort: "step_time_ms",
    num: true,
    cell: (c) => num(c.step_time_ms, 1),
  },
  { key: "steps", label: "Steps", sort: "steps", num: true, cell: (c) => count(c.steps) },
  {
    key: "params_activated",
    label: "Params (act.)",
    sort: "params_activated",
    num: true,
    cell: (c) => count(c.params_activated),
  },
  { key: "mfu", label: "MFU", sort: "mfu", num: true, cell: (c) => pct(c.mfu) },
  { key: "mutation", label: "Mutation", cell: (c) => clipped(c.mutation || "–") },
  { key: "reason", label: "Reason", cell: (c) => (c.reason ? clipped(c.reason, "reason") : "") },
];

// Long text: cut to the column with an ellipsis, in full on hover and on the candidate page.
function clipped(text, extra = "") {
  return el("span", { class: `clip ${extra}`, title: text }, text);
}

function pct(value) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)}%`;
}

export function trialsTable(jobId) {
  const state = { sort: "birth", order: "desc", status: "", limit: 25, offset: 0, total: 0 };
  const head = el("tr");
  const body = el("tbody");
  const info = el("span", { class: "muted", "aria-live": "polite" });
  const pageLabel = el("span", { class: "page-label" });
  const button = (label, aria, onclick) =>
    el("button", { type: "button", "aria-label": aria, onclick }, label);
  const first = button("«", "First page", () => go(0));
  const prev = button("‹ Prev", "Previous page", () => go(state.offset - state.limit));
  const next = button("Next ›", "Next page", () => go(state.offset + state.limit));
  const last = button("»", "Last page", () =>
    go(Math.max(0, Math.floor((state.total - 1) / state.limit) * state.limit)),
  );
  const filter = el(
    "select",
    {
      id: "status-filter",
      onchange: (e) => {
        state.status = e.target.value;
        go(0);
      },
    },
    el("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => el("option", { value: s }, s)),
  );
  const size = el(
    "select",
    {
      id: "page-size",
      "aria-label": "Rows per page",
      onchange: (e) => {
        state.limit = Number(e.target.value);
        go(0);
      },
    },
    [25, 50, 100].map((n) => el("option", { value: n }, `${n} / page`)),
  );

  const node = el(
    "section",
    { class: "card table-card", "aria-labelledby": "trials-title" },
    el(
      "div",
      { class: "table-tools" },
      el("h2", { id: "trials-title" }, "Trials"),
      el("label", { for: "status-filter" }, "Status "),
      filter,
      size,
      el("span", { class: "spacer" }),
      info,
    ),
    el(
      "div",
      { class: "scroll" },
      el("table", { class: "data", id: "trials-table" }, el("thead", {}, head), body),
    ),
    el("div", { class: "pager" }, first, prev, pageLabel, next, last),
  );

  function renderHead() {
    fill(
      head,
      ...COLUMNS.map((column) => {
        if (!column.sort) return el("th", { scope: "col", title: column.title }, column.label);
        const active = state.sort === column.sort;
        const sortState = active ? (state.order === "asc" ? "ascending" : "descending") : "none";
        const arrow = active ? (state.order === "asc" ? " ▲" : " ▼") : "";
        return el(
          "th",
          {
            scope: "col",
            "aria-sort": sortState,
            class: column.num ? "num" : "",
            title: column.title,
          },
          el(
            "button",
            {
              type: "button",
              class: "sort",
              "data-sort": column.sort,
              onclick: () => {
                state.order = active && state.order === "asc" ? "desc" : "asc";
                state.sort = column.sort;
                go(0);
              },
            },
            column.label,
            el("span", { "aria-hidden": "true" }, arrow),
          ),
        );
      }),
    );
  }

  function open(candidate) {
    location.hash = `#/candidates/${candidate.id}`;
  }

  function onKey(event, row) {
    if (event.key === "Enter") open(row.candidate);
    const sibling =
      event.key === "ArrowDown"
        ? row.nextElementSibling
        : event.key === "ArrowUp"
          ? row.previousElementSibling
          : null;
    if (sibling) {
      event.preventDefault();
      sibling.focus();
    }
  }

  // Loads overlap (a live refresh while the user pages): only the latest one is shown.
  let latest = 0;
  async function load() {
    const ticket = ++latest;
    let page;
    try {
      page = await get(`jobs/${jobId}/candidates`, {
        sort: state.sort,
        order: state.order,
        status: state.status,
        limit: state.limit,
        offset: state.offset,
      });
    } catch (error) {
      if (ticket === latest) showBanner(`Could not load trials: ${error.message}`);
      return;
    }
    if (ticket !== latest) return;
    state.total = page.total;
    renderHead();
    fill(
      body,
      ...page.items.map((candidate) => {
        const row = el(
          "tr",
          {
            tabindex: 0,
            class: "link-row",
            "data-id": candidate.id,
            title: `Open candidate #${candidate.id}`,
          },
          COLUMNS.map((column) =>
            el("td", { class: column.num ? "num" : "" }, column.cell(candidate)),
          ),
        );
        row.candidate = candidate;
        row.addEventListener("click", () => open(candidate));
        row.addEventListener("keydown", (event) => onKey(event, row));
        return row;
      }),
    );
    if (!page.items.length) {
      add(
        body,
        el("tr", {}, el("td", { colspan: COLUMNS.length, class: "empty" }, "No trials match.")),
      );
    }
    const end = Math.min(state.offset + page.items.length, state.total);
    info.textContent = state.total
      ? `${(state.offset + 1).toLocaleString()}–${end.toLocaleString()} of ${state.total.toLocaleString()}`
      : "0 trials";
    const pages = Math.max(1, Math.ceil(state.total / state.limit));
    pageLabel.textContent = `Page ${Math.floor(state.offset / state.limit) + 1} of ${pages}`;
    first.disabled = prev.disabled = state.offset === 0;
    next.disabled = last.disabled = state.offset + state.limit >= state.total;
  }

  function go(offset) {
    state.offset = Math.max(0, offset);
    return load();
  }

  renderHead();
  return { node, reload: load };
}
