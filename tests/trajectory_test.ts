/**
 * Full iBOT iterations on the tiny ViT fixture: the gradient of the total loss w.r.t. every student parameter
 * (grad.*), and 3 training iterations (teacher fwd → student fwd with masks → loss with old centers → center
 * update → backward → per-param clip 3.0 → last-layer freeze → AdamW → EMA) without and with the last-layer
 * freeze, against the PyTorch trajectories. One jitted step serves all iterations (hyperparameters and the
 * freeze flag are scalar inputs), on CPU and WebGPU.
 */
import assert from "node:assert/strict";
import {
  type Backend,
  cpu,
  fromTyped,
  head,
  headFeatures,
  type HeadParams,
  headPrototypes,
  jit,
  loadSafetensors,
  masking,
  random,
  type Tensor,
  tree,
  valueAndGrad,
  vit,
  type VitParams,
} from "../mod.ts";
import * as api from "../ops/api.ts";
import { ibotLoss } from "../train/loss.ts";
import { adamwInit } from "../train/optim.ts";
import { type IbotBatch, type IbotHyper, type IbotState, ibotStep } from "../train/step.ts";
import { gpu, readAll } from "./util.ts";

const RGB = new URL("./fixtures/rgb/", import.meta.url).pathname;

interface Net {
  backbone: VitParams;
  head: HeadParams;
}

interface Batch {
  /** Two global crops [B,3,32,32], then two local crops [B,3,16,16]. */
  crops: Tensor[];
  /** Bool [B,4,4] per global crop. */
  masks: Tensor[];
}

interface Hyper {
  lr: number;
  wd: number;
  momentum: number;
  teacherTemp: number;
  teacherPatchTemp: number;
  /** 1 while the last layer is frozen. */
  freeze: number;
}

const NUM_HEADS = 3;

/** Head logits of all tokens, split into CLS [B,K] and patches [B,N,K]. */
function headOut(h: HeadParams, tokens: Tensor): [Tensor, Tensor] {
  const out = head(h, tokens);
  const [B, T, K] = out.shape;
  return [api.reshape(api.slice(out, [0, 0, 0], [B, 1, K]), [B, K]), api.slice(out, [0, 1, 0], [B, T, K])];
}

/** The iBOT loss of one batch (official iteration order: teacher, student globals with masks, locals). */
function lossOf(student: Net, teacher: Net, center: Tensor, center2: Tensor, batch: Batch, hp: Hyper) {
  const t = batch.crops.slice(0, 2).map((c) =>
    headOut(teacher.head, vit(teacher.backbone, c, { numHeads: NUM_HEADS, returnAllTokens: true }))
  );
  const s = batch.crops.slice(0, 2).map((c, i) =>
    headOut(
      student.head,
      vit(student.backbone, c, { numHeads: NUM_HEADS, returnAllTokens: true, masks: batch.masks[i] }),
    )
  );
  const local = batch.crops.slice(2).map((c) => head(student.head, vit(student.backbone, c, { numHeads: NUM_HEADS })));
  const out = ibotLoss({
    studentCls: [...s.map(([c]) => c), ...local],
    studentPatch: s.map(([, p]) => p),
    teacherCls: t.map(([c]) => c),
    teacherPatch: t.map(([, p]) => p),
    masks: batch.masks,
    center,
    center2,
    studentTemp: 0.1,
    teacherTemp: hp.teacherTemp,
    teacherPatchTemp: hp.teacherPatchTemp,
  });
  return [out.loss, out] as const;
}

/**
 * The production step (train/step.ts) on the fixture model: ViT backbone with all tokens, shared head. The
 * sparse variant runs the head and the MIM loss on the masked patches only (`batch.maskSelection`).
 */
const trainStep = ibotStep<VitParams, HeadParams>({
  backbone: (p, images, o) => vit(p, images, { numHeads: NUM_HEADS, returnAllTokens: true, ...o }),
  head: (h, tokens) => head(h, tokens),
  headFeatures,
  headPrototypes,
  globalCrops: 2,
});

/** The batch with `maskSelection` built from its masks (on the host, as `train/pretrain.ts` does). */
async function withSelection(batch: Batch, backend: Backend): Promise<IbotBatch> {
  const [B, gh, gw] = batch.masks[0].shape;
  const host = (await readAll(batch.masks)).map((m) => Uint8Array.from(m));
  const sel = masking.maskSelection(host, B, 2 * B * gh * gw, 1);
  assert.ok(sel.count > 0, "the fixture masks some patches");
  return {
    ...batch,
    maskSelection: {
      index: fromTyped(sel.index, [sel.index.length], "int32", backend),
      weight: fromTyped(sel.weight, [sel.weight.length], "float32", backend),
    },
  };
}

