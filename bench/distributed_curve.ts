/**
 * The loss curve of N `fmnist-tiny` steps on one process and on an MPICH job of several, for the same global batch
 * (issue: a 2-rank run must give the same curve as 1 rank within tolerance). Each invocation trains without the
 * k-NN evaluation and writes `OUT/metrics.jsonl` (rank 0); compare two such folders with `--compare A B`.
 *
 * ```sh
 * deno run --unstable-webgpu --allow-read --allow-write=/tmp --allow-env --allow-ffi bench/distributed_curve.ts /tmp/fm1 50
 * mpiexec -n 2 deno run --unstable-webgpu --allow-read --allow-write=/tmp --allow-env --allow-ffi \
 *   bench/distributed_curve.ts /tmp/fm2 50
 * deno run --allow-read bench/distributed_curve.ts --compare /tmp/fm1 /tmp/fm2
 * ```
 *
 * @module
 */
import { init } from "../distributed/mod.ts";
import { initBackend } from "../mod.ts";
import { PRESETS } from "../train/presets.ts";
import { pretrain } from "../train/pretrain.ts";
import { loadFashionMnist } from "../train/data/fmnist.ts";

async function losses(dir: string): Promise<number[]> {
  const lines = (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  return lines.filter((l) => "loss" in l).map((l) => l.loss as number);
}

if (Deno.args[0] === "--compare") {
  const [a, b] = [await losses(Deno.args[1]), await losses(Deno.args[2])];
  const rel = a.map((x, i) => Math.abs(x - b[i]) / Math.abs(x));
  console.log(`steps ${a.length} / ${b.length}; first ${a[0]} / ${b[0]}; last ${a.at(-1)} / ${b.at(-1)}`);
  console.log(
    `max relative loss difference ${Math.max(...rel).toExponential(2)} (step ${rel.indexOf(Math.max(...rel)) + 1})`,
  );
} else {
  const [out, steps] = Deno.args;
  const comm = await init();
  const backend = await initBackend("webgpu");
  const t0 = performance.now();
  const result = await pretrain(PRESETS["fmnist-tiny"], await loadFashionMnist(), {
    backend,
    seed: 0,
    steps: Number(steps),
    out,
    logEvery: 1,
    evaluate: false,
    comm: comm.size > 1 ? comm : undefined,
  });
  if (comm.rank === 0) {
    console.log(
      `${comm.size} process(es): ${result.steps} steps, ${result.secondsPerStep.toFixed(2)} s/step, ` +
        `${((performance.now() - t0) / 1000).toFixed(0)} s; loss ${result.firstLoss} -> ${result.lastLoss}`,
    );
  }
  comm.finalize();
}
