// What identifies a data set's samples, row by row: the ranks of a run compare it (lib/train/rendezvous.ts),
// and a checkpoint keeps it, so that a resumed run's bank rows still belong to their images.
import { createHash } from 'crypto';
import * as path from 'path';
import type { Dataset } from './datasets';
import { ImageFolder } from './imageFolder';

export interface DataDigest {
  size: number;
  /** Digests (16 hex digits of SHA-256) of the labels and of a folder's file names; 'none' / 'not a folder'. */
  labels: string;
  files: string;
}

// Fed piece by piece: ten million names joined would pass V8's longest string.
function sha(pieces: Iterable<string | Uint8Array>): string {
  const hash = createHash('sha256');
  for (const piece of pieces) hash.update(piece);
  return hash.digest('hex').slice(0, 16);
}

function* relativeNames(folder: ImageFolder): Iterable<string> {
  // Relative to the folder: the same images under another mount point (another host) or spelling of the path are the same.
  for (const file of folder.files) yield `${path.relative(folder.dir, file)}\n`;
}

export function dataDigest(dataset: Dataset): DataDigest {
  const labels = dataset.labels;
  return {
    size: dataset.length,
    labels: labels ? sha([new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength)]) : 'none',
    files: dataset instanceof ImageFolder ? sha(relativeNames(dataset)) : 'not a folder',
  };
}
