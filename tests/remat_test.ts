/**
 * `remat`: gradients with and without rematerialisation are bit-identical on the CPU backend (eager, under `jit`,
 * grad of grad, several outputs, nested use, ViT and Swin blocks with drop path) and close on WebGPU; the jitted
 * plan of a ViT's gradient has a lower peak with `remat`.
 */
import assert from "node:assert/strict";
import {
  type Backend,
  backendMemory,
  cpu,
  fromTyped,
  grad,
  initSwin,
  initVit,
  jit,
  nn,
  placeholder,
  random,
  remat,
  swin,
  swinTest,
  type Tensor,
  tensor,
  tidy,
  tree,
  valueAndGrad,
  vit,
  vitConfig,
  type VitParams,
  vjp,
} from "../mod.ts";
import { assertClose, gpu, randArray } from "./util.ts";

const noGpu = Deno.env.get("IBOT_TEST_NO_GPU") === "1";
if (noGpu) console.log("remat_test: WebGPU comparisons ignored (IBOT_TEST_NO_GPU=1: no WebGPU adapter)");

/** Every leaf of two trees equal bit for bit. */
async function assertBitEqual(a: unknown, b: unknown, what: string): Promise<void> {
  const [la, lb] = [tree.leaves<Tensor>(a), tree.leaves<Tensor>(b)];
  assert.equal(la.length, lb.length, `${what}: leaf count`);
  const paths = tree.paths<Tensor>(a).map(([p]) => p);
  for (let i = 0; i < la.length; i++) {
    const [x, y] = [await la[i].data(), await lb[i].data()];
    assert.ok(x.length > 0);
    for (let j = 0; j < x.length; j++) {
      if (!Object.is(x[j], y[j])) assert.fail(`${what}: ${paths[i]}[${j}]: ${x[j]} vs ${y[j]}`);
    }
  }
}

const input = (seed: number, shape: number[], backend: Backend) =>
  fromTyped(Float32Array.from(randArray(seed, shape.reduce((a, b) => a * b, 1))), shape, "float32", backend);

/** A residual MLP block and a 3-block stack over it, with the block optionally rematerialised. */
const mlpBlock = (p: { w1: Tensor; w2: Tensor }, x: Tensor) => x.add(nn.gelu(x.matmul(p.w1)).matmul(p.w2));
const stack = (block: typeof mlpBlock) => (ps: { w1: Tensor; w2: Tensor }[], x: Tensor) =>
  ps.reduce((h, p) => block(p, h), x).pow(2).mean();

function mlpParams(backend: Backend) {
  return [0, 1, 2].map((i) => ({ w1: input(10 + i, [8, 16], backend), w2: input(20 + i, [16, 8], backend) }));
}

Deno.test("remat (cpu): gradients bit-identical, eager and under jit", async () => {
  const ps = mlpParams(cpu);
  const x = input(1, [5, 8], cpu);
  const plain = stack(mlpBlock);
  const rematted = stack(remat(mlpBlock));
  const [l0, g0] = valueAndGrad(plain, { argnums: [0, 1] })(ps, x);
  const [l1, g1] = valueAndGrad(rematted, { argnums: [0, 1] })(ps, x);
  await assertBitEqual([l0, g0], [l1, g1], "eager");
  const j = jit((p: typeof ps, v: Tensor) => grad(rematted, { argnums: [0, 1] })(p, v));
  await assertBitEqual(g0, j(ps, x), "jit");
});

Deno.test("remat (cpu): grad of grad bit-identical, eager and under jit", async () => {
  const ps = mlpParams(cpu);
  const x = input(2, [5, 8], cpu);
  // d/dp of |d loss / dx|²: differentiates the backward pass, recomputation included.
  const outer = (block: typeof mlpBlock) => (p: typeof ps, v: Tensor) =>
    grad(stack(block), { argnums: 1 })(p, v).pow(2).sum();
  const g0 = grad(outer(mlpBlock))(ps, x);
  const g1 = grad(outer(remat(mlpBlock)))(ps, x);
  await assertBitEqual(g0, g1, "grad of grad");
  await assertBitEqual(g0, jit(grad(outer(remat(mlpBlock))))(ps, x), "jit(grad of grad)");
});

