// A Markdown note on a job or a candidate: shown rendered, edited as text. The HTML comes from
// the server (markdown-it with raw HTML disabled), so inserting it cannot run a script.
import { put } from "./api.js";
import { el, fill } from "./format.js";

// `id`: the panel's element id; `path`: where the note is PUT (jobs/<id>/note,
// candidates/<id>/note).
export function notePanel(id, path) {
  let editing = false;
  let text = "";
  const body = el("div", { class: "note-body", id: `${id}-body` });
  const error = el("p", { class: "field-error", role: "alert", hidden: true });
  const editor = el("textarea", {
    id: `${id}-text`,
    class: "code",
    rows: 8,
    maxlength: 20000,
    placeholder: "Markdown: # heading, **bold**, - lists, `code`, [links](…)",
  });
  const edit = el("button", { type: "button", "data-action": "edit-note" }, "Edit");
  const save = el("button", { type: "submit", "data-action": "save-note" }, "Save");
  const cancel = el("button", { type: "button", "data-action": "cancel-note" }, "Cancel");
  const form = el(
    "form",
    { class: "note-form", hidden: true },
    el("label", { for: `${id}-text`, class: "muted small" }, "Note (Markdown)"),
    editor,
    error,
    el("div", { class: "actions" }, save, cancel),
  );
  const node = el(
    "section",
    { class: "card note", id, "aria-labelledby": `${id}-title` },
    el("div", { class: "title-row" }, el("h2", { id: `${id}-title` }, "Note"), edit),
    body,
    form,
  );

  function show(note, html) {
    text = note || "";
    if (html) body.innerHTML = html;
    else fill(body, el("p", { class: "muted" }, "No note yet."));
    edit.textContent = text ? "Edit" : "Add a note";
  }

  function toggle(on) {
    editing = on;
    form.hidden = !on;
    body.hidden = on;
    edit.hidden = on;
    error.hidden = true;
    if (on) {
      editor.value = text;
      editor.focus();
    }
  }

  edit.addEventListener("click", () => toggle(true));
  cancel.addEventListener("click", () => {
    toggle(false);
    edit.focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    try {
      const updated = await put(path, { note: editor.value });
      show(updated.note, updated.note_html);
      toggle(false);
    } catch (problem) {
      error.textContent = problem.message;
      error.hidden = false;
    } finally {
      save.disabled = false;
    }
  });

  return {
    node,
    // Live refreshes leave a note being edited alone.
    render(note, html) {
      if (!editing) show(note, html);
    },
  };
}
