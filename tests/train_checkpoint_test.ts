import assert from "node:assert/strict";
import { cpu, tensor } from "../mod.ts";
import { loadCheckpoint, saveCheckpoint } from "../train/checkpoint.ts";

const state = () => ({
  student: { w: tensor([[1, 2], [3, 4]], { backend: cpu }), blocks: [{ b: tensor([0.5], { backend: cpu }) }] },
  key: tensor([7, 9], { dtype: "uint32", backend: cpu }),
});

Deno.test("training checkpoint: round trip with metadata, atomic write", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ckpt.safetensors`;
  await saveCheckpoint(path, state(), { iteration: 12, epoch: 1 });
  const { state: back, meta } = await loadCheckpoint(path, state(), cpu);
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
  await saveCheckpoint(path, state(), { iteration: 1 });
  const other = {
    ...state(),
    student: {
      w: tensor([[1, 2, 3]], { backend: cpu }),
      blocks: [{ b: tensor([0], { backend: cpu }) }],
      extra: tensor([1], { backend: cpu }),
    },
  };
  await assert.rejects(
    loadCheckpoint(path, other, cpu),
    (e: Error) =>
      e.message.includes(path) && e.message.includes("'student.w' is float32[2,2] in the file but float32[1,3]") &&
      e.message.includes("missing 'student.extra'"),
  );
  await Deno.writeFile(path, new TextEncoder().encode("garbage"));
  await assert.rejects(loadCheckpoint(path, state(), cpu), new RegExp(`${path}`));
  await assert.rejects(loadCheckpoint(`${dir}/nope.safetensors`, state(), cpu), /nope\.safetensors' cannot be read/);
  await Deno.remove(dir, { recursive: true });
});
