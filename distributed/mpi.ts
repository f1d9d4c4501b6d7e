/**
 * MPICH's C ABI through Deno's FFI: the handful of calls data-parallel training needs.
 *
 * MPICH's handles (communicators, datatypes, operations) are plain 32-bit integers fixed by its `mpi.h`, so they
 * can be passed as numbers. Open MPI's handles are addresses of library globals and its ABI differs: it is
 * detected through `MPI_Get_library_version` and refused with a message, never called with MPICH's constants.
 *
 * @module
 */
import { InputError } from "../errors.ts";

/** An MPI failure, a missing library or permission, or an unsupported MPI implementation. */
export class MpiError extends InputError {
  /** Always `"MpiError"`. */
  override name = "MpiError";
}

/** MPICH's `MPI_COMM_WORLD`. */
export const COMM_WORLD = 0x44000000;
/** MPICH's datatype handles for the element types tensors use. */
export const DATATYPE = {
  float32: 0x4c00040a,
  float64: 0x4c00080b,
  int32: 0x4c000405,
  uint32: 0x4c000406,
  uint8: 0x4c00010d,
} as const;
/** MPICH's reduction operations. */
export const OP = { sum: 0x58000003, max: 0x58000001, min: 0x58000002 } as const;

const SUCCESS = 0;
const ERRORS_RETURN = 0x54000001;
const THREAD_SERIALIZED = 2;
const MAX_ERROR_STRING = 512;
const MAX_LIBRARY_VERSION_STRING = 8192;

/** The library names tried, in order; `IBOT_MPI_LIBRARY`-style overrides go through `openMpi(path)`. */
export const MPICH_LIBRARIES = ["libmpich.so.12", "libmpi.so.12"] as const;

