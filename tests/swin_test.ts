/**
 * Swin backbone: two official blocks against the PyTorch fixture (tests/fixtures/swin) on the CPU and WebGPU,
 * the host constants (relative-position index, shift mask), a float64 gradient check of a tiny Swin against
 * finite differences, CPU/WebGPU agreement of a full tiny forward, the construction rules of Swin-T/7 and /14,
 * and the official output layout.
 */
import assert from "node:assert/strict";
import {
  type Backend,
  cpu,
  fromTyped,
  initSwin,
  jit,
  random,
  relativePositionIndex,
  shiftAttnMask,
  swin,
  swinBlock,
  type SwinBlockParams,
  type SwinConfig,
  swinLayout,
  type SwinParams,
  swinSpec,
  swinTest,
  swinTiny,
  type Tensor,
  tree,
  valueAndGrad,
} from "../mod.ts";
import { parseSafetensors } from "../models/safetensors.ts";
import type { HostTensor } from "../models/safetensors.ts";
import { assertClose, checkVjp, gpu, randArray, readAll } from "./util.ts";

const FIX = new URL("./fixtures/swin/", import.meta.url);
const load = async (name: string) => parseSafetensors(await Deno.readFile(new URL(name, FIX)), name).tensors;
const [INPUTS, PARAMS, EXPECTED] = await Promise.all([
  load("inputs.safetensors"),
  load("params.safetensors"),
  load("expected.safetensors"),
]);

const upload = (t: HostTensor, backend: Backend): Tensor => fromTyped(t.data, t.shape, t.dtype, backend);

/** Max |a - b| and max |a - b| / max|b| (relative to the array's scale). */
function errors(a: ArrayLike<number>, b: ArrayLike<number>): { abs: number; rel: number } {
  let abs = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    abs = Math.max(abs, Math.abs(Number(a[i]) - Number(b[i])));
    scale = Math.max(scale, Math.abs(Number(b[i])));
  }
  return { abs, rel: abs / scale };
}

/** The fixture's block parameters as a tree (the relative_position_index buffers are not parameters). */
function fixtureBlocks(backend: Backend): SwinBlockParams[] {
  const entries = [...PARAMS]
    .filter(([k]) => !k.endsWith("relative_position_index"))
    .map(([k, t]): [string, Tensor] => [k, upload(t, backend)]);
  const t = tree.fromPaths(entries) as unknown as { layers: { blocks: SwinBlockParams[] }[] };
  return t.layers[0].blocks;
}

const BLOCK = { numHeads: 3, windowSize: 4, eps: 1e-5 } as const;

/** The fixture's loss and everything it checks, as one function of (blocks, x8, x6). */
function blockPair(blocks: SwinBlockParams[], x8: Tensor, x6: Tensor, cot8: Tensor, cot6: Tensor) {
  const run = (x: Tensor) => {
    const b0 = swinBlock(blocks[0], x, { ...BLOCK, shiftSize: 0 });
    return [b0, swinBlock(blocks[1], b0, { ...BLOCK, shiftSize: 2 })];
  };
  const out8 = run(x8);
  const out6 = run(x6);
  const loss = out8[1].mul(cot8).sum().add(out6[1].mul(cot6).sum());
  return [loss, { out8, out6 }] as const;
}

