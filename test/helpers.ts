// Small fixtures shared by the jest suites.

/** b rows of d random values, each row scaled to unit length. */
export function unitRows(b: number, d: number): Float32Array {
  const out = new Float32Array(b * d).map(() => Math.random() - 0.5);
  for (let i = 0; i < b; i++) {
    const row = out.subarray(i * d, (i + 1) * d);
    const n = Math.hypot(...row);
    row.forEach((v, j) => (row[j] = v / n));
  }
  return out;
}
