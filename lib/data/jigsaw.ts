// PIRL's jigsaw transform (docs/PIRL.md, "Data"), TypeScript side: the 3×3 grid, its geometry, and
// where each patch of a batch came from. The patches are cut natively (native/core/data/jigsaw.cpp).
import { rangeError } from '../errors';

/** The grid is 3×3 cells of J/3 px; one P×P patch is cut from each. */
export const JIGSAW_CELLS = 3;
/** Patches per sample, in a shuffled order recorded in a batch's `permutations`. */
export const JIGSAW_PATCHES = JIGSAW_CELLS * JIGSAW_CELLS;

/** J a multiple of 3 and P within a cell, or a RangeError naming the option. */
export function checkJigsawGeometry(arg: string, jigsawSize: number, patchSize: number): void {
  if (jigsawSize % JIGSAW_CELLS !== 0) throw rangeError(`${arg}.jigsawSize`, 'a multiple of 3', jigsawSize);
  const cell = jigsawSize / JIGSAW_CELLS;
  if (patchSize > cell) throw rangeError(`${arg}.patchSize`, `at most jigsawSize/3 = ${cell}`, patchSize);
}

/** For patch k of sample b: the grid cell (row, column) it was cut from, given a batch's B×9 permutations. */
export function patchCell(permutations: BigInt64Array, b: number, k: number): { row: number; column: number } {
  const cell = Number(permutations[b * JIGSAW_PATCHES + k]);
  return { row: Math.floor(cell / JIGSAW_CELLS), column: cell % JIGSAW_CELLS };
}
