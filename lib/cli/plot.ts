// A PNG of the training curves (loss per step, kNN per epoch), drawn as SVG and rendered by sharp.
import sharp from 'sharp';

// [min, max] by a loop: spreading a long run's points into Math.min overflows the call stack.
function extent(values: readonly number[]): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return [lo, hi];
}

function polyline(points: Array<[number, number]>, box: { x: number; y: number; w: number; h: number }, color: string): string {
  if (points.length === 0) return '';
  const [x0, xMax] = extent(points.map((p) => p[0]));
  const [y0, yMax] = extent(points.map((p) => p[1]));
  const [x1, y1] = [Math.max(xMax, x0 + 1e-9), Math.max(yMax, y0 + 1e-9)];
  const path = points
    .map(([x, y]) => `${(box.x + ((x - x0) / (x1 - x0)) * box.w).toFixed(1)},${(box.y + box.h - ((y - y0) / (y1 - y0)) * box.h).toFixed(1)}`)
    .join(' ');
  return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${path}"/>` +
    `<text x="${box.x}" y="${box.y - 6}" font-size="12" font-family="sans-serif">${y1.toPrecision(4)}</text>` +
    `<text x="${box.x}" y="${box.y + box.h + 14}" font-size="12" font-family="sans-serif">${y0.toPrecision(4)}</text>`;
}

export async function writeCurves(file: string, loss: Array<[number, number]>, knn: Array<[number, number]>): Promise<void> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="800" height="320">
  <rect width="800" height="320" fill="white"/>
  <text x="40" y="20" font-size="14" font-family="sans-serif">loss per step</text>
  <text x="440" y="20" font-size="14" font-family="sans-serif">weighted kNN top-1 per epoch</text>
  <rect x="40" y="40" width="340" height="240" fill="none" stroke="#ccc"/>
  <rect x="440" y="40" width="340" height="240" fill="none" stroke="#ccc"/>
  ${polyline(loss, { x: 40, y: 40, w: 340, h: 240 }, '#1f77b4')}
  ${polyline(knn, { x: 440, y: 40, w: 340, h: 240 }, '#d62728')}
</svg>`;
  await sharp(Buffer.from(svg)).png().toFile(file);
}
