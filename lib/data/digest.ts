// What identifies a data set's samples, row by row: the ranks of a run compare it (lib/train/rendezvous.ts),
// and a checkpoint keeps it, so that a resumed run's bank rows still belong to their images.
import { createHash } from 'crypto';
import { ArrayDataset, Subset, type Dataset } from './datasets';
import { ImageFolder, relativeTo, sampleFiles, type FolderRead } from './imageFolder';

export interface DataDigest {
  size: number;
  /** Digests (16 hex digits of SHA-256) of the labels and of a folder's file names; 'none' / 'not a folder'. */
  labels: string;
  files: string;
  /** The samples as stored, H×W×C ('64×64×3': a folder's stored side), or 'unknown' (a Dataset of one's own; absent before format 5: null). */
  images: string | null;
  /** How a folder was read (its layout, recursive or not); null for other data sets (and before this field). */
  read: FolderRead | null;
}

// Fed piece by piece: ten million names joined would pass V8's longest string.
function sha(pieces: Iterable<string | Uint8Array>): string {
  const hash = createHash('sha256');
  for (const piece of pieces) hash.update(piece);
  return hash.digest('hex').slice(0, 16);
}

// Each sample's file relative to its folder (the same images under another mount point, on another host, or another
// spelling of the path are the same), for a folder or a subset of one; null for samples that are no files.
function relativeNames(dataset: Dataset): ((i: number) => string) | null {
  const samples = sampleFiles(dataset);
  if (!samples) return null;
  const relative = relativeTo(samples.folder.dir);
  return (i) => relative(samples.file(i));
}

function* lines(count: number, line: (i: number) => string): Iterable<string> {
  for (let i = 0; i < count; i++) yield `${line(i)}\n`;
}

// The stored samples' shape: a folder opened at another --size trains on other pixels, with nothing else to tell.
function storedImages(dataset: Dataset): string {
  if (dataset instanceof Subset) return storedImages(dataset.base);
  if (dataset instanceof ImageFolder) return `${dataset.size}×${dataset.size}×3`;
  if (dataset instanceof ArrayDataset) return dataset.source.shape.slice(1).join('×');
  return 'unknown';
}

// A folder read otherwise (recursive, or flat and not as classes) lists other samples, or labels them otherwise. A
// subset's samples are the ones its indices pick, however its folder was read.
export function folderRead(dataset: Dataset): FolderRead | null {
  return dataset instanceof ImageFolder ? dataset.readAs : null;
}

// DataDigest.files of a data set whose samples have no file names (not a folder).
const NOT_A_FOLDER = 'not a folder';
const DIGEST = /^[0-9a-f]{16}$/;

/** Whether DataDigest.files is a folder's (its names' digest) or not; null when it is neither (a file edited by hand). */
export function folderOf(files: string): boolean | null {
  return files === NOT_A_FOLDER ? false : DIGEST.test(files) ? true : null;
}

export function dataDigest(dataset: Dataset): DataDigest {
  const labels = dataset.labels;
  const names = relativeNames(dataset);
  return {
    size: dataset.length,
    labels: labels ? sha([new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength)]) : 'none',
    files: names ? sha(lines(dataset.length, names)) : NOT_A_FOLDER,
    images: storedImages(dataset),
    read: folderRead(dataset),
  };
}
