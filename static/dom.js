// Small DOM and formatting helpers. Data is only ever inserted as text.

/**
 * Create an element. `props`: `class`, `text` (textContent), `on<event>`
 * handlers, anything else becomes an attribute (true -> empty attribute,
 * null/false -> skipped). Children: nodes or strings (inserted as text).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Set textContent only when it changed (avoids needless layout work). */
export function setText(el, text) {
  const value = text == null ? '' : String(text);
  if (el.textContent !== value) el.textContent = value;
}

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

export function formatFps(fps) {
  return isNum(fps) ? fps.toFixed(1) : '—';
}

export function formatBitrate(bps) {
  return isNum(bps) ? `${(bps / 1e6).toFixed(2)} Mbit/s` : '—';
}

export function formatResolution(width, height) {
  return isNum(width) && isNum(height) && width > 0 && height > 0 ? `${width}×${height}` : '—';
}

export function formatCount(n) {
  return isNum(n) ? String(n) : '—';
}
