// The validation vocabulary of the library and the CLI: argument errors with one shape everywhere
// (which argument, what was expected, what came instead), and the caller's JavaScript stack on
// errors that come back from native threads.

/** The code of the error that requiring pirl throws when its native addon does not load (the message says what to run). */
export const ADDON_NOT_LOADED = 'PIRL_ADDON_NOT_LOADED';

/** The code of an error of memory that ran out — a GPU's (CUDA's caching allocator) or the host's — from native work. */
export const OUT_OF_MEMORY = 'PIRL_OUT_OF_MEMORY';

export function isOutOfMemory(err: unknown): err is Error & { code: typeof OUT_OF_MEMORY } {
  return err instanceof Error && (err as { code?: unknown }).code === OUT_OF_MEMORY;
}

/**
 * An error saying `message` of a failure `cause` (what file it was about, what was being done): of the cause's class
 * (TypeError, RangeError, else Error), with its code (ENOENT, ENOSPC, PIRL_OUT_OF_MEMORY…) and the cause itself.
 */
export function errorFrom(message: string, cause: unknown): Error & { code?: string } {
  const Class = cause instanceof TypeError ? TypeError : cause instanceof RangeError ? RangeError : Error;
  const code = (cause as { code?: unknown } | null | undefined)?.code;
  return Object.assign(new Class(message, { cause }), typeof code === 'string' ? { code } : {});
}

/** A short, readable description of a received value for error messages. */
export function describe(value: unknown, depth = 0): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'bigint') return `${value}n`; // as JavaScript writes it: "got 3" for 3n read as the number it is not
  if (Array.isArray(value)) {
    // Three levels: a file's array nested 100,000 deep overflowed the stack ("Maximum call stack size exceeded").
    if (depth >= 3) return '[…]';
    const head = value.slice(0, 8).map((v) => describe(v, depth + 1)).join(', ');
    return `[${head}${value.length > 8 ? ', …' : ''}]`;
  }
  if (ArrayBuffer.isView(value)) {
    // A view whose memory was transferred away (postMessage, structuredClone) reads as empty: said as what it is.
    if (value.byteLength === 0 && isDetached(value.buffer)) return `${value.constructor.name} whose memory was detached (transferred away)`;
    return `${value.constructor.name}(${(value as unknown as { length?: number }).length ?? value.byteLength})`;
  }
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`;
  const name = (value as object).constructor?.name;
  return name && name !== 'Object' ? `${/^[AEIOU]/.test(name) ? 'an' : 'a'} ${name}` : 'an object';
}

// Node 20 has no ArrayBuffer.prototype.detached: a view over a detached buffer cannot be made.
export function isDetached(buffer: ArrayBufferLike): boolean {
  try {
    new Uint8Array(buffer);
    return false;
  } catch {
    return true;
  }
}

/** What an argument error carries besides its message, so callers (the CLI) can name it their way. */
export interface ArgumentErrorInfo {
  /** The argument as the library names it, e.g. 'config.loss.tau'. */
  argument: string;
  /** What it must be, e.g. 'a positive number'. */
  expected: string;
  received: unknown;
}

function argumentError<E extends Error>(make: (message: string) => E, arg: string, expected: string, received: unknown): E & ArgumentErrorInfo {
  return Object.assign(make(`${arg} must be ${expected}, got ${describe(received)}`), { argument: arg, expected, received });
}

export function typeError(arg: string, expected: string, received: unknown): TypeError & ArgumentErrorInfo {
  return argumentError((m) => new TypeError(m), arg, expected, received);
}

export function rangeError(arg: string, expected: string, received: unknown): RangeError & ArgumentErrorInfo {
  return argumentError((m) => new RangeError(m), arg, expected, received);
}

/** `arg.key` is not an option of `arg`: a TypeError listing the options there are, and the one likely meant. */
export function unknownOptionError(arg: string, key: string, known: readonly string[]): TypeError & ArgumentErrorInfo {
  const expected = `one of the options ${known.join(', ')}`;
  const near = nearest(key, known);
  return Object.assign(new TypeError(`${arg}.${key} is not an option; ${arg} takes ${known.join(', ')}${near === null ? '' : ` (did you mean ${near}?)`}`),
    { argument: `${arg}.${key}`, expected, received: key });
}

/**
 * The name of `known` that `given` likely misspells (case aside: two edits at most, one in a short name), or null.
 * Options and the CLI's flags share it.
 */
export function nearest(given: string, known: readonly string[]): string | null {
  let best: string | null = null, bestDistance = Infinity;
  for (const name of known) {
    const d = editDistance(given.toLowerCase(), name.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [name, d];
  }
  if (bestDistance <= (given.length <= 3 ? 1 : 2)) return best;
  const named = PYTORCH_NAMES[given];
  return named !== undefined && known.includes(named) ? named : null;
}

// PyTorch's names for pirl's options, too far from them to be taken for misspellings.
const PYTORCH_NAMES: Record<string, string> = { lr: 'baseLr' };

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = row;
  }
  return previous[b.length];
}

export function isArgumentError(err: unknown): err is Error & ArgumentErrorInfo {
  return err instanceof Error && typeof (err as Partial<ArgumentErrorInfo>).argument === 'string';
}

/** Bounds of a number; `integer` asks for a safe integer. Infinity and NaN are never in range. */
export interface NumberRange {
  min?: number;
  max?: number;
  minExclusive?: boolean;
  maxExclusive?: boolean;
  integer?: boolean;
}

/** 'an integer >= 1', 'a number in (0, 4]', 'a positive number', 'a finite number'… */
export function rangeText(r: NumberRange): string {
  const kind = r.integer ? 'integer' : 'number';
  const article = r.integer ? 'an' : 'a';
  if (r.min !== undefined && r.max !== undefined) {
    return `${article} ${kind} in ${r.minExclusive ? '(' : '['}${r.min}, ${r.max}${r.maxExclusive ? ')' : ']'}`;
  }
  if (r.min === 0 && r.minExclusive) return `a positive ${kind}`;
  if (r.min !== undefined) return `${article} ${kind} ${r.minExclusive ? '>' : '>='} ${r.min}`;
  if (r.max !== undefined) return `${article} ${kind} ${r.maxExclusive ? '<' : '<='} ${r.max}`;
  return r.integer ? 'an integer' : 'a finite number';
}

/** A number within `range`: TypeError for a non-number (or a non-integer where one is asked), RangeError outside the range. */
export function checkNumber(arg: string, value: unknown, range: NumberRange = {}): number {
  const expected = rangeText(range);
  if (typeof value !== 'number' || Number.isNaN(value)) throw typeError(arg, expected, value);
  if (range.integer && Number.isFinite(value) && !Number.isInteger(value)) throw typeError(arg, expected, value);
  const { min, max } = range;
  const below = min !== undefined && (range.minExclusive ? value <= min : value < min);
  const above = max !== undefined && (range.maxExclusive ? value >= max : value > max);
  if (!Number.isFinite(value) || below || above) throw rangeError(arg, expected, value);
  // 2^62 printed as an integer, refused as "an integer": said why.
  if (range.integer && !Number.isSafeInteger(value)) throw rangeError(arg, `${expected} within ±(2^53 − 1) (JavaScript's exact integers)`, value);
  return value;
}

