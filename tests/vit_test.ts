/**
 * The ViT backbone (models/vit.ts): golden PyTorch values (tests/fixtures/rgb) on the CPU and WebGPU backends,
 * official names, shapes and init, the patch embedding and position-embedding interpolation against direct
 * float64 loops, mask-token semantics, drop path, attention maps, a float64 gradient check against finite
 * differences, a ViT-S/16 safetensors round trip, and jit against eager on WebGPU.
 */
import assert from "node:assert/strict";
import {
  type Backend,
  cpu,
  fromTyped,
  grad,
  initVit,
  interpolatePosEmbed,
  jit,
  loadSafetensors,
  mul,
  random,
  saveSafetensors,
  sum,
  type Tensor,
  tree,
  vit,
  VIT_PRESETS,
  vitConfig,
  type VitParams,
  vitParamShapes,
} from "../mod.ts";
import { dropPathRates, patchEmbed } from "../models/vit.ts";
import { assertClose, checkVjp, closeness, gpu, randArray, readAll, rng } from "./util.ts";

const RGB = new URL("./fixtures/rgb/", import.meta.url).pathname;
const RTOL = 1e-4;
const ATOL = 1e-5;

interface Fixtures {
  student: VitParams;
  teacher: VitParams;
  inputs: Map<string, Tensor>;
  expected: Map<string, Tensor>;
}

async function fixtures(backend: Backend): Promise<Fixtures> {
  const load = (f: string) => loadSafetensors(`${RGB}${f}.safetensors`, { backend });
  const [p, t, i, e] = await Promise.all([load("params"), load("teacher_params"), load("inputs"), load("expected")]);
  return {
    student: (p.tree as { backbone: VitParams }).backbone,
    teacher: (t.tree as { backbone: VitParams }).backbone,
    inputs: i.flat,
    expected: e.flat,
  };
}

const FIXTURE_CONFIG = { numHeads: 3, layerNormEps: 1e-6 };

/** Every backbone output of the fixture file, as [expected name, computed tensor]. */
function fixtureOutputs(f: Fixtures): [string, Tensor][] {
  const all = { ...FIXTURE_CONFIG, returnAllTokens: true };
  const crop = (v: number) => f.inputs.get(`crops.${v}`)!;
  const out: [string, Tensor][] = [];
  for (let v = 0; v < 4; v++) {
    const masks = v < 2 ? f.inputs.get(`masks.${v}`)! : null;
    out.push([`student_tokens.${v}`, vit(f.student, crop(v), { ...all, masks })]);
  }
  for (let v = 0; v < 2; v++) {
    out.push([`student_tokens_nomask.${v}`, vit(f.student, crop(v), all)]);
    out.push([`teacher_tokens.${v}`, vit(f.teacher, crop(v), all)]);
  }
  out.push(["pos_embed_local_2x2", interpolatePosEmbed(f.student.pos_embed, 2, 2)]);
  return out;
}

async function checkFixtures(backend: Backend): Promise<void> {
  const f = await fixtures(backend);
  const outs = fixtureOutputs(f);
  // The CLS-only output is token 0 of the full output.
  const cls = vit(f.student, f.inputs.get("crops.0")!, { ...FIXTURE_CONFIG, masks: f.inputs.get("masks.0")! });
  const got = await readAll([...outs.map(([, t]) => t), cls]);
  const want = await readAll(outs.map(([name]) => f.expected.get(name)!));
  let worstAbs = 0;
  let worstRatio = 0;
  outs.forEach(([name, t], i) => {
    assert.deepEqual(t.shape, f.expected.get(name)!.shape, name);
    assertClose(got[i], want[i], RTOL, ATOL, `${backend.name} ${name}`);
    for (let j = 0; j < want[i].length; j++) worstAbs = Math.max(worstAbs, Math.abs(got[i][j] - want[i][j]));
    worstRatio = Math.max(worstRatio, closeness(got[i], want[i], RTOL, ATOL));
  });
  const [B, T, D] = outs[0][1].shape;
  assert.deepEqual(cls.shape, [B, D]);
  const clsWant = new Float64Array(B * D);
  for (let b = 0; b < B; b++) clsWant.set(Array.from(got[0]).slice(b * T * D, b * T * D + D), b * D);
  assertClose(got[got.length - 1], clsWant, 1e-6, 1e-7, "cls-only output");
  console.log(
    `  ${backend.name}: max |diff| vs PyTorch ${worstAbs.toExponential(2)}, worst ratio ${worstRatio.toFixed(3)}`,
  );
}

