// The safetensors format (8-byte little-endian header length, JSON header, raw data), read with
// every offset and size checked: a malformed file is an error, never a crash or a wrong tensor.
import { constants } from 'buffer';
import { promises as fs, rmSync } from 'fs';
import * as path from 'path';
import { threadId } from 'worker_threads';

import { binding } from './binding';
import { checkFile, checkObject, describe, errorFrom, rangeError, typeError } from './errors';
import { atExit } from './exitActions';
import { describeStart, makeFolder, openRegular } from './folders';
import { holderAlive, sameTask, taskOf, taskTag, thisTask } from './holders';
import { Tensor, handleOf, type DType, type TypedArray } from './tensor';

const DTYPES: Record<string, { dtype: DType; bytes: number; array: new (b: ArrayBuffer, o: number, n: number) => TypedArray }> = {
  F32: { dtype: 'float32', bytes: 4, array: Float32Array },
  F64: { dtype: 'float64', bytes: 8, array: Float64Array },
  I32: { dtype: 'int32', bytes: 4, array: Int32Array },
  I64: { dtype: 'int64', bytes: 8, array: BigInt64Array },
  U8: { dtype: 'uint8', bytes: 1, array: Uint8Array },
};
const CODES = Object.fromEntries(Object.entries(DTYPES).map(([code, d]) => [d.dtype, code])) as Record<DType, string>;

// Headers beyond this are not model files but attacks or corruption.
const MAX_HEADER_BYTES = 100 * 2 ** 20;

export class SafetensorsError extends Error {
  constructor(file: string, problem: string) {
    super(`${file}: not a valid safetensors file: ${problem}`);
    this.name = 'SafetensorsError';
  }
}

export interface SafetensorsContent {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

type Fail = (problem: string) => never;

const failer = (file: string): Fail => (problem) => {
  throw new SafetensorsError(file, problem);
};

/**
 * The header's length, checked against the bytes that follow it in a file of `fileBytes`; `head` is the file's
 * start (8 bytes or more: what a file of something else holds is said from them).
 */
function headerLengthOf(head: Uint8Array, fileBytes: number, fail: Fail): number {
  if (fileBytes < 8) fail(`${fileBytes} bytes, shorter than the 8-byte header length`);
  const headerLength = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(fileBytes - 8) || headerLength > BigInt(MAX_HEADER_BYTES)) {
    const start = Buffer.from(head.buffer, head.byteOffset, Math.min(head.byteLength, 64));
    const kind = OTHER_FORMATS.find(([magic]) => start.subarray(0, magic.length).equals(magic))?.[1];
    fail(`header length ${headerLength} is beyond the file's ${fileBytes - 8} remaining bytes (${kind ?? describeStart(start)})`);
  }
  return Number(headerLength);
}

// What is given for a safetensors file by mistake, said by name (a JPEG read as "its first bytes are ff d8 ff").
const OTHER_FORMATS: ReadonlyArray<[Buffer, string]> = [
  [Buffer.from([0xff, 0xd8, 0xff]), 'it is a JPEG image'],
  [Buffer.from('\x89PNG', 'latin1'), 'it is a PNG image'],
  [Buffer.from('PK\x03\x04', 'latin1'), "it is a zip archive: PyTorch's torch.save format (.pt, .pth)? Save a state dict with safetensors.torch.save_file"],
  [Buffer.from([0x80, 0x02]), "it is a Python pickle: PyTorch's legacy torch.save format? Save a state dict with safetensors.torch.save_file"],
];

/** A JSON object's top-level keys in their order, each as often as the text gives it (JSON.parse keeps the last). */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      let next = end + 1;
      while (text[next] === ' ' || text[next] === '\t' || text[next] === '\n' || text[next] === '\r') next++;
      if (depth === 1 && text[next] === ':') keys.push(JSON.parse(text.slice(i, end + 1)) as string);
      i = end;
    } else if (c === '{' || c === '[') {
      depth++;
    } else if (c === '}' || c === ']') {
      depth--;
    }
  }
  return keys;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The JSON header as an object, and its string metadata. */