async function load(backend: Backend) {
  const f = (name: string) => loadSafetensors(`${RGB}${name}.safetensors`, { backend });
  const [p, t, i, e, nf, fr] = await Promise.all(
    ["params", "teacher_params", "inputs", "expected", "trajectory_nofreeze", "trajectory_freeze"].map(f),
  );
  const batch: Batch = {
    crops: [0, 1, 2, 3].map((k) => i.flat.get(`crops.${k}`)!),
    masks: [0, 1].map((k) => i.flat.get(`masks.${k}`)!),
  };
  return {
    student: p.tree as unknown as Net,
    teacher: t.tree as unknown as Net,
    center: i.flat.get("center_init")!,
    center2: i.flat.get("center2_init")!,
    batch,
    expected: e,
    trajectories: { nofreeze: nf, freeze: fr },
  };
}

/**
 * The README's fair comparison for parameter trees after optimiser steps: 99.9% of elements within
 * rtol/atol, every element within 2·lr (AdamW moves near-zero-gradient parameters by up to lr either way).
 */
async function assertFairTree(got: unknown, want: Map<string, Tensor>, prefix: string, lr: number, what: string) {
  const g = new Map(tree.paths<Tensor>(got));
  const names = [...want.keys()].filter((n) => n.startsWith(prefix));
  assert.equal(names.length, g.size, `${what}: ${names.length} expected tensors for ${g.size} params`);
  const [gd, wd] = await Promise.all([
    readAll(names.map((n) => {
      const t = g.get(n.slice(prefix.length));
      assert.ok(t, `${what}: no ${n}`);
      return t;
    })),
    readAll(names.map((n) => want.get(n)!)),
  ]);
  let total = 0, bad = 0, worst = 0, at = "";
  names.forEach((n, k) => {
    for (let i = 0; i < wd[k].length; i++) {
      const d = Math.abs(gd[k][i] - wd[k][i]);
      total++;
      if (!(d <= 1e-5 + 1e-4 * Math.abs(wd[k][i]))) bad++;
      if (!(d <= worst)) [worst, at] = [d, n];
    }
  });
  assert.ok(bad <= 1e-3 * total, `${what}: ${bad} of ${total} elements outside tolerance`);
  assert.ok(worst <= 2 * lr, `${what}: |diff| ${worst} at ${at} exceeds 2·lr`);
  return { bad, total, worst };
}

Deno.test("trajectory: d loss_total / d student params matches grad.* (CPU and WebGPU)", async () => {
  for (const backend of [cpu, await gpu()]) {
    const f = await load(backend);
    const hp = { lr: 0, wd: 0, momentum: 0, teacherTemp: 0.04, teacherPatchTemp: 0.07, freeze: 0 };
    const [[loss], grads] = valueAndGrad(lossOf, { hasAux: true })(
      f.student,
      f.teacher,
      f.center,
      f.center2,
      f.batch,
      hp,
    );
    const want = f.expected.flat;
    const named = tree.paths<Tensor>(grads).filter(([n]) => want.has(`grad.${n}`));
    assert.equal(named.length, 38, "every trainable param has an expected gradient");
    const [got, exp] = await Promise.all([
      readAll(named.map(([, t]) => t)),
      readAll(named.map(([n]) => want.get(`grad.${n}`)!)),
    ]);
    // Gradients span ~1e-9 (key biases, mathematically 0) to ~10: compare each tensor relative to its scale.
    let worst = 0;
    named.forEach(([n], k) => {
      const scale = Math.max(...Array.from(exp[k], Math.abs));
      for (let i = 0; i < exp[k].length; i++) {
        const r = Math.abs(got[k][i] - exp[k][i]) / (1e-4 * Math.abs(exp[k][i]) + 2e-4 * scale + 1e-7);
        if (r > 1) assert.fail(`${backend.name} grad.${n}[${i}]: ${got[k][i]} vs ${exp[k][i]} (scale ${scale})`);
        worst = Math.max(worst, r);
      }
    });
    assert.ok(Math.abs((await loss.item()) - 6.072866) < 1e-4 * 6.07, "loss");
    console.log(`  ${backend.name}: worst gradient ratio ${worst.toFixed(3)}`);
  }
});

