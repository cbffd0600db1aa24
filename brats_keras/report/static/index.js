// The index of a report folder: window.bratsIndex holds every case's numbers; a click on a column header sorts the
// rows by it (again: the other way), failed cases and empty cells last.
(function () {
  "use strict";
  window.bratsIndex = { cases: JSON.parse(document.getElementById("brats-index").textContent) };
  const body = document.querySelector("table.index tbody");
  document.querySelectorAll("table.index th").forEach((th, col) => {
    th.addEventListener("click", () => {
      const up = th.dataset.sort !== "up";
      document.querySelectorAll("table.index th").forEach((h) => delete h.dataset.sort);
      th.dataset.sort = up ? "up" : "down";
      const key = (tr) => {
        const cell = tr.children[col];
        const v = cell && !tr.classList.contains("failed") ? cell.dataset.value : "";
        return v === undefined ? "" : v;
      };
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");
        const c = th.hasAttribute("data-numeric") ? Number(x) - Number(y) : x.localeCompare(y);
        return up ? c : -c;
      });
      rows.forEach((r) => body.appendChild(r));
    });
  });
})();
