import assert from "node:assert/strict";
import * as mod from "../mod.ts";
import { cpu, tensor } from "../mod.ts";
import {
  loadTrainingState,
  NonFiniteStateError,
  readTrainingStateMeta,
  saveTrainingState,
} from "../train/checkpoint.ts";

const state = () => ({
  student: { w: tensor([[1, 2], [3, 4]], { backend: cpu }), blocks: [{ b: tensor([0.5], { backend: cpu }) }] },
  key: tensor([7, 9], { dtype: "uint32", backend: cpu }),
});

Deno.test("training checkpoint: round trip with metadata, atomic write", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ckpt.safetensors`;
  await saveTrainingState(path, state(), { iteration: 12, epoch: 1 });
  const { state: back, meta } = await loadTrainingState(path, state(), cpu);
  assert.deepEqual(meta, { iteration: 12, epoch: 1 });
  assert.deepEqual(await back.student.w.toArray(), [[1, 2], [3, 4]]);
  assert.deepEqual(await back.student.blocks[0].b.toArray(), [0.5]);
  assert.deepEqual(Array.from(await back.key.data()), [7, 9]);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["ckpt.safetensors"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("training checkpoint: a wrong shape, a missing key or a corrupt file gives an error naming it", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ckpt.safetensors`;
  await saveTrainingState(path, state(), { iteration: 1 });
  const other = {
    ...state(),
    student: {
      w: tensor([[1, 2, 3]], { backend: cpu }),
      blocks: [{ b: tensor([0], { backend: cpu }) }],
      extra: tensor([1], { backend: cpu }),
    },
  };
  await assert.rejects(
    loadTrainingState(path, other, cpu),
    (e: Error) =>
      e.message.includes(path) && e.message.includes("'student.w' is float32[2,2] in the file but float32[1,3]") &&
      e.message.includes("missing 'student.extra'"),
  );
  await Deno.writeFile(path, new TextEncoder().encode("garbage"));
  await assert.rejects(loadTrainingState(path, state(), cpu), new RegExp(`${path}`));
  await assert.rejects(loadTrainingState(`${dir}/nope.safetensors`, state(), cpu), /nope\.safetensors' cannot be read/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("training checkpoint: non-finite weights are refused at load, naming the tensor", async () => {
  const { encodeSafetensors, writeFileAtomic } = await import("../models/safetensors.ts");
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ckpt.safetensors`;
  // saveTrainingState refuses such a state, so write the file as another tool (or an edit) would.
  const w = new Float32Array([1, 2, NaN, 4]);
  await writeFileAtomic(
    path,
    encodeSafetensors([
      ["student.w", { dtype: "float32", shape: [2, 2], data: w }],
      ["student.blocks.0.b", { dtype: "float32", shape: [1], data: new Float32Array([0.5]) }],
      ["key", { dtype: "uint32", shape: [2], data: new Uint32Array([7, 9]) }],
    ], { format: "ibot-ts-checkpoint", meta: JSON.stringify({ iteration: 3 }) }),
  );
  await assert.rejects(
    loadTrainingState(path, state(), cpu),
    (e: Error) =>
      e instanceof NonFiniteStateError && e.message.includes(path) && e.message.includes("'student.w' holds NaN"),
  );
  // The header alone is enough for the metadata (what a resumed CLI run reads first).
  assert.deepEqual(await readTrainingStateMeta(path), { iteration: 3 });
  await Deno.writeFile(path, new Uint8Array([255, 255, 255, 255, 0, 0, 0, 0, 123]));
  await assert.rejects(readTrainingStateMeta(path), new RegExp(`${path}: corrupt safetensors header length`));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("checkpoint names: the deprecated aliases are the renamed functions", () => {
  assert.equal(mod.saveCheckpoint, mod.saveTrainingState);
  assert.equal(mod.loadCheckpoint, mod.loadTrainingState);
  assert.equal(mod.readCheckpointMeta, mod.readTrainingStateMeta);
  assert.equal(mod.readCheckpoint, mod.readModelWeights);
  assert.equal(mod.parseCheckpoint, mod.parseModelWeights);
  assert.equal(mod.loadIntoModel, mod.loadWeightsIntoModel);
});
