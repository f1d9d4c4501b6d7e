/**
 * The examples' `--distributed` flag: join an MPICH job (`mpiexec -n N deno run --allow-ffi ...`), keep the
 * output to rank 0, and turn a failure on any rank into the end of the whole job (MPI_Abort) with a one-line
 * message naming the rank, so that no rank waits forever in a collective for a peer that is gone.
 *
 * `distributed/mod.ts` is imported only when the flag is given: without it the examples need no FFI permission.
 *
 * @module
 */
import type { Communicator } from "../../distributed/mod.ts";
import { cliError } from "./cli.ts";

/** The job of this process when `enabled`, else undefined; ranks other than 0 print nothing but errors. */
export async function joinJob(enabled: boolean | undefined): Promise<Communicator | undefined> {
  if (!enabled) return undefined;
  const { init } = await import("../../distributed/mod.ts");
  const comm = await init({ mpi: "required" });
  if (comm.rank !== 0) console.log = () => {};
  return comm;
}

/**
 * Runs `body` inside a job: on success finalizes MPI; on an error in a job of several processes, prints the
 * one-line report (or the stack of a bug) prefixed with the rank and aborts every rank with exit code 2 (1 for a
 * bug). Without a job of several processes, errors propagate to `runCli` unchanged.
 */
export async function inJob<T>(
  comm: Communicator | undefined,
  usage: string,
  expected: readonly (abstract new (...args: never[]) => Error)[],
  body: () => Promise<T>,
): Promise<T> {
  try {
    const result = await body();
    comm?.finalize();
    return result;
  } catch (e) {
    if (!comm || comm.size === 1) throw e;
    const line = cliError(e, usage, expected);
    console.error(`[rank ${comm.rank}/${comm.size}] ${line ?? `error: ${(e as Error).stack ?? e}`}`);
    return comm.abort(line === null ? 1 : 2);
  }
}