async function checkBlocks(backend: Backend): Promise<Record<string, { abs: number; rel: number }>> {
  const blocks = fixtureBlocks(backend);
  const [x8, x6, cot8, cot6] = ["x8", "x6", "cot8", "cot6"].map((k) => upload(INPUTS.get(k)!, backend));
  const vg = valueAndGrad(
    (b: SwinBlockParams[], a8: Tensor, a6: Tensor) => blockPair(b, a8, a6, cot8, cot6),
    { argnums: [0, 1, 2], hasAux: true },
  );
  const [[loss, aux], [gBlocks, g8, g6]] = vg(blocks, x8, x6);
  const got: [string, Tensor][] = [
    ["loss", loss],
    ["out8.block0", aux.out8[0]],
    ["out8.block1", aux.out8[1]],
    ["out6.block0", aux.out6[0]],
    ["out6.block1", aux.out6[1]],
    ["grad_input.x8", g8],
    ["grad_input.x6", g6],
    ...tree.paths<Tensor>(gBlocks).map(([k, t]): [string, Tensor] => [`grad.layers.0.blocks.${k}`, t]),
  ];
  const datas = await readAll(got.map(([, t]) => t));
  const report: Record<string, { abs: number; rel: number }> = {};
  got.forEach(([name, t], i) => {
    const want = EXPECTED.get(name);
    assert.ok(want, `fixture has no '${name}'`);
    assert.equal(t.size, want.data.length, name);
    // rel tol 1e-4 of each element, with an absolute floor of 1e-4 of the array's scale (near-zero entries).
    const scale = Array.from(want.data, Math.abs).reduce((a, v) => Math.max(a, v), 0);
    assertClose(datas[i], want.data, 1e-4, 1e-4 * scale, `${backend.name} ${name}`);
    report[name] = errors(datas[i], want.data);
  });
  const gradNames = [...EXPECTED.keys()].filter((k) => k.startsWith("grad.")).sort();
  assert.deepEqual(got.map(([k]) => k).filter((k) => k.startsWith("grad.")).sort(), gradNames);
  return report;
}

function summarize(backend: string, report: Record<string, { abs: number; rel: number }>): void {
  let worst = ["", 0, 0] as [string, number, number];
  for (const [k, { abs, rel }] of Object.entries(report)) if (rel > worst[2]) worst = [k, abs, rel];
  console.log(
    `  ${backend}: worst ${worst[0]} max abs ${worst[1].toExponential(2)} (rel ${worst[2].toExponential(2)})`,
  );
}

Deno.test("swin: host constants match the fixture (relative_position_index, shift mask)", () => {
  const idx = PARAMS.get("layers.0.blocks.0.attn.relative_position_index")!;
  assert.deepEqual(Array.from(relativePositionIndex(4)), Array.from(idx.data));
  assert.deepEqual(Array.from(shiftAttnMask(8, 8, 4, 2)), Array.from(EXPECTED.get("attn_mask_8x8_shift2")!.data));
  // A whole-map window with a shift masks only across the three regions of each axis.
  const m = shiftAttnMask(7, 7, 7, 3);
  assert.equal(m.length, 49 * 49);
  assert.equal(m[0], 0);
  assert.equal(m[0 * 49 + 48], -100);
});

Deno.test("swin: two official blocks (shift 0, shift 2; 8x8 and 6x6 padded) on the CPU", async () => {
  summarize("cpu", await checkBlocks(cpu));
});

Deno.test("swin: two official blocks on WebGPU", async () => {
  summarize("webgpu", await checkBlocks(await gpu()));
});

Deno.test("swin: Swin-T construction rules (window 7 and 14)", () => {
  const w7 = swinLayout(swinTiny(7));
  assert.deepEqual(w7.map((s) => s.resolution), [56, 28, 14, 7]);
  assert.deepEqual(w7.map((s) => s.windowSize), [7, 7, 7, 7]);
  assert.deepEqual(w7.map((s) => s.shifts), [[0, 3], [0, 3], [0, 3, 0, 3, 0, 3], [0, 0]]);
  const w14 = swinLayout(swinTiny(14));
  assert.deepEqual(w14.map((s) => s.windowSize), [14, 14, 14, 7]);
  assert.deepEqual(w14.map((s) => s.shifts), [[0, 7], [0, 7], [0, 0, 0, 0, 0, 0], [0, 0]]);
  assert.deepEqual(w7.flatMap((s) => s.dropPath).at(-1), 0.1);
  const spec14 = swinSpec(swinTiny(14));
  assert.deepEqual(
    spec14.layers.map((l) => l.blocks[0].attn.relative_position_bias_table.shape),
    [[729, 3], [729, 6], [729, 12], [169, 24]],
  );
  // Parameter count of the official swin_tiny backbone without its classification head: 27,519,354.
  const count = (c: SwinConfig) =>
    tree.leaves<{ size: number }>(swinSpec({ ...c, maskedEmbed: false })).reduce((a, l) => a + l.size, 0);
  assert.equal(count(swinTiny(7)), 27_519_354);
  const keys = tree.paths(swinSpec(swinTiny(7))).map(([k]) => k);
  assert.equal(keys[0], "patch_embed.proj.weight");
  assert.ok(keys.includes("layers.2.blocks.5.attn.relative_position_bias_table"));
  assert.ok(keys.includes("layers.2.downsample.reduction.weight"));
  assert.ok(!keys.includes("layers.3.downsample.reduction.weight"));
  assert.deepEqual(keys.slice(-3), ["norm.weight", "norm.bias", "masked_embed"]);
});

