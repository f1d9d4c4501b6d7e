/**
 * Data-parallel pretraining (`pretrain({ comm })`, `examples/pretrain.ts --distributed`) on 2 MPICH ranks equals
 * the single-process run of the same global batch: each rank takes every 2nd image of each batch with the
 * draws (augmentation, masks, drop path) those images have in the whole batch, the gradient and center sums
 * are all-reduced, and both ranks take the same update.
 */
import assert from "node:assert/strict";
import { pretrain } from "../train/pretrain.ts";
import { parseSafetensors } from "../models/safetensors.ts";
import { assertSameState, cpu } from "./util.ts";
import { mpiUnavailable, runMpi } from "./mpi/launcher.ts";
import { distributedConfig, distributedData } from "./mpi/config.ts";

const noMpi = mpiUnavailable();
if (noMpi) console.log(`distributed_pretrain_test: ignored (${noMpi})`);

const WORKER = "tests/mpi/pretrain_worker.ts";
const FLAGS = ["--allow-ffi", "--allow-env", "--allow-read", "--allow-write=/tmp"];
/** The largest lr of the run (no warm-up): base lr · batch / 256. */
const LR = (distributedConfig().lr * distributedConfig().batchSize) / 256;

const tensorsOf = async (path: string) => parseSafetensors(await Deno.readFile(path)).tensors;
const lossesOf = async (dir: string) =>
  (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l))
    .filter((l) => "loss" in l).map((l) => l.loss as number);

Deno.test({
  name: "distributed: 2 ranks (whole shares and micro-batches of 2) equal one process for 3 steps; ranks bit-identical",
  ignore: noMpi !== undefined,
  async fn() {
    const single = await Deno.makeTempDir();
    await pretrain(distributedConfig(), distributedData(), {
      backend: cpu,
      seed: 5,
      steps: 3,
      out: single,
      logEvery: 1,
      evaluate: false,
    });
    const want = await tensorsOf(`${single}/checkpoint.safetensors`);
    const wantLosses = await lossesOf(single);
    assert.equal(wantLosses.length, 3);
    for (const micro of [4, 2]) {
      const dir = await Deno.makeTempDir();
      const run = await runMpi(2, FLAGS, WORKER, [dir, "3", String(micro)]);
      assert.equal(run.code, 0, run.stderr);
      const [rank0, rank1] = await Promise.all([0, 1].map((r) => tensorsOf(`${dir}/rank-${r}.safetensors`)));
      for (const [name, t] of rank0) {
        assert.deepEqual(rank1.get(name)!.data, t.data, `micro ${micro}: ranks differ at ${name}`);
      }
      assertSameState(rank0, want, LR, `2 ranks, micro-batch ${micro}, vs 1 process`);
      const losses = await lossesOf(dir);
      losses.forEach((l, i) => assert.ok(Math.abs(l - wantLosses[i]) <= 1e-5 * Math.abs(wantLosses[i]), `loss ${i}`));
      await Deno.remove(dir, { recursive: true });
    }
    await Deno.remove(single, { recursive: true });
  },
});

for (const how of ["kill", "raise"]) {
  Deno.test({
    name: `distributed: a rank that ${
      how === "kill" ? "is killed" : "raises"
    } mid-run ends the whole job and leaves rank 0's last checkpoint intact`,
    ignore: noMpi !== undefined,
    async fn() {
      const dir = await Deno.makeTempDir();
      const t0 = performance.now();
      // Rank 1 fails after step 2; rank 0 is then in (or entering) the all-reduce of step 3, which never completes:
      // the launcher (a dead rank) or MPI_Abort (a raising one) must end it.
      const run = await runMpi(2, FLAGS, WORKER, [dir, "6", "4", "1", "2", how], 60_000);
      const seconds = (performance.now() - t0) / 1000;
      assert.notEqual(run.code, 0, "the job must fail");
      assert.ok(seconds < 50, `the job ended ${seconds.toFixed(1)} s after start (no hang)`);
      if (how === "raise") assert.match(run.stderr, /\[rank 1\/2\] error: injected failure after step 2/);
      const file = parseSafetensors(await Deno.readFile(`${dir}/checkpoint.safetensors`));
      const { iteration } = JSON.parse(file.metadata.meta);
      // Rank 0 checkpoints every step; the abort may cut its write of step 2 short (the rename keeps step 1's).
      assert.ok(iteration >= 1 && iteration <= 2, `checkpoint at step ${iteration}`);
      for (const [name, t] of file.tensors) assert.ok(t.data.every(Number.isFinite), `${name} is finite`);
      await Deno.remove(dir, { recursive: true });
    },
  });
}
