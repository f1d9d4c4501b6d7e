/**
 * The iBOT head (models/head.ts): golden PyTorch values (tests/fixtures/rgb) for CLS and patch tokens on the CPU
 * and WebGPU, official names, init, weight normalisation, the frozen `weight_g`, and a float64 gradient check.
 */
import assert from "node:assert/strict";
import {
  type Backend,
  cpu,
  fromTyped,
  grad,
  head,
  type HeadParams,
  headParamShapes,
  initHead,
  initVit,
  jit,
  loadSafetensors,
  mul,
  random,
  reshape,
  slice,
  sum,
  type Tensor,
  tree,
  weightNormWeight,
} from "../mod.ts";
import { assertClose, checkVjp, closeness, gpu, randArray, readAll } from "./util.ts";

const RGB = new URL("./fixtures/rgb/", import.meta.url).pathname;

async function checkFixtures(backend: Backend): Promise<void> {
  const load = (f: string) => loadSafetensors(`${RGB}${f}.safetensors`, { backend });
  const [p, t, e] = await Promise.all([load("params"), load("teacher_params"), load("expected")]);
  const student = (p.tree as { head: HeadParams }).head;
  const teacher = (t.tree as { head: HeadParams }).head;
  const expected = e.flat;
  const outs: [string, Tensor][] = [];
  const run = (who: "student" | "teacher", params: HeadParams, v: number) => {
    // The expected backbone tokens as input, so that this test does not depend on the ViT.
    const tokens = expected.get(`${who}_tokens.${v}`)!;
    const [B, T, D] = tokens.shape;
    const cls = reshape(slice(tokens, [0, 0, 0], [B, 1, D]), [B, D]); // [B, D]
    const patches = slice(tokens, [0, 1, 0]); // [B, N, D]
    outs.push([`${who}_head_cls.${v}`, head(params, cls)]);
    outs.push([`${who}_head_patch.${v}`, head(params, patches)]);
    // All tokens at once: the same numbers (the MLP is per token).
    const all = head(params, tokens);
    outs.push([`${who}_head_cls.${v}`, reshape(slice(all, [0, 0, 0], [B, 1]), [B, -1])]);
    outs.push([`${who}_head_patch.${v}`, slice(all, [0, 1, 0], [B, T])]);
  };
  for (let v = 0; v < 4; v++) run("student", student, v);
  for (let v = 0; v < 2; v++) run("teacher", teacher, v);
  const got = await readAll(outs.map(([, x]) => x));
  const want = await readAll(outs.map(([n]) => expected.get(n)!));
  let worst = 0;
  outs.forEach(([name, x], i) => {
    assert.deepEqual(x.shape, expected.get(name)!.shape, name);
    assertClose(got[i], want[i], 1e-4, 1e-5, `${backend.name} ${name}`);
    for (let j = 0; j < want[i].length; j++) worst = Math.max(worst, Math.abs(got[i][j] - want[i][j]));
  });
  console.log(`  ${backend.name}: max |diff| vs PyTorch ${worst.toExponential(2)}`);
}

Deno.test("head: fixtures (student and teacher, CLS and patch tokens) on the CPU", async () => {
  await checkFixtures(cpu);
});

Deno.test("head: fixtures on WebGPU", async () => {
  await checkFixtures(await gpu());
});

Deno.test("head: official names and shapes (alone and as {backbone, head}); init as spec §3.4", async () => {
  const { flat } = await loadSafetensors(`${RGB}params.safetensors`, { backend: cpu });
  const config = { inDim: 48, hiddenDim: 64, bottleneckDim: 32, outDim: 128 };
  const h = initHead(random.key(1, cpu), config);
  assert.deepEqual(tree.paths(h).map(([k, x]) => [k, x.shape]), [
    ["mlp.0.weight", [64, 48]],
    ["mlp.0.bias", [64]],
    ["mlp.2.weight", [64, 64]],
    ["mlp.2.bias", [64]],
    ["mlp.4.weight", [32, 64]],
    ["mlp.4.bias", [32]],
    ["last_layer.weight_g", [128, 1]],
    ["last_layer.weight_v", [128, 32]],
  ]);
  const student = {
    backbone: initVit(random.key(2, cpu), { imgSize: 32, patchSize: 8, embedDim: 48, depth: 2, numHeads: 3 }),
    head: h,
  };
  const sig = (entries: [string, Tensor][]) => entries.map(([k, x]) => `${k}:${x.shape}`).sort();
  assert.deepEqual(sig(tree.paths(student)), sig([...flat]));
  // Other depths keep the nn.Sequential indices; one layer is a bare Linear.
  const names = (n: number) => tree.paths(initHead(random.key(1, cpu), { ...config, nlayers: n })).map(([k]) => k);
  assert.deepEqual(names(2).slice(0, 4), ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]);
  assert.deepEqual(names(1).slice(0, 2), ["mlp.weight", "mlp.bias"]);
  assert.equal(names(5).filter((k) => k.startsWith("mlp.")).at(-1), "mlp.8.bias");
  for (const n of [1, 2, 4]) {
    const hn = initHead(random.key(1, cpu), { ...config, nlayers: n });
    assert.deepEqual(head(hn, fromTyped(new Float32Array(3 * 48), [3, 48], "float32", cpu)).shape, [3, 128]);
  }
  // Defaults: hidden 2048, bottleneck 256.
  assert.deepEqual(headParamShapes({ inDim: 8, outDim: 16 }).map(([, s]) => s), [
    [2048, 8],
    [2048],
    [2048, 2048],
    [2048],
    [256, 2048],
    [256],
    [16, 1],
    [16, 256],
  ]);
  // The ViT-S head parameter count of spec §3.4 (K = 8192, shared head, so one prototype layer).
  const count = headParamShapes({ inDim: 384, outDim: 8192 }).reduce((n, [, s]) => n + s.reduce((a, b) => a * b), 0);
  assert.equal(count, 7614720);
  assert.deepEqual(tree.paths(h).map(([k, x]) => [k, x.shape]), headParamShapes(config));

  const data = await readAll(tree.leaves<Tensor>(h));
  tree.paths(h).forEach(([k, x], i) => {
    const d = Array.from(data[i]);
    const std = Math.sqrt(d.reduce((a, v) => a + v * v, 0) / d.length);
    if (k.endsWith(".bias")) assert.ok(d.every((v) => v === 0), k);
    else if (k === "last_layer.weight_g") assert.ok(d.every((v) => v === 1), k);
    else if (k === "last_layer.weight_v") {
      assert.ok(d.every((v) => Math.abs(v) <= 1 / Math.sqrt(32)), k);
      assert.ok(Math.abs(std - 1 / Math.sqrt(32 * 3)) < 0.01, `${k} std ${std}`);
    } else assert.ok(Math.abs(std - 0.02) < 0.003, `${k} std ${std} (${x.size})`);
  });
});