function parseHeader(json: Uint8Array, fail: Fail): { header: Record<string, unknown>; metadata: Record<string, string> } {
  let text = '';
  try {
    text = utf8.decode(json);
  } catch {
    fail('header is not valid UTF-8 (a name or metadata would read as U+FFFD)');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    fail(`header is not JSON (${(err as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  // JSON.parse keeps a name's last entry: a file naming a tensor twice is not one reader reads like another.
  const keys = topLevelKeys(text);
  if (keys.length !== Object.keys(header as object).length) {
    const seen = new Set<string>();
    const twice = keys.find((k) => seen.size === seen.add(k).size);
    fail(`header names '${twice}' twice`);
  }
  const metadata: Record<string, string> = Object.create(null); // a '__proto__' key kept as a key
  const entry = (header as Record<string, unknown>).__metadata__;
  if (entry !== undefined) {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('__metadata__ is not an object');
    for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
      if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
      metadata[k] = v as string;
    }
  }
  return { header: header as Record<string, unknown>, metadata };
}

interface Span {
  name: string;
  kind: (typeof DTYPES)[string];
  shape: number[];
  begin: number;
  end: number;
}

/** The tensors of a header, each checked, and checked to tile the `dataLength`-byte data section exactly. */
function spansOf(header: Record<string, unknown>, dataLength: number, fail: Fail): Span[] {
  const spans: Span[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`tensor '${name}' is ${describe(entry)}, not an object`);
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const kind = typeof e.dtype === 'string' && Object.hasOwn(DTYPES, e.dtype) ? DTYPES[e.dtype] : undefined;
    if (!kind) fail(`tensor '${name}' has unknown dtype ${describe(e.dtype)} (pirl reads ${Object.keys(DTYPES).join(', ')})`);
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`tensor '${name}' has shape ${describe(shape)}, not a list of non-negative integers`);
    }
    const offsets = e.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(`tensor '${name}' has data_offsets ${describe(offsets)}, not [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`tensor '${name}' spans bytes [${begin}, ${end}) of a ${dataLength}-byte data section`);
    // What the header describes and the bytes do not hold: most often a copy or a download cut short.
    if (end > dataLength) fail(`tensor '${name}' spans bytes [${begin}, ${end}) of a ${dataLength}-byte data section: the file looks cut short (${end - dataLength} byte(s) missing)`);
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    if (numel * kind!.bytes !== end - begin) {
      fail(`tensor '${name}' of shape [${(shape as number[]).join(', ')}] needs ${numel * kind!.bytes} bytes, its offsets give ${end - begin}`);
    }
    spans.push({ name, kind: kind!, shape: shape as number[], begin, end });
  }
  // As the reference implementation requires: the tensors' bytes tile the data section exactly (an
  // empty tensor takes no bytes, wherever it points).
  const filled = spans.filter(({ begin, end }) => end > begin).sort((a, b) => a.begin - b.begin);
  let covered = 0;
  for (const { begin, end, name } of filled) {
    if (begin < covered) fail(`tensor '${name}' overlaps the tensor before it (bytes [${begin}, ${end}) from ${covered})`);
    if (begin > covered) fail(`bytes [${covered}, ${begin}) of the data section belong to no tensor`);
    covered = end;
  }
  if (covered !== dataLength) fail(`${dataLength - covered} bytes after the last tensor (the header accounts for ${covered} of ${dataLength})`);
  return spans;
}

/** Parses safetensors bytes (a Uint8Array or Buffer); `file` names the source in errors. */
export function parseSafetensors(bytes: Uint8Array, file = 'buffer'): SafetensorsContent {
  // Bytes only: a Float32Array was sliced in elements (other bytes parsed, silently), an ArrayBuffer failed in DataView.
  if (!(bytes instanceof Uint8Array)) throw typeError('bytes', 'a Uint8Array or Buffer', bytes);
  const fail = failer(file);
  const headerLength = headerLengthOf(bytes, bytes.byteLength, fail);
  const dataStart = 8 + headerLength;
  const { header, metadata } = parseHeader(bytes.subarray(8, dataStart), fail);
  const tensors = new Map<string, Tensor>();
  for (const { name, kind, shape, begin, end } of spansOf(header, bytes.byteLength - dataStart, fail)) {
    const at = bytes.byteOffset + dataStart + begin;
    const numel = (end - begin) / kind.bytes;
    // Zero copy when the data is aligned for its typed array; otherwise a copy.
    const data = at % kind.bytes === 0
      ? new kind.array(bytes.buffer as ArrayBuffer, at, numel)
      : new kind.array(new Uint8Array(bytes.subarray(dataStart + begin, dataStart + end)).buffer, 0, numel);
    tensors.set(name, Tensor.from(data, shape));
  }
  return { tensors, metadata };
}

/**
 * Reads a safetensors file: only a regular file (a device like /dev/zero would never end). Each tensor
 * is read natively into its own memory, off the JavaScript thread: any size (not only what one Node
 * buffer holds), one copy.
 */
export async function readSafetensors(file: string): Promise<SafetensorsContent> {
  checkFile('file', file);
  const fail = failer(file);
  const handle = await openSafetensors(file);
  try {
    const { size } = await handle.stat();
    const { header, metadata, dataStart } = await readHeader(handle, size, fail);
    const spans = spansOf(header, size - dataStart, fail);
    const read = await binding.readTensors(handle.fd, file, spans.map(({ name, kind, shape, begin }) => ({
      what: `tensor '${name}'`, offset: dataStart + begin, dtype: kind.dtype, shape,
    })));
    return { tensors: new Map(spans.map(({ name }, i) => [name, new Tensor(read[i])])), metadata };
  } finally {
    await handle.close();
  }
}

/** The header of an open file of `size` bytes: the tensors' entries, the metadata, where the data starts. */
async function readHeader(handle: fs.FileHandle, size: number, fail: Fail): Promise<ReturnType<typeof parseHeader> & { dataStart: number }> {
  const head = Buffer.alloc(64);
  await handle.read(head, 0, Math.min(64, size), 0);
  const headerLength = headerLengthOf(head.subarray(0, Math.max(8, Math.min(64, size))), size, fail);
  const json = Buffer.alloc(headerLength);
  const { bytesRead } = await handle.read(json, 0, headerLength, 8);
  if (bytesRead < headerLength) fail(`ended after ${8 + bytesRead} bytes, inside its header (it shrank while being read)`);
  return { ...parseHeader(json, fail), dataStart: 8 + headerLength };
}

async function openSafetensors(file: string): Promise<fs.FileHandle> {
  return openRegular(file, () => new SafetensorsError(file, 'not a regular file')).catch(async (err: NodeJS.ErrnoException) => {
    if (await fs.stat(file).then((s) => s.isDirectory(), () => false)) {
      // A run's folder given for its model or its checkpoint: the files in it are named, with what each is.
      const inside = [['model.safetensors', 'the model'], ['checkpoint.safetensors', "the run's checkpoint"]].map(([f, what]) => ({ file: path.join(file, f), what }));
      const found = (await Promise.all(inside.map(async (f) => ((await fs.stat(f.file).then((s) => s.isFile(), () => false)) ? f : null)))).filter((f) => f !== null);
      const hint = found.length === 0 ? '' : `: give ${found.map((f) => (found.length > 1 ? `${f.file} (${f.what})` : f.file)).join(' or ')}`;
      throw new SafetensorsError(file, `a folder, not a file${hint}`);
    }
    if (err instanceof SafetensorsError) throw err;
    throw errorFrom(err.code === 'ENOENT' ? `${file}: no such file` : `${file}: cannot be read: ${err.message}`, err);
  });
}

/** How errors name metadata entry `key` of `file`. */
export const metadataField = (file: string, key: string): string => `${file}: metadata "${key}"`;

/** Metadata entry `key` parsed as JSON (undefined when absent); an error naming the file and the entry when it is not JSON. */
export function parsedMetadata(file: string, metadata: Record<string, string>, key: string): unknown {
  const text = metadata[key];
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new TypeError(`${metadataField(file, key)} is not JSON (${(err as Error).message})`);
  }
}

