/**
 * Loading named tensors into parameter trees (one error naming every missing, unexpected and mis-shaped key),
 * the relative_position_index buffer check, and the official `checkpoint_teacher` export names.
 */
import assert from "node:assert/strict";
import {
  cpu,
  exportTeacherBackbone,
  fromTyped,
  type HostTensor,
  initSwin,
  loadSafetensors,
  loadWeightsIntoModel,
  random,
  readModelWeights,
  relativePositionIndex,
  saveTeacherBackbone,
  specFromShapes,
  stateDict,
  swin,
  swinSpec,
  swinTest,
  type Tensor,
  tree,
} from "../mod.ts";
import { assertClose } from "./util.ts";

const CONFIG = swinTest({ embedDim: 8, numHeads: [2, 2], mlpRatio: 2 });

/** Host tensors of every leaf of `t`, named `prefix + path`. */
async function named(t: unknown, prefix = ""): Promise<Map<string, HostTensor>> {
  const entries = tree.paths<Tensor>(t);
  const datas = await Promise.all(entries.map(([, x]) => x.data()));
  return new Map(entries.map(([k, x], i) => [prefix + k, { dtype: x.dtype, shape: [...x.shape], data: datas[i] }]));
}

Deno.test("checkpoint: a round trip through names loads every value (with the buffers checked and dropped)", async () => {
  const params = initSwin(random.key(3), CONFIG);
  const teacher = { backbone: params, head: { w: fromTyped(new Float32Array(2), [2], "float32", cpu) } };
  const exported = exportTeacherBackbone(teacher);
  const keys = [...exported.keys()];
  assert.ok(!keys.includes("masked_embed"));
  const i = keys.indexOf("layers.0.blocks.1.attn.relative_position_bias_table");
  assert.equal(keys[i + 1], "layers.0.blocks.1.attn.relative_position_index");
  assert.deepEqual(Array.from(await exported.get(keys[i + 1])!.data()), Array.from(relativePositionIndex(4)));
  // As a teacher state dict: backbone.* plus head keys that the prefix leaves out.
  const dict = await named(Object.fromEntries(exported), "backbone.");
  dict.set("head.mlp.0.weight", { dtype: "float32", shape: [1], data: new Float32Array(1) });
  const spec = swinSpec({ ...CONFIG, maskedEmbed: false });
  const loaded = await loadWeightsIntoModel(spec, dict, { prefix: "backbone." });
  const a = await named(loaded);
  const { masked_embed: _, ...withoutMask } = params;
  const b = await named(withoutMask);
  for (const [k, v] of a) assert.deepEqual(Array.from(v.data), Array.from(b.get(k)!.data), k);
  assert.equal(a.size, tree.leaves(spec).length);
  // The teacher file written as safetensors has the same names.
  const path = await Deno.makeTempFile({ dir: "/tmp", suffix: ".safetensors" });
  await saveTeacherBackbone(teacher, path);
  const { flat, metadata } = await loadSafetensors(path);
  assert.deepEqual([...flat.keys()].sort(), keys.slice().sort());
  assert.match(metadata.format, /checkpoint_teacher/);
  const file = await readModelWeights(path);
  assert.equal(file.format, "safetensors");
  assert.equal(file.sourceDtypes.get(keys[i + 1]), "I32");
  await Deno.remove(path);
});