Deno.test("vit: fixtures (masked, local crops with interpolated pos embed, no mask, teacher) on the CPU", async () => {
  await checkFixtures(cpu);
});

Deno.test("vit: fixtures on WebGPU", async () => {
  await checkFixtures(await gpu());
});

Deno.test("vit: params have exactly the official names and shapes; init follows spec §1.7", async () => {
  const f = await fixtures(cpu);
  const config = { imgSize: 32, patchSize: 8, embedDim: 48, depth: 2, numHeads: 3 };
  const sig = (t: unknown) => tree.paths(t).map(([p, x]) => `${p}:${x.shape}`).sort();
  const student = initVit(random.key(3, cpu), config);
  assert.deepEqual(sig(student), sig(f.student));
  assert.deepEqual(sig(initVit(random.key(3, cpu), { ...config, maskedEmbed: false })), sig(f.teacher));
  // Official state-dict order; blocks is an array.
  assert.deepEqual(tree.paths(student).map(([p, x]) => [p, x.shape]), vitParamShapes(config));
  assert.ok(Array.isArray(student.blocks) && student.blocks.length === 2);
  assert.deepEqual(tree.paths(student).slice(0, 5).map(([p]) => p), [
    "cls_token",
    "pos_embed",
    "masked_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
  ]);

  // Presets and the measured parameter counts of spec §1.1 (P = 16, img 224, without masked_embed).
  const count = (c: Parameters<typeof vitParamShapes>[0]) =>
    vitParamShapes(c).reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0);
  const counts = { vit_tiny: 5524416, vit_small: 21665664, vit_base: 85798656, vit_large: 303301632 };
  for (const [arch, n] of Object.entries(counts)) {
    assert.equal(count({ arch: arch as keyof typeof VIT_PRESETS, maskedEmbed: false }), n, arch);
  }
  assert.deepEqual(
    [vitConfig("vit_large").embedDim, vitConfig("vit_large").depth, vitConfig("vit_large").numHeads],
    [1024, 24, 16],
  );
  assert.equal(vitConfig({ arch: "vit_base", patchSize: 8 }).patchSize, 8);
  assert.throws(() => vitConfig({ embedDim: 10, numHeads: 3 }), /not divisible/);

  // Init statistics (one 64-wide, 2-block model): trunc-normal 0.02, uniform conv, LN 1/0, zero biases.
  const p = initVit(random.key(11, cpu), { imgSize: 32, patchSize: 8, embedDim: 64, depth: 2, numHeads: 4 });
  const leaves = tree.paths(p);
  const data = await readAll(leaves.map(([, t]) => t));
  const bound = 1 / Math.sqrt(3 * 8 * 8);
  leaves.forEach(([name, t], i) => {
    const d = Array.from(data[i]);
    const std = Math.sqrt(d.reduce((a, x) => a + x * x, 0) / d.length);
    if (name === "cls_token" || name === "pos_embed" || (name.endsWith(".weight") && t.rank === 2)) {
      assert.ok(Math.abs(std - 0.02) < (t.size > 1000 ? 0.002 : 0.006), `${name} std ${std}`);
    } else if (name.startsWith("patch_embed.")) {
      assert.ok(d.every((x) => Math.abs(x) <= bound), name);
      assert.ok(Math.abs(std - bound / Math.sqrt(3)) < (t.size > 1000 ? 0.003 : 0.01), `${name} std ${std}`);
    } else if (/norm[12]?\.weight$/.test(name)) {
      assert.ok(d.every((x) => x === 1), name);
    } else {
      assert.ok(d.every((x) => x === 0), name); // biases, masked_embed
    }
  });
  // Distinct leaves get distinct streams.
  const at = (n: string) => Array.from(data[leaves.findIndex(([k]) => k === n)]).slice(0, 4);
  assert.notDeepEqual(at("blocks.0.attn.qkv.weight"), at("blocks.0.attn.proj.weight"));
});