/** A safe integer >= min (and <= max); errors name `arg`. */
export function checkInteger(arg: string, value: unknown, min: number, max?: number): number {
  return checkNumber(arg, value, { integer: true, min, max });
}

export function checkBoolean(arg: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw typeError(arg, 'a boolean', value);
  return value;
}

/** A path to read or write: a non-empty string. */
export function checkFile(arg: string, value: unknown): string {
  if (typeof value !== 'string' || value === '') throw typeError(arg, 'a file path', value);
  return value;
}

export function checkString(arg: string, value: unknown): string {
  if (typeof value !== 'string') throw typeError(arg, 'a string', value);
  return value;
}

/** "'a' or 'b'", "one of 'a', 'b', 'c'". */
export function oneOfText(allowed: readonly string[]): string {
  const quoted = allowed.map((a) => `'${a}'`);
  return quoted.length <= 2 ? quoted.join(' or ') : `one of ${quoted.join(', ')}`;
}

/** Checks that `value` is one of the `allowed` strings; errors name `arg` and list them. */
export function checkOneOf<T extends string>(arg: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) throw typeError(arg, oneOfText(allowed), value);
  return value as T;
}

/** A plain object (not null, not an array): options and metadata. */
export function checkObject(arg: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) throw typeError(arg, 'an object', value);
  return value as Record<string, unknown>;
}

/** An options object (checkObject) with no keys but `known`: a misspelt option is an error, not ignored. */
export function checkOptions(arg: string, value: unknown, known: readonly string[]): Record<string, unknown> {
  const options = checkObject(arg, value);
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw unknownOptionError(arg, key, known);
  }
  return options;
}

/** The callbacks `names` of `options`, where given, are functions (one that is not would fail later, mid-work). */
export function checkFunctions(arg: string, options: Record<string, unknown>, names: readonly string[]): void {
  for (const name of names) {
    if (options[name] !== undefined && typeof options[name] !== 'function') throw typeError(`${arg}.${name}`, 'a function', options[name]);
  }
}

/** An array whose items each pass `item` (named arg[i]), with at most `maxLength` of them. */
export function checkArrayOf<T>(arg: string, value: unknown, item: (arg: string, value: unknown) => T, maxLength = Infinity): T[] {
  if (!Array.isArray(value)) throw typeError(arg, 'an array', value);
  if (value.length > maxLength) throw rangeError(`${arg}.length`, `at most ${maxLength}`, value.length);
  return value.map((v, i) => item(`${arg}[${i}]`, v));
}

/**
 * Starts native async work and gives its errors the stack of the JavaScript caller: errors made on
 * a worker thread otherwise carry no JavaScript frames at all.
 */
export async function nativeCall<T>(start: () => Promise<T>): Promise<T> {
  const site: { stack?: string } = {};
  Error.captureStackTrace(site, nativeCall);
  try {
    return await start();
  } catch (err) {
    if (err instanceof Error && site.stack) {
      const frames = site.stack.split('\n').slice(1).join('\n');
      err.stack = `${err.name}: ${err.message}\n${frames}`;
    }
    throw err;
  }
}
