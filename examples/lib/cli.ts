/** What every example's command line shares: usage errors, permission checks and the exit-code convention. */
import { InputError } from "../../errors.ts";

/** A wrong command line or a missing permission; the examples print the message and exit with code 2. */
export class UsageError extends InputError {
  /** Always `"UsageError"`. */
  override name = "UsageError";
}

/** Throws a `UsageError` naming the flag to add when the permission `desc` is not granted. */
export function need(desc: Deno.PermissionDescriptor, what: string, add: string): void {
  if (Deno.permissions.querySync(desc).state !== "granted") {
    throw new UsageError(`${what} needs a permission that was not granted: run with ${add}`);
  }
}

/** At most this many lines of a multi-line message (a list of problems) are kept, joined by "; ". */
const MAX_ITEMS = 6;

/** A message on one line: a list of problems (one per line) joined by "; ", capped at `MAX_ITEMS` items. */
export function oneLine(message: string): string {
  const lines = message.split("\n").map((l) => l.trim()).filter((l) => l);
  if (lines.length <= 1) return lines[0] ?? "";
  const [head, ...items] = lines;
  const kept = items.slice(0, MAX_ITEMS);
  const more = items.length > kept.length ? `; ... and ${items.length - kept.length} more` : "";
  return `${head.replace(/:$/, "")}: ${kept.join("; ")}${more}`;
}

/** A one-line version of node's `parseArgs` error, with the flag that took a stray value named. */
function argsMessage(e: Error & { code: string }, args: readonly string[]): string {
  if (e.code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
    const stray = /'(.*)'/.exec(e.message)?.[1];
    const i = args.indexOf(stray ?? "");
    // Without the option types, the flag before a stray value is known only when that value occurs once.
    const flag = i > 0 && args.lastIndexOf(stray ?? "") === i ? args[i - 1] : "";
    if (flag.startsWith("-") && !flag.includes("=")) return `${flag} takes no value (got '${stray}')`;
    return `unexpected argument '${stray}': this command takes only --options`;
  }
  return oneLine(e.message);
}

/**
 * Runs an example's `main` and exits with its code. Every bad input (an `InputError`, which includes
 * `UsageError`, and the listed `expected` errors) and every bad option is printed as one line on stderr with
 * exit code 2; anything else is a bug and propagates with its stack.
 */
export async function runCli(
  main: () => Promise<number>,
  usage: string,
  expected: readonly (abstract new (...args: never[]) => Error)[] = [],
): Promise<never> {
  try {
    Deno.exit(await main());
  } catch (e) {
    const line = cliError(e, usage, expected);
    if (line === null) throw e;
    console.error(line);
    Deno.exit(2);
  }
}

/**
 * The one-line report (`error: ...`) of an expected error: bad input (an `InputError`, which includes
 * `UsageError`), one of the `expected` classes, or a bad option; null for anything else (a bug).
 */
export function cliError(
  e: unknown,
  usage: string,
  expected: readonly (abstract new (...args: never[]) => Error)[] = [],
): string | null {
  if (e instanceof UsageError) return `error: ${oneLine(e.message)} (see --help)`;
  if (e instanceof InputError || expected.some((cls) => e instanceof cls)) {
    return `error: ${oneLine((e as Error).message)}`;
  }
  const code = (e as { code?: unknown }).code;
  if (e instanceof TypeError && typeof code === "string" && code.startsWith("ERR_PARSE_ARGS")) {
    const command = usage.split("\n")[0].replace(/^Usage:\s*/, "");
    return `error: ${argsMessage(e as TypeError & { code: string }, Deno.args)} (usage: ${command}; see --help)`;
  }
  return null;
}

/** Reads a file a flag names; a missing file, a folder or an unreadable file is a usage error naming both. */
export async function readBytes(path: string, flag: string): Promise<Uint8Array> {
  need({ name: "read", path }, `${flag} ${path}`, `--allow-read=${path}`);
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new UsageError(`${flag} ${path}: no such file`);
    if (e instanceof Deno.errors.IsADirectory) throw new UsageError(`${flag} ${path}: a folder, not a file`);
    throw new UsageError(`${flag} ${path}: cannot be read (${(e as Error).message})`);
  }
}

/**
 * The largest seed: the PRNG key holds a seed as two uint32 words, exactly for integers up to 2^53 (JavaScript's
 * exact range), and the mask stream uses `seed + 1`.
 */
export const MAX_SEED = Number.MAX_SAFE_INTEGER - 1;

/** A `--seed` value: an integer in [0, MAX_SEED], else a usage error saying the range. */
export function seedFlag(v: string | undefined, fallback = 0): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!(v.trim() !== "" && Number.isInteger(n) && n >= 0 && n <= MAX_SEED)) {
    throw new UsageError(`--seed must be an integer in [0, ${MAX_SEED}] (2^53 - 2), got '${v}'`);
  }
  return n;
}