/** PyTorch's Keys cubic kernel, A = -0.75. */
function keysKernel(x: number, A = -0.75): number {
  const t = Math.abs(x);
  if (t <= 1) return (A + 2) * t ** 3 - (A + 3) * t ** 2 + 1;
  if (t < 2) return A * t ** 3 - 5 * A * t ** 2 + 8 * A * t - 4 * A;
  return 0;
}

/** Direct float64 reference of the official pos-embed interpolation (spec §1.4), non-square grids included. */
function posEmbedRef(pos: ArrayLike<number>, n0: number, D: number, gh: number, gw: number): Float64Array {
  const s = Math.sqrt(n0);
  const out = new Float64Array((1 + gh * gw) * D);
  for (let d = 0; d < D; d++) out[d] = pos[d];
  const taps = (dst: number, g: number) => {
    const src = (dst + 0.5) * s / (g + 0.1) - 0.5;
    const f = Math.floor(src);
    return [-1, 0, 1, 2].map((k) => [Math.min(Math.max(f + k, 0), s - 1), keysKernel(src - (f + k))]);
  };
  for (let i = 0; i < gh; i++) {
    for (let j = 0; j < gw; j++) {
      for (const [y, wy] of taps(i, gh)) {
        for (const [x, wx] of taps(j, gw)) {
          for (let d = 0; d < D; d++) out[(1 + i * gw + j) * D + d] += wy * wx * pos[(1 + y * s + x) * D + d];
        }
      }
    }
  }
  return out;
}

Deno.test("vit: position-embedding interpolation matches a direct bicubic loop (square and non-square)", async () => {
  const D = 5;
  for (const [side, gh, gw] of [[4, 2, 2], [4, 3, 2], [4, 4, 6], [3, 5, 1], [14, 6, 6]]) {
    const n0 = side * side;
    const pos = randArray(side * 10 + gh, (1 + n0) * D);
    const t = fromTyped(pos, [1, 1 + n0, D], "float64", cpu);
    const got = interpolatePosEmbed(t, gh, gw);
    assert.deepEqual(got.shape, [1, 1 + gh * gw, D]);
    assertClose(await got.data(), posEmbedRef(pos, n0, D, gh, gw), 1e-12, 1e-12, `${side}->${gh}x${gw}`);
  }
  // Same patch count and square: unchanged; same count but a non-square image: interpolated (official test).
  const pos = fromTyped(randArray(3, 17 * 2), [1, 17, 2], "float64", cpu);
  assert.equal(interpolatePosEmbed(pos, 4, 4), pos);
  assert.notEqual(interpolatePosEmbed(pos, 4, 4, false), pos);
});

Deno.test("vit: patch embedding equals a direct strided convolution (leftover border pixels dropped)", async () => {
  const [B, C, H, W, P, D] = [2, 3, 11, 9, 4, 5];
  const xs = randArray(1, B * C * H * W);
  const ws = randArray(2, D * C * P * P);
  const bs = randArray(3, D);
  const got = patchEmbed({
    weight: fromTyped(ws, [D, C, P, P], "float64", cpu),
    bias: fromTyped(bs, [D], "float64", cpu),
  }, fromTyped(xs, [B, C, H, W], "float64", cpu));
  const [gh, gw] = [Math.floor(H / P), Math.floor(W / P)];
  assert.deepEqual(got.shape, [B, gh * gw, D]);
  const want = new Float64Array(B * gh * gw * D);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < gh; i++) {
      for (let j = 0; j < gw; j++) {
        for (let d = 0; d < D; d++) {
          let acc = bs[d];
          for (let c = 0; c < C; c++) {
            for (let u = 0; u < P; u++) {
              for (let v = 0; v < P; v++) {
                acc += ws[((d * C + c) * P + u) * P + v] * xs[((b * C + c) * H + i * P + u) * W + j * P + v];
              }
            }
          }
          want[((b * gh + i) * gw + j) * D + d] = acc;
        }
      }
    }
  }
  assertClose(await got.data(), want, 1e-12, 1e-12, "patch embedding");
});