for (const [kind, mode] of [["nofreeze", "dense"], ["freeze", "dense"], ["nofreeze", "sparse"]] as const) {
  Deno.test(`trajectory: 3 jitted iterations (${kind}, ${mode} MIM) match the PyTorch trajectory (CPU and WebGPU)`, async () => {
    for (const backend of [cpu, await gpu()]) {
      const f = await load(backend);
      const batch = mode === "sparse" ? await withSelection(f.batch, backend) : f.batch;
      const traj = f.trajectories[kind];
      const cfg = JSON.parse(traj.metadata.trajectory) as {
        lr: number[];
        wd: number[];
        momentum: number[];
        teacher_temp: number[];
        teacher_patch_temp: number[];
        epochs: number[];
        freeze_last_layer: number;
      };
      const step = jit(trainStep);
      let s: IbotState<VitParams, HeadParams> = {
        student: f.student,
        teacher: f.teacher,
        opt: adamwInit(f.student),
        center: f.center,
        center2: f.center2,
        key: random.key(0, backend),
      };
      const losses: Tensor[] = [];
      for (let it = 0; it < 3; it++) {
        const hp: IbotHyper = {
          lr: cfg.lr[it],
          wd: cfg.wd[it],
          momentum: cfg.momentum[it],
          teacherTemp: cfg.teacher_temp[it],
          teacherPatchTemp: cfg.teacher_patch_temp[it],
          freezeLastLayer: cfg.epochs[it] < cfg.freeze_last_layer ? 1 : 0,
        };
        const out = step(s, batch, hp);
        losses.push(out.metrics.loss, out.metrics.cls, out.metrics.patch);
        s = out.state;
      }
      assert.equal(step.stats().traces, 1, "one plan for all iterations");
      const want = traj.flat;
      const [gotLosses, wantLosses, c, wc, c2, wc2] = await readAll([
        api.stack(losses),
        want.get("losses")!,
        s.center,
        want.get("center")!,
        s.center2,
        want.get("center2")!,
      ]);
      const lossErr = Array.from(gotLosses).map((v, i) => Math.abs(v - wantLosses[i]) / Math.abs(wantLosses[i]));
      assert.ok(
        Math.max(...lossErr) < 1e-4,
        `${backend.name} losses ${Array.from(gotLosses)} vs ${Array.from(wantLosses)}`,
      );
      for (let i = 0; i < wc.length; i++) assert.ok(Math.abs(c[i] - wc[i]) < 1e-5 + 1e-4 * Math.abs(wc[i]), "center");
      for (let i = 0; i < wc2.length; i++) {
        assert.ok(Math.abs(c2[i] - wc2[i]) < 1e-5 + 1e-4 * Math.abs(wc2[i]), "center2");
      }
      const st = await assertFairTree(s.student, want, "student.", 3e-3, `${backend.name} ${kind} student`);
      const te = await assertFairTree(s.teacher, want, "teacher.", 3e-3, `${backend.name} ${kind} teacher`);
      console.log(
        `  ${backend.name} ${kind} ${mode}: losses max rel err ${Math.max(...lossErr).toExponential(2)}; student ` +
          `${st.bad}/${st.total} outside, worst ${st.worst.toExponential(2)}; teacher ${te.bad}/${te.total}, ` +
          `worst ${te.worst.toExponential(2)}`,
      );
      step.dispose();
    }
  });
}

Deno.test("ibotStep: weight_g stays fixed by default (norm_last_layer) and learns with a trainable weight_g", async () => {
  const f = await load(cpu);
  const hp: IbotHyper = {
    lr: 1e-2,
    wd: 0.04,
    momentum: 0.9,
    teacherTemp: 0.04,
    teacherPatchTemp: 0.04,
    freezeLastLayer: 0,
  };
  const state = (): IbotState<VitParams, HeadParams> => ({
    student: f.student,
    teacher: f.teacher,
    opt: adamwInit(f.student),
    center: f.center,
    center2: f.center2,
    key: random.key(0, cpu),
  });
  const learning = ibotStep<VitParams, HeadParams>({
    backbone: (p, images, o) => vit(p, images, { numHeads: NUM_HEADS, returnAllTokens: true, ...o }),
    head: (h, tokens) => head(h, tokens, { normLastLayer: false }),
    trainable: () => true,
    globalCrops: 2,
  });
  const before = await f.student.head.last_layer.weight_g.data();
  const fixed = await trainStep(state(), f.batch, hp).state.student.head.last_layer.weight_g.data();
  const learnt = await learning(state(), f.batch, hp).state.student.head.last_layer.weight_g.data();
  assert.deepEqual(Array.from(fixed), Array.from(before));
  const moved = Array.from(learnt).filter((g, i) => Math.abs(g - before[i]) > 1e-4).length;
  assert.ok(moved > learnt.length / 2, `${moved} of ${learnt.length} weight_g entries moved`);
});