// ---------------------------------------------------------------------------------------------------------
// A tiny Swin: 20x20 images (5x5 patches, padded to 8x8 in stage 1; the odd 5x5 grid is padded to 6x6 by the
// merging; stage 2 is 3x3 padded to a 4x4 window), shifted windows, masks.

const TINY: SwinConfig = swinTest({ embedDim: 8, numHeads: [2, 2], mlpRatio: 2 });

/** Random non-trivial parameters of `config` (LayerNorm weights near 1, everything else O(0.3)). */
function randomParams(config: SwinConfig, dtype: "float32" | "float64", seed: number): SwinParams {
  const spec = swinSpec(config);
  const leaves = tree.paths<{ shape: readonly number[]; size: number }>(spec).map(([name, s], i) => {
    const r = randArray(seed * 1000 + i, s.size, -1, 1);
    const isNormWeight = /norm\d?\.weight$/.test(name) || name.endsWith("norm.weight");
    const v = r.map((x) => (isNormWeight ? 1 + 0.2 * x : name.includes("bias_table") ? 2 * x : 0.4 * x));
    return fromTyped(dtype === "float64" ? v : Float32Array.from(v), s.shape, dtype, cpu);
  });
  return tree.unflatten(tree.flatten(spec).def, leaves);
}

function tinyInputs(dtype: "float32" | "float64") {
  const img = randArray(77, 2 * 3 * 20 * 20, -1, 1);
  const images = fromTyped(dtype === "float64" ? img : Float32Array.from(img), [2, 3, 20, 20], dtype, cpu);
  const m = Uint8Array.from({ length: 2 * 25 }, (_, i) => ((i * 7) % 5 === 0 ? 1 : 0));
  const masks = fromTyped(m, [2, 5, 5], "bool", cpu);
  return { images, masks };
}

Deno.test("swin: tiny Swin vjp matches finite differences (float64, CPU)", async () => {
  const params = randomParams(TINY, "float64", 3);
  const { images, masks } = tinyInputs("float64");
  const { leaves, def } = tree.flatten<Tensor>(params);
  const f = (...args: Tensor[]) => {
    const p = tree.unflatten<SwinParams>(def, args.slice(0, -1));
    return swin(p, args[args.length - 1], { config: TINY, masks });
  };
  const { analytic, numeric } = await checkVjp(f, [...leaves, images], { rtol: 1e-6, what: "swin" });
  console.log(`  <vjp(u), v> = ${analytic}, finite differences ${numeric}`);
});

