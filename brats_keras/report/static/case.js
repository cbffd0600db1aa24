// A case page of brats-keras: NiiVue (window.niivue, inlined above) draws the case's modalities with the
// prediction, the truth and their disagreement as label overlays. The data come from the JSON in
// <script id="brats-data">; window.bratsReport exposes them, the viewer's state and setters, and
// document.documentElement.dataset.ready turns "true" once every volume is drawn ("error" if loading failed).
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("brats-data").textContent);
  const $ = (sel) => document.querySelector(sel);
  const hex = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
  const OVERLAYS = ["prediction", "truth", "disagreement"].filter((k) => D.volumes[k]);
  const VIEWS = {
    multiplanar: () => niivue.SLICE_TYPE.MULTIPLANAR, axial: () => niivue.SLICE_TYPE.AXIAL,
    coronal: () => niivue.SLICE_TYPE.CORONAL, sagittal: () => niivue.SLICE_TYPE.SAGITTAL,
    render: () => niivue.SLICE_TYPE.RENDER,
  };
  const state = {
    modality: D.modalities[0],
    overlays: Object.fromEntries(OVERLAYS.map((k) => [k, k === (D.volumes.prediction ? "prediction" : "truth")])),
    classes: Object.fromEntries(Object.keys(D.classes).map((c) => [c, true])),
    opacity: D.opacity,
    view: "multiplanar",
  };
  const report = { ready: false, error: null, data: D, state: null, nv: null };
  window.bratsReport = report;

  // a label colour table: index i drawn in colors[i] (alpha 0 where hidden)
  function labelLut(colors, names, shown) {
    const lut = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: ["background"] };
    Object.keys(colors).forEach((k) => {
      const [r, g, b] = hex(colors[k]);
      lut.R.push(r); lut.G.push(g); lut.B.push(b); lut.A.push(shown(k) ? 255 : 0);
      lut.I.push(Number(k)); lut.labels.push(names[k]);
    });
    return lut;
  }
  const classLut = () => labelLut(D.classes, D.class_names, (k) => state.classes[k]);
  const disagreementLut = () => labelLut(D.disagreement_colors, D.disagreement_names, () => true);

  async function load() {
    const nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: false, dragAndDropEnabled: false,
      multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS, multiplanarLayout: niivue.MULTIPLANAR_TYPE.GRID,
      crosshairColor: [0.3, 1, 0.3, 1], logLevel: "error", isNearestInterpolation: true,
      isRadiologicalConvention: true, // as brats_keras.visualize draws: the patient's right on the left
    });
    report.nv = nv;
    await nv.attachToCanvas($("#viewer"));
    const images = {};
    for (const m of D.modalities) {
      const v = D.volumes.images[m];
      images[m] = await niivue.NVImage.loadFromBase64({
        base64: v.base64, name: `${m}.nii.gz`, colormap: "gray", cal_min: 0, cal_max: v.top, trustCalMinMax: true,
      });
    }
    nv.addVolume(images[state.modality]);
    const overlays = {};
    for (const k of OVERLAYS) {
      overlays[k] = await niivue.NVImage.loadFromBase64({ base64: D.volumes[k], name: `${k}.nii.gz` });
      overlays[k].setColormapLabel(k === "disagreement" ? disagreementLut() : classLut());
      nv.addVolume(overlays[k]);
    }
    report.images = images;
    report.overlays = overlays;
    setVoxel(D.focus);
    apply();
  }

  function apply() {
    const nv = report.nv;
    for (const k of OVERLAYS) {
      const vol = report.overlays[k];
      if (k !== "disagreement") vol.setColormapLabel(classLut());
      vol.opacity = state.overlays[k] ? state.opacity : 0;
    }
    nv.setSliceType(VIEWS[state.view]());
    nv.updateGLVolume();
  }

  function setModality(m) {
    const nv = report.nv, img = report.images[m], old = nv.volumes[0];
    if (!img || img === old) return;
    nv.addVolume(img);
    nv.setVolume(img, 0);
    nv.removeVolume(old);
    state.modality = m;
    apply();
  }

  // the crosshair's voxel, an index into the full volume: through world mm (NiiVue's own voxel indices are those
  // of the cropped copy turned to RAS), D.to_voxel being the inverse of the full volume's affine
  const apply4 = (m, p) => [0, 1, 2].map((r) => m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3]);
  function mm() {
    const p = report.nv.frac2mm(report.nv.scene.crosshairPos);
    return [p[0], p[1], p[2]];
  }
  const voxel = () => apply4(D.to_voxel, mm()).map(Math.round);
  function setVoxel(ijk) {
    const nv = report.nv;
    nv.scene.crosshairPos = nv.mm2frac(apply4(D.affine, ijk));
    nv.drawScene();
    showLocation();
  }
  function showLocation() {
    const [i, j, k] = voxel();
    const [x, y, z] = mm().map((v) => v.toFixed(1));
    $("#location").textContent = `voxel (${i}, ${j}, ${k}), ${x} ${y} ${z} mm`;
  }

  report.state = () => ({
    modality: state.modality, view: state.view, opacity: state.opacity, voxel: voxel(), mm: mm(),
    overlays: { ...state.overlays }, classes: { ...state.classes },
  });
  report.setVoxel = setVoxel;

  // controls: each setter goes through its control, so what the page shows and its state agree
  function bind() {
    document.querySelectorAll("input[name=modality]").forEach((el) =>
      el.addEventListener("change", () => el.checked && setModality(el.value)));
    document.querySelectorAll("input[data-overlay]").forEach((el) =>
      el.addEventListener("change", () => { state.overlays[el.dataset.overlay] = el.checked; apply(); }));
    document.querySelectorAll("input[data-class]").forEach((el) =>
      el.addEventListener("change", () => { state.classes[el.dataset.class] = el.checked; apply(); }));
    $("#opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value); apply(); });
    $("#view").addEventListener("change", (e) => { state.view = e.target.value; apply(); });
    report.nv.onLocationChange = showLocation;
  }
  function control(selector, value) {
    const el = $(selector);
    if (el.type === "checkbox" || el.type === "radio") el.checked = value === undefined ? true : value;
    else el.value = value;
    el.dispatchEvent(new Event(el.type === "range" ? "input" : "change"));
  }
  report.setModality = (m) => control(`input[name=modality][value="${m}"]`);
  report.setOverlay = (k, on) => control(`input[data-overlay="${k}"]`, on);
  report.setClass = (c, on) => control(`input[data-class="${c}"]`, on);
  report.setOpacity = (v) => control("#opacity", v);
  report.setView = (v) => control("#view", v);

  load().then(() => {
    bind();
    report.ready = true;
    document.documentElement.dataset.ready = "true";
  }).catch((err) => {
    report.error = String(err && err.stack || err);
    document.documentElement.dataset.ready = "error";
    console.error(err);
  });
})();