const SYMBOLS = {
  MPI_Initialized: { parameters: ["buffer"], result: "i32" },
  MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  MPI_Finalized: { parameters: ["buffer"], result: "i32" },
  MPI_Finalize: { parameters: [], result: "i32" },
  MPI_Comm_rank: { parameters: ["i32", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["i32", "buffer"], result: "i32" },
  MPI_Comm_set_errhandler: { parameters: ["i32", "i32"], result: "i32" },
  MPI_Error_string: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  MPI_Get_library_version: { parameters: ["buffer", "buffer"], result: "i32" },
  MPI_Abort: { parameters: ["i32", "i32"], result: "i32" },
  // Collectives run off the JS thread (nonblocking FFI) so timers and signal listeners keep running meanwhile;
  // MPI is initialised with MPI_THREAD_SERIALIZED for that, and calls are never concurrent (the caller awaits).
  MPI_Allreduce: {
    parameters: ["pointer", "buffer", "i32", "i32", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Bcast: { parameters: ["buffer", "i32", "i32", "i32", "i32"], result: "i32", nonblocking: true },
  MPI_Barrier: { parameters: ["i32"], result: "i32", nonblocking: true },
} as const;

type MpiLib = Deno.DynamicLibrary<typeof SYMBOLS>;

/** One initialised MPI library: rank, size and the raw collectives on host buffers. */
export interface Mpi {
  readonly rank: number;
  readonly size: number;
  /** e.g. `MPICH 4.0.2`. */
  readonly version: string;
  /** In-place all-reduce of a host buffer over `COMM_WORLD`. */
  allReduce(buf: Float32Array | Float64Array | Int32Array | Uint32Array, op: keyof typeof OP): Promise<void>;
  /** In-place broadcast of a host buffer from `root`. */
  broadcast(buf: Float32Array | Float64Array | Int32Array | Uint32Array | Uint8Array, root: number): Promise<void>;
  barrier(): Promise<void>;
  /** Ends every rank of the job with `code` (MPI_Abort); does not return. */
  abort(code: number): never;
  finalize(): void;
}

function datatypeOf(buf: ArrayBufferView): number {
  if (buf instanceof Float32Array) return DATATYPE.float32;
  if (buf instanceof Float64Array) return DATATYPE.float64;
  if (buf instanceof Int32Array) return DATATYPE.int32;
  if (buf instanceof Uint32Array) return DATATYPE.uint32;
  if (buf instanceof Uint8Array) return DATATYPE.uint8;
  throw new MpiError(`MPI: unsupported buffer type ${buf.constructor.name}`);
}

function dlopenFirst(candidates: readonly string[]): { lib: MpiLib; path: string } {
  const failures: string[] = [];
  for (const path of candidates) {
    try {
      return { lib: Deno.dlopen(path, SYMBOLS), path };
    } catch (e) {
      failures.push(`${path}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  throw new MpiError(
    `no MPI library could be loaded (${failures.join("; ")}): install MPICH (Debian: apt-get install mpich)`,
  );
}

/**
 * Loads MPICH and initialises MPI (once per process). `path` overrides the library searched for.
 * Needs `--allow-ffi`; works as a singleton (size 1) when the process was not started by a launcher.
 */
export function openMpi(path?: string): Mpi {
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    throw new MpiError("distributed training calls MPI through FFI: run with --allow-ffi");
  }
  const { lib, path: loaded } = dlopenFirst(path ? [path] : MPICH_LIBRARIES);
  const s = lib.symbols;
  const versionBuf = new Uint8Array(MAX_LIBRARY_VERSION_STRING);
  const versionLen = new Int32Array(1);
  s.MPI_Get_library_version(versionBuf, versionLen);
  const versionText = new TextDecoder().decode(versionBuf.subarray(0, versionLen[0]));
  if (!/MPICH/i.test(versionText)) {
    lib.close();
    const first = versionText.split("\n")[0].trim() || "an unknown MPI";
    throw new MpiError(
      `${loaded} is ${first}; only MPICH is supported (its ABI: integer handles). Install Debian's mpich and ` +
        `launch with its mpiexec (or point Slurm's srun at MPICH with --mpi=pmi2)`,
    );
  }
  const version = `MPICH ${versionText.match(/Version:\s*([^\s]+)/)?.[1] ?? "?"}`;
  const inPlace = Deno.UnsafePointer.create(0xffffffffffffffffn); // MPI_IN_PLACE is (void *) -1

  const flag = new Int32Array(1);
  s.MPI_Initialized(flag);
  if (!flag[0]) {
    const provided = new Int32Array(1);
    check(s, s.MPI_Init_thread(null, null, THREAD_SERIALIZED, provided), "MPI_Init_thread");
    if (provided[0] < THREAD_SERIALIZED) {
      throw new MpiError(`MPI provides thread level ${provided[0]}, below MPI_THREAD_SERIALIZED`);
    }
  }
  // Errors come back as codes (turned into MpiError) instead of aborting the job from inside the library.
  check(s, s.MPI_Comm_set_errhandler(COMM_WORLD, ERRORS_RETURN), "MPI_Comm_set_errhandler");
  const out = new Int32Array(1);
  check(s, s.MPI_Comm_rank(COMM_WORLD, out), "MPI_Comm_rank");
  const rank = out[0];
  check(s, s.MPI_Comm_size(COMM_WORLD, out), "MPI_Comm_size");
  const size = out[0];

  return {
    rank,
    size,
    version,
    async allReduce(buf, op) {
      if (buf.length === 0) return;
      check(s, await s.MPI_Allreduce(inPlace, buf, buf.length, datatypeOf(buf), OP[op], COMM_WORLD), "MPI_Allreduce");
    },
    async broadcast(buf, root) {
      if (buf.length === 0) return;
      check(s, await s.MPI_Bcast(buf, buf.length, datatypeOf(buf), root, COMM_WORLD), "MPI_Bcast");
    },
    async barrier() {
      check(s, await s.MPI_Barrier(COMM_WORLD), "MPI_Barrier");
    },
    abort(code) {
      s.MPI_Abort(COMM_WORLD, code);
      Deno.exit(code); // MPI_Abort does not return; this only satisfies the type
    },
    finalize() {
      s.MPI_Finalized(flag);
      if (!flag[0]) check(s, s.MPI_Finalize(), "MPI_Finalize");
    },
  };
}

function check(s: MpiLib["symbols"], code: number, call: string): void {
  if (code === SUCCESS) return;
  const text = new Uint8Array(MAX_ERROR_STRING);
  const len = new Int32Array(1);
  s.MPI_Error_string(code, text, len);
  throw new MpiError(`${call} failed (code ${code}): ${new TextDecoder().decode(text.subarray(0, len[0]))}`);
}
