// Options declared once: a schema names each option's field (its type and allowed values), and both
// the public option type (every key optional) and the resolved type (every key present) are derived
// from it. resolve() fills what was left out from a defaults object and checks everything, so native
// code always receives a complete, valid plain object. lib/config.ts declares pirl's concepts.
import { checkBoolean, checkNumber, checkOneOf, checkOptions, oneOfText, rangeText, typeError, type NumberRange } from './errors';

/**
 * One option: how a given value (or, when left out, the default) becomes the resolved value. With
 * `complete` nothing may be left out (a file that pirl wrote holds every option).
 */
export interface Field<Out, In = Out> {
  resolve(arg: string, given: In | undefined, fallback: Out, complete: boolean): Out;
  /** What the option must be, for errors and usage texts. */
  readonly expected: string;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Schema = { readonly [key: string]: Field<any, any> };

/** Every option present and checked: what resolve() returns and native code reads. */
export type Resolved<S extends Schema> = { -readonly [K in keyof S]: S[K] extends Field<infer Out, infer _In> ? Out : never };

/** What a caller may pass: any option left out takes its default. */
export type Options<S extends Schema> = { [K in keyof S]?: S[K] extends Field<infer _Out, infer In> ? In : never };
/** A resolved config frozen to its leaves (Trainer.config), as the compiler sees it. */
export type DeepReadonly<T> = { readonly [K in keyof T]: T[K] extends object ? DeepReadonly<T[K]> : T[K] };

/** A field whose value is checked as given (or its default, checked too). */
export function leaf<T>(expected: string, check: (arg: string, value: unknown) => T): Field<T> {
  return { expected, resolve: (arg, given, fallback, complete) => check(arg, given === undefined && !complete ? fallback : given) };
}

export const number = (range: NumberRange = {}): Field<number> => leaf(rangeText(range), (arg, v) => checkNumber(arg, v, range));

export const integer = (range: Omit<NumberRange, 'integer'> = {}): Field<number> => number({ ...range, integer: true });

export const boolean = (): Field<boolean> => leaf('a boolean', checkBoolean);

export function oneOf<T extends string>(allowed: readonly T[]): Field<T> {
  return leaf(oneOfText(allowed), (arg, v) => checkOneOf(arg, v, allowed));
}

/** `inner`, or null (its default meaning "not set": e.g. "the whole data set"). */
export function nullable<T>(inner: Field<T>): Field<T | null> {
  return {
    expected: `${inner.expected} or null`,
    resolve: (arg, given, fallback, complete) => {
      const value = given === undefined && !complete ? fallback : given;
      return value === null ? null : inner.resolve(arg, value, value as T, complete);
    },
  };
}

/** A nested options object: its own schema, defaults from the parent's defaults. */
export function nested<S extends Schema>(schema: S): Field<Resolved<S>, Options<S>> {
  return {
    expected: 'an object',
    resolve: (arg, given, fallback, complete) => {
      if (given === undefined && complete) throw typeError(arg, 'an object', given);
      return resolve(schema, fallback, given, arg, complete);
    },
  };
}

/** A nested object given whole or not at all (its parts mean something only together): left out, the default. */
export function whole<S extends Schema>(schema: S): Field<Resolved<S>, Resolved<S>> {
  return {
    expected: 'an object',
    resolve: (arg, given, fallback, complete) => resolve(schema, fallback, given, arg, complete || given !== undefined),
  };
}

/**
 * Every option of `schema` from `given`, the rest from `defaults` (none may be missing when
 * `complete`), each checked; an unknown key is a TypeError (a misspelt option would otherwise be
 * ignored without a word). Errors name `arg.key`.
 */
export function resolve<S extends Schema>(schema: S, defaults: Resolved<S>, given: unknown, arg: string, complete = false): Resolved<S> {
  const options = given === undefined ? {} : checkOptions(arg, given, Object.keys(schema));
  const out: Partial<Resolved<S>> = {};
  for (const key of Object.keys(schema) as Array<keyof S & string>) {
    out[key] = schema[key].resolve(`${arg}.${key}`, options[key], defaults[key], complete);
  }
  return out as Resolved<S>;
}

