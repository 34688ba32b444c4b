// The confirmation of a job: its best candidates and the baseline retrained with fresh seeds,
// each compared with the baseline paired by seed (Holm-corrected); a winner only when its
// interval beats the baseline. From GET jobs/<id>/confirmation; POST jobs/<id>/confirm asks
// for one on a completed job.
import { post } from "./api.js";
import {
  badge,
  budgetWords,
  el,
  fill,
  interval,
  num,
  plural,
  pValue,
  seedCount,
  showBanner,
} from "./format.js";

function beats(row) {
  if (row.is_baseline) return el("span", { class: "muted" }, "–");
  if (row.beats_baseline) return el("span", { class: "yes" }, "✓ yes");
  let why = "not significant after Holm's correction";
  if (row.significant && row.feasible === false) why = "significant, but too slow (infeasible)";
  else if (row.significant) why = "significant, but its interval does not lie below zero";
  return el("span", { class: "no", title: why }, "no");
}

function seedsCell(row) {
  const failed = row.failed_runs ? ` (${row.failed_runs} failed)` : "";
  return `${row.seeds ?? 0}${failed}`;
}

// Figures are "mean [low, high]" over the fresh seeds.
const COLUMNS = [
  ["Candidate", null],
  ["Search rank", "Its rank at the rung it was selected from (#1: the best)"],
  ["Seeds", "Fresh seeds with a result (runs that failed)"],
  ["Val loss", "Mean over seeds [t interval]"],
  ["Perplexity", "Mean over seeds (its interval on hover)"],
  ["Δ val loss vs baseline", "Candidate minus baseline, paired by seed [simultaneous interval]"],
  ["p", "One-sided paired t test: is the candidate's loss lower than the baseline's?"],
  ["Step / base", "Step time over the baseline's on the same slot: mean [t interval]"],
  ["Beats baseline", "Significant after Holm's correction, interval below zero, and feasible"],
];

function reportTable(report) {
  const winner = report.winner;
  return el(
    "table",
    { class: "data compact", id: "confirm-table" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        COLUMNS.map(([label, title], i) =>
          el("th", { scope: "col", title, class: i ? "num" : "" }, label),
        ),
      ),
    ),
    el(
      "tbody",
      {},
      report.candidates.map((row) =>
        el(
          "tr",
          {
            "data-id": row.candidate_id,
            class: row.candidate_id === winner ? "winner" : row.is_baseline ? "baseline-row" : "",
          },
          el(
            "td",
            {},
            el("a", { href: `#/candidates/${row.candidate_id}` }, `#${row.candidate_id}`),
            row.is_baseline ? el("span", { class: "tag" }, `★ ${row.name || "baseline"}`) : null,
            row.candidate_id === winner ? el("span", { class: "tag win" }, "winner") : null,
          ),
          // search_rank counts from 0 (the best at the rung it was selected from).
          el(
            "td",
            { class: "num search-rank" },
            row.search_rank === null || row.search_rank === undefined
              ? "–"
              : `#${row.search_rank + 1}`,
          ),
          el("td", { class: "num" }, seedsCell(row)),
          el("td", { class: "num val-loss" }, interval(row.val_loss, 4)),
          el(
            "td",
            { class: "num", title: `mean [interval]: ${interval(row.perplexity, 3)}` },
            num(row.perplexity?.mean, 3),
          ),
          el(
            "td",
            { class: "num difference" },
            row.candidate_id === report.baseline_id
              ? el("span", { class: "muted" }, "reference")
              : interval(row.difference, 4),
          ),
          el("td", { class: "num p-value" }, pValue(row.difference?.p_value)),
          el("td", { class: "num" }, interval(row.step_time_ratio, 3)),
          el("td", { class: "num beats" }, beats(row)),
        ),
      ),
    ),
  );
}

function correlationLine(report) {
  const rc = report.rank_correlation;
  if (!rc) return null;
  return el(
    "p",
    { class: "small", id: "confirm-correlation" },
    "Search rank vs confirmed val loss: Spearman ρ ",
    el("span", { class: "spearman" }, num(rc.spearman, 3)),
    ", Kendall τ ",
    el("span", { class: "kendall" }, num(rc.kendall, 3)),
    ` (n = ${rc.n ?? 0})`,
    rc.n !== undefined && rc.n < 3
      ? el("span", { class: "muted" }, " · too few candidates for a correlation")
      : null,
  );
}

