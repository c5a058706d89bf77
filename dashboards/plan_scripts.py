"""The plan review page's browser-side behaviour (Dash clientside callbacks; inline scripts the CSP allows by hash).

- :data:`SETUP`: once the study is loaded, the mouse wheel over a view scrolls its slices (never zooms) and, in
  the window/level mouse mode, dragging over a view changes the window (right: wider, down: higher level),
  previewed at once through an SVG filter on the CT images and then rendered by the server.
- :data:`CROSSHAIR`: a click in one view moves the other two to that point; :data:`CROSSHAIRS` moves the other
  views' crosshair lines (layout shapes, relaid out in place) when a slice changes.
- :data:`FIGURES`: a new image ends the W/L preview.
- :data:`MOUSE_MODE`, :data:`WINDOW_TEXT`, :data:`MEASURE`, :data:`CLEAR_MEASURES`: the mouse mode, the W/L
  readout, the length of drawn lines.

State shared between them lives on ``window.oncopacsPlan``.
"""

from __future__ import annotations

_STATE = """
const P = window.oncopacsPlan = window.oncopacsPlan || {indices: {}, sizes: {}, pending: {}, acc: {}, timers: {},
  mode: 'wl', window: {level: 40, width: 400}, previewSource: {}};
const PLANES = ['axial', 'coronal', 'sagittal'];
"""

SETUP = """function(study) {
  const dc = window.dash_clientside;
  if (!study) { return dc.no_update; }""" + _STATE + """
  P.sizes = study.sizes;
  for (const plane of PLANES) {
    if (P.indices[plane] === undefined) { P.indices[plane] = study.start[plane]; }
  }
  const svgNS = 'http://www.w3.org/2000/svg';
  if (!document.getElementById('op-wl-filter')) {
    const svg = document.createElementNS(svgNS, 'svg');
    svg.setAttribute('width', '0'); svg.setAttribute('height', '0');
    svg.setAttribute('style', 'position:absolute;width:0;height:0;overflow:hidden');
    const filter = document.createElementNS(svgNS, 'filter');
    filter.setAttribute('id', 'op-wl-filter');
    filter.setAttribute('color-interpolation-filters', 'sRGB');
    const transfer = document.createElementNS(svgNS, 'feComponentTransfer');
    for (const channel of ['R', 'G', 'B']) {
      const f = document.createElementNS(svgNS, 'feFunc' + channel);
      f.setAttribute('type', 'linear'); f.setAttribute('slope', '1'); f.setAttribute('intercept', '0');
      transfer.appendChild(f);
    }
    filter.appendChild(transfer); svg.appendChild(filter); document.body.appendChild(svg);
  }
  const ctImage = plane => document.querySelector('#' + plane + '-graph .imagelayer image');
  const preview = (level, width) => {
    const low0 = P.window.level - P.window.width / 2, low = level - width / 2;
    const slope = P.window.width / width, intercept = (low0 - low) / width;
    document.querySelectorAll('#op-wl-filter feComponentTransfer > *').forEach(f => {
      f.setAttribute('slope', String(slope)); f.setAttribute('intercept', String(intercept));
    });
    for (const plane of PLANES) {
      const image = ctImage(plane);
      if (image) { image.style.filter = 'url(#op-wl-filter)'; P.previewSource[plane] = image.getAttribute('href'); }
    }
  };
  const scroll = plane => {
    P.timers[plane] = null;
    const size = P.sizes[plane] || 1;
    const next = Math.min(Math.max((P.indices[plane] || 1) + (P.pending[plane] || 0), 1), size);
    P.pending[plane] = 0;
    if (next !== P.indices[plane]) { P.indices[plane] = next; dc.set_props(plane + '-slider', {value: next}); }
  };
  for (const plane of PLANES) {
    const pane = document.getElementById(plane + '-pane');
    if (!pane || pane.dataset.opReady) { continue; }
    pane.dataset.opReady = '1';
    pane.addEventListener('wheel', event => {
      event.preventDefault();
      event.stopPropagation();
      const delta = event.deltaMode === 1 ? event.deltaY * 40 : event.deltaY;
      P.acc[plane] = (P.acc[plane] || 0) + delta;
      if (Math.abs(P.acc[plane]) < 40) { return; }
      P.pending[plane] = (P.pending[plane] || 0) + (P.acc[plane] > 0 ? 1 : -1);
      P.acc[plane] = 0;
      if (!P.timers[plane]) { P.timers[plane] = requestAnimationFrame(() => scroll(plane)); }
    }, {passive: false, capture: true});
    pane.addEventListener('mousedown', event => {
      const onImage = event.target.closest && event.target.closest('#' + plane + '-graph .js-plotly-plot');
      if (P.mode !== 'wl' || event.button !== 0 || !onImage) { return; }
      const start = {x: event.clientX, y: event.clientY, level: P.window.level, width: P.window.width};
      let moved = false, level = start.level, width = start.width;
      const move = e => {
        const dx = e.clientX - start.x, dy = e.clientY - start.y;
        if (!moved && Math.abs(dx) + Math.abs(dy) < 4) { return; }
        moved = true;
        width = Math.max(1, start.width * Math.pow(2, dx / 150));
        level = start.level + dy * start.width / 300;
        preview(level, width);
      };
      const up = () => {
        document.removeEventListener('mousemove', move, true);
        document.removeEventListener('mouseup', up, true);
        if (moved) {
          P.lastDrag = Date.now();  // plotly reports the release as a click: not a crosshair move
          dc.set_props('window', {data: {level: Math.round(level), width: Math.max(1, Math.round(width))}});
          dc.set_props('window-preset', {value: 'custom'});
        }
      };
      document.addEventListener('mousemove', move, true);
      document.addEventListener('mouseup', up, true);
    }, true);
  }
  return study.study_uid;
}"""