Deno.test("checkpoint: missing, unexpected and mis-shaped keys are named in one error", async () => {
  const params = initSwin(random.key(1), CONFIG);
  const dict = await named(params, "module.backbone.");
  dict.delete("module.backbone.layers.1.blocks.0.norm1.weight");
  dict.delete("module.backbone.masked_embed");
  dict.set("module.backbone.extra.thing", { dtype: "float32", shape: [3], data: new Float32Array(3) });
  dict.set("module.backbone.patch_embed.proj.weight", {
    dtype: "float32",
    shape: [8, 3, 8, 8],
    data: new Float32Array(8 * 3 * 64),
  });
  const bad = relativePositionIndex(4).slice();
  bad[5] = 0;
  dict.set("module.backbone.layers.0.blocks.0.attn.relative_position_index", {
    dtype: "int32",
    shape: [16, 16],
    data: bad,
  });
  await assert.rejects(
    () => loadWeightsIntoModel(swinSpec(CONFIG), dict, { prefix: "module.backbone." }),
    (e: Error) => {
      assert.match(e.message, /missing \(2\):/);
      assert.match(e.message, /module\.backbone\.layers\.1\.blocks\.0\.norm1\.weight \[16\]/);
      assert.match(e.message, /module\.backbone\.masked_embed \[1,8\]/);
      assert.match(e.message, /unexpected \(1\):\n\s+module\.backbone\.extra\.thing \[3\]/);
      assert.match(
        e.message,
        /wrong shape \(1\):\n\s+module\.backbone\.patch_embed\.proj\.weight: checkpoint \[8,3,8,8\], model \[8,3,4,4\]/,
      );
      assert.match(e.message, /relative_position_index \[16,16\]: differs/);
      return true;
    },
  );
  // Non-strict: missing keys keep the initial values, unexpected ones are ignored; shapes still must match.
  dict.set("module.backbone.patch_embed.proj.weight", (await named(params)).get("patch_embed.proj.weight")!);
  dict.set("module.backbone.layers.0.blocks.0.attn.relative_position_index", {
    dtype: "int32",
    shape: [16, 16],
    data: relativePositionIndex(4),
  });
  const loaded = await loadWeightsIntoModel(params, dict, { prefix: "module.backbone.", strict: false });
  assert.equal(loaded.layers[1].blocks[0].norm1.weight, params.layers[1].blocks[0].norm1.weight);
  await assert.rejects(() => loadWeightsIntoModel(swinSpec(CONFIG), new Map()), /missing \(\d+\)/);
});

Deno.test("checkpoint: specFromShapes and dtype conversion (float64 and int64-as-int32 sources)", async () => {
  const spec = specFromShapes([["a.weight", [2]], ["b.0.bias", [1]]]);
  const loaded = await loadWeightsIntoModel(
    spec,
    new Map<string, HostTensor>([
      ["a.weight", { dtype: "float64", shape: [2], data: new Float64Array([0.5, 2]) }],
      ["b.0.bias", { dtype: "int32", shape: [1], data: new Int32Array([7]) }],
    ]),
  ) as { a: { weight: Tensor }; b: { bias: Tensor }[] };
  assert.equal(loaded.a.weight.dtype, "float32");
  assert.deepEqual(Array.from(await loaded.a.weight.data()), [0.5, 2]);
  assert.deepEqual(Array.from(await loaded.b[0].bias.data()), [7]);
});

Deno.test("checkpoint: a PyTorch tiny Swin (official names, int64 buffers) loads and matches its forward", async () => {
  const ckpt = await readModelWeights(new URL("./fixtures/pth/swin_tiny.pth", import.meta.url).pathname);
  const sd = stateDict(ckpt.tensors, "student"); // backbone.* with module. stripped
  assert.equal(
    ckpt.sourceDtypes.get("student.module.backbone.layers.0.blocks.0.attn.relative_position_index"),
    "int64",
  );
  const params = await loadWeightsIntoModel(swinSpec(CONFIG), sd, { prefix: "backbone." });
  const get = (k: string) => {
    const t = ckpt.tensors.get(`forward.${k}`)!;
    return fromTyped(t.data, t.shape, t.dtype, cpu);
  };
  const [images, masks] = [get("images"), get("masks")];
  const out = swin(params, images, { config: CONFIG });
  const outMasked = swin(params, images, { config: CONFIG, masks });
  assert.deepEqual(out.shape, [2, 1 + 9, 16]);
  const [a, b] = await Promise.all([out.data(), outMasked.data()]);
  assertClose(a, ckpt.tensors.get("forward.out")!.data, 1e-4, 1e-5, "swin vs PyTorch");
  assertClose(b, ckpt.tensors.get("forward.out_masked")!.data, 1e-4, 1e-5, "masked swin vs PyTorch");
  // Exporting the loaded tree gives back the file's backbone names in the file's order, buffers included.
  const names = [...sd.keys()].filter((k) => k !== "backbone.masked_embed").map((k) => k.slice("backbone.".length));
  assert.deepEqual([...exportTeacherBackbone(params).keys()], names);
});