/** Random float64 params of a config, with every leaf non-trivial (LayerNorm weights near 1). */
function randomParams(config: Parameters<typeof vitParamShapes>[0], seed: number, backend = cpu, f32 = false) {
  return tree.fromPaths(
    vitParamShapes(config).map(([name, shape], i) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const isNormWeight = /norm[12]?\.weight$/.test(name);
      const scale = name.endsWith(".weight") && shape.length === 2 ? 1 / Math.sqrt(shape[1]) : 0.5;
      const d = randArray(seed * 1000 + i, n, -scale, scale).map((x) => (isNormWeight ? 1 + x : x));
      const data = f32 ? Float32Array.from(d) : d;
      return [name, fromTyped(data, shape, f32 ? "float32" : "float64", backend)] as [string, Tensor];
    }),
  ) as unknown as VitParams;
}

const TINY = { imgSize: 8, patchSize: 4, inChans: 3, embedDim: 8, depth: 2, numHeads: 2, mlpRatio: 2 };

Deno.test("vit: mask tokens replace patch embeddings before the pos embed; all-false masks = no masks", async () => {
  const p = randomParams(TINY, 5);
  const B = 2;
  const img = (seed: number) => fromTyped(randArray(seed, B * 3 * 8 * 8, -2, 2), [B, 3, 8, 8], "float64", cpu);
  const mask = (v: boolean[]) => fromTyped(Uint8Array.from(v, Number), [B, 2, 2], "bool", cpu);
  const opts = { numHeads: 2, returnAllTokens: true };
  const none = vit(p, img(1), opts);
  const allFalse = vit(p, img(1), { ...opts, masks: mask(new Array(8).fill(false)) });
  // Fully masked images: the output no longer depends on the pixels.
  const full1 = vit(p, img(1), { ...opts, masks: mask(new Array(8).fill(true)) });
  const full2 = vit(p, img(2), { ...opts, masks: mask(new Array(8).fill(true)) });
  // Masking patch 1 of image 0 only changes image 0.
  const one = vit(p, img(1), { ...opts, masks: mask([false, true, false, false, false, false, false, false]) });
  const [a, b, c, d, e] = await readAll([none, allFalse, full1, full2, one]);
  assert.deepEqual(Array.from(a), Array.from(b));
  assertClose(c, d, 1e-12, 1e-12, "fully masked");
  const half = a.length / 2;
  assert.deepEqual(Array.from(e).slice(half), Array.from(a).slice(half));
  assert.ok(closeness(Array.from(e).slice(0, half), Array.from(a).slice(0, half), 1e-6, 1e-6) > 1);
  // Masks need masked_embed and the right shape.
  const teacher = { ...p, masked_embed: undefined };
  assert.throws(() => vit(teacher, img(1), { ...opts, masks: mask(new Array(8).fill(true)) }), /no masked_embed/);
  assert.throws(() => vit(p, img(1), { ...opts, masks: fromTyped(new Uint8Array(4), [B, 2], "bool", cpu) }), /masks/);
});

