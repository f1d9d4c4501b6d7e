/**
 * What a data-parallel step all-reduces, and how long it takes: the gradient and center sums of the
 * `fmnist-tiny` and `imagenet-vit-s16` presets (one tree per step, `Communicator.allReduceSum`), timed whole
 * (GPU readback, MPI_Allreduce of one flat buffer per dtype, upload) and as the bare MPI call on host memory.
 *
 * Run under MPICH, one rank per process: `deno task bench-mpi` (= `mpiexec -n 2 deno run ... bench/allreduce.ts`);
 * rank 0 writes `bench/results/allreduce.{json,md}`. The share of a step uses the step time of
 * `bench/results/ibot_step.json` (fmnist-tiny, the same machine).
 *
 * @module
 */
import { init } from "../distributed/mod.ts";
import { openMpi } from "../distributed/mpi.ts";
import { initBackend, type Tensor, tree } from "../mod.ts";
import { PRESETS } from "../train/presets.ts";
import { resolveBackbone } from "../train/backbone.ts";
import { initState } from "../train/pretrain.ts";
import * as random from "../ops/random.ts";
import { fmtNum, header, machine, mdTable, median, progress, writeResults } from "./util.ts";

const REPS = 5;
const comm = await init({ mpi: "required" });
const backend = await initBackend("webgpu");

interface Row {
  preset: string;
  leaves: number;
  bytes: number;
  treeMs: number[];
  mpiMs: number[];
}

const rows: Row[] = [];
const raw = openMpi(); // the same (already initialised) MPI, for the bare host-buffer timing
for (const name of ["fmnist-tiny", "imagenet-vit-s16"] as const) {
  const cfg = PRESETS[name];
  const size = cfg.augment.globalCrops.size;
  const spec = resolveBackbone(cfg, { channels: cfg.augment.channels, size });
  const state = initState(cfg, spec, random.key(0, backend));
  // The sums of a step (`IbotSums`): a gradient per student leaf, both centers' sums, six scalars.
  const sums = { grads: state.student, center: state.center, center2: state.center2 };
  const leaves = tree.leaves<Tensor>(sums);
  const bytes = leaves.reduce((n, t) => n + 4 * t.size, 0) + 6 * 4;
  const treeMs: number[] = [];
  const mpiMs: number[] = [];
  const host = new Float32Array(bytes / 4);
  for (let r = 0; r < REPS; r++) {
    await comm.barrier();
    let t0 = performance.now();
    const reduced = await comm.allReduceSum(sums);
    treeMs.push(performance.now() - t0);
    tree.leaves<Tensor>(reduced).forEach((t) => t.dispose());
    await comm.barrier();
    t0 = performance.now();
    await raw.allReduce(host, "sum");
    mpiMs.push(performance.now() - t0);
  }
  tree.leaves<Tensor>(state).forEach((t) => t.dispose());
  rows.push({ preset: name, leaves: leaves.length + 6, bytes, treeMs, mpiMs });
  progress(`${name}: ${(bytes / 2 ** 20).toFixed(1)} MiB, tree ${median(treeMs).toFixed(1)} ms`);
}

if (comm.rank === 0) {
  const step = await Deno.readTextFile(new URL("./results/ibot_step.json", import.meta.url))
    .then((t) => JSON.parse(t) as { medianMs?: number }, () => null);
  const stepMs = step?.medianMs ?? null;
  const m = machine(backend);
  const md = [
    header(`All-reduce of a data-parallel step (${comm.size} ranks, ${comm.library})`, m, [
      `${comm.size} ranks on this one machine (\`mpiexec -n ${comm.size}\`, shared memory), ${REPS} repetitions, medians.`,
      "`tree`: `comm.allReduceSum` of the step's sums (GPU readback, one MPI_Allreduce per dtype, upload);",
      "`MPI only`: MPI_Allreduce of a host buffer of the same size.",
      stepMs
        ? `fmnist-tiny step time for the share: ${(stepMs / 1000).toFixed(2)} s (bench/results/ibot_step.json).`
        : "",
      "",
    ]),
    mdTable(
      ["preset", "leaves", "bytes per rank", "tree ms", "MPI only ms", "share of the fmnist-tiny step"],
      rows.map((r) => [
        r.preset,
        r.leaves,
        `${(r.bytes / 2 ** 20).toFixed(2)} MiB`,
        fmtNum(median(r.treeMs), 1),
        fmtNum(median(r.mpiMs), 1),
        r.preset === "fmnist-tiny" && stepMs ? `${(100 * median(r.treeMs) / stepMs).toFixed(2)} %` : "—",
      ]),
      [false, true, true, true, true, true],
    ),
  ].join("\n");
  await writeResults("allreduce", { machine: m, ranks: comm.size, library: comm.library, rows }, md);
}
comm.finalize();