CROSSHAIRS = """function(axial, coronal, sagittal, study) {""" + _STATE + """
  P.indices = {axial: axial, coronal: coronal, sagittal: sagittal};
  const changed = (window.dash_clientside.callback_context.triggered || []).map(t => t.prop_id);
  if (!study || changed.includes('study.data')) { return [axial, coronal, sagittal]; }
  const g = study.grid;
  const x = g.origin[0] + (sagittal - 1) * g.spacing[0], y = g.origin[1] + (coronal - 1) * g.spacing[1];
  const z = g.origin[2] + (axial - 1) * g.spacing[2];
  const at = {axial: [x, y], coronal: [x, -z], sagittal: [y, -z]};
  const moved = PLANES.filter(plane => !changed.includes(plane + '-slider.value'));  // the server redraws the others
  clearTimeout(P.crosshairTimer);  // while the wheel turns, the slice goes first; the other views follow at a pause
  P.crosshairTimer = setTimeout(() => {
    for (const plane of moved) {
      const gd = document.querySelector('#' + plane + '-graph .js-plotly-plot');
      const shapes = gd && gd.layout && gd.layout.shapes ? gd.layout.shapes : [];
      if (!window.Plotly || shapes.length < 2 || shapes[0].name !== 'crosshair') { continue; }
      const [u, v] = at[plane];
      window.Plotly.relayout(gd, {'shapes[0].x0': u, 'shapes[0].x1': u, 'shapes[1].y0': v, 'shapes[1].y1': v});
    }
  }, 120);
  return [axial, coronal, sagittal];
}"""

CROSSHAIR = """function(axialClick, coronalClick, sagittalClick, study) {
  const dc = window.dash_clientside;
  const none = [dc.no_update, dc.no_update, dc.no_update];
  const triggered = (dc.callback_context.triggered || [])[0];
  const P = window.oncopacsPlan || {};
  if (!study || !triggered || (P.lastDrag && Date.now() - P.lastDrag < 600)) { return none; }
  const plane = triggered.prop_id.split('-graph.')[0];
  const click = {axial: axialClick, coronal: coronalClick, sagittal: sagittalClick}[plane];
  if (!click || !click.points || !click.points.length) { return none; }
  const u = click.points[0].x, v = click.points[0].y;
  const g = study.grid, counts = [g.shape[2], g.shape[1], g.shape[0]];
  const at = (axis, mm) => Math.min(Math.max(Math.round((mm - g.origin[axis]) / g.spacing[axis]), 0),
                                    counts[axis] - 1) + 1;
  if (plane === 'axial') { return [dc.no_update, at(1, v), at(0, u)]; }
  if (plane === 'coronal') { return [at(2, -v), dc.no_update, at(0, u)]; }
  return [at(2, -v), at(1, u), dc.no_update];
}"""

MOUSE_MODE = """function(mode) {""" + _STATE + """
  P.mode = mode;
  const drag = {wl: false, pan: 'pan', zoom: 'zoom', measure: 'drawline'}[mode];
  for (const plane of PLANES) {
    const gd = document.querySelector('#' + plane + '-graph .js-plotly-plot');
    if (gd && gd.layout && window.Plotly) { window.Plotly.relayout(gd, {dragmode: drag}); }
  }
  return mode;
}"""

WINDOW_TEXT = """function(win) {""" + _STATE + """
  if (!win) { return window.dash_clientside.no_update; }
  P.window = {level: win.level, width: win.width};
  return 'W ' + Math.round(win.width) + ' · L ' + Math.round(win.level) + ' HU';
}"""

FIGURES = """function(axialFigure, coronalFigure, sagittalFigure) {""" + _STATE + """
  const dc = window.dash_clientside;
  const figures = {axial: axialFigure, coronal: coronalFigure, sagittal: sagittalFigure};
  for (const plane of PLANES) {  // a new image in the W/L the drag previewed: the preview's filter goes
    const figure = figures[plane];
    const source = figure && figure.data && figure.data[0] ? figure.data[0].source : null;
    if (P.previewSource[plane] && source && source !== P.previewSource[plane]) {
      const image = document.querySelector('#' + plane + '-graph .imagelayer image');
      if (image) { image.style.filter = ''; }
      P.previewSource[plane] = null;
    }
  }
  return dc.no_update;
}"""

MEASURE = """function(axialLayout, coronalLayout, sagittalLayout) {""" + _STATE + """
  const lengths = [];
  for (const plane of PLANES) {
    const gd = document.querySelector('#' + plane + '-graph .js-plotly-plot');
    const shapes = gd && gd.layout && gd.layout.shapes ? gd.layout.shapes : [];
    for (const s of shapes) {
      if (s.type === 'line' && s.name !== 'crosshair') {
        lengths.push(plane + ' ' + Math.hypot(s.x1 - s.x0, s.y1 - s.y0).toFixed(1) + ' mm');
      }
    }
  }
  return lengths.length ? 'Length: ' + lengths.join(', ') : '';
}"""

CLEAR_MEASURES = """function(clicks) {""" + _STATE + """
  for (const plane of PLANES) {
    const gd = document.querySelector('#' + plane + '-graph .js-plotly-plot');
    if (gd && gd.layout && window.Plotly) {  // the crosshair stays
      window.Plotly.relayout(gd, {shapes: (gd.layout.shapes || []).filter(s => s.name === 'crosshair')});
    }
  }
  return '';
}"""

__all__ = ["CLEAR_MEASURES", "CROSSHAIR", "CROSSHAIRS", "FIGURES", "MEASURE", "MOUSE_MODE", "SETUP", "WINDOW_TEXT"]
