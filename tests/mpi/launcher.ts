/** Finds MPICH's `mpiexec` and runs a Deno script under it, for the distributed tests. */

/** Absolute path of `mpiexec` on PATH, or undefined (then the distributed tests are ignored with the reason). */
export function findMpiexec(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    const path = `${dir}/mpiexec`;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/** Why the distributed tests cannot run here, or undefined when they can (printed by the ignoring test). */
export function mpiUnavailable(): string | undefined {
  if (Deno.env.get("IBOT_TEST_NO_MPI") === "1") return "IBOT_TEST_NO_MPI=1";
  if (!findMpiexec()) return "no mpiexec on PATH (Debian: apt-get install mpich)";
  return undefined;
}

/** Output of one `mpiexec -n ranks deno run ...` job. */
export interface MpiRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `script` on `ranks` processes with the given Deno flags; `timeoutMs` bounds a hung job. */
export async function runMpi(
  ranks: number,
  denoFlags: readonly string[],
  script: string,
  args: readonly string[] = [],
  timeoutMs = 120_000,
): Promise<MpiRun> {
  const child = new Deno.Command(findMpiexec()!, {
    args: ["-n", String(ranks), Deno.execPath(), "run", ...denoFlags, script, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}
