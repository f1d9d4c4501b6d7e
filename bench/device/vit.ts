/**
 * Phase `vit` of the device benchmark: a ViT-S/16 forward + backward (`jit(valueAndGrad)` of the mean of the
 * squared final tokens, gradient of every parameter) on 224-px images, then one attention block alone (qkv
 * linear, attention, proj linear; the gradient of its parameters and input) on the same tokens: the work
 * `torch_step.py` repeats in PyTorch. Reported: compile time (first call minus a later one), the median step (call
 * until the loss is read back and the queue has drained), images/s and the plan's peak. The dry run uses a
 * 2-block ViT-S on 32-px images.
 *
 * @module
 */
import { initVit, jit, random, type Tensor, tidy, tree, valueAndGrad, vit, vitConfig } from "../../mod.ts";
import { attention } from "../../models/vit.ts";
import { gpuBackend, makeDeadline, pick, type StepTimes, timeSteps, writeFragment } from "./common.ts";

/** The model and batch of the phase, as `torch_step.py` rebuilds it. */
export interface VitShape {
  batch: number;
  imgSize: number;
  patchSize: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
}

/** What the vit phase records. */
export interface VitFragment extends StepTimes {
  shape: VitShape;
  /** One attention block (qkv linear, attention, proj linear) of the same shapes, forward + backward. */
  attention?: StepTimes & { tokens: number };
}

if (import.meta.main) {
  const gpu = await gpuBackend();
  const left = makeDeadline();
  const config = vitConfig(pick({ arch: "vit_small" }, { arch: "vit_small", depth: 2, imgSize: 32 }));
  const shape: VitShape = {
    batch: pick(64, 2),
    imgSize: config.imgSize,
    patchSize: config.patchSize,
    embedDim: config.embedDim,
    depth: config.depth,
    numHeads: config.numHeads,
    mlpRatio: config.mlpRatio,
  };
  const out: VitFragment = { shape, stepsMs: [] };
  await writeFragment("vit", out);
  const params = initVit(random.key(0, gpu), config);
  const images = tidy(() => random.uniform(random.key(1, gpu), [shape.batch, 3, shape.imgSize, shape.imgSize]));
  const loss = (p: typeof params, x: Tensor) => {
    const tokens = vit(p, x, { numHeads: config.numHeads, returnAllTokens: true });
    return tokens.mul(tokens).mean();
  };
  const step = jit(valueAndGrad(loss));
  const call = async () => {
    const t0 = performance.now();
    const [l, g] = step(params, images);
    const value = await l.item();
    await gpu.sync();
    const ms = performance.now() - t0;
    l.dispose();
    for (const t of tree.leaves(g)) t.dispose();
    return { ms, loss: value };
  };
  const save = () => writeFragment("vit", out);
  await timeSteps("vit", out, shape.batch, call, () => step.stats().plan, left, save);
  step.dispose();
  images.dispose();

  // The attention block alone: `attention` of models/vit.ts, the fused kernel where the code has one (a 4th
  // argument `withProbs = false` selects it there; where the function takes 3 arguments the extra one is unused).
  const tokens = (shape.imgSize / shape.patchSize) ** 2 + 1;
  const block = attention as (p: unknown, x: Tensor, heads: number, withProbs: boolean) => { out: Tensor };
  const x = tidy(() => random.normal(random.key(2, gpu), [shape.batch, tokens, shape.embedDim]));
  const attnLoss = (p: (typeof params)["blocks"][number]["attn"], xs: Tensor) => {
    const y = block(p, xs, config.numHeads, false).out;
    return y.mul(y).mean();
  };
  const attnStep = jit(valueAndGrad(attnLoss, { argnums: [0, 1] }));
  out.attention = { tokens, stepsMs: [] };
  const attnCall = async () => {
    const t0 = performance.now();
    const [l, g] = attnStep(params.blocks[0].attn, x);
    const loss = await l.item();
    await gpu.sync();
    const ms = performance.now() - t0;
    l.dispose();
    for (const t of tree.leaves(g)) t.dispose();
    return { ms, loss };
  };
  await timeSteps("attention", out.attention, shape.batch, attnCall, () => attnStep.stats().plan, left, save);
  attnStep.dispose();
  x.dispose();
  for (const t of tree.leaves(params)) t.dispose();
  if (out.error || out.attention.error) Deno.exit(1); // the report's phase table shows it, and run.sh exits 1
}
