/* whyspike report: draws the charts described in #ws-data with uPlot. MIT license, part of whyspike.
 * Every text from the data goes into the page through textContent or canvas fillText, never as HTML. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("ws-data").textContent);
  var plots = {};      // chart id -> uPlot instance
  var byGroup = {};    // group id -> [uPlot]
  var syncing = false;
  var errors = 0;
  var RED = "#d62728";

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "\u2014";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1).replace("e+", "e");
    return String(+v.toPrecision(4));
  }

  function fail(where, err) {
    errors += 1;
    console.error("whyspike report: " + where + ": " + (err && err.stack ? err.stack : err));
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function chartWidth(box) {
    return Math.max(320, Math.floor(box.clientWidth || box.parentNode.clientWidth || 800));
  }

  // ---- spike marks: shading start..at and a dashed line at `at` on the canvas (so the PNG has them), and a
  // clickable marker element over the chart whose series jumped (so they are in the DOM, with a tooltip)
  function markPlugin(spec, domMarks) {
    function drawMarks(u) {
      var ctx = u.ctx, b = u.bbox, dpr = window.devicePixelRatio || 1;
      ctx.save();
      ctx.beginPath();
      ctx.rect(b.left, b.top, b.width, b.height);
      ctx.clip();
      spec.marks.forEach(function (m) {
        var x1 = u.valToPos(m.at, "x", true);
        var x0 = u.valToPos(m.from, "x", true);
        if (x1 - x0 >= 1) {
          ctx.fillStyle = "rgba(214,39,40,0.12)";
          ctx.fillRect(x0, b.top, x1 - x0, b.height);
        }
        ctx.strokeStyle = RED;
        ctx.globalAlpha = 0.85;
        ctx.lineWidth = dpr;
        ctx.setLineDash([4 * dpr, 3 * dpr]);
        ctx.beginPath();
        ctx.moveTo(Math.round(x1) + 0.5, b.top);
        ctx.lineTo(Math.round(x1) + 0.5, b.top + b.height);
        ctx.stroke();
        ctx.globalAlpha = 1;
      });
      ctx.restore();
    }
    function place(u) {
      var w = u.over.clientWidth;
      domMarks.forEach(function (pair) {
        var left = u.valToPos(pair.mark.at, "x");
        pair.node.style.left = left + "px";
        pair.node.style.display = left >= -1 && left <= w + 1 ? "" : "none";
      });
    }
    return {
      hooks: {
        drawAxes: [drawMarks],
        ready: [function (u) {
          domMarks.forEach(function (pair) { u.over.appendChild(pair.node); });
          place(u);
        }],
        setScale: [function (u, key) { if (key === "x") place(u); }],
        setSize: [place],
      },
    };
  }

  function domMarksFor(spec, isHome) {
    return spec.marks.filter(isHome).map(function (m) {
      var node = el("div", "ws-spike-marker " + (m.direction || ""));
      node.setAttribute("data-spike", m.id);
      node.setAttribute("data-metric", m.metric);
      node.setAttribute("data-at", String(m.at));
      node.setAttribute("title", m.label);
      node.setAttribute("role", "button");
      node.setAttribute("aria-label", m.label);
      node.addEventListener("click", function () { zoomTo(spec.group, m); });
      return { mark: m, node: node };
    });
  }

  function seriesOpts(s, log) {
    var o = {
      label: s.legend_label || s.label,
      stroke: s.color,
      width: s.width || 1.25,
      spanGaps: true,
      points: { show: !!s.points, size: 6, fill: s.color },
      value: function (u, v) { return fmt(v); },
    };
    if (s.dash) o.dash = s.dash;
    return o;
  }

  function tickLabels(u, splits) {
    return splits.map(function (v) { return v === null || v === undefined ? "" : fmt(v); });
  }

  // a log axis labels (and grids) whole decades only, at most about six of them
  function decades(u, splits) {
    var whole = splits.filter(function (v) { var e = Math.log10(v); return Math.abs(e - Math.round(e)) < 1e-6; });
    var stride = Math.max(1, Math.ceil(whole.length / 6));
    return splits.map(function (v) {
      var e = Math.log10(v), r = Math.round(e);
      return Math.abs(e - r) < 1e-6 && ((r % stride) + stride) % stride === 0 ? v : null;
    });
  }

  // the whole decades of a log axis, computed here: uPlot's own log splits never end below ~1e-16 (a vanished LR)
  function logSplits(u, axisIdx, min, max) {
    var out = [];
    for (var e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
      var v = Math.pow(10, e);
      if (v >= min * (1 - 1e-9) && v <= max * (1 + 1e-9)) out.push(v);
    }
    return out;
  }

  function yValues(s, log) {
    if (!log) return s.y;
    return s.y.map(function (v) { return v !== null && v > 0 ? v : null; });
  }

  function makeChart(box, spec, isHome, isLast) {
    var log = !!spec.log;
    var data = [spec.x].concat(spec.series.map(function (s) { return yValues(s, log); }));
    var series = [{ label: spec.xlabel, value: function (u, v) { return fmt(v); } }]
      .concat(spec.series.map(function (s) { return seriesOpts(s, log); }));
    var opts = {
      title: spec.title,
      width: chartWidth(box),
      height: spec.height,
      series: series,
      scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
      axes: [
        // the x label once, under the last panel of a stack
        isLast ? { label: spec.xlabel, labelSize: 16, size: 30, values: tickLabels }
               : { size: 28, values: tickLabels },
        log ? { size: 64, splits: logSplits, filter: decades, values: tickLabels,
                grid: { show: true, stroke: "rgba(0,0,0,0.07)", width: 2, filter: decades },
                ticks: { show: true, stroke: "rgba(0,0,0,0.07)", width: 2, size: 10, filter: decades } }
            : { size: 64, values: tickLabels },
      ],
      cursor: spec.group ? { sync: { key: spec.group, setSeries: false }, drag: { x: true, y: false } }
                         : { drag: { x: true, y: false } },
      legend: { live: true },
      plugins: [markPlugin(spec, domMarksFor(spec, isHome))],
      hooks: {
        setScale: [function (u, key) {
          if (key !== "x" || syncing || !spec.group) return;
          syncing = true;
          try {
            (byGroup[spec.group] || []).forEach(function (o) {
              if (o !== u) o.setScale("x", { min: u.scales.x.min, max: u.scales.x.max });
            });
          } finally { syncing = false; }
        }],
      },
    };
    if (spec.bands && spec.bands.length) {
      opts.bands = spec.bands.map(function (b) { return { series: [b[0] + 1, b[1] + 1], fill: b[2] }; });
    }
    var u = new uPlot(opts, data, box);
    // one legend entry per intervention / for the seed runs, not one per run
    var rows = u.root.querySelectorAll(".u-legend .u-series");
    spec.series.forEach(function (s, i) {
      if (s.legend === false && rows[i + 1]) rows[i + 1].style.display = "none";
    });
    u.wsSpec = spec;
    return u;
  }

  function zoomTo(group, m) {
    var us = byGroup[group];
    if (!us || !us.length) return;
    var x = us[0].data[0];
    var span = x[x.length - 1] - x[0];
    var pad = Math.max(2 * (m.at - m.from), 0.03 * span, 1e-9);
    us[0].setScale("x", { min: Math.max(x[0], m.from - pad), max: Math.min(x[x.length - 1], m.at + pad) });
  }

  function resetZoom(group) {
    var us = byGroup[group];
    if (!us || !us.length) return;
    var x = us[0].data[0];
    us[0].setScale("x", { min: x[0], max: x[x.length - 1] });
  }

  // ---- PNG of a figure: the group's canvases stacked under their titles and legends
  function groupPng(group) {
    var us = byGroup[group] || [];
    var dpr = window.devicePixelRatio || 1;
    var pad = 8 * dpr, line = 18 * dpr;
    var width = 0, height = line + pad;
    us.forEach(function (u) {
      width = Math.max(width, u.ctx.canvas.width);
      height += line * 2 + u.ctx.canvas.height + pad;
    });
    var c = document.createElement("canvas");
    c.width = width + 2 * pad;
    c.height = height + pad;
    var ctx = c.getContext("2d");
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, c.width, c.height);
    ctx.fillStyle = "#111111";
    ctx.textBaseline = "middle";
    ctx.font = "bold " + 13 * dpr + "px sans-serif";
    ctx.fillText(DATA.title, pad, pad + line / 2);
    var y = pad + line;
    us.forEach(function (u) {
      ctx.font = "bold " + 12 * dpr + "px sans-serif";
      ctx.fillStyle = "#111111";
      ctx.fillText(u.wsSpec.title, pad, y + line / 2);
      var x = pad;
      ctx.font = 11 * dpr + "px sans-serif";
      u.wsSpec.series.forEach(function (s) {
        if (s.legend === false) return;
        var label = s.legend_label || s.label;
        ctx.fillStyle = s.color;
        ctx.fillRect(x, y + line + line / 2 - 2 * dpr, 14 * dpr, 4 * dpr);
        ctx.fillStyle = "#333333";
        ctx.fillText(label, x + 18 * dpr, y + line + line / 2);
        x += 18 * dpr + ctx.measureText(label).width + 14 * dpr;
      });
      y += 2 * line;
      ctx.drawImage(u.ctx.canvas, pad, y);
      y += u.ctx.canvas.height + pad;
    });
    return c.toDataURL("image/png");
  }

  function download(group) {
    var a = document.createElement("a");
    a.href = groupPng(group);
    a.download = DATA.png_name;
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  // ---- the 2-D loss surface: a heatmap with contour lines and the trajectory, on a canvas
  var VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
                 [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]];
  function viridis(t) {
    t = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
    var i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); }).join(",") + ")";
  }

  function ticks(lo, hi, n) {
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n || 1)));
    [1, 2, 5, 10].some(function (m) { if ((hi - lo) / (step * m) <= n) { step *= m; return true; } return false; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function heatmap(box, spec) {
    var dpr = window.devicePixelRatio || 1;
    var W = Math.min(chartWidth(box), 760), H = 440, L = 64, R = 90, T = 12, B = 44;
    var canvas = document.createElement("canvas");
    canvas.width = W * dpr; canvas.height = H * dpr;
    canvas.style.width = W + "px"; canvas.style.height = H + "px";
    canvas.className = "ws-heatmap-canvas";
    box.appendChild(canvas);
    var tip = el("div", "ws-tip");
    tip.style.display = "none";
    box.appendChild(tip);
    var ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    var xs = spec.x, ys = spec.y, z = spec.z, log = !!spec.log;
    var tf = function (v) { return v === null ? null : (log ? (v > 0 ? Math.log10(v) : null) : v); };
    var zmin = Infinity, zmax = -Infinity;
    z.forEach(function (row) {
      row.forEach(function (v) {
        var t = tf(v);
        if (t !== null) { zmin = Math.min(zmin, t); zmax = Math.max(zmax, t); }
      });
    });
    if (!(zmax > zmin)) zmax = zmin + 1;
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (spec.trajectory) {
      spec.trajectory.x.forEach(function (v) { if (v !== null) { x0 = Math.min(x0, v); x1 = Math.max(x1, v); } });
      spec.trajectory.y.forEach(function (v) { if (v !== null) { y0 = Math.min(y0, v); y1 = Math.max(y1, v); } });
    }
    var pw = W - L - R, ph = H - T - B;
    var px = function (v) { return L + (v - x0) / ((x1 - x0) || 1) * pw; };
    var py = function (v) { return T + ph - (v - y0) / ((y1 - y0) || 1) * ph; };
    function edges(a, i) {  // cell i spans the midpoints to its neighbours
      var lo = i > 0 ? (a[i - 1] + a[i]) / 2 : a[i] - (a.length > 1 ? (a[1] - a[0]) / 2 : 0.5);
      var hi = i < a.length - 1 ? (a[i] + a[i + 1]) / 2 : a[i] + (a.length > 1 ? (a[i] - a[i - 1]) / 2 : 0.5);
      return [lo, hi];
    }
    ctx.fillStyle = "#f4f4f4";
    ctx.fillRect(L, T, pw, ph);
    ctx.save();
    ctx.beginPath();
    ctx.rect(L, T, pw, ph);
    ctx.clip();  // edge cells reach half a cell beyond the outer grid points
    for (var iy = 0; iy < ys.length; iy++) {
      var ey = edges(ys, iy);
      for (var ix = 0; ix < xs.length; ix++) {
        var t = tf(z[iy][ix]);
        if (t === null) continue;
        var ex = edges(xs, ix);
        ctx.fillStyle = viridis((t - zmin) / (zmax - zmin));
        var ax = px(ex[0]), bx = px(ex[1]), ay = py(ey[1]), by = py(ey[0]);
        ctx.fillRect(Math.floor(ax), Math.floor(ay), Math.ceil(bx - ax) + 1, Math.ceil(by - ay) + 1);
      }
    }
    // contour lines: marching squares on the (log-)values, 8 levels
    ctx.strokeStyle = "rgba(255,255,255,0.55)";
    ctx.lineWidth = 1;
    for (var k = 1; k <= 8; k++) {
      var lv = zmin + (zmax - zmin) * k / 9;
      ctx.beginPath();
      for (var j = 0; j < ys.length - 1; j++) {
        for (var i = 0; i < xs.length - 1; i++) {
          var c = [tf(z[j][i]), tf(z[j][i + 1]), tf(z[j + 1][i + 1]), tf(z[j + 1][i])];
          if (c.some(function (v) { return v === null; })) continue;
          var P = [[xs[i], ys[j]], [xs[i + 1], ys[j]], [xs[i + 1], ys[j + 1]], [xs[i], ys[j + 1]]];
          var pts = [];
          for (var e = 0; e < 4; e++) {
            var a = c[e], b = c[(e + 1) % 4];
            if ((a < lv) !== (b < lv)) {
              var f = (lv - a) / (b - a), p = P[e], q = P[(e + 1) % 4];
              pts.push([p[0] + f * (q[0] - p[0]), p[1] + f * (q[1] - p[1])]);
            }
          }
          for (var s = 0; s + 1 < pts.length; s += 2) {
            ctx.moveTo(px(pts[s][0]), py(pts[s][1]));
            ctx.lineTo(px(pts[s + 1][0]), py(pts[s + 1][1]));
          }
        }
      }
      ctx.stroke();
    }
    // trajectory
    var tr = spec.trajectory;
    if (tr) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2;
      ctx.beginPath();
      var started = false;
      tr.x.forEach(function (v, n) {
        if (v === null || tr.y[n] === null) return;
        if (!started) { ctx.moveTo(px(v), py(tr.y[n])); started = true; } else ctx.lineTo(px(v), py(tr.y[n]));
      });
      ctx.stroke();
      ctx.font = "11px sans-serif";
      tr.x.forEach(function (v, n) {
        if (v === null || tr.y[n] === null) return;
        ctx.fillStyle = n === tr.x.length - 1 ? RED : "#ffffff";
        ctx.beginPath();
        ctx.arc(px(v), py(tr.y[n]), 3.5, 0, 2 * Math.PI);
        ctx.fill();
        ctx.strokeStyle = "#222222";
        ctx.lineWidth = 1;
        ctx.stroke();
        if (tr.labels[n]) {
          ctx.fillStyle = "#ffffff";
          ctx.fillText(tr.labels[n], px(v) + 5, py(tr.y[n]) - 5);
        }
      });
    }
    ctx.restore();
    // axes and colour bar
    ctx.strokeStyle = "#333333";
    ctx.strokeRect(L, T, pw, ph);
    ctx.fillStyle = "#333333";
    ctx.font = "11px sans-serif";
    ctx.textAlign = "center";
    ticks(x0, x1, 6).forEach(function (v) { ctx.fillText(fmt(v), px(v), T + ph + 14); });
    ctx.textAlign = "right";
    ticks(y0, y1, 6).forEach(function (v) { ctx.fillText(fmt(v), L - 6, py(v) + 4); });
    var cbx = L + pw + 18;
    for (var r = 0; r < ph; r++) {
      ctx.fillStyle = viridis(1 - r / ph);
      ctx.fillRect(cbx, T + r, 14, 1.5);
    }
    ctx.fillStyle = "#333333";
    ctx.textAlign = "left";
    var inv = function (t) { return log ? Math.pow(10, t) : t; };
    ctx.fillText(fmt(inv(zmax)), cbx + 18, T + 8);
    ctx.fillText(fmt(inv(zmin)), cbx + 18, T + ph);
    ctx.fillText("loss" + (log ? " (log)" : ""), cbx - 4, T + ph + 30);
    canvas.addEventListener("mousemove", function (ev) {
      var rect = canvas.getBoundingClientRect();
      var mx = ev.clientX - rect.left, my = ev.clientY - rect.top;
      if (mx < L || mx > L + pw || my < T || my > T + ph) { tip.style.display = "none"; return; }
      var vx = x0 + (mx - L) / pw * (x1 - x0), vy = y0 + (T + ph - my) / ph * (y1 - y0);
      var nearest = function (a, v) {
        var b = 0;
        a.forEach(function (w, n) { if (Math.abs(w - v) < Math.abs(a[b] - v)) b = n; });
        return b;
      };
      var jx = nearest(xs, vx), jy = nearest(ys, vy);
      tip.textContent = "x " + fmt(xs[jx]) + ", y " + fmt(ys[jy]) + ": loss " + fmt(z[jy][jx]);
      tip.style.display = "";
      tip.style.left = (mx + 12) + "px";
      tip.style.top = (my + 12) + "px";
    });
    canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  }

  // ---- build everything
  function build() {
    (DATA.groups || []).forEach(function (g) {
      byGroup[g.id] = [];
      // a spike's DOM marker goes on the panel of its own metric (the first panel when that is not drawn)
      var home = {};
      g.charts.forEach(function (cid) {
        var spec = DATA.charts[cid];
        spec.marks.forEach(function (m) {
          var mine = spec.series.some(function (s) { return s.label === m.metric; });
          if (home[m.id] === undefined && mine) home[m.id] = cid;
        });
      });
      g.charts.forEach(function (cid, n) {
        var spec = DATA.charts[cid];
        var box = document.querySelector('.ws-chart[data-chart="' + cid + '"]');
        if (!box) return;
        try {
          var isHome = function (m) { return home[m.id] === cid || (home[m.id] === undefined && n === 0); };
          var u = makeChart(box, spec, isHome, n === g.charts.length - 1);
          plots[cid] = u;
          byGroup[g.id].push(u);
        } catch (err) { fail("chart " + cid, err); }
      });
    });
    ["probe", "interpolation", "curvature"].forEach(function (cid) {
      var spec = DATA.charts[cid];
      var box = document.querySelector('.ws-chart[data-chart="' + cid + '"]');
      if (!spec || !box) return;
      try {
        plots[cid] = makeChart(box, spec, function () { return true; }, true);
        if (spec.group) byGroup[spec.group] = [plots[cid]];
      } catch (err) { fail("chart " + cid, err); }
    });
    Object.keys(DATA.heatmaps || {}).forEach(function (hid) {
      var box = document.querySelector('.ws-heatmap[data-heatmap="' + hid + '"]');
      if (!box) return;
      try { heatmap(box, DATA.heatmaps[hid]); } catch (err) { fail("heatmap " + hid, err); }
    });
    Array.prototype.forEach.call(document.querySelectorAll(".ws-group"), function (fig) {
      var gid = fig.getAttribute("data-group");
      var png = fig.querySelector(".ws-png"), reset = fig.querySelector(".ws-reset");
      if (png) png.addEventListener("click", function () { download(gid); });
      if (reset) reset.addEventListener("click", function () { resetZoom(gid); });
    });
    Array.prototype.forEach.call(document.querySelectorAll(".ws-zoom"), function (btn) {
      btn.addEventListener("click", function () {
        var id = btn.getAttribute("data-mark");
        (DATA.groups || []).some(function (g) {
          var m = null;
          g.charts.some(function (cid) {
            m = DATA.charts[cid].marks.filter(function (k) { return k.id === id; })[0] || null;
            return !!m;
          });
          if (m) {
            zoomTo(g.id, m);
            var fig = document.querySelector('.ws-group[data-group="' + g.id + '"]');
            if (fig && fig.scrollIntoView) fig.scrollIntoView({ block: "start" });
          }
          return !!m;
        });
      });
    });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () {
        Object.keys(plots).forEach(function (cid) {
          var u = plots[cid];
          u.setSize({ width: chartWidth(u.root.parentNode), height: u.wsSpec.height });
        });
      }, 100);
    });
  }

  try { build(); } catch (err) { fail("build", err); }
  window.whyspikeReport = { plots: plots, groups: byGroup, groupPng: groupPng, zoomTo: zoomTo, fmt: fmt };
  document.documentElement.setAttribute("data-ws-errors", String(errors));
  document.documentElement.setAttribute("data-ws-ready", "1");
})();