Deno.test("remat (cpu): several outputs, unused outputs, nested remat, pytree arguments with non-tensor leaves", async () => {
  const ps = mlpParams(cpu);
  const x = input(3, [5, 8], cpu);
  const twoOut = (p: { w1: Tensor; w2: Tensor }, v: Tensor, opts: { scale: number }) => {
    const h = nn.gelu(v.matmul(p.w1));
    return [h.matmul(p.w2).mul(opts.scale), h.sum(-1), h.max(-1)] as const;
  };
  const loss = (f: typeof twoOut) => (p: typeof ps, v: Tensor) => {
    const [a, b] = f(p[0], v, { scale: 0.5 }); // the third output is not used
    const [c] = f(p[1], a, { scale: 2 });
    return c.pow(2).mean().add(b.mean());
  };
  const nested = (p: { w1: Tensor; w2: Tensor }, v: Tensor, opts: { scale: number }) => {
    const [a, b, c] = remat(twoOut)(p, v, opts);
    return [remat((u: Tensor) => u.mul(u))(a), b, c] as const;
  };
  const g0 = grad(loss(twoOut), { argnums: [0, 1] })(ps, x);
  await assertBitEqual(g0, grad(loss(remat(twoOut)), { argnums: [0, 1] })(ps, x), "several outputs");
  const squared = (p: { w1: Tensor; w2: Tensor }, v: Tensor, opts: { scale: number }) => {
    const [a, b, c] = twoOut(p, v, opts);
    return [a.mul(a), b, c] as const;
  };
  const g2 = grad(loss(squared), { argnums: [0, 1] })(ps, x);
  await assertBitEqual(g2, grad(loss(remat(nested)), { argnums: [0, 1] })(ps, x), "nested remat");
  // Without a grad, remat is the function itself.
  await assertBitEqual(loss(twoOut)(ps, x), loss(remat(twoOut))(ps, x), "value");
});

Deno.test("remat: a closed-over value being differentiated is refused, naming the fix", () => {
  const w = input(4, [8, 8], cpu);
  assert.throws(
    () => grad((v: Tensor) => remat((x: Tensor) => x.matmul(v))(v.mul(2)).sum())(w),
    /remat: the result float32\[8,8\] depends on a closed-over value that is being differentiated; pass it/,
  );
});

const VIT = vitConfig({ imgSize: 16, patchSize: 4, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 2 });

/** The ViT training loss (drop path on) of `params` on `images`, with or without per-block remat. */
const vitLoss = (withRemat: boolean) => (params: VitParams, images: Tensor, key: Tensor) =>
  vit(params, images, {
    ...VIT,
    remat: withRemat,
    dropPathRate: 0.3,
    train: true,
    key,
    returnAllTokens: true,
  }).pow(2).mean();

Deno.test("remat (cpu): ViT and Swin gradients with drop path bit-identical with and without per-block remat", async () => {
  const params = initVit(random.key(5, cpu), VIT);
  const images = input(6, [3, 3, 16, 16], cpu);
  const key = random.key(7, cpu);
  const g0 = grad(vitLoss(false))(params, images, key);
  await assertBitEqual(g0, grad(vitLoss(true))(params, images, key), "vit eager");
  await assertBitEqual(g0, jit(grad(vitLoss(true)))(params, images, key), "vit jit");

  const sc = { ...swinTest(), dropPathRate: 0.2 };
  const sp = initSwin(random.key(8, cpu), sc);
  const simg = input(9, [2, 3, 32, 32], cpu);
  const swinLoss = (r: boolean) => (p: typeof sp, im: Tensor, k: Tensor) =>
    swin(p, im, { config: { ...sc, remat: r }, train: true, key: k }).pow(2).mean();
  await assertBitEqual(grad(swinLoss(false))(sp, simg, key), grad(swinLoss(true))(sp, simg, key), "swin");
});

