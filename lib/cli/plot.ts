// A PNG of the training curves (loss per step with the epochs marked, kNN per epoch), drawn as SVG
// and rendered by sharp.
import sharp from 'sharp';

import { writeFileAtomically } from '../safetensors';

// [min, max] by a loop: spreading a long run's points into Math.min overflows the call stack.
function extent(values: readonly number[]): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return [lo, hi];
}

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

const text = (x: number, y: number, s: string, anchor = 'start', size = 12) =>
  `<text x="${x}" y="${y}" font-size="${size}" font-family="sans-serif" text-anchor="${anchor}">${s}</text>`;

/** One panel: title, axes with their ranges and names, the curve, and vertical marks at `marks` (x values). */
function panel(box: Box, title: string, xName: string, points: Array<[number, number]>, color: string, empty: string, marks: readonly number[] = []): string {
  const frame = `<rect x="${box.x}" y="${box.y}" width="${box.w}" height="${box.h}" fill="none" stroke="#999"/>` + text(box.x, box.y - 10, title, 'start', 14);
  points = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)); // one NaN made every coordinate NaN
  if (points.length === 0) return frame + text(box.x + box.w / 2, box.y + box.h / 2, empty, 'middle');
  const [x0, xMax] = extent(points.map((p) => p[0]));
  const [yMin, yMax] = extent(points.map((p) => p[1]));
  // A constant curve (every kNN 1.0) is drawn mid-panel between two distinct ticks, not between "1.000" and "1.000".
  const pad = yMax - yMin > Math.abs(yMin) * 1e-3 ? 0 : Math.abs(yMin) * 0.05 || 0.05;
  const [y0, y1] = [yMin - pad, yMax + pad];
  // One x (a single epoch's kNN) is drawn at the middle: its point, not an empty panel.
  const px = (x: number) => box.x + (xMax > x0 ? ((x - x0) / (xMax - x0)) * box.w : box.w / 2);
  const py = (y: number) => box.y + box.h - ((y - y0) / (y1 - y0)) * box.h;
  const line = points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
  // Points are dotted where few enough to tell apart: a one-point polyline draws nothing.
  const dots = points.length > 60 ? '' : points.map(([x, y]) => `<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${color}"/>`).join('');
  const shown = marks.filter((m) => m > x0 && m < xMax);
  // At most ~40 epoch marks: a long run marks every k-th epoch.
  const stride = Math.max(1, Math.ceil(shown.length / 40));
  const markLines = shown.filter((_, i) => (i + 1) % stride === 0)
    .map((m) => `<line x1="${px(m).toFixed(1)}" y1="${box.y}" x2="${px(m).toFixed(1)}" y2="${box.y + box.h}" stroke="#ddd" stroke-dasharray="3,3"/>`).join('');
  const xTicks = xMax > x0 ? text(box.x, box.y + box.h + 16, String(x0), 'start') + text(box.x + box.w, box.y + box.h + 16, String(xMax), 'end')
    : text(box.x + box.w / 2, box.y + box.h + 16, String(x0), 'middle');
  return frame + markLines +
    `<polyline fill="none" stroke="${color}" stroke-width="2" points="${line}"/>` + dots +
    text(box.x - 4, box.y + 10, y1.toPrecision(4), 'end') + text(box.x - 4, box.y + box.h, y0.toPrecision(4), 'end') + xTicks +
    text(box.x + box.w / 2, box.y + box.h + 32, xName, 'middle');
}

/**
 * Writes the curves: `loss` as (step, loss), `knn` as (epoch, top-1), `epochEnds` the step each epoch
 * ended at (dashed marks on the loss panel).
 */
export async function writeCurves(file: string, loss: Array<[number, number]>, knn: Array<[number, number]>, epochEnds: readonly number[] = []): Promise<void> {
  await writeFileAtomically(file, await sharp(Buffer.from(curvesSvg(loss, knn, epochEnds))).png().toBuffer());
}

/** The curves' SVG (writeCurves' drawing, before it is rendered). */
export function curvesSvg(loss: Array<[number, number]>, knn: Array<[number, number]>, epochEnds: readonly number[] = []): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="800" height="340">
  <rect width="800" height="340" fill="white"/>
  ${panel({ x: 70, y: 40, w: 310, h: 240 }, 'training loss', `step${epochEnds.length ? ' (dashed: end of an epoch)' : ''}`, loss, '#1f77b4', 'no steps yet', epochEnds)}
  ${panel({ x: 470, y: 40, w: 310, h: 240 }, 'weighted kNN top-1', 'epoch', knn, '#d62728', 'no kNN: --knn-every N (labeled data)')}
</svg>`;
}
