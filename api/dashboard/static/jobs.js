// The jobs list: progress, best perplexity, front size and actions, polled while any job runs;
// jobs ticked here open side by side in the compare view.
import { get, post } from "./api.js";
import { add, badge, count, duration, el, fill, num, plural, showBanner } from "./format.js";

const ACTIVE = new Set(["queued", "running", "paused"]);
const POLL_MS = { active: 3000, idle: 15000 }; // idle: a job submitted elsewhere shows up

export function actions(job, after) {
  const act = (verb, label, confirmText) =>
    el("button", {
      type: "button",
      class: verb === "cancel" ? "danger" : "",
      "data-action": verb,
      "aria-label": `${label} job ${job.name}`,
      onclick: async () => {
        if (confirmText && !confirm(confirmText)) return;
        try {
          await post(`jobs/${job.id}/${verb}`);
          after();
        } catch (error) {
          showBanner(`${label} failed: ${error.message}`);
        }
      },
      text: label,
    });
  const buttons = [];
  if (job.status === "running" || job.status === "queued") buttons.push(act("pause", "Pause"));
  if (job.status === "paused") buttons.push(act("resume", "Resume"));
  if (ACTIVE.has(job.status))
    buttons.push(act("cancel", "Cancel", `Cancel job "${job.name}"? Running trials stop.`));
  return el("div", { class: "actions" }, buttons);
}

export function progressBar(progress) {
  const done = progress?.done ?? 0;
  const total = progress?.total ?? 0;
  const pct = total ? Math.min(100, (100 * done) / total) : 0;
  return el(
    "div",
    { class: "progress" },
    el(
      "div",
      {
        class: "bar",
        role: "progressbar",
        "aria-valuemin": 0,
        "aria-valuemax": total,
        "aria-valuenow": done,
        "aria-label": "trials done",
      },
      el("span", { style: `width:${pct}%` }),
    ),
    el(
      "span",
      { class: "progress-text" },
      `${done} / ${total}`,
      progress?.running ? el("span", { class: "muted" }, ` · ${progress.running} running`) : null,
    ),
  );
}

export function jobsView(root) {
  let timer = null;
  let destroyed = false;
  const selected = new Set(); // job ids ticked for comparison (kept across polls)
  const body = el("tbody");
  const summary = el("p", { class: "muted" });
  const compare = el(
    "button",
    {
      type: "button",
      id: "compare-button",
      disabled: true,
      onclick: () => {
        location.hash = `#/compare?jobs=${[...selected].join(",")}`;
      },
    },
    "Compare",
  );
  const updateCompare = () => {
    compare.disabled = selected.size < 2;
    compare.textContent = selected.size ? `Compare ${plural(selected.size, "job")}` : "Compare";
    compare.title = selected.size < 2 ? "Tick two jobs or more to compare their fronts" : "";
  };
  const tick = (job) =>
    el("input", {
      type: "checkbox",
      class: "select-job",
      "aria-label": `Select job ${job.name} to compare`,
      checked: selected.has(job.id),
      onchange: (event) => {
        if (event.target.checked) selected.add(job.id);
        else selected.delete(job.id);
        updateCompare();
      },
    });
  add(
    root,
    el(
      "div",
      { class: "page-head" },
      el("h1", {}, "Search jobs"),
      summary,
      el("span", { class: "spacer" }),
      compare,
    ),
    el(
      "div",
      { class: "card table-card" },
      el(
        "table",
        { class: "data", id: "jobs-table" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ["Job", "Status", "Trials", "Elapsed", "ETA", "Best perplexity", "Front", ""].map(
              (name, i) => el("th", { scope: "col", class: i >= 3 && i <= 6 ? "num" : "" }, name),
            ),
          ),
        ),
        body,
      ),
    ),
  );

  async function load() {
    timer = null;
    let jobs;
    try {
      jobs = await get("jobs");
    } catch (error) {
      if (destroyed) return;
      showBanner(`Could not load jobs: ${error.message}`);
      timer = setTimeout(load, POLL_MS.idle);
      return;
    }
    if (destroyed) return;
    summary.textContent = `${jobs.total} job${jobs.total === 1 ? "" : "s"}`;
    const listed = new Set(jobs.items.map((job) => job.id));
    for (const id of selected) if (!listed.has(id)) selected.delete(id);
    updateCompare();
    fill(
      body,
      ...jobs.items.map((job) => {
        const p = job.progress;
        const best = p?.best_candidate_id
          ? el(
              "a",
              { href: `#/candidates/${p.best_candidate_id}`, title: `best: ${p.best_rule}` },
              num(p.best_perplexity, 3),
            )
          : "–";
        return el(
          "tr",
          { "data-job": job.id },
          el(
            "td",
            {},
            tick(job),
            el("a", { href: `#/jobs/${job.id}`, class: "strong" }, job.name),
            el("span", { class: "muted" }, ` #${job.id}`),
          ),
          el("td", {}, badge(job.status)),
          el("td", {}, progressBar(p)),
          el("td", { class: "num" }, duration(p?.elapsed_s)),
          el("td", { class: "num" }, duration(p?.eta_s)),
          el("td", { class: "num" }, best),
          el("td", { class: "num" }, count(p?.front_size)),
          el("td", {}, actions(job, load)),
        );
      }),
    );
    if (!jobs.items.length) {
      add(
        body,
        el(
          "tr",
          {},
          el(
            "td",
            { colspan: 8, class: "empty" },
            "No jobs yet. Submit one with ",
            el("code", {}, "nas submit job.yaml"),
            " or POST /api/v1/jobs.",
          ),
        ),
      );
    }
    const active = jobs.items.some((job) => ACTIVE.has(job.status));
    timer = setTimeout(load, active ? POLL_MS.active : POLL_MS.idle);
  }

  load();
  return {
    destroy() {
      destroyed = true;
      clearTimeout(timer);
    },
  };
}
