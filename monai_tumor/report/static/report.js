/* monai-tumor report: sortable, filterable series table (generic over its columns).
 *
 * Any <table class="series"> is handled: clicking a header sorts by that column
 * (numbers when the header has data-kind="number", else text; again to reverse), and
 * <input class="filter" data-table="ID"> keeps the rows whose text contains every word
 * typed; a word "column:value" (e.g. status:done) matches that column's cell only.
 * Cells may carry data-value, used for sorting and matching instead of their text.
 */
(function () {
  "use strict";

  function cellValue(td) {
    return td.dataset.value !== undefined ? td.dataset.value : td.textContent.trim();
  }

  function sortBy(table, col, kind, descending) {
    var body = table.tBodies[0];
    var rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a.cells[col]);
      var y = cellValue(b.cells[col]);
      var c;
      if (kind === "number") {
        var nx = x === "" ? -Infinity : Number(x);
        var ny = y === "" ? -Infinity : Number(y);
        c = nx - ny;
      } else {
        c = x.localeCompare(y);
      }
      return descending ? -c : c;
    });
    rows.forEach(function (r) {
      body.appendChild(r);
    });
    table.dataset.sortColumn = String(col);
    table.dataset.sortDescending = String(descending);
  }

  function applyFilter(table, text) {
    var keys = Array.from(table.tHead.rows[0].cells).map(function (th) {
      return (th.dataset.key || th.textContent).trim().toLowerCase();
    });
    var words = text.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    Array.from(table.tBodies[0].rows).forEach(function (row) {
      var ok = words.every(function (w) {
        var m = w.match(/^([^:]+):(.*)$/);
        if (m && keys.indexOf(m[1]) >= 0) {
          return cellValue(row.cells[keys.indexOf(m[1])]).toLowerCase().indexOf(m[2]) >= 0;
        }
        return row.textContent.toLowerCase().indexOf(w) >= 0;
      });
      row.hidden = !ok;
      shown += ok ? 1 : 0;
    });
    var count = document.querySelector("[data-count-for='" + table.id + "']");
    if (count) {
      count.textContent = shown + " of " + table.tBodies[0].rows.length + " series";
    }
  }

  document.querySelectorAll("table.series").forEach(function (table) {
    Array.from(table.tHead.rows[0].cells).forEach(function (th, col) {
      th.addEventListener("click", function () {
        var again = table.dataset.sortColumn === String(col);
        var descending = again ? table.dataset.sortDescending !== "true" : false;
        sortBy(table, col, th.dataset.kind, descending);
      });
    });
  });
  document.querySelectorAll("input.filter").forEach(function (input) {
    var table = document.getElementById(input.dataset.table);
    input.addEventListener("input", function () {
      applyFilter(table, input.value);
    });
    applyFilter(table, input.value);
  });
  window.monaiTumorReport = { sortBy: sortBy, applyFilter: applyFilter };
})();