Deno.test("vit: drop path only in training, linear over depth, deterministic in the key", async () => {
  const p = randomParams(TINY, 6);
  const B = 8;
  const x = fromTyped(randArray(9, B * 3 * 8 * 8), [B, 3, 8, 8], "float64", cpu);
  const base = { numHeads: 2, returnAllTokens: true, dropPathRate: 0.6 };
  const k1 = random.key(1, cpu);
  const k2 = random.key(2, cpu);
  const outs = [
    vit(p, x, { numHeads: 2, returnAllTokens: true }),
    vit(p, x, { ...base, train: false, key: k1 }),
    vit(p, x, { ...base, dropPathRate: 0, train: true, key: k1 }),
    vit(p, x, { ...base, train: true, key: k1 }),
    vit(p, x, { ...base, train: true, key: k1 }),
    vit(p, x, { ...base, train: true, key: k2 }),
  ];
  const [ev, notTrain, zeroRate, t1, t1b, t2] = (await readAll(outs)).map((d) => Array.from(d));
  assert.deepEqual(notTrain, ev);
  assert.deepEqual(zeroRate, ev);
  assert.deepEqual(t1, t1b);
  assert.notDeepEqual(t1, t2);
  assert.notDeepEqual(t1, ev);
  assert.throws(() => vit(p, x, { ...base, train: true }), /needs a key/);
  assertClose(dropPathRates(0.1, 12), Array.from({ length: 12 }, (_, i) => 0.1 * i / 11), 1e-15, 0);
  assert.deepEqual(dropPathRates(0.3, 1), [0]);
});

Deno.test("vit: returnAttention gives the last block's softmax [B, heads, T, T]; cls-only output", async () => {
  const p = randomParams(TINY, 7);
  const x = fromTyped(randArray(4, 2 * 3 * 12 * 8), [2, 3, 12, 8], "float64", cpu);
  const { tokens, attention } = vit(p, x, { numHeads: 2, returnAttention: true, returnAllTokens: true });
  const T = 1 + 3 * 2;
  assert.deepEqual(tokens.shape, [2, T, 8]);
  assert.deepEqual(attention.shape, [2, 2, T, T]);
  const [att, tok, cls] = await readAll([attention, tokens, vit(p, x, { numHeads: 2 })]);
  assert.ok(Array.from(att).every((v) => v >= 0 && v <= 1));
  for (let r = 0; r < 2 * 2 * T; r++) {
    const s = Array.from(att).slice(r * T, (r + 1) * T).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(s - 1) < 1e-12, `row ${r} sums to ${s}`);
  }
  assertClose(cls, [...Array.from(tok).slice(0, 8), ...Array.from(tok).slice(T * 8, T * 8 + 8)], 0, 0, "cls");
  // One input channel works too.
  const grey = randomParams({ ...TINY, inChans: 1 }, 8);
  const y = vit(grey, fromTyped(randArray(5, 2 * 64), [2, 1, 8, 8], "float64", cpu), { numHeads: 2 });
  assert.deepEqual(y.shape, [2, 8]);
});

Deno.test("vit: float64 VJP matches finite differences (masks, non-square interpolation, drop path, attention)", async () => {
  const p = randomParams(TINY, 1);
  const { leaves, def } = tree.flatten<Tensor>(p);
  const B = 2;
  const x = fromTyped(randArray(2, B * 3 * 12 * 8, -2, 2), [B, 3, 12, 8], "float64", cpu); // 3x2 grid
  const masks = fromTyped(Uint8Array.from([1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0]), [B, 3, 2], "bool", cpu);
  const key = random.key(4, cpu);
  const f = (train: boolean) => (img: Tensor, ...ls: Tensor[]) =>
    vit(tree.unflatten<VitParams>(def, ls), img, {
      numHeads: 2,
      masks,
      returnAllTokens: true,
      returnAttention: true,
      train,
      key,
      dropPathRate: 0.5,
    });
  // With this key drop path really drops a branch of block 1 (rate 0.5).
  const [ev, tr] = await readAll([f(false)(x, ...leaves).tokens, f(true)(x, ...leaves).tokens]);
  assert.ok(closeness(tr, ev, 1e-3, 1e-3) > 1, "drop path changed nothing");
  await checkVjp(f(false), [x, ...leaves], { seed: 1, what: "vit eval" });
  await checkVjp(f(true), [x, ...leaves], { seed: 2, what: "vit train (drop path)" });
  // The CLS-only output and the square path without interpolation.
  const sq = fromTyped(randArray(3, B * 3 * 8 * 8, -2, 2), [B, 3, 8, 8], "float64", cpu);
  await checkVjp(
    (...ls: Tensor[]) => vit(tree.unflatten<VitParams>(def, ls), sq, { numHeads: 2 }),
    leaves,
    { seed: 3, what: "vit cls" },
  );
});

