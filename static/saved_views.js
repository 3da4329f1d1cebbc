// Saved views of the project grid: a name for the current filter + sort, kept in this
// browser's localStorage per project. A view is a link: the grid's query string plus
// view=<name>, so it can be bookmarked or sent as well as picked from the list.
(function () {
  "use strict";
  const box = document.getElementById("saved-views");
  if (!box) return;
  const storeKey = "retag.views." + box.dataset.project;
  const list = box.querySelector("ul");
  const form = box.querySelector("form.save-view");

  function load() {
    try {
      const views = JSON.parse(localStorage.getItem(storeKey) || "[]");
      return Array.isArray(views) ? views.filter((v) => v && typeof v.name === "string" && typeof v.qs === "string") : [];
    } catch (e) {
      return [];  // a hand-edited or foreign value: start again rather than break the grid
    }
  }

  function save(views) {
    localStorage.setItem(storeKey, JSON.stringify(views));
  }

  function href(view) {
    const params = new URLSearchParams(view.qs);
    params.set("view", view.name);
    return "?" + params.toString();
  }

  function render() {
    const views = load();
    list.replaceChildren();
    if (!views.length) {
      const li = document.createElement("li");
      li.className = "muted small";
      li.textContent = "None yet: filter and sort, then name it.";
      list.append(li);
    }
    for (const view of views) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = href(view);
      a.dataset.view = view.name;
      if (view.name === box.dataset.view) a.className = "active";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = view.name;
      a.append(name);
      const del = document.createElement("button");
      del.type = "button";
      del.className = "btn btn-small btn-ghost";
      del.textContent = "×";
      del.title = "Forget this view";
      del.setAttribute("aria-label", "Forget " + view.name);
      del.addEventListener("click", () => {
        save(load().filter((v) => v.name !== view.name));
        render();
      });
      li.append(a, del);
      list.append(li);
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const name = form.elements.name.value.trim();
    if (!name) return;
    // Same name: the view is replaced (moved to the end), never listed twice.
    const views = load().filter((v) => v.name !== name);
    views.push({ name: name, qs: box.dataset.qs });
    save(views);
    form.reset();
    window.history.replaceState(null, "", href({ name: name, qs: box.dataset.qs }));
    box.dataset.view = name;
    render();
  });

  render();
})();
