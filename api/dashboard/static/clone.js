// A new job from an existing one's configuration (its `config`, as submitted), edited as JSON
// and POSTed to /jobs; the server's errors name the field. A warm start from the source job
// (its best blocks join the new job's initial population) is one tick away.
import { get, post } from "./api.js";
import { add, crumbs, el, showBanner } from "./format.js";

const WARM_TOP = 5;

export function cloneView(root, jobId) {
  let destroyed = false;

  async function load() {
    let job;
    try {
      job = await get(`jobs/${jobId}`);
    } catch (error) {
      showBanner(`Could not load job ${jobId}: ${error.message}`);
      return;
    }
    if (destroyed) return;
    const { name: _, ...config } = job.config;
    const name = el("input", {
      id: "clone-name",
      type: "text",
      required: true,
      maxlength: 200,
      value: `${job.name} (copy)`,
    });
    const text = el("textarea", {
      id: "clone-config",
      class: "code",
      rows: 28,
      spellcheck: "false",
      "aria-describedby": "clone-help",
    });
    text.value = JSON.stringify(config, null, 2);
    const warm = el("input", { id: "clone-warm", type: "checkbox" });
    const error = el("p", { class: "field-error", id: "clone-error", role: "alert", hidden: true });
    const submit = el("button", { type: "submit", "data-action": "submit-job" }, "Submit job");
    const fail = (message) => {
      error.textContent = message;
      error.hidden = false;
    };
    const parsed = () => {
      try {
        return JSON.parse(text.value);
      } catch (problem) {
        fail(`config: not valid JSON (${problem.message})`);
        return null;
      }
    };

    // The text is what is submitted: ticking the box writes `warm_start` into it.
    warm.addEventListener("change", () => {
      error.hidden = true;
      const edited = parsed();
      if (!edited) {
        warm.checked = !warm.checked;
        return;
      }
      edited.warm_start = warm.checked
        ? { jobs: [jobId], top: WARM_TOP }
        : (config.warm_start ?? null);
      text.value = JSON.stringify(edited, null, 2);
    });

    const form = el(
      "form",
      { class: "card stack-form", id: "clone-form" },
      el("label", { for: "clone-name" }, "Name"),
      name,
      el("label", { for: "clone-config" }, "Configuration (JSON)"),
      el(
        "p",
        { class: "muted small", id: "clone-help" },
        `Job #${job.id}'s configuration as submitted; edit any section (its schema: `,
        el("a", { href: "docs" }, "API docs"),
        ", POST /api/v1/jobs).",
      ),
      text,
      el(
        "label",
        { class: "check" },
        warm,
        ` Warm start: job #${job.id}'s ${WARM_TOP} best blocks (those in the new space) join ` +
          "the initial population, their results reused where the trial settings, data and " +
          "device match",
      ),
      error,
      el("div", { class: "actions" }, submit),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      const edited = parsed();
      if (!edited) return;
      submit.disabled = true;
      try {
        const created = await post("jobs", { ...edited, name: name.value });
        location.hash = `#/jobs/${created.id}`;
      } catch (problem) {
        fail(problem.message);
        submit.disabled = false;
      }
    });
    add(
      root,
      crumbs([job.name, `#/jobs/${job.id}`], "clone"),
      el("div", { class: "title-row" }, el("h1", {}, `New job from “${job.name}” #${job.id}`)),
      form,
    );
    root.dataset.loaded = "1";
  }

  load();
  return {
    destroy() {
      destroyed = true;
    },
  };
}