Deno.test("vit: a ViT-S/16 saved with saveSafetensors and reloaded gives identical outputs", async () => {
  const config = { arch: "vit_small" as const, imgSize: 32, patchSize: 16 };
  const p = randomParams(config, 2, cpu, true);
  const dir = await Deno.makeTempDir({ dir: "/tmp" });
  try {
    const path = `${dir}/vit_small.safetensors`;
    await saveSafetensors(p, path, { arch: "vit_small" });
    const { tree: back, metadata } = await loadSafetensors(path, { backend: cpu });
    assert.equal(metadata.arch, "vit_small");
    const q = back as unknown as VitParams;
    assert.deepEqual(tree.paths(q).map(([n, t]) => [n, t.shape]).sort(), vitParamShapes(config).sort());
    const r = rng(9);
    const x = fromTyped(Float32Array.from({ length: 3 * 32 * 32 }, () => r() * 2 - 1), [1, 3, 32, 32], "float32", cpu);
    const opts = { numHeads: VIT_PRESETS.vit_small.numHeads, returnAllTokens: true };
    const [a, b] = await readAll([vit(p, x, opts), vit(q, x, opts)]);
    assert.equal(a.length, 5 * 384);
    assert.deepEqual(Array.from(b), Array.from(a));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vit: jit equals eager on WebGPU (forward with masks and attention; gradient vs the CPU)", async () => {
  const backend = await gpu();
  const [fg, fc] = await Promise.all([fixtures(backend), fixtures(cpu)]);
  const opts = { ...FIXTURE_CONFIG, returnAllTokens: true, returnAttention: true as const };
  const fwd = (p: VitParams, img: Tensor, m: Tensor) => vit(p, img, { ...opts, masks: m });
  const jf = jit(fwd);
  const args = (f: Fixtures, v: number) =>
    [f.student, f.inputs.get(`crops.${v}`)!, f.inputs.get(`masks.${v}`)!] as const;
  const eager = fwd(...args(fg, 0));
  const jitted = jf(...args(fg, 0));
  const jitted1 = jf(...args(fg, 1)); // same signature: no retrace
  const eager1 = fwd(...args(fg, 1));
  assert.equal(jf.stats().traces, 1);
  // Gradient of a fixed projection of the tokens, jitted on the GPU against eager on the CPU.
  const B = 2;
  const cot = (b: Backend) => fromTyped(Float32Array.from(randArray(5, B * 17 * 48)), [B, 17, 48], "float32", b);
  const loss = (c: Tensor) => (p: VitParams, img: Tensor, m: Tensor) =>
    sum(mul(vit(p, img, { ...FIXTURE_CONFIG, masks: m, returnAllTokens: true }), c));
  const cg = cot(backend);
  const gGpu = jit((p: VitParams, img: Tensor, m: Tensor) => grad(loss(cg))(p, img, m))(...args(fg, 0));
  const gCpu = grad(loss(cot(cpu)))(...args(fc, 0));
  const names = tree.paths(gCpu).map(([n]) => n);
  const [e, j, j1, e1, ea, ja, ...grads] = await readAll([
    eager.tokens,
    jitted.tokens,
    jitted1.tokens,
    eager1.tokens,
    eager.attention,
    jitted.attention,
    ...tree.leaves<Tensor>(gGpu),
    ...tree.leaves<Tensor>(gCpu),
  ]);
  assertClose(j, e, 1e-5, 1e-6, "jit tokens");
  assertClose(j1, e1, 1e-5, 1e-6, "jit tokens, second call");
  assertClose(ja, ea, 1e-5, 1e-7, "jit attention");
  const n = names.length;
  for (let i = 0; i < n; i++) {
    const scale = Math.max(...Array.from(grads[n + i], Math.abs));
    assertClose(grads[i], grads[n + i], 1e-3, 1e-4 * scale, `grad ${names[i]}`);
  }
  jf.dispose();
  // Shapes: the gradient tree mirrors the params.
  assert.deepEqual(tree.paths(gGpu).map(([k]) => k), names);
});
