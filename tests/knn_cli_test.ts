/** examples/knn.ts: k-NN of a training checkpoint and of backbone weights, equal to the library's; clear errors. */
import assert from "node:assert/strict";
import { main } from "../examples/knn.ts";
import { UsageError } from "../examples/lib/cli.ts";
import { vitHeads } from "../examples/lib/model.ts";
import { initState, knnFeatures, pretrain } from "../train/pretrain.ts";
import { resolveBackbone } from "../train/backbone.ts";
import { loadTrainingState } from "../train/checkpoint.ts";
import { knnAccuracy } from "../train/knn.ts";
import { embeddedDataset } from "../train/data/embedded.ts";
import { saveTeacherBackbone } from "../models/checkpoint.ts";
import * as random from "../ops/random.ts";
import { gpu, tinyPretrainConfig } from "./util.ts";

const LIMITS = ["--train-limit", "120", "--test-limit", "40", "--ks", "10,20,200"];

/** Runs the CLI's main, returning its printed lines and per-k percentages (model, random init). */
async function run(args: string[]) {
  const lines: string[] = [];
  const backend = Deno.env.get("IBOT_TEST_NO_GPU") === "1" ? "cpu" : "webgpu";
  const { code } = await main([...args, "--backend", backend], (l) => lines.push(l));
  const rows = new Map<number, { model?: string; random?: string }>();
  for (const l of lines) {
    const m = /^\s+k=(\d+)\s+(?:model ([\d.]+)%)?\s*(?:random init ([\d.]+)%)?/.exec(l);
    if (m) rows.set(Number(m[1]), { model: m[2], random: m[3] });
  }
  return { code, lines, rows };
}

Deno.test("knn CLI: a training checkpoint's printed k-NN equals knnAccuracy on the same features", async () => {
  const backend = await gpu();
  const dir = await Deno.makeTempDir();
  const cfg = tinyPretrainConfig();
  const ds = embeddedDataset({ seed: 0 }); // what `--data embedded` loads
  await pretrain(cfg, ds, { backend, seed: 4, steps: 2, out: dir, evaluate: false });
  const ckpt = `${dir}/checkpoint.safetensors`;
  const out = await run(["--checkpoint", ckpt, "--random", ...LIMITS]);
  assert.equal(out.code, 0);
  assert.deepEqual(
    [...out.rows.keys()],
    [10, 20],
    `k = 200 > 120 training images is dropped:\n${out.lines.join("\n")}`,
  );

  // The library on the same features: the checkpoint's teacher, and the random baseline of pretrain().
  const spec = resolveBackbone(cfg, ds);
  const { state } = await loadTrainingState(ckpt, initState(cfg, spec, random.key(0, backend)), backend);
  const rand = initState(cfg, spec, random.key(4, backend));
  for (const [name, params] of [["model", state.teacher.backbone], ["random", rand.teacher.backbone]] as const) {
    const train = await knnFeatures(params, spec, ds, "train", cfg, backend, 120);
    const test = await knnFeatures(params, spec, ds, "test", cfg, backend, 40);
    const acc = await knnAccuracy(train, ds.train.labels.subarray(0, 120), test, ds.test.labels.subarray(0, 40), 10, {
      ks: [10, 20],
    });
    for (const k of [10, 20]) {
      const printed = out.rows.get(k)![name]!;
      assert.ok(Number(printed) >= 0 && Number(printed) <= 100, `${name} k=${k}: ${printed}`);
      assert.equal(printed, (100 * acc[k]).toFixed(2), `${name} k=${k}`);
    }
  }

  // The same teacher as a backbone-only safetensors (the checkpoint_teacher names) through --weights.
  const weights = `${dir}/teacher.safetensors`;
  await saveTeacherBackbone(state.teacher, weights);
  const viaWeights = await run(["--weights", weights, "--arch", "vit", "--heads", "2", "--norm", "preset", ...LIMITS]);
  for (const k of [10, 20]) assert.equal(viaWeights.rows.get(k)!.model, out.rows.get(k)!.model, `--weights k=${k}`);

  // Errors name the flag and the file.
  await assert.rejects(main(["--checkpoint", `${dir}/missing.safetensors`]), (e: Error) => {
    return e instanceof UsageError && e.message.includes(`--checkpoint ${dir}/missing.safetensors: no such file`);
  });
  await assert.rejects(main(["--weights", weights, "--arch", "vit_small", ...LIMITS]), (e: Error) => {
    return e instanceof UsageError && e.message.includes(`--weights ${weights} does not fit --arch vit_small`) &&
      /D 32, depth 1.*D 384, depth 12/.test(e.message) && /wrong shape/.test(e.message);
  });
  await assert.rejects(main(["--weights", weights]), /--weights needs --arch/);
  await assert.rejects(main(["--checkpoint", weights]), /not an ibot-ts training checkpoint/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("knn CLI: an official-format Swin .pth (student state dict) evaluates with --arch swin", async () => {
  const pth = new URL("./fixtures/pth/swin_tiny.pth", import.meta.url).pathname;
  const out = await run(["--weights", pth, "--arch", "swin", "--img-size", "32", ...LIMITS]);
  assert.equal(out.code, 0);
  assert.match(out.lines.join("\n"), /'student', Swin C 8, 2 stages \(depths 2-2\)/);
  for (const k of [10, 20]) {
    const v = Number(out.rows.get(k)!.model);
    assert.ok(v >= 0 && v <= 100, `k=${k}: ${v}`);
  }
  await assert.rejects(
    main(["--weights", pth, "--arch", "swin_tiny"]),
    /does not fit --arch swin_tiny: the file has a Swin with C 8/,
  );
});

Deno.test("knn CLI: a ViT's heads come from --heads, the file's metadata, or the ViT size of its width; never a guess", () => {
  const what = "--weights w.safetensors --arch vit";
  assert.deepEqual(vitHeads(384, new Map(), undefined, what), { heads: 6, from: "vit_small, the ViT of width 384" });
  assert.deepEqual(vitHeads(192, {}, undefined, what).heads, 3);
  assert.deepEqual(vitHeads(768, {}, undefined, what).heads, 12);
  assert.deepEqual(vitHeads(1024, {}, undefined, what).heads, 16);
  assert.deepEqual(vitHeads(384, new Map([["numHeads", "4"]]), undefined, what), {
    heads: 4,
    from: "metadata numHeads",
  });
  assert.deepEqual(vitHeads(384, new Map([["numHeads", "4"]]), 2, what), { heads: 2, from: "--heads" });
  assert.throws(() => vitHeads(384, { num_heads: 5 }, undefined, what), /num_heads = 5 does not divide the width 384/);
  assert.throws(() => vitHeads(80, {}, undefined, what), (e: Error) => {
    return e instanceof UsageError &&
      /a ViT of width 80, whose number of attention heads .*pass --heads N/.test(e.message);
  });
});