function settings(report) {
  const seeds = seedCount(report.seeds);
  const parts = [
    report.rung === null || report.rung === undefined ? null : `from rung ${report.rung}`,
    seeds === null ? null : plural(seeds, "fresh seed"),
    report.budget ? `${budgetWords(report.budget)} per run` : null,
  ].filter(Boolean);
  return parts.join(" · ");
}

function method(report) {
  const level =
    report.interval_confidence === null || report.interval_confidence === undefined
      ? ""
      : `; intervals at ${num(100 * report.interval_confidence, 1)}% (simultaneous)`;
  return (
    `Each candidate minus the baseline #${report.baseline_id}, paired by seed; ` +
    `${report.correction === "holm" ? "Holm's" : report.correction} correction over ` +
    `${plural(report.compared ?? 0, "candidate")} at α = ${report.alpha}${level}.`
  );
}

// `after`: what runs once a confirmation was asked for (refreshes the page).
export function confirmationPanel(jobId, after) {
  const body = el("div", { class: "confirm-body" });
  const status = el("span", { class: "confirm-status" });
  const node = el(
    "section",
    {
      class: "card confirmation",
      id: "confirmation",
      "aria-labelledby": "confirm-title",
      hidden: true,
    },
    el("div", { class: "title-row" }, el("h2", { id: "confirm-title" }, "Confirmation"), status),
    body,
  );

  async function request(button) {
    button.disabled = true;
    try {
      await post(`jobs/${jobId}/confirm`, {});
      after();
    } catch (error) {
      button.disabled = false;
      showBanner(`Confirm failed: ${error.message}`);
    }
  }

  function render(job, report) {
    const state = report?.status;
    if (!report || (state === "not_requested" && job.status !== "completed")) {
      node.hidden = true;
      return;
    }
    node.hidden = false;
    node.dataset.status = state;
    if (state === "not_requested") {
      fill(status);
      const button = el(
        "button",
        { type: "button", id: "confirm-button", "data-action": "confirm" },
        "Confirm",
      );
      button.addEventListener("click", () => request(button));
      fill(
        body,
        el(
          "p",
          { class: "muted" },
          "The best candidates have not been retrained with fresh seeds. Confirm retrains " +
            "them and the baseline at a longer budget and declares a winner only when one " +
            "beats the baseline beyond seed noise.",
        ),
        el("div", { class: "actions" }, button),
      );
      return;
    }
    fill(
      status,
      badge(state === "done" ? "completed" : report.candidates?.length ? "running" : "queued"),
      el("span", { class: "muted small" }, settings(report)),
    );
    const rows = report.candidates || [];
    const winner = rows.find((row) => row.candidate_id === report.winner);
    fill(
      body,
      state === "done" && report.verdict
        ? el(
            "p",
            {
              class: `verdict ${report.winner === null || report.winner === undefined ? "none" : "win"}`,
              id: "confirm-verdict",
            },
            report.verdict,
          )
        : el(
            "p",
            { class: "muted", id: "confirm-verdict" },
            report.verdict ||
              "Requested: the best candidates and the baseline are retrained with fresh seeds " +
                "once the search ends.",
          ),
      winner
        ? el(
            "p",
            { id: "confirm-winner" },
            "Winner: ",
            el(
              "a",
              { href: `#/candidates/${winner.candidate_id}`, class: "strong" },
              `#${winner.candidate_id}`,
            ),
            winner.is_baseline && winner.name ? ` ${winner.name}` : "",
            ` · Δ val loss ${interval(winner.difference, 4)}`,
          )
        : null,
      rows.length ? el("div", { class: "scroll" }, reportTable(report)) : null,
      rows.length
        ? el(
            "p",
            { class: "muted small" },
            "Figures: mean [interval] over the fresh seeds. ",
            method(report),
          )
        : null,
      correlationLine(report),
    );
  }

  return { node, render };
}