/** Metadata entry `key` parsed as a JSON object (undefined when absent), as parsedMetadata; an error when it is not an object. */
export function jsonMetadata(file: string, metadata: Record<string, string>, key: string): Record<string, unknown> | undefined {
  const parsed = parsedMetadata(file, metadata, key);
  return parsed === undefined ? undefined : checkObject(metadataField(file, key), parsed);
}

/** The metadata of a safetensors file, reading its header only (not the tensors). */
export async function readSafetensorsMetadata(file: string): Promise<Record<string, string>> {
  checkFile('file', file);
  const handle = await openSafetensors(file);
  try {
    return (await readHeader(handle, (await handle.stat()).size, failer(file))).metadata;
  } finally {
    await handle.close();
  }
}

// What a writer is given, checked as the readers check a file: a file they would refuse is never written.
function namedTensors(tensors: unknown): Array<[string, Tensor]> {
  const expected = 'named tensors: a Map or an array of [name, Tensor] pairs';
  if (typeof (tensors as Iterable<unknown> | null)?.[Symbol.iterator] !== 'function' || typeof tensors === 'string') throw typeError('tensors', expected, tensors);
  const names = new Set<string>();
  return [...(tensors as Iterable<unknown>)].map((entry, i) => {
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== 'string') throw typeError(`tensors[${i}]`, 'a [name, Tensor] pair', entry);
    const [name, tensor] = entry as [string, Tensor];
    if (name === '__metadata__') throw rangeError(`tensors[${i}]'s name`, 'a name other than __metadata__ (the header\'s metadata)', name);
    if (names.has(name)) throw rangeError(`tensors[${i}]'s name`, 'a name no other tensor has', name);
    names.add(name);
    return [name, tensor];
  });
}

