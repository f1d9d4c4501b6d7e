/**
 * Data-parallel collectives over pytrees of tensors, on MPICH (`mpiexec -n N deno run --allow-ffi ...`).
 *
 * Imported on its own (`distributed/mod.ts`, not re-exported by `mod.ts`), so that importing the library needs no
 * permission. Without a launcher, `init()` gives a communicator of size 1 whose collectives are identities.
 *
 * @example
 * ```ts
 * import { init } from "./distributed/mod.ts";
 * import { tensor } from "./mod.ts";
 * const comm = await init();
 * const [mean] = await comm.allReduceMean([tensor([comm.rank, 1])]);
 * console.log(comm.rank, comm.size, await mean.toArray()); // every rank: [(size - 1) / 2, 1]
 * comm.finalize();
 * ```
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import { flatten, unflatten } from "../autograd/tree.ts";
import { fromTyped } from "../ops/create.ts";
import type { DType, HostArray } from "../ops/dtype.ts";
import { type Mpi, MpiError, openMpi } from "./mpi.ts";

export { MpiError } from "./mpi.ts";

/** The processes of one job: rank `0 ≤ rank < size`, and collectives over pytrees of tensors. */
export interface Communicator {
  /** This process's index in the job. */
  readonly rank: number;
  /** Number of processes in the job (1 without MPI). */
  readonly size: number;
  /** `MPICH 4.0.2`, or `none` for the single-process communicator. */
  readonly library: string;
  /** Element-wise sum of every rank's tree, as new tensors on each leaf's backend; one MPI call per dtype. */
  allReduceSum<T>(tree: T): Promise<T>;
  /** Element-wise mean over ranks (float leaves only). */
  allReduceMean<T>(tree: T): Promise<T>;
  /** Element-wise maximum over ranks. */
  allReduceMax<T>(tree: T): Promise<T>;
  /** `root`'s tree on every rank, as new tensors (every rank passes a tree of the same structure and shapes). */
  broadcast<T>(tree: T, root?: number): Promise<T>;
  /** Sum over ranks of host numbers (metrics, counts), in float64. */
  allReduceNumbers(values: readonly number[]): Promise<number[]>;
  /** Waits until every rank has called it. */
  barrier(): Promise<void>;
  /** Ends every process of the job with `code` (MPI_Abort); a no-op wrapper of `Deno.exit` for size 1. */
  abort(code: number): never;
  /** Shuts MPI down; call once at the end. */
  finalize(): void;
}

/** How `init` decides whether to use MPI. */
export interface InitOptions {
  /**
   * `auto` (default): MPI when a launcher's variables are visible (`PMI_SIZE`, `PMIX_RANK`, `SLURM_NTASKS`), else
   * size 1; `required`: always MPI (a singleton of size 1 without a launcher); `off`: size 1 without MPI.
   */
  mpi?: "auto" | "required" | "off";
  /** Path of the MPI library (default: `libmpich.so.12`). */
  library?: string;
}

/** Launcher variables that say "this process is one of several", and their job size where they carry it. */
const LAUNCHER_SIZE_VARS = ["PMI_SIZE", "SLURM_NTASKS"] as const;
const LAUNCHER_VARS = [...LAUNCHER_SIZE_VARS, "PMIX_RANK", "OMPI_COMM_WORLD_SIZE"] as const;

function readEnv(name: string): string | undefined {
  // Only variables the process may read: `auto` must not prompt or fail under a narrower --allow-env.
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return undefined;
  return Deno.env.get(name);
}

