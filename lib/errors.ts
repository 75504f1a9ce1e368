// Argument errors with one shape everywhere: which argument, what was expected, what came instead;
// and the caller's JavaScript stack on errors that come back from native threads.

/** A short, readable description of a received value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) {
    const head = value.slice(0, 8).map(describe).join(', ');
    return `[${head}${value.length > 8 ? ', …' : ''}]`;
  }
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as unknown as { length?: number }).length ?? value.byteLength})`;
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`;
  const name = (value as object).constructor?.name;
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}

export function typeError(arg: string, expected: string, received: unknown): TypeError {
  return new TypeError(`${arg} must be ${expected}, got ${describe(received)}`);
}

export function rangeError(arg: string, expected: string, received: unknown): RangeError {
  return new RangeError(`${arg} must be ${expected}, got ${describe(received)}`);
}

/** Checks that `value` is one of the `allowed` strings; errors name `arg` and list them ('a' or 'b'). */
export function checkOneOf<T extends string>(arg: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) throw typeError(arg, allowed.map((a) => `'${a}'`).join(' or '), value);
  return value as T;
}

/** Checks a positive (or non-negative) safe integer; errors name `arg`. */
export function checkInteger(arg: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw typeError(arg, `an integer >= ${min}`, value);
  if (value < min || !Number.isSafeInteger(value)) throw rangeError(arg, `an integer >= ${min}`, value);
  return value;
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