function checkMetadata(metadata: unknown): Record<string, string> {
  checkObject('metadata', metadata);
  for (const [key, value] of Object.entries(metadata as Record<string, unknown>)) {
    if (typeof value !== 'string') throw typeError(`metadata.${key}`, 'a string (safetensors metadata holds strings only)', value);
  }
  return metadata as Record<string, string>;
}

// A file's header (length and JSON) for tensors sorted by name, as the reference writer sorts them.
function headerOf(tensors: Iterable<[string, Tensor]>, metadata: Record<string, string>): { head: Buffer; entries: Array<[string, Tensor]>; dataBytes: number } {
  const entries = namedTensors(tensors).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  // Without a prototype: a tensor named '__proto__' set the object's prototype, and the file then lacked it.
  const header: Record<string, unknown> = Object.assign(Object.create(null), { __metadata__: checkMetadata(metadata) });
  let offset = 0;
  for (const [name, tensor] of entries) {
    handleOf(`tensor '${name}'`, tensor);
    const bytes = tensor.nbytes;
    header[name] = { dtype: CODES[tensor.dtype], shape: tensor.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // data section 8-byte aligned
  const head = Buffer.alloc(8 + Buffer.byteLength(json));
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  head.write(json, 8, 'utf8');
  return { head, entries, dataBytes: offset };
}

/** Serialises named tensors with `metadata` into one buffer (at most 4 GiB on Node 20: writeSafetensors writes any size); names in sorted order. */
export function serializeSafetensors(tensors: Iterable<[string, Tensor]>, metadata: Record<string, string> = {}): Buffer {
  const { head, entries, dataBytes } = headerOf(tensors, metadata);
  if (head.length + dataBytes > constants.MAX_LENGTH) {
    throw new RangeError(`the tensors take ${((head.length + dataBytes) / 2 ** 30).toFixed(1)} GiB: more than one Node buffer holds (${constants.MAX_LENGTH / 2 ** 30} GiB); writeSafetensors writes a file of any size`);
  }
  return Buffer.concat([head, ...entries.map(([, t]) => {
    const d = t.data();
    return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  })]);
}

/** Where process `pid` writes `file` before renaming it into place (atomic writes: checkpoints, the decode cache). */
let temporaries = 0;

/**
 * A new temporary file name beside `file`, for one write: two writes of the same file at once (a periodic save and an
 * asked one, two worker threads) each have their own (one shared name mixed their bytes). It names the pid, then the
 * thread's task (holders.ts): a Worker terminated mid-write leaves one that its process's later writers remove.
 */
export const temporaryFor = (file: string): string =>
  path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${taskTag() || `thread${threadId}`}-${++temporaries}.tmp`);

/**
 * `file` replaced whole or not at all: `write` fills a temporary file beside it, renamed onto it. The temporary is
 * removed if the write fails, or if this process quits meanwhile.
 */
export async function writeViaTemporary(file: string, write: (tmp: string) => Promise<void>): Promise<void> {
  // The rename would replace a FIFO or a device with the file (as root, /dev/null itself).
  const existing = await fs.stat(file).catch(() => null);
  if (existing && !existing.isFile()) {
    const kind = existing.isDirectory() ? 'a folder' : existing.isFIFO() ? 'a FIFO' : existing.isSocket() ? 'a socket' : 'a device';
    throw new Error(`cannot write ${file}: it is ${kind}, not a regular file: give the path of a file to write`);
  }
  const tmp = temporaryFor(file);
  const forget = atExit(() => rmSync(tmp, { force: true }));
  try {
    await write(tmp); // its errors are the caller's to name
    // In the try: a failed rename leaves no temporary file behind.
    await fs.rename(tmp, file).catch((err: Error) => Promise.reject(errorFrom(`cannot write ${file}: ${err.message}`, err)));
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  } finally {
    forget();
  }
}

/** `bytes` written to `file` atomically (a temporary file, then a rename): a failed write leaves the old file whole. */
export async function writeFileAtomically(file: string, bytes: string | Uint8Array): Promise<void> {
  await writeViaTemporary(file, (tmp) => fs.writeFile(tmp, bytes).catch((err: Error) => Promise.reject(errorFrom(`cannot write ${file}: ${err.message}`, err))));
}

/** The folder `file` goes in, made where missing; an error names `file` when it cannot be. */
export async function makeFolderFor(file: string): Promise<void> {
  try {
    await makeFolder(path.dirname(path.resolve(file)));
  } catch (err) {
    throw errorFrom(`cannot write ${file}: ${(err as Error).message}`, err);
  }
}

/**
 * Writes atomically: a temporary file in the same folder (made where missing), then a rename. The
 * tensors' bytes are written natively from their own memory, off the JavaScript thread: no copy of the
 * whole file (a checkpoint's bank), any size.
 */
export async function writeSafetensors(file: string, tensors: Iterable<[string, Tensor]>, metadata: Record<string, string> = {}): Promise<void> {
  checkFile('file', file);
  const { head, entries } = headerOf(tensors, metadata);
  await makeFolderFor(file);
  await writeViaTemporary(file, async (tmp) => {
    try {
      const handle = await fs.open(tmp, 'w');
      try {
        await handle.writeFile(head);
        await binding.writeTensors(handle.fd, tmp, head.length, entries.map(([, t]) => t.handle));
        await handle.sync(); // on the disk before it replaces the old file: else a crash could leave neither whole
      } finally {
        await handle.close();
      }
    } catch (err) {
      throw errorFrom(`cannot write ${file}: ${(err as Error).message}`, err);
    }
  });
  await syncFolder(path.dirname(path.resolve(file)));
}

// The rename itself made durable. Where a folder cannot be opened to sync (Windows), the file system orders it anyway.
export async function syncFolder(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r').catch(() => null);
  if (!handle) return;
  try {
    await handle.sync().catch(() => undefined);
  } finally {
    await handle.close();
  }
}

/** Removes the temporary files that writers of `file` killed mid-write left behind (their process or thread is gone). */
export async function removeStaleTemporaries(file: string): Promise<string[]> {
  const prefix = `.${path.basename(file)}.`;
  let names: string[];
  try {
    names = await fs.readdir(path.dirname(file));
  } catch {
    return []; // no folder yet: nothing was written
  }
  const removed: string[] = [];
  for (const name of names) {
    // .NAME.PID.taskTIDsSTART-N.tmp, or an older pirl's .NAME.PID.tmp and .NAME.PID.THREAD-N.tmp (no task: this process's
    // kept); not another file's (.NAME.5.safetensors.PID…tmp, of NAME.5.safetensors)
    const m = name.startsWith(prefix) ? /^(\d+)(?:\.([^.-]+)-\d+)?\.tmp$/.exec(name.slice(prefix.length)) : null;
    if (!m) continue;
    const pid = Number(m[1]), task = taskOf(m[2]);
    const own = pid === process.pid && (task === null || sameTask(task, thisTask())); // this thread's may be mid-write
    if (own || holderAlive(pid, task)) continue;
    const stale = path.join(path.dirname(file), name);
    await fs.rm(stale, { force: true });
    removed.push(stale);
  }
  return removed;
}

