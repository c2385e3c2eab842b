/* monai-tumor series viewer: NiiVue over the display copy in display.js.
 *
 * window.monaiTumorDisplay (display.js) holds the image and label map as base64 gzipped
 * NIfTI, the lesions, segments, window presets and the display grid's voxel-to-LPS map
 * (4x4, computed by the Python package: no orientation maths here).
 * window.monaiTumorViewer is the page's API (used by the browser tests):
 *   ready       Promise resolved once both volumes are shown
 *   nv          the Niivue instance
 *   gotoLesion(n)   move the crosshair to the voxel nearest lesion n's centroid (1-based)
 *   state()     {mm (RAS), voxel (display grid), sourceVoxel (mask.nii.gz), lps} of the crosshair
 *   setLayout(name), setPreset(i), setOpacity(x), setLabelVisible(number, bool)
 */
(function () {
  "use strict";
  var D = window.monaiTumorDisplay;
  var api = { ready: null, nv: null };
  window.monaiTumorViewer = api;
  var message = document.getElementById("message");

  function fail(text) {
    message.textContent = text;
    message.hidden = false;
  }
  var SERVE_HINT =
    " If the page was opened from a file, run `monai-tumor report serve OUT` (OUT = the run's" +
    " output folder) and open the address it prints.";
  if (!D) {
    fail("display.js did not load: this folder is incomplete (rerun the batch)." + SERVE_HINT);
    api.ready = Promise.reject(new Error("no display data"));
    return;
  }
  if (typeof niivue === "undefined") {
    fail("NiiVue (viewer-assets/niivue.umd.js) did not load." + SERVE_HINT);
    api.ready = Promise.reject(new Error("no niivue"));
    return;
  }
  if (!document.createElement("canvas").getContext("webgl2")) {
    fail(
      "This browser offers no WebGL2, which the 3D viewer needs: enable hardware acceleration" +
        " (or WebGL) in the browser's settings, or use a current Chrome, Edge or Firefox." +
        SERVE_HINT
    );
    api.ready = Promise.reject(new Error("no webgl2"));
    return;
  }

  var LAYOUTS = [
    ["all", "3 planes + 3D"],
    ["axial", "axial"],
    ["coronal", "coronal"],
    ["sagittal", "sagittal"],
    ["render", "3D"],
  ];
  var visible = {};
  D.segments.forEach(function (s) {
    visible[s.number] = true;
  });

  function labelLut() {
    var lut = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
    D.segments.forEach(function (s) {
      lut.R.push(s.rgb[0]);
      lut.G.push(s.rgb[1]);
      lut.B.push(s.rgb[2]);
      lut.A.push(visible[s.number] ? 255 : 0);
      lut.I.push(s.number);
      lut.labels.push(s.label);
    });
    return lut;
  }

  function matVec(m, v) {
    return [0, 1, 2].map(function (r) {
      return m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2] + m[r][3];
    });
  }

  function fmt(x, digits) {
    return x === null || x === undefined ? "" : Number(x).toFixed(digits);
  }

  async function start() {
    var nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1],
      show3Dcrosshair: true,
      isRadiologicalConvention: true,
      isOrientationTextVisible: true,
      crosshairColor: [0.3, 0.8, 1, 1],
      multiplanarShowRender: niivue.SHOW_RENDER ? niivue.SHOW_RENDER.ALWAYS : 1,
      logLevel: "error",
    });
    api.nv = nv;
    await nv.attachToCanvas(document.getElementById("gl"));
    var image = await niivue.NVImage.loadFromBase64({ base64: D.image, name: "image.nii.gz" });
    var labels = await niivue.NVImage.loadFromBase64({
      base64: D.labels,
      name: "labels.nii.gz",
      opacity: 0.6,
    });
    labels.setColormapLabel(labelLut());
    nv.addVolume(image);
    nv.addVolume(labels);
    nv.setInterpolation(true); // nearest neighbour: every voxel as stored
    api.image = image;
    nv.onLocationChange = showWhere;
    buildControls(nv, image, labels);
    setPreset(0);
    setLayout("all");
    if (D.lesions.length) {
      gotoLesion(D.lesions[0].index);
    }
    return api;
  }

  function state() {
    // NiiVue's world space is RAS mm; the display grid's voxel comes from the inverse
    // affine computed by the package (display.js), rounded to the nearest voxel centre.
    var nv = api.nv;
    var mm = Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3);
    var vox = matVec(D.ras_to_voxel, mm).map(function (v) {
      return Math.round(v);
    });
    return {
      mm: mm,
      voxel: vox,
      sourceVoxel: vox.map(function (v, a) {
        return v * D.steps[a];
      }),
      lps: matVec(D.voxel_to_lps, vox),
    };
  }

  function showWhere() {
    var s = state();
    var where = document.getElementById("where");
    where.textContent =
      "voxel " + s.sourceVoxel.join(", ") + " of mask.nii.gz; LPS " +
      s.lps.map(function (v) {
        return v.toFixed(1);
      }).join(", ") + " mm";
  }

  function gotoLesion(index) {
    var lesion = D.lesions.find(function (l) {
      return l.index === index;
    });
    if (!lesion) {
      throw new Error("no lesion " + index);
    }
    var nv = api.nv;
    nv.scene.crosshairPos = nv.mm2frac(lesion.display_ras_mm);
    nv.drawScene();
    nv.createOnLocationChange();
    showWhere();
    document.querySelectorAll("#lesions tr.lesion").forEach(function (tr) {
      tr.classList.toggle("current", Number(tr.dataset.lesion) === index);
    });
  }

  function setLayout(name) {
    var nv = api.nv;
    var types = {
      all: nv.sliceTypeMultiplanar,
      axial: nv.sliceTypeAxial,
      coronal: nv.sliceTypeCoronal,
      sagittal: nv.sliceTypeSagittal,
      render: nv.sliceTypeRender,
    };
    nv.setSliceType(types[name]);
    document.querySelectorAll("#layouts button").forEach(function (b) {
      b.classList.toggle("current", b.dataset.layout === name);
    });
  }

  function setPreset(i) {
    var preset = D.presets[i];
    var image = api.image;
    if (preset.low === null || preset.high === null) {
      image.cal_min = image.robust_min;
      image.cal_max = image.robust_max;
    } else {
      image.cal_min = preset.low;
      image.cal_max = preset.high;
    }
    document.getElementById("preset").value = String(i);
    api.nv.updateGLVolume();
  }

  function setOpacity(x) {
    api.nv.setOpacity(1, Number(x));
    document.getElementById("opacity").value = String(x);
  }

  function setLabelVisible(number, on) {
    visible[number] = !!on;
    api.nv.volumes[1].setColormapLabel(labelLut());
    api.nv.updateGLVolume();
    var box = document.querySelector("#labels input[data-label='" + number + "']");
    if (box) {
      box.checked = !!on;
    }
  }

  function buildControls(nv, image, labels) {
    var layouts = document.getElementById("layouts");
    LAYOUTS.forEach(function (pair) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = pair[1];
      b.dataset.layout = pair[0];
      b.addEventListener("click", function () {
        setLayout(pair[0]);
      });
      layouts.appendChild(b);
    });
    document.getElementById("radiological").addEventListener("change", function (e) {
      nv.setRadiologicalConvention(e.target.checked);
    });
    var select = document.getElementById("preset");
    D.presets.forEach(function (p, i) {
      var o = document.createElement("option");
      o.value = String(i);
      o.textContent =
        p.low === null ? p.name : p.name + " (" + p.low + " to " + p.high + ")";
      select.appendChild(o);
    });
    select.addEventListener("change", function () {
      setPreset(Number(select.value));
    });
    document.getElementById("opacity").addEventListener("input", function (e) {
      setOpacity(e.target.value);
    });
    var box = document.getElementById("labels");
    D.segments.forEach(function (s) {
      var label = document.createElement("label");
      var input = document.createElement("input");
      input.type = "checkbox";
      input.checked = true;
      input.dataset.label = String(s.number);
      input.addEventListener("change", function () {
        setLabelVisible(s.number, input.checked);
      });
      var swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = "rgb(" + s.rgb.join(",") + ")";
      label.appendChild(input);
      label.appendChild(swatch);
      label.appendChild(
        document.createTextNode(" " + s.number + " " + s.label + (s.present ? "" : " (none)"))
      );
      box.appendChild(label);
    });
    var table = document.getElementById("lesions");
    var head = document.createElement("tr");
    ["#", "label", "mL", "3D mm", "axial mm", "centroid LPS mm", "edge"].forEach(function (h) {
      var th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    });
    table.appendChild(head);
    if (!D.lesions.length) {
      var empty = document.createElement("tr");
      empty.innerHTML = "<td colspan='7'>no lesion</td>";
      table.appendChild(empty);
    }
    D.lesions.forEach(function (l) {
      var tr = document.createElement("tr");
      tr.className = "lesion";
      tr.dataset.lesion = String(l.index);
      [
        l.index,
        l.label === null ? "any" : l.label,
        fmt(l.volume_ml, 3),
        fmt(l.diameter_3d_mm, 1),
        fmt(l.diameter_axial_mm, 1),
        (l.centroid_lps_mm || []).map(function (v) {
          return fmt(v, 1);
        }).join(", "),
        l.at_edge ? "yes" : "",
      ].forEach(function (v) {
        var td = document.createElement("td");
        td.textContent = String(v);
        tr.appendChild(td);
      });
      tr.addEventListener("click", function () {
        gotoLesion(l.index);
      });
      table.appendChild(tr);
    });
  }

  api.gotoLesion = gotoLesion;
  api.state = state;
  api.setLayout = setLayout;
  api.setPreset = setPreset;
  api.setOpacity = setOpacity;
  api.setLabelVisible = setLabelVisible;
  api.ready = start().catch(function (e) {
    fail("The viewer could not start: " + e + "." + SERVE_HINT);
    throw e;
  });
})();
