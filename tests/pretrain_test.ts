/** The pretraining loop: exact resume, non-finite handling, and the permission-free main job's building blocks. */
import assert from "node:assert/strict";
import { pretrain } from "../train/pretrain.ts";
import { embeddedDataset } from "../train/data/embedded.ts";
import { NonFiniteStateError } from "../train/checkpoint.ts";
import { gpu, tinyPretrainConfig } from "./util.ts";

const ds = embeddedDataset({ seed: 3, trainPerClass: 20, testPerClass: 4 });

async function losses(dir: string): Promise<number[]> {
  const lines = (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  return lines.filter((l) => "loss" in l).map((l) => l.loss);
}

Deno.test("pretrain: a run interrupted at step 3 and resumed gives the same losses as an uninterrupted run", async () => {
  const backend = await gpu();
  const [a, b] = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  const common = { backend, seed: 5, logEvery: 1, evaluate: false };
  await pretrain(tinyPretrainConfig(), ds, { ...common, steps: 6, out: a });
  await pretrain(tinyPretrainConfig(), ds, { ...common, steps: 3, out: b });
  await pretrain(tinyPretrainConfig(), ds, { ...common, steps: 6, out: b, resume: true });
  const [la, lb] = [await losses(a), await losses(b)];
  assert.equal(la.length, 6);
  assert.deepEqual(lb, la, "bit-exact losses after resuming");
  for (const d of [a, b]) await Deno.remove(d, { recursive: true });
});

Deno.test("pretrain: a non-finite state stops the run naming the step and keeps the last good checkpoint", async () => {
  const backend = await gpu();
  const dir = await Deno.makeTempDir();
  // The lr is 0 at the first step (warm-up) and astronomically large afterwards: step 2 breaks the parameters.
  const cfg = { ...tinyPretrainConfig(), lr: 1e30, warmupEpochs: 1 };
  await pretrain(cfg, ds, { backend, seed: 1, steps: 1, out: dir, evaluate: false, checkpointEvery: 1 });
  let failedAt = -1;
  await assert.rejects(
    pretrain(cfg, ds, {
      backend,
      seed: 1,
      steps: 6,
      out: dir,
      resume: true,
      evaluate: false,
      checkpointEvery: 1,
      logEvery: 1,
    }),
    (e: Error) => {
      const m = /at (?:step|iteration) (\d+)/.exec(e.message);
      failedAt = m ? Number(m[1]) : -1;
      return (e.name === "NonFiniteLossError" || e instanceof NonFiniteStateError) && failedAt >= 2;
    },
  );
  // The checkpoint on disk is the last one with a finite state, from before the failing step.
  const { parseSafetensors } = await import("../models/safetensors.ts");
  const file = parseSafetensors(await Deno.readFile(`${dir}/checkpoint.safetensors`));
  assert.ok(JSON.parse(file.metadata.meta).iteration < failedAt);
  for (const [, t] of file.tensors) if (t.dtype === "float32") assert.ok(t.data.every((v) => Number.isFinite(v)));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("pretrain: resuming from a corrupt checkpoint names the file", async () => {
  const backend = await gpu();
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/checkpoint.safetensors`, "not a checkpoint");
  await assert.rejects(
    pretrain(tinyPretrainConfig(), ds, { backend, seed: 1, steps: 2, out: dir, resume: true, evaluate: false }),
    new RegExp(`${dir}/checkpoint.safetensors`),
  );
  await Deno.remove(dir, { recursive: true });
});