Deno.test("swin: full tiny forward agrees on CPU and WebGPU; output layout", async () => {
  const backend = await gpu();
  const params = randomParams(TINY, "float32", 5);
  const { images, masks } = tinyInputs("float32");
  const toGpu = (t: Tensor) => t.data().then((d) => fromTyped(d, t.shape, t.dtype, backend));
  const gParams = tree.unflatten<SwinParams>(
    tree.flatten(params).def,
    await Promise.all(tree.leaves<Tensor>(params).map(toGpu)),
  );
  const [gImages, gMasks] = await Promise.all([toGpu(images), toGpu(masks)]);
  const outCpu = swin(params, images, { config: TINY, masks });
  const outGpu = swin(gParams, gImages, { config: TINY, masks: gMasks });
  // Under jit (the host constants become captured graph constants), with a gradient.
  const step = jit(valueAndGrad((p: SwinParams, x: Tensor, m: Tensor) => swin(p, x, { config: TINY, masks: m }).sum()));
  const [jitLoss, jitGrad] = step(gParams, gImages, gMasks);
  const [eagerLoss, eagerGrad] = valueAndGrad((p: SwinParams) => swin(p, images, { config: TINY, masks }).sum())(
    params,
  );
  const plain = swin(params, images, { config: TINY });
  assert.deepEqual(outCpu.shape, [2, 1 + 9, 16]);
  const [a, b, c, jl, el, jg, eg] = await readAll([
    outCpu,
    outGpu,
    plain,
    jitLoss,
    eagerLoss,
    jitGrad.layers[0].blocks[1].attn.relative_position_bias_table,
    eagerGrad.layers[0].blocks[1].attn.relative_position_bias_table,
  ]);
  assertClose(b, a, 1e-4, 1e-5, "webgpu vs cpu");
  assertClose(jl, el, 1e-4, 1e-4, "jit webgpu loss vs eager cpu");
  assertClose(jg, eg, 1e-4, 1e-4, "jit webgpu grad vs eager cpu");
  console.log(`  max |gpu - cpu| = ${errors(b, a).abs.toExponential(2)}`);
  // The first token is the mean of the others; masks change the output.
  for (let d = 0; d < 16; d++) {
    let s = 0;
    for (let t = 1; t <= 9; t++) s += a[t * 16 + d];
    assert.ok(Math.abs(s / 9 - a[d]) < 1e-5);
  }
  assert.ok(errors(a, c).abs > 1e-3);
});

Deno.test("swin: coarse masks are repeated to the patch grid; drop path is keyed", async () => {
  const config = TINY;
  const params = randomParams(config, "float32", 9);
  const img = fromTyped(Float32Array.from(randArray(4, 2 * 3 * 32 * 32)), [2, 3, 32, 32], "float32", cpu);
  const coarse = fromTyped(Uint8Array.from([1, 0, 0, 1, 0, 0, 1, 1]), [2, 2, 2], "bool", cpu);
  const fineData = new Uint8Array(2 * 64);
  for (let b = 0; b < 2; b++) {
    for (let i = 0; i < 8; i++) {
      for (let j = 0; j < 8; j++) {
        fineData[b * 64 + i * 8 + j] = [1, 0, 0, 1, 0, 0, 1, 1][b * 4 + (i >> 2) * 2 + (j >> 2)];
      }
    }
  }
  const fine = fromTyped(fineData, [2, 8, 8], "bool", cpu);
  const [a, b] = await readAll([
    swin(params, img, { config, masks: coarse }),
    swin(params, img, { config, masks: fine }),
  ]);
  assert.deepEqual(Array.from(a), Array.from(b));
  const dp = { ...config, dropPathRate: 0.5 };
  const k = random.key(1);
  const [t1, t2, t3, ev] = await readAll([
    swin(params, img, { config: dp, train: true, key: k }),
    swin(params, img, { config: dp, train: true, key: k }),
    swin(params, img, { config: dp, train: true, key: random.key(2) }),
    swin(params, img, { config: dp }),
  ]);
  assert.deepEqual(Array.from(t1), Array.from(t2));
  assert.ok(errors(t1, t3).abs > 0 || errors(t1, ev).abs > 0);
  const init = initSwin(random.key(0), config);
  assert.deepEqual(
    tree.paths<Tensor>(init).map(([k, t]) => [k, t.shape]),
    tree.paths<Tensor>(params).map(([k, t]) => [k, t.shape]),
  );
});
