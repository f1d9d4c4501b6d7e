/**
 * The base class of every error that means "the input is wrong" (a file, a dataset, an option), as opposed to
 * a bug. Library functions throw subclasses naming what was wrong; command-line front ends print them as one
 * line (exit code 2) and let anything else propagate with its stack.
 *
 * @module
 */

/**
 * Bad input: a malformed or mismatched file, a dataset that cannot be used, an option out of range.
 *
 * @example
 * ```ts
 * import { InputError } from "./mod.ts";
 * try {
 *   throw new InputError("labels.idx: label 12 of item 3 outside [0, 10)");
 * } catch (e) {
 *   if (e instanceof InputError) console.error(`error: ${e.message}`);
 * }
 * ```
 */
export class InputError extends Error {
  /** The class name (subclasses override it). */
  override name = "InputError";
}

/** A dataset file or folder that cannot be used (corrupt, inconsistent, empty); the message names the path. */
export class DataError extends InputError {
  /** Always `"DataError"`. */
  override name = "DataError";
}