/** Starts (or joins) the job: MPI when launched by `mpiexec`/`srun`, else a single process. */
export function init(options: InitOptions = {}): Promise<Communicator> {
  const mode = options.mpi ?? "auto";
  if (mode === "off") return Promise.resolve(single());
  const env = Object.fromEntries(LAUNCHER_VARS.map((v) => [v, readEnv(v)]));
  if (env.OMPI_COMM_WORLD_SIZE !== undefined) {
    throw new MpiError(
      "launched by Open MPI's mpirun; only MPICH is supported: use MPICH's mpiexec (Debian: apt-get install mpich)",
    );
  }
  if (mode === "auto" && LAUNCHER_VARS.every((v) => env[v] === undefined)) return Promise.resolve(single());
  const mpi = openMpi(options.library);
  for (const v of LAUNCHER_SIZE_VARS) {
    const expected = env[v] === undefined ? undefined : Number(env[v]);
    if (expected !== undefined && expected > 1 && mpi.size !== expected) {
      throw new MpiError(
        `${v}=${expected} but MPI sees ${mpi.size} process(es): the launcher and the MPI library disagree ` +
          `(under Slurm use srun --mpi=pmi2 with MPICH)`,
      );
    }
  }
  return Promise.resolve(overMpi(mpi));
}

function single(): Communicator {
  return overMpi({
    rank: 0,
    size: 1,
    version: "none",
    allReduce: () => Promise.resolve(),
    broadcast: () => Promise.resolve(),
    barrier: () => Promise.resolve(),
    abort: (code) => Deno.exit(code),
    finalize: () => {},
  });
}

type Collective = "sum" | "max" | "broadcast";

function overMpi(mpi: Mpi): Communicator {
  /** One host buffer per dtype for the whole tree, one MPI call each, then new tensors. */
  async function collective<T>(tree: T, kind: Collective, root = 0, scale = 1): Promise<T> {
    const { leaves, def } = flatten<Tensor | null>(tree);
    const groups = new Map<DType, number[]>();
    const out: (Tensor | null)[] = leaves.map(() => null); // null leaves (e.g. frozen gradients) stay null
    leaves.forEach((t, i) => {
      if (t === null || t === undefined) return;
      const list = groups.get(t.dtype) ?? [];
      list.push(i);
      groups.set(t.dtype, list);
    });
    for (const [dtype, idx] of groups) {
      if (dtype === "bool" && kind !== "broadcast") throw new MpiError(`all-reduce of bool tensors is undefined`);
      const hosts = await Promise.all(idx.map((i) => leaves[i]!.data()));
      const total = hosts.reduce((n, h) => n + h.length, 0);
      const flat = new (hosts[0].constructor as { new (n: number): HostArray })(total);
      let offset = 0;
      for (const h of hosts) {
        flat.set(h, offset);
        offset += h.length;
      }
      if (kind === "broadcast") await mpi.broadcast(flat, root);
      else if (flat instanceof Uint8Array) throw new MpiError(`all-reduce of ${dtype} tensors is not supported`);
      else await mpi.allReduce(flat, kind);
      if (scale !== 1) { for (let j = 0; j < flat.length; j++) flat[j] *= scale; }
      offset = 0;
      idx.forEach((i, j) => {
        const t = leaves[i]!;
        const n = hosts[j].length;
        out[i] = fromTyped(flat.slice(offset, offset + n), t.shape, t.dtype, t.backend);
        offset += n;
      });
    }
    return unflatten<T>(def, out);
  }

  return {
    rank: mpi.rank,
    size: mpi.size,
    library: mpi.version,
    allReduceSum: (tree) => collective(tree, "sum"),
    async allReduceMean(tree) {
      for (const t of flatten<Tensor | null>(tree).leaves) {
        if (t && t.dtype !== "float32" && t.dtype !== "float64") {
          throw new MpiError(`allReduceMean: a ${t.dtype} leaf of shape [${t.shape}] has no mean; use allReduceSum`);
        }
      }
      return await collective(tree, "sum", 0, 1 / mpi.size);
    },
    allReduceMax: (tree) => collective(tree, "max"),
    async broadcast(tree, root = 0) {
      if (!Number.isInteger(root) || root < 0 || root >= mpi.size) {
        throw new MpiError(`broadcast: root ${root} is not a rank of this job (size ${mpi.size})`);
      }
      return await collective(tree, "broadcast", root);
    },
    async allReduceNumbers(values) {
      const buf = Float64Array.from(values);
      await mpi.allReduce(buf, "sum");
      return [...buf];
    },
    barrier: () => mpi.barrier(),
    abort: (code) => mpi.abort(code),
    finalize: () => mpi.finalize(),
  };
}