Deno.test({
  name: "remat (webgpu): jitted ViT gradients close to those without remat",
  ignore: noGpu,
  async fn() {
    const backend = await gpu();
    const params = initVit(random.key(5, backend), VIT);
    const images = input(6, [3, 3, 16, 16], backend);
    const key = random.key(7, backend);
    const [g0, g1] = [jit(grad(vitLoss(false)))(params, images, key), jit(grad(vitLoss(true)))(params, images, key)];
    const [l0, l1] = [tree.leaves<Tensor>(g0), tree.leaves<Tensor>(g1)];
    for (let i = 0; i < l0.length; i++) assertClose(await l1[i].data(), await l0[i].data(), 1e-4, 1e-6, `leaf ${i}`);
    const eager = grad(vitLoss(true))(params, images, key);
    const le = tree.leaves<Tensor>(eager);
    for (let i = 0; i < l0.length; i++) assertClose(await le[i].data(), await l0[i].data(), 1e-4, 1e-6, `eager ${i}`);
  },
});

Deno.test("remat: the jitted plan of a ViT's gradient peaks lower with per-block remat", async () => {
  const backend = noGpu ? cpu : await gpu();
  const config = vitConfig({ imgSize: 32, patchSize: 4, embedDim: 64, depth: 6, numHeads: 4, mlpRatio: 4 });
  // Placeholders only: the plans are traced and planned, nothing is allocated.
  const params = tree.map(
    (t: Tensor) => placeholder(t.shape, t.dtype, backend),
    initVit(random.key(0, cpu), config),
  ) as unknown as VitParams;
  const images = placeholder([32, 3, 32, 32], "float32", backend);
  const loss = (r: boolean) => (p: VitParams, im: Tensor) =>
    vit(p, im, { ...config, remat: r, returnAllTokens: true }).pow(2).mean();
  const [without, withRemat] = [false, true].map((r) => jit(grad(loss(r))).memory(params, images));
  console.log(
    `ViT D 64, depth 6, 65 tokens, batch 32 on ${backend.name}: gradient plan peak ${
      (without.peakBytes / 2 ** 20).toFixed(2)
    } MiB without remat, ${(withRemat.peakBytes / 2 ** 20).toFixed(2)} MiB with (intermediates ${
      (without.intermediateBytes / 2 ** 20).toFixed(2)
    } -> ${(withRemat.intermediateBytes / 2 ** 20).toFixed(2)} MiB)`,
  );
  assert.ok(
    withRemat.intermediateBytes < 0.6 * without.intermediateBytes,
    `intermediates ${withRemat.intermediateBytes} vs ${without.intermediateBytes}`,
  );
});

Deno.test({
  name: "remat (webgpu, eager): the forward keeps only the blocks' inputs alive until the backward pass",
  ignore: noGpu,
  async fn() {
    const backend = await gpu();
    const live = () => backendMemory(backend)!.liveBytes;
    const ps = [0, 1, 2].map((i) => ({ w1: input(10 + i, [64, 256], backend), w2: input(20 + i, [256, 64], backend) }));
    const x = input(1, [512, 64], backend);
    const held = (block: typeof mlpBlock) => {
      const before = live();
      const [loss, pullback] = vjp(stack(block), ps, x);
      const during = live() - before; // what the forward left for the backward pass
      const [g] = pullback(tensor(1, { backend })) as [typeof ps];
      return { during, loss, g };
    };
    const plain = tidy(() => held(mlpBlock));
    const rematted = tidy(() => held(remat(mlpBlock)));
    // Per block the plain forward holds the [512, 256] hidden twice (x·w1 and its GELU) and more; remat none.
    assert.ok(
      rematted.during < plain.during - 3 * 2 * 512 * 256 * 4,
      `live after the forward: ${rematted.during} with remat, ${plain.during} without`,
    );
    await assertBitEqual(plain.g, rematted.g, "eager webgpu gradients");
    console.log(`live after the forward: ${plain.during} B without remat, ${rematted.during} B with`);
    tree.map((t: Tensor) => t.dispose(), [plain.loss, plain.g, rematted.loss, rematted.g, ps, x]);
  },
});