function randomHead(seed: number): HeadParams {
  const h = initHead(random.key(seed, cpu), { inDim: 6, hiddenDim: 7, bottleneckDim: 5, outDim: 9 }, {
    dtype: "float64",
  });
  return tree.map((x: Tensor) => {
    const isG = x.shape.length === 2 && x.shape[1] === 1;
    const d = randArray(seed * 31 + x.size, x.size, isG ? 0.5 : -0.6, isG ? 1.5 : 0.6);
    return fromTyped(d, x.shape, "float64", cpu);
  }, h) as unknown as HeadParams;
}

Deno.test("head: weight norm gives unit rows; weight_g is frozen (zero gradient) unless normLastLayer is false", async () => {
  const h = randomHead(3);
  const ones = {
    ...h,
    last_layer: { ...h.last_layer, weight_g: fromTyped(new Float64Array(9).fill(1), [9, 1], "float64", cpu) },
  };
  const w = await weightNormWeight(ones.last_layer).data();
  for (let r = 0; r < 9; r++) {
    const n = Math.hypot(...Array.from(w).slice(r * 5, r * 5 + 5));
    assert.ok(Math.abs(n - 1) < 1e-12);
  }
  const x = fromTyped(randArray(4, 2 * 3 * 6, -2, 2), [2, 3, 6], "float64", cpu);
  const y = head(ones, x);
  assert.deepEqual(y.shape, [2, 3, 9]);
  // Logits are cosine similarities.
  assert.ok(Array.from(await y.data()).every((v) => Math.abs(v) <= 1 + 1e-12));
  const loss = (frozen: boolean) => (p: HeadParams) => sum(mul(head(p, x, { normLastLayer: frozen }), x.sum()));
  const [gFrozen, gFree] = [grad(loss(true))(h) as HeadParams, grad(loss(false))(h) as HeadParams];
  const [a, b, va, vb] = await readAll([
    gFrozen.last_layer.weight_g,
    gFree.last_layer.weight_g,
    gFrozen.last_layer.weight_v,
    gFree.last_layer.weight_v,
  ]);
  assert.ok(Array.from(a).every((v) => v === 0));
  assert.ok(Array.from(b).some((v) => Math.abs(v) > 1e-6));
  // weight_v still learns when g is frozen, with the same gradient as when g is free (only g's is cut).
  assert.ok(Array.from(va).some((v) => Math.abs(v) > 1e-6));
  assert.ok(closeness(va, vb, 1e-12, 1e-12) <= 1);
});

Deno.test("head: float64 VJP matches finite differences (CLS and patch tokens; frozen and free weight_g)", async () => {
  const h = randomHead(5);
  const { leaves, def } = tree.flatten<Tensor>(h);
  const cls = fromTyped(randArray(6, 3 * 6, -2, 2), [3, 6], "float64", cpu);
  const patches = fromTyped(randArray(7, 2 * 4 * 6, -2, 2), [2, 4, 6], "float64", cpu);
  // normLastLayer false: every parameter, weight_g included, is differentiated.
  const free = (x: Tensor, ...ls: Tensor[]) => head(tree.unflatten<HeadParams>(def, ls), x, { normLastLayer: false });
  await checkVjp(free, [cls, ...leaves], { seed: 1, what: "head cls" });
  await checkVjp(free, [patches, ...leaves], { seed: 2, what: "head patches" });
  // normLastLayer true: weight_g is a constant (closed over), the rest is differentiated.
  const gIndex = tree.paths(h).findIndex(([k]) => k === "last_layer.weight_g");
  const rest = leaves.filter((_, i) => i !== gIndex);
  const frozen = (x: Tensor, ...ls: Tensor[]) => {
    const all = [...ls.slice(0, gIndex), leaves[gIndex], ...ls.slice(gIndex)];
    return head(tree.unflatten<HeadParams>(def, all), x);
  };
  await checkVjp(frozen, [patches, ...rest], { seed: 3, what: "head frozen g" });
});

Deno.test("head: jit equals eager on WebGPU", async () => {
  const backend = await gpu();
  const { tree: params } = await loadSafetensors(`${RGB}params.safetensors`, { backend });
  const { flat } = await loadSafetensors(`${RGB}expected.safetensors`, { backend });
  const h = (params as { head: HeadParams }).head;
  const x = flat.get("student_tokens.0")!;
  const f = jit((p: HeadParams, t: Tensor) => head(p, t));
  const [a, b] = await readAll([f(h, x), head(h, x)]);
  assertClose(a, b, 1e-5, 1e-7, "jit head");
  f.dispose();
});
