/**
 * Runs the deno executable as a child process (no colours, no update check, no stdin) for the tests that
 * exercise a command line or a fresh module graph.
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url).pathname;

/** Options of `runDeno`. */
export interface RunDenoOptions {
  /** Working directory (default: the repository root). */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
}

/** Runs `deno <args>` and returns its exit code and decoded output. */
export async function runDeno(
  args: string[],
  opts: RunDenoOptions = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: opts.cwd ?? ROOT,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}
