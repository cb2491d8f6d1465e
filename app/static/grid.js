/* The OMS grid: one script for every entity grid (订单工作台, SKUs, stock, customers…).
 *
 * Everything it shows comes from the entity's REST API (/api/v1/<resource>/grid/...):
 * the definition (columns, quick filters, tabs, batch actions) for this user, keyset
 * pages of rows, tab counts, and bulk cell edits. Row and column scope are the API's;
 * this file adds no rule of its own. Buyer text is always inserted as text, never HTML.
 */
(function () {
  "use strict";

  var root = document.getElementById("oms-grid");
  if (!root) { return; }
  var resource = root.dataset.resource;
  var base = "/api/v1/" + resource + "/grid";
  var csrf = root.dataset.csrf;
  var part = function (name) { return root.querySelector('[data-role="' + name + '"]'); };

  var meta = null;
  var table = null;
  var state = { tab: null, filters: {}, idFilter: null, sort: null };
  var cursors = {};
  var selected = new Set();
  var allMatching = false;
  var lastClicked = null;
  var undoStack = [];
  var savedViews = [];
  var matchCount = null;

  // --- helpers -------------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; }
      else if (k === "class") { node.className = attrs[k]; }
      else if (k.indexOf("on") === 0) { node.addEventListener(k.slice(2), attrs[k]); }
      else if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return node;
  }

  function api(url, options) {
    options = options || {};
    var headers = { "Accept": "application/json" };
    if (options.body && !(options.body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(options.body);
    }
    if (options.method && options.method !== "GET") { headers["X-CSRFToken"] = csrf; }
    options.headers = headers;
    options.credentials = "same-origin";
    return fetch(url, options).then(function (resp) {
      var type = resp.headers.get("Content-Type") || "";
      if (type.indexOf("application/json") === -1) { return { resp: resp, body: null }; }
      return resp.json().then(function (body) { return { resp: resp, body: body }; });
    }).then(function (r) {
      if (!r.resp.ok && r.resp.status !== 202) {
        var msg = (r.body && (r.body.message || r.body.msg)) || ("请求失败（" + r.resp.status + "）");
        if (typeof msg === "object") { msg = JSON.stringify(msg); }
        throw new Error(msg);
      }
      return r;
    });
  }

  function message(text, kind) {
    var box = part("message");
    box.className = "alert oms-message alert-" + (kind || "info");
    box.textContent = text;
    box.hidden = !text;
  }

  function currentFilters() {
    var f = Object.assign({}, state.filters);
    if (state.tab) { f.tab = state.tab; }
    if (state.idFilter) { f.id = state.idFilter; }
    return f;
  }

  function currentSort() {
    return state.sort || meta.default_sort;
  }

  function visibleKeys() {
    return table.getColumns().filter(function (c) { return c.isVisible() && c.getField() && c.getField() !== "__sel"; })
      .map(function (c) { return c.getField(); });
  }

  // A link may open the grid on a tab or filter: /grid/order/?tab=to_audit&filters={...}
  (function initialState() {
    var q = new URLSearchParams(window.location.search);
    if (q.get("tab")) { state.tab = q.get("tab"); }
    if (q.get("filters")) { try { state.filters = JSON.parse(q.get("filters")) || {}; } catch (e) { state.filters = {}; } }
  })();

  // --- definition → page ---------------------------------------------------
  function load() {
    api(base + "/meta").then(function (r) {
      meta = r.body;
      buildTabs();
      buildFilters();
      writeFilterForm(state.filters);
      buildActions();
      buildTable();
      loadViews();
    }).catch(function (e) { message(e.message, "danger"); });
  }

  function buildTabs() {
    var ul = part("tabs");
    if (!meta.tabs) { return; }
    ul.hidden = false;
    ul.innerHTML = "";
    var tabs = [{ code: null, label: "全部" }].concat(meta.tabs);
    tabs.forEach(function (t) {
      var li = el("li", { class: state.tab === t.code ? "active" : "", "data-tab": t.code || "" }, [
        el("a", { href: "#", onclick: function (e) { e.preventDefault(); setTab(t.code); } }, [
          t.label, el("span", { class: "badge", "data-count": t.code || "all" })])]);
      ul.appendChild(li);
    });
  }

  function setTab(code) {
    state.tab = code;
    part("tabs").querySelectorAll("li").forEach(function (li) {
      li.classList.toggle("active", (li.dataset.tab || null) === code);
    });
    reload();
  }

  function refreshCounts() {
    if (!meta.tabs) { return; }
    var f = Object.assign({}, state.filters);
    if (state.idFilter) { f.id = state.idFilter; }
    api(base + "/count?" + new URLSearchParams({ filters: JSON.stringify(f) })).then(function (r) {
      (r.body.tabs || []).forEach(function (t) {
        var badge = part("tabs").querySelector('[data-count="' + t.code + '"]');
        if (badge) { badge.textContent = t.count + (t.capped ? "+" : ""); }
      });
      var all = part("tabs").querySelector('[data-count="all"]');
      if (all) { all.textContent = r.body.count + (r.body.count_capped ? "+" : ""); }
    }).catch(function () { /* counts are a convenience; the grid still works */ });
  }

  function buildFilters() {
    var form = part("filters");
    form.innerHTML = "";
    (meta.quick_filters || []).forEach(function (qf) {
      var group = el("div", { class: "form-group oms-filter", "data-filter": qf.key });
      group.appendChild(el("label", { text: qf.label }));
      if (qf.type === "select" || qf.type === "multiselect") {
        var sel = el("select", { class: "form-control input-sm", name: qf.key, multiple: qf.type === "multiselect" ? "multiple" : null,
                                 size: qf.type === "multiselect" ? Math.min(4, qf.options.length) : null });
        if (qf.type === "select") { sel.appendChild(el("option", { value: "", text: "全部" })); }
        qf.options.forEach(function (o) { sel.appendChild(el("option", { value: JSON.stringify(o.value), text: o.label })); });
        group.appendChild(sel);
      } else if (qf.type === "daterange") {
        group.appendChild(el("input", { type: "date", class: "form-control input-sm", name: qf.key + ".from" }));
        group.appendChild(document.createTextNode(" 至 "));
        group.appendChild(el("input", { type: "date", class: "form-control input-sm", name: qf.key + ".to" }));
      } else {
        group.appendChild(el("input", { type: "search", class: "form-control input-sm", name: qf.key }));
      }
      form.appendChild(group);
    });
    form.appendChild(el("button", { type: "submit", class: "btn btn-primary btn-sm", text: "查询" }));
    form.appendChild(el("button", { type: "button", class: "btn btn-default btn-sm", text: "重置",
      onclick: function () { form.reset(); applyFilterForm(); } }));
    form.addEventListener("submit", function (e) { e.preventDefault(); applyFilterForm(); });
    form.addEventListener("change", function (e) { if (e.target.tagName === "SELECT") { applyFilterForm(); } });
  }

  function readFilterForm() {
    var form = part("filters");
    var out = {};
    (meta.quick_filters || []).forEach(function (qf) {
      if (qf.type === "select") {
        var v = form.elements[qf.key].value;
        if (v !== "") { out[qf.key] = [JSON.parse(v)]; }
      } else if (qf.type === "multiselect") {
        var vals = Array.prototype.filter.call(form.elements[qf.key].options, function (o) { return o.selected; })
          .map(function (o) { return JSON.parse(o.value); });
        if (vals.length) { out[qf.key] = vals; }
      } else if (qf.type === "daterange") {
        var from = form.elements[qf.key + ".from"].value, to = form.elements[qf.key + ".to"].value;
        if (from || to) { out[qf.key] = { from: from || null, to: to || null }; }
      } else {
        var t = form.elements[qf.key].value.trim();
        if (t) { out[qf.key] = t; }
      }
    });
    return out;
  }

  function writeFilterForm(filters) {
    var form = part("filters");
    form.reset();
    (meta.quick_filters || []).forEach(function (qf) {
      var v = filters[qf.key];
      if (v === undefined) { return; }
      if (qf.type === "select" || qf.type === "multiselect") {
        var wanted = (Array.isArray(v) ? v : [v]).map(function (x) { return JSON.stringify(x); });
        Array.prototype.forEach.call(form.elements[qf.key].options, function (o) { o.selected = wanted.indexOf(o.value) !== -1; });
      } else if (qf.type === "daterange") {
        form.elements[qf.key + ".from"].value = v.from || "";
        form.elements[qf.key + ".to"].value = v.to || "";
      } else {
        form.elements[qf.key].value = v;
      }
    });
  }

  function applyFilterForm() {
    state.filters = readFilterForm();
    state.idFilter = null;
    reload();
  }

  // --- toolbar -----------------------------------------------------------------
  function buildActions() {
    var box = part("actions");
    box.innerHTML = "";
    (meta.actions || []).forEach(function (a) {
      box.appendChild(el("button", { type: "button", class: "btn btn-default btn-sm", "data-action": a.code, text: a.label,
        onclick: function () { startAction(a); } }));
    });
    var tools = part("tools");
    tools.innerHTML = "";
    tools.appendChild(dropdown("导出", [
      ["Excel（xlsx）", function () { exportGrid("xlsx"); }],
      ["CSV（UTF-8）", function () { exportGrid("csv"); }],
      ["CSV（GBK）", function () { exportGrid("csv_gbk"); }],
    ], "export"));
    if (meta.can_write) {
      var file = el("input", { type: "file", accept: ".xlsx", hidden: "hidden", "data-role": "roundtrip-file",
        onchange: function () { if (file.files[0]) { roundtripPreview(file.files[0]); } file.value = ""; } });
      tools.appendChild(file);
      tools.appendChild(el("button", { type: "button", class: "btn btn-default btn-sm", text: "导入修改",
        title: "导入从这里导出并在 Excel 中修改过的文件", onclick: function () { file.click(); } }));
      tools.appendChild(el("button", { type: "button", class: "btn btn-default btn-sm", "data-role": "undo",
        text: "撤销", title: "撤销上一次保存（Ctrl+Z）", onclick: undo }));
    }
    tools.appendChild(el("span", { "data-role": "columns-menu" }));
    tools.appendChild(el("span", { "data-role": "views-menu" }));
  }

  function dropdown(label, items, role) {
    var wrap = el("div", { class: "btn-group oms-dropdown", "data-role": role ? role + "-menu-group" : null });
    var button = el("button", { type: "button", class: "btn btn-default btn-sm dropdown-toggle", text: label + " ▾" });
    var menu = el("ul", { class: "dropdown-menu dropdown-menu-right" });
    items.forEach(function (it) {
      if (it === "-") { menu.appendChild(el("li", { class: "divider", role: "separator" })); return; }
      var li = el("li");
      if (typeof it[1] === "function") {
        li.appendChild(el("a", { href: "#", text: it[0], onclick: function (e) { e.preventDefault(); wrap.classList.remove("open"); it[1](); } }));
      } else {
        li.appendChild(it[1]);
      }
      menu.appendChild(li);
    });
    button.addEventListener("click", function (e) { e.stopPropagation(); wrap.classList.toggle("open"); });
    menu.addEventListener("click", function (e) { e.stopPropagation(); });
    document.addEventListener("click", function () { wrap.classList.remove("open"); });
    wrap.appendChild(button);
    wrap.appendChild(menu);
    return wrap;
  }

  function buildColumnsMenu() {
    var holder = part("tools").querySelector('[data-role="columns-menu"]');
    holder.innerHTML = "";
    var items = table.getColumns().filter(function (c) { return c.getField() && c.getField() !== "__sel"; }).map(function (c) {
      var box = el("input", { type: "checkbox", checked: c.isVisible() ? "checked" : null,
        onchange: function () { if (box.checked) { c.show(); } else { c.hide(); } } });
      return [c.getDefinition().title, el("label", { class: "oms-col-choice" }, [box, " " + c.getDefinition().title])];
    });
    holder.appendChild(dropdown("列", items, "columns"));
  }

  // --- the table ------------------------------------------------------------------
  function formatterFor(col) {
    return function (cell) {
      var v = cell.getValue();
      if (v === null || v === undefined || v === "") { return ""; }
      var text;
      if (col.kind === "choice" && col.choices) { text = col.choices[String(v)] || String(v); }
      else if (col.kind === "bool") { text = v ? "是" : "否"; }
      else { text = String(v); }
      var node = document.createElement("span");
      node.textContent = text;
      if (col.key === "is_held" && v) { node.className = "oms-hold"; }
      if (col.key === "flag" && v) { node.className = "oms-flag oms-flag-" + v; }
      return node;
    };
  }

  function editorFor(col) {
    if (!col.editable) { return undefined; }
    if (col.edit_options) { return "list"; }
    return "input";
  }

  function editorParams(col) {
    if (!col.edit_options) { return {}; }
    var values = col.edit_options.map(function (o) { return { label: o.label, value: o.value }; });
    if (col.kind !== "choice") { values.unshift({ label: "（清空）", value: "" }); }
    var params = { values: values, autocomplete: true, allowEmpty: true, listOnEmpty: true };
    return col.recommendations ? recommendedParams(col, params) : params;
  }

  // 快递考核: the carrier recommended for the row's province comes first, with its evidence.
  function provinceKey(p) {
    p = String(p || "").trim();
    var three = p.slice(0, 3);
    return (three === "黑龙江" || three === "内蒙古") ? three : p.slice(0, 2);
  }

  function recommendedParams(col, params) {
    return function (cell) {
      var rec = col.recommendations[provinceKey(cell.getRow().getData()[col.recommend_by])];
      if (!rec) { return params; }
      var values = params.values.filter(function (o) { return o.value !== rec.carrier_id; });
      values.unshift({ label: "★ " + rec.carrier + "（推荐：" + rec.evidence + "）", value: rec.carrier_id });
      return Object.assign({}, params, { values: values });
    };
  }

  function selectionColumn() {
    return {
      field: "__sel", title: "", frozen: true, headerSort: false, width: 38, hozAlign: "center", resizable: false,
      titleFormatter: function () {
        var box = el("input", { type: "checkbox", "data-role": "select-page", title: "选择已加载的全部行" });
        box.addEventListener("click", function (e) {
          e.stopPropagation();
          table.getRows().forEach(function (row) { setSelected(row, box.checked); });
          allMatching = false;
          updateSelection();
        });
        return box;
      },
      formatter: function (cell) {
        var id = cell.getRow().getData().id;
        return el("input", { type: "checkbox", class: "oms-row-check", checked: selected.has(id) ? "checked" : null });
      },
      cellClick: function (e, cell) {
        var row = cell.getRow();
        var rows = table.getRows("active");
        var on = !selected.has(row.getData().id);
        if (e.shiftKey && lastClicked) {
          var a = rows.indexOf(lastClicked), b = rows.indexOf(row);
          if (a !== -1 && b !== -1) {
            rows.slice(Math.min(a, b), Math.max(a, b) + 1).forEach(function (r) { setSelected(r, on); });
          }
        } else {
          setSelected(row, on);
        }
        lastClicked = row;
        allMatching = false;
        updateSelection();
      },
    };
  }

  function setSelected(row, on) {
    var id = row.getData().id;
    if (on) { selected.add(id); } else { selected.delete(id); }
    var box = row.getCell("__sel").getElement().querySelector("input");
    if (box) { box.checked = on; }
    row.getElement().classList.toggle("oms-row-selected", on);
  }

  function updateSelection() {
    var box = part("selection");
    box.innerHTML = "";
    if (!selected.size && !allMatching) { box.hidden = true; return; }
    box.hidden = false;
    if (allMatching) {
      box.appendChild(document.createTextNode("已选择全部符合条件的 " + (matchCount === null ? "" : matchCount + " ") + "条记录。"));
    } else {
      box.appendChild(document.createTextNode("已选择 " + selected.size + " 条。"));
      var pageBox = root.querySelector('[data-role="select-page"]');
      if (matchCount !== null && (matchCount > selected.size || (pageBox && pageBox.checked))) {
        box.appendChild(el("a", { href: "#", "data-role": "select-all-matching",
          text: "选择全部符合条件的 " + matchCount + (matchCount >= meta.count_cap ? "+" : "") + " 条",
          onclick: function (e) { e.preventDefault(); allMatching = true; updateSelection(); } }));
      }
    }
    box.appendChild(document.createTextNode(" "));
    box.appendChild(el("a", { href: "#", text: "取消选择", onclick: function (e) { e.preventDefault(); clearSelection(); } }));
  }

  function clearSelection() {
    selected.clear();
    allMatching = false;
    if (table) { table.getRows().forEach(function (r) { setSelected(r, false); }); }
    var head = root.querySelector('[data-role="select-page"]');
    if (head) { head.checked = false; }
    updateSelection();
  }

  function buildTable() {
    var cols = [selectionColumn()].concat(meta.columns.map(function (c) {
      return {
        title: c.editable ? c.label + " ✎" : c.label, field: c.key, frozen: c.frozen, headerSort: c.sortable, width: c.width || undefined,
        hozAlign: (c.kind === "money" || c.kind === "int" || c.kind === "decimal") ? "right" : "left",
        formatter: formatterFor(c), editor: editorFor(c), editorParams: editorParams(c),
        cssClass: c.editable ? "oms-editable" : "",
      };
    }));
    table = new Tabulator(part("table"), {
      height: "calc(100vh - 300px)",
      minHeight: 300,
      layout: "fitData",
      index: "id",
      nestedFieldSeparator: false,   // "shop.name" is a flat key of the row, not a path
      columns: cols,
      placeholder: "没有符合条件的记录",
      progressiveLoad: "scroll",
      progressiveLoadScrollMargin: 400,
      paginationSize: meta.page_size,
      ajaxURL: base + "/rows",
      ajaxRequestFunc: loadPage,
      sortMode: "remote",
      headerSortClickElement: "icon",
      movableColumns: true,
      selectableRange: 1,
      selectableRangeColumns: false,
      selectableRangeRows: false,
      selectableRangeClearCells: false,
      editTriggerEvent: "dblclick",
      clipboard: true,
      clipboardCopyStyled: false,
      clipboardCopyConfig: { rowHeaders: false, columnHeaders: false },
      clipboardCopyRowRange: "range",
      clipboardPasteParser: "range",
      clipboardPasteAction: "range",
      rowFormatter: function (row) { row.getElement().classList.toggle("oms-row-selected", selected.has(row.getData().id)); },
      locale: "zh-cn",
      langs: { "zh-cn": { data: { loading: "加载中…", error: "加载失败" } } },
    });
    table.on("tableBuilt", function () { buildColumnsMenu(); tableReady = true; applyDefaultView(); });
    table.on("cellEdited", function (cell) {
      var key = cell.getField();
      var value = cell.getValue(), old = cell.getOldValue();
      if (value === old) { return; }
      save([{ id: cell.getRow().getData().id, key: key, value: value, old: old }], "编辑");
    });
    table.on("clipboardPasted", function (clipboard, rowData, rows) {
      var editable = {};
      meta.columns.forEach(function (c) { if (c.editable) { editable[c.key] = c; } });
      var changes = [];
      rows.forEach(function (row, i) {
        var data = rowData[i % rowData.length];
        var id = row.getData().id;
        Object.keys(data).forEach(function (key) {
          if (key === "__sel") { return; }
          var old = row.__omsSaved ? row.__omsSaved[key] : undefined;
          if (!editable[key]) {
            var revert = {}; revert[key] = old; row.update(revert);
            return;
          }
          var value = data[key];
          var col = editable[key];
          if (col.edit_options && col.kind !== "choice") {   // a relation: pasted names → ids
            var hit = col.edit_options.filter(function (o) { return o.label === String(value).trim(); })[0];
            value = hit ? hit.value : value;
          }
          changes.push({ id: id, key: key, value: value, old: old });
        });
      });
      if (changes.length) { save(changes, "粘贴"); }
    });
    table.on("dataProcessed", function () {
      table.getRows().forEach(function (row) { row.__omsSaved = Object.assign({}, row.getData()); });
    });
    table.on("rowAdded", function (row) { row.__omsSaved = Object.assign({}, row.getData()); });
    document.addEventListener("keydown", function (e) {
      if ((e.ctrlKey || e.metaKey) && e.key === "z" && !e.target.closest("input, textarea, select") && root.contains(document.activeElement || root)) {
        e.preventDefault();
        undo();
      }
    });
  }

  function loadPage(url, config, params) {
    var page = params.page || 1;
    if (page === 1) { cursors = {}; }
    var q = new URLSearchParams({ size: String(meta.page_size), filters: JSON.stringify(currentFilters()) });
    var sorter = params.sort && params.sort[0];
    state.sort = sorter ? sorter.field + ":" + sorter.dir : null;
    q.set("sort", currentSort());
    if (page > 1) {
      if (!cursors[page]) { return Promise.resolve({ last_page: page - 1, data: [] }); }
      q.set("after", cursors[page]);
    } else {
      q.set("count", "1");
    }
    return api(base + "/rows?" + q).then(function (r) {
      if (r.body.next_cursor) { cursors[page + 1] = r.body.next_cursor; }
      if (page === 1) {
        matchCount = r.body.count;
        part("status").textContent = "共 " + r.body.count + (r.body.count_capped ? "+" : "") + " 条";
        refreshCounts();
        updateSelection();
      }
      return { last_page: r.body.next_cursor ? page + 1 : page, data: r.body.rows };
    }).catch(function (e) {
      message(e.message, "danger");
      return { last_page: 1, data: [] };
    });
  }

  function reload() {
    clearSelection();
    if (table) { table.setData(); }
  }

  // --- saving edits, undo ---------------------------------------------------------
  function save(changes, verb, isUndo) {
    return api(base + "/edit", { method: "POST", body: { changes: changes.map(function (c) {
      return { id: c.id, key: c.key, value: c.value };
    }) } }).then(function (r) {
      var failed = [], okIds = {};
      r.body.results.forEach(function (res) {
        var row = table.getRow(res.id);
        if (res.ok) {
          okIds[res.id] = true;
          if (row && res.row) { row.update(res.row); row.__omsSaved = Object.assign({}, row.getData()); }
          if (row) { row.getElement().querySelectorAll(".oms-cell-error").forEach(function (n) { n.classList.remove("oms-cell-error"); n.removeAttribute("title"); }); }
        } else {
          failed.push(res);
          if (row) {
            changes.filter(function (c) { return c.id === res.id; }).forEach(function (c) {
              var back = {}; back[c.key] = c.old; row.update(back);
              var cell = row.getCell(c.key);
              if (cell) { cell.getElement().classList.add("oms-cell-error"); cell.getElement().title = res.message; }
            });
          }
        }
      });
      var good = changes.filter(function (c) { return okIds[c.id]; });
      if (good.length && !isUndo) { undoStack.push(good); }
      var n = Object.keys(okIds).length;
      if (failed.length) {
        message(verb + "：已保存 " + n + " 行，" + failed.length + " 行失败：" +
          failed.slice(0, 5).map(function (f) { return f.message; }).join("；") + (failed.length > 5 ? "……" : ""), "warning");
      } else {
        message((isUndo ? "已撤销：" : verb + "：已保存 ") + n + " 行", "success");
      }
    }).catch(function (e) {
      changes.forEach(function (c) {
        var row = table.getRow(c.id);
        if (row) { var back = {}; back[c.key] = c.old; row.update(back); }
      });
      message(e.message, "danger");
    });
  }

  function undo() {
    var group = undoStack.pop();
    if (!group) { message("没有可以撤销的修改", "info"); return; }
    var byKey = {};
    meta.columns.forEach(function (c) { byKey[c.key] = c; });
    var back = group.map(function (c) {
      var value = c.old, col = byKey[c.key];
      if (col && col.edit_options && col.kind !== "choice") {
        var hit = col.edit_options.filter(function (o) { return o.label === c.old; })[0];
        value = hit ? hit.value : "";
      }
      var row = table.getRow(c.id);
      var now = row ? row.getData()[c.key] : c.value;
      return { id: c.id, key: c.key, value: value === null || value === undefined ? "" : value, old: now };
    });
    save(back, "撤销", true);
  }

  // --- batch actions, jobs ------------------------------------------------------------
  function selectionBody() {
    if (allMatching) { return { filters: currentFilters() }; }
    return { ids: Array.from(selected) };
  }

  function startAction(action) {
    if (!selected.size && !allMatching) { message("请先选择要操作的记录", "warning"); return; }
    var n = allMatching ? matchCount : selected.size;
    askParams(action, n).then(function (params) {
      if (params === null) { return; }
      var body = Object.assign({ action: action.code, params: params }, selectionBody());
      message("");
      return api("/api/v1/" + resource + "/batch", { method: "POST", body: body }).then(function (r) {
        if (r.resp.status === 202) {
          return followJob(r.body.job_id, action.label).then(function (result) { showResult(action, result); });
        }
        showResult(action, r.body.result);
      });
    }).catch(function (e) { hideProgress(); message(e.message, "danger"); });
  }

  function askParams(action, n) {
    return new Promise(function (resolve) {
      var fields = (action.params || []).map(function (p) {
        var input;
        if (p.type === "select") {
          input = el("select", { class: "form-control", name: p.key });
          input.appendChild(el("option", { value: "", text: "请选择" }));
          (p.options || []).forEach(function (o) { input.appendChild(el("option", { value: JSON.stringify(o.value), text: o.label })); });
        } else {
          input = el("input", { class: "form-control", name: p.key, type: "text" });
        }
        return { p: p, input: input, group: el("div", { class: "form-group" }, [el("label", { text: p.label + (p.required ? "（必填）" : "") }), input]) };
      });
      var error = el("div", { class: "text-danger" });
      var modal = el("div", { class: "oms-modal", role: "dialog", "data-role": "action-dialog" }, [
        el("div", { class: "oms-modal-box panel panel-default" }, [
          el("div", { class: "panel-heading", text: action.label + "：" + n + " 条记录" }),
          el("div", { class: "panel-body" }, fields.map(function (f) { return f.group; }).concat([error])),
          el("div", { class: "panel-footer text-right" }, [
            el("button", { type: "button", class: "btn btn-default", text: "取消", onclick: function () { modal.remove(); resolve(null); } }),
            " ",
            el("button", { type: "button", class: "btn btn-primary", "data-role": "confirm", text: "确定", onclick: function () {
              var params = {};
              for (var i = 0; i < fields.length; i++) {
                var f = fields[i], v = f.input.value;
                if (f.p.type === "select" && v !== "") { v = JSON.parse(v); }
                if (f.p.required && (v === "" || v === null)) { error.textContent = "请填写「" + f.p.label + "」"; return; }
                params[f.p.key] = v;
              }
              modal.remove();
              resolve(params);
            } }),
          ]),
        ]),
      ]);
      document.body.appendChild(modal);
    });
  }

  function showProgress(pct, text) {
    var box = part("progress");
    box.hidden = false;
    var bar = box.querySelector(".progress-bar");
    bar.style.width = pct + "%";
    bar.setAttribute("aria-valuenow", pct);
    bar.textContent = pct + "%";
    box.querySelector(".oms-progress-text").textContent = text || "";
  }

  function hideProgress() { part("progress").hidden = true; }

  function followJob(jobId, label) {
    showProgress(0, label + "：已排队");
    return new Promise(function (resolve, reject) {
      function poll() {
        api("/api/v1/job/" + encodeURIComponent(jobId)).then(function (r) {
          var j = r.body;
          showProgress(j.progress || 0, label + "：" + (j.state_zh || j.state) +
            (j.total ? "（" + (j.done || 0) + " / " + j.total + "）" : "") + (j.message ? " " + j.message : ""));
          if (j.state === "finished") { showProgress(100, label + "：已完成"); resolve(j.result); }
          else if (j.state === "failed" || j.state === "stopped" || j.state === "canceled") { reject(new Error(j.error || (label + "失败"))); }
          else { setTimeout(poll, 700); }
        }).catch(reject);
      }
      poll();
    });
  }

  function showResult(action, result) {
    var box = part("result");
    box.innerHTML = "";
    box.hidden = false;
    var failed = result.failed || [];
    var skipped = result.skipped || [];
    var ok = (result.ok || []).length;
    var head = el("div", { class: "panel-heading" }, [
      el("strong", { text: action.label + "完成：" }),
      el("span", { class: "text-success", "data-role": "ok-count", text: "成功 " + ok + " 条" }), "，",
      el("span", { class: failed.length ? "text-danger" : "", "data-role": "failed-count", text: "失败 " + failed.length + " 条" }),
      skipped.length ? el("span", { class: "text-muted", "data-role": "skipped-count",
        text: "，跳过 " + skipped.length + " 条（已是目标状态）" }) : null,
      " ",
      el("a", { href: "#", class: "pull-right", text: "关闭", onclick: function (e) { e.preventDefault(); box.hidden = true; hideProgress(); } }),
    ]);
    box.appendChild(head);
    if (result.download_url && result.download_url.charAt(0) === "/" && result.download_url.charAt(1) !== "/") {
      // A batch that made a file (打印): offer it, as the export does.
      box.appendChild(el("div", { class: "panel-body" }, [
        el("a", { href: result.download_url, class: "btn btn-primary btn-sm", "data-role": "download",
                  target: "_blank", rel: "noopener", text: "下载 " + (result.filename || "文件") }),
        result.pages ? el("span", { class: "text-muted", text: " 共 " + result.pages + " 页" +
          (result.reprints ? "，其中补打 " + result.reprints + " 单" : "") }) : null,
      ]));
    }
    if (failed.length) {
      var tbody = el("tbody");
      failed.slice(0, 200).forEach(function (f) {
        tbody.appendChild(el("tr", {}, [el("td", { text: f.platform_order_id || String(f.id) }), el("td", { text: f.message })]));
      });
      box.appendChild(el("div", { class: "panel-body" }, [
        el("button", { type: "button", class: "btn btn-warning btn-sm", "data-role": "reselect-failed", text: "只看并选中失败的 " + failed.length + " 条",
          onclick: function () {
            var ids = failed.map(function (f) { return f.id; });
            state.idFilter = ids;
            state.tab = null;
            buildTabs();
            clearSelection();
            ids.forEach(function (id) { selected.add(id); });
            table.setData().then(function () {
              table.getRows().forEach(function (row) { setSelected(row, selected.has(row.getData().id)); });
              updateSelection();
              message("正在显示上次失败的记录；点「重置」回到全部", "info");
            });
          } }),
        el("table", { class: "table table-condensed oms-failed" }, [
          el("thead", {}, [el("tr", {}, [el("th", { text: "订单号" }), el("th", { text: "原因" })])]), tbody]),
      ]));
    }
    clearSelection();
    if (table) { table.setData(); }
  }

  // --- export ----------------------------------------------------------------------------
  function exportGrid(format) {
    var q = new URLSearchParams({ format: format, filters: JSON.stringify(currentFilters()),
                                  columns: visibleKeys().join(","), sort: currentSort() });
    message("正在导出…", "info");
    fetch(base + "/export?" + q, { credentials: "same-origin" }).then(function (resp) {
      var type = resp.headers.get("Content-Type") || "";
      if (type.indexOf("application/json") !== -1) {
        return resp.json().then(function (body) {
          if (resp.status === 202) {
            return followJob(body.job_id, "导出").then(function (result) {
              hideProgress();
              var box = part("message");
              message("导出完成：", "success");
              box.appendChild(el("a", { href: result.download_url, "data-role": "download", text: "下载 " + result.filename }));
            });
          }
          throw new Error(body.message || "导出失败");
        });
      }
      if (!resp.ok) { throw new Error("导出失败（" + resp.status + "）"); }
      var name = "导出." + (format === "xlsx" ? "xlsx" : "csv");
      var cd = resp.headers.get("Content-Disposition") || "";
      var m = /filename\*=UTF-8''([^;]+)/i.exec(cd);
      if (m) { name = decodeURIComponent(m[1]); }
      return resp.blob().then(function (blob) {
        var a = el("a", { href: URL.createObjectURL(blob), download: name, "data-role": "download", text: "下载 " + name });
        message("导出完成：", "success");
        part("message").appendChild(a);
        a.click();
      });
    }).catch(function (e) { hideProgress(); message(e.message, "danger"); });
  }

  // --- round trip: import an edited export --------------------------------------------------
  function roundtripPreview(file) {
    var form = new FormData();
    form.append("file", file);
    message("正在比对文件…", "info");
    api(base + "/roundtrip/preview", { method: "POST", body: form }).then(function (r) {
      var p = r.body;
      message("");
      var tbody = el("tbody");
      (p.changes || []).slice(0, 500).forEach(function (c) {
        tbody.appendChild(el("tr", {}, [el("td", { text: String(c.row || c.id) }), el("td", { text: c.label }),
          el("td", { class: "oms-old", text: c.old === null || c.old === undefined ? "" : String(c.old) }),
          el("td", { class: "oms-new", text: c.new === null || c.new === undefined ? "" : String(c.new) })]));
      });
      var errors = el("ul", { class: "text-danger" }, (p.errors || []).slice(0, 100).map(function (e) {
        return el("li", { text: (e.row ? "第 " + e.row + " 行" : "") + (e.column ? "「" + e.column + "」" : "") + "：" + e.message });
      }));
      var modal = el("div", { class: "oms-modal", "data-role": "roundtrip-dialog" }, [
        el("div", { class: "oms-modal-box oms-modal-wide panel panel-default" }, [
          el("div", { class: "panel-heading", text: "导入修改：" + (p.changes || []).length + " 个单元格有改动" +
            ((p.errors || []).length ? "，" + p.errors.length + " 个问题" : "") }),
          el("div", { class: "panel-body oms-scroll" }, [errors, el("table", { class: "table table-condensed" }, [
            el("thead", {}, [el("tr", {}, [el("th", { text: "行" }), el("th", { text: "列" }), el("th", { text: "原值" }), el("th", { text: "新值" })])]), tbody])]),
          el("div", { class: "panel-footer text-right" }, [
            el("button", { type: "button", class: "btn btn-default", text: "取消", onclick: function () { modal.remove(); } }), " ",
            el("button", { type: "button", class: "btn btn-primary", "data-role": "confirm", text: "应用修改",
              disabled: (p.changes || []).length ? null : "disabled",
              onclick: function () {
                modal.remove();
                api(base + "/roundtrip/apply", { method: "POST", body: { token: p.token } }).then(function (r2) {
                  var res = r2.body.results || [];
                  var bad = res.filter(function (x) { return !x.ok; });
                  message("导入修改：已更新 " + (res.length - bad.length) + " 行" + (bad.length ? "，" + bad.length + " 行失败：" +
                    bad.slice(0, 5).map(function (x) { return x.message; }).join("；") : ""), bad.length ? "warning" : "success");
                  table.setData();
                }).catch(function (e) { message(e.message, "danger"); });
              } }),
          ]),
        ]),
      ]);
      document.body.appendChild(modal);
    }).catch(function (e) { message(e.message, "danger"); });
  }

  // --- saved views ----------------------------------------------------------------------------
  function viewState() {
    return {
      tab: state.tab, filters: state.filters, sort: state.sort,
      columns: table.getColumns().filter(function (c) { return c.getField() && c.getField() !== "__sel"; }).map(function (c) {
        return { key: c.getField(), visible: c.isVisible(), width: c.getWidth() };
      }),
    };
  }

  function applyView(v) {
    var s = v.state || {};
    state.tab = s.tab || null;
    state.filters = s.filters || {};
    state.sort = s.sort || null;
    state.idFilter = null;
    writeFilterForm(state.filters);
    buildTabs();
    if (s.columns && s.columns.length) {
      var known = {};
      table.getColumns().forEach(function (c) { known[c.getField()] = c; });
      var prev = "__sel";
      s.columns.forEach(function (sc) {
        var col = known[sc.key];
        if (!col) { return; }
        if (sc.visible) { col.show(); } else { col.hide(); }
        if (sc.width) { col.setWidth(sc.width); }
        table.moveColumn(sc.key, prev, true);
        prev = sc.key;
      });
    }
    if (state.sort) {
      var parts = state.sort.split(":");
      table.setSort(parts[0], parts[1]);
    } else {
      reload();
    }
    buildColumnsMenu();
    message("已应用视图「" + v.name + "」", "info");
  }

  function loadViews() {
    api(base + "/views").then(function (r) {
      savedViews = r.body.views || [];
      buildViewsMenu();
      viewsLoaded = true;
      applyDefaultView();
    }).catch(function () { buildViewsMenu(); });
  }

  var viewsLoaded = false, tableReady = false, defaultApplied = false;
  function applyDefaultView() {
    if (!viewsLoaded || !tableReady || defaultApplied) { return; }
    defaultApplied = true;
    var def = savedViews.filter(function (v) { return v.is_default; })[0];
    if (def && !window.location.search) { applyView(def); }  // a link with a tab or filter wins
  }

  function buildViewsMenu() {
    var holder = part("tools").querySelector('[data-role="views-menu"]');
    holder.innerHTML = "";
    var items = savedViews.map(function (v) {
      return [v.name + (v.is_default ? "（默认）" : ""), function () { applyView(v); }];
    });
    if (items.length) { items.push("-"); }
    items.push(["保存当前视图…", function () {
      var name = window.prompt("视图名称");
      if (!name) { return; }
      var isDefault = window.confirm("设为打开本页时的默认视图？");
      api(base + "/views", { method: "POST", body: { name: name, state: viewState(), is_default: isDefault } }).then(function () {
        message("视图「" + name + "」已保存", "success");
        loadViews();
      }).catch(function (e) { message(e.message, "danger"); });
    }]);
    savedViews.forEach(function (v) {
      items.push(["删除视图「" + v.name + "」", function () {
        api(base + "/views/" + v.id, { method: "DELETE" }).then(function () { loadViews(); })
          .catch(function (e) { message(e.message, "danger"); });
      }]);
    });
    holder.appendChild(dropdown("视图", items, "views"));
  }

  load();
})();
