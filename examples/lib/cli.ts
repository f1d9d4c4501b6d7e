/** What every example's command line shares: usage errors, permission checks and the exit-code convention. */

/** A wrong command line or a missing permission; the examples print the message and exit with code 2. */
export class UsageError extends Error {
  /** Always `"UsageError"`. */
  override name = "UsageError";
}

/** Throws a `UsageError` naming the flag to add when the permission `desc` is not granted. */
export function need(desc: Deno.PermissionDescriptor, what: string, add: string): void {
  if (Deno.permissions.querySync(desc).state !== "granted") {
    throw new UsageError(`${what} needs a permission that was not granted: run with ${add}`);
  }
}

/**
 * Runs an example's `main` and exits with its code. Usage errors and the listed `expected` errors are printed as
 * one line (exit 2); a bad option prints the usage (exit 2); anything else is a bug and propagates.
 */
export async function runCli(
  main: () => Promise<number>,
  usage: string,
  expected: readonly (abstract new (...args: never[]) => Error)[] = [],
): Promise<never> {
  try {
    Deno.exit(await main());
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message} (see --help)`);
      Deno.exit(2);
    }
    if (expected.some((cls) => e instanceof cls)) {
      console.error(`error: ${(e as Error).message}`);
      Deno.exit(2);
    }
    if (e instanceof TypeError && /parseArgs|Unknown option|option/.test(e.message)) {
      console.error(`error: ${e.message}\n${usage}`);
      Deno.exit(2);
    }
    throw e;
  }
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
