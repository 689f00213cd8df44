// Progressive touches only: every page works without this file (the form is a plain GET).
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("search");
  if (form) {
    // Leave empty filters out of the URL, so shared links stay short.
    form.addEventListener("submit", () => {
      for (const field of form.querySelectorAll("input, select")) {
        if (!field.value) field.disabled = true;
      }
    });
    document.getElementById("mode").addEventListener("change", () => {
      if (document.getElementById("q").value.trim()) form.requestSubmit();
    });
    document.addEventListener("keydown", (event) => {
      const q = document.getElementById("q");
      if (event.key === "/" && document.activeElement !== q) { event.preventDefault(); q.focus(); q.select(); }
    });
  }
  const passage = document.getElementById("passage");
  if (passage) passage.scrollIntoView({ block: "center" });
});
