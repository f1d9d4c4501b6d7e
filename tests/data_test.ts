/**
 * Datasets and the loader: the embedded shapes dataset (determinism, class balance, ranges, speed), the IDX
 * reader on small synthetic .gz files (and the real Fashion-MNIST when installed), ImageFolder on a tiny folder
 * of PNG/JPEG files with a corrupt one, and the loader's deterministic shuffles, prefetching and exact resume.
 */
import assert from "node:assert/strict";
import { encode as encodePng } from "npm:@jsquash/png@3.1.1";
import { encode as encodeJpeg } from "npm:@jsquash/jpeg@1.6.0";
import { cpu, fromTyped, random, type Tensor } from "../mod.ts";
import { checkDataset, classCounts, type Dataset } from "../train/data/dataset.ts";
import { EMBEDDED_CLASSES, embeddedDataset } from "../train/data/embedded.ts";
import { FMNIST_DIR, loadFashionMnist, parseIdx } from "../train/data/fmnist.ts";
import { loadImageFolder } from "../train/data/imagefolder.ts";
import { type Batch, batches, epochPermutation, gatherBatch, stepsPerEpoch } from "../train/data/loader.ts";
import { gpu } from "./util.ts";
import { gzip, idx } from "./data_files.ts";

Deno.test("embedded dataset: deterministic per seed, balanced, in [0, 1], independent of split sizes, fast", () => {
  const a = embeddedDataset({ seed: 7, trainPerClass: 12, testPerClass: 3 });
  const b = embeddedDataset({ seed: 7, trainPerClass: 12, testPerClass: 3 });
  const c = embeddedDataset({ seed: 8, trainPerClass: 12, testPerClass: 3 });
  const bigger = embeddedDataset({ seed: 7, trainPerClass: 15, testPerClass: 3 });
  checkDataset(a);
  assert.equal(a.numClasses, EMBEDDED_CLASSES.length);
  assert.deepEqual([a.channels, a.size, a.train.n, a.test.n], [3, 32, 120, 30]);
  assert.deepEqual(a.train.images, b.train.images);
  assert.deepEqual(a.test.images, b.test.images);
  assert.notDeepEqual(a.train.images, c.train.images);
  assert.deepEqual(bigger.train.images.subarray(0, a.train.images.length), a.train.images);
  assert.deepEqual(classCounts(a, a.train), Array(10).fill(12));
  assert.deepEqual(classCounts(a, a.test), Array(10).fill(3));
  assert.ok(a.train.images.every((v) => v >= 0 && v <= 1));
  // Train and test images differ (independent streams).
  assert.notDeepEqual(a.train.images.subarray(0, 3072), a.test.images.subarray(0, 3072));
  const t0 = performance.now();
  const full = embeddedDataset({ seed: 0 });
  const ms = performance.now() - t0;
  assert.deepEqual([full.train.n, full.test.n], [4000, 1000]);
  console.log(`embedded dataset: ${full.train.n + full.test.n} images in ${ms.toFixed(0)} ms`);
  assert.ok(ms < 5000, `generation took ${ms} ms`);
});

Deno.test("embedded dataset: raw pixels carry little label information (nearest class mean near chance)", () => {
  const ds = embeddedDataset({ seed: 3, trainPerClass: 100, testPerClass: 20 });
  const d = 3 * 32 * 32;
  const means = Array.from({ length: 10 }, () => new Float64Array(d));
  for (let i = 0; i < ds.train.n; i++) {
    const m = means[ds.train.labels[i]];
    for (let k = 0; k < d; k++) m[k] += ds.train.images[i * d + k] / 100;
  }
  let correct = 0;
  for (let i = 0; i < ds.test.n; i++) {
    let best = -1;
    let bestD = Infinity;
    means.forEach((m, c) => {
      let s = 0;
      for (let k = 0; k < d; k++) s += (ds.test.images[i * d + k] - m[k]) ** 2;
      if (s < bestD) [bestD, best] = [s, c];
    });
    if (best === ds.test.labels[i]) correct++;
  }
  assert.ok(correct / ds.test.n < 0.4, `nearest class mean on raw pixels: ${correct / ds.test.n}`);
});

// ---------------------------------------------------------------------------------------------------------
// IDX / Fashion-MNIST

Deno.test("IDX: parses every element type big-endian; rejects bad files", () => {
  const i32 = new Uint8Array(8);
  new DataView(i32.buffer).setInt32(0, -5);
  new DataView(i32.buffer).setInt32(4, 70000);
  assert.deepEqual(Array.from(parseIdx(idx(0x0c, [2], i32)).data), [-5, 70000]);
  const f32 = new Uint8Array(8);
  new DataView(f32.buffer).setFloat32(0, 1.5);
  new DataView(f32.buffer).setFloat32(4, -0.25);
  const pf = parseIdx(idx(0x0d, [1, 2], f32));
  assert.deepEqual([pf.dims, Array.from(pf.data)], [[1, 2], [1.5, -0.25]]);
  const u8 = parseIdx(idx(0x08, [2, 3], Uint8Array.from([1, 2, 3, 4, 5, 255])));
  assert.deepEqual([u8.dims, Array.from(u8.data)], [[2, 3], [1, 2, 3, 4, 5, 255]]);
  assert.deepEqual(Array.from(parseIdx(idx(0x09, [2], Uint8Array.from([255, 1]))).data), [-1, 1]);
  assert.throws(() => parseIdx(Uint8Array.from([1, 2, 8, 1])), /not an IDX/);
  assert.throws(() => parseIdx(idx(0x08, [5], Uint8Array.from([1, 2]))), /need 5/);
  assert.throws(() => parseIdx(idx(0x07, [1], Uint8Array.from([1]))), /element type/);
});

Deno.test("Fashion-MNIST loader: synthetic .gz (and plain) IDX files; clear errors; the real files when installed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ibot-fmnist-" });
  try {
    const px = (n: number, s: number) => Uint8Array.from({ length: n * s * s }, (_, i) => (i * 37) % 256);
    await Deno.writeFile(`${dir}/train-images-idx3-ubyte.gz`, await gzip(idx(0x08, [3, 4, 4], px(3, 4))));
    await Deno.writeFile(`${dir}/train-labels-idx1-ubyte.gz`, await gzip(idx(0x08, [3], Uint8Array.from([2, 0, 9]))));
    await Deno.writeFile(`${dir}/t10k-images-idx3-ubyte`, idx(0x08, [2, 4, 4], px(2, 4)));
    await assert.rejects(() => loadFashionMnist({ dir }), (e: Error) => {
      assert.match(e.message, /t10k-labels-idx1-ubyte\.gz not found/);
      assert.match(e.message, /dataset-fashion-mnist/);
      assert.ok(e.message.includes(dir));
      return true;
    });
    await Deno.writeFile(`${dir}/t10k-labels-idx1-ubyte.gz`, await gzip(idx(0x08, [2], Uint8Array.from([5, 1]))));
    const ds = await loadFashionMnist({ dir });
    checkDataset(ds);
    assert.deepEqual([ds.channels, ds.size, ds.numClasses, ds.train.n, ds.test.n], [1, 4, 10, 3, 2]);
    assert.deepEqual(Array.from(ds.train.labels), [2, 0, 9]);
    assert.deepEqual(Array.from(ds.test.labels), [5, 1]);
    assert.deepEqual(ds.train.images, Float32Array.from(px(3, 4), (v) => v / 255));
    assert.deepEqual(ds.test.images, Float32Array.from(px(2, 4), (v) => v / 255));
    const limited = await loadFashionMnist({ dir, trainLimit: 2 });
    assert.equal(limited.train.n, 2);
    await Deno.writeFile(`${dir}/t10k-labels-idx1-ubyte.gz`, await gzip(idx(0x08, [3], Uint8Array.from([5, 1, 1]))));
    await assert.rejects(() => loadFashionMnist({ dir }), /for 2 images/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  await assert.rejects(() => loadFashionMnist({ dir: "/nonexistent/fmnist" }), (e: Error) => {
    assert.match(e.message, /\/nonexistent\/fmnist not found/);
    assert.match(e.message, /apt-get install dataset-fashion-mnist/);
    return true;
  });
  let installed = false;
  try {
    installed = (await Deno.stat(`${FMNIST_DIR}/t10k-labels-idx1-ubyte.gz`)).isFile;
  } catch { /* not installed: the synthetic checks above suffice */ }
  if (installed) {
    const real = await loadFashionMnist();
    assert.deepEqual([real.size, real.train.n, real.test.n], [28, 60000, 10000]);
    assert.deepEqual(classCounts(real, real.test), Array(10).fill(1000));
    let s = 0;
    for (const v of real.train.images) s += v;
    assert.ok(Math.abs(s / real.train.images.length - 0.2860) < 1e-3, "the Fashion-MNIST mean is 0.2860");
  }
});

// ---------------------------------------------------------------------------------------------------------
// ImageFolder

function solid(w: number, h: number, rgb: number[]): ImageData {
  const d = new Uint8ClampedArray(w * h * 4);
  for (let i = 0; i < w * h; i++) d.set([...rgb, 255], i * 4);
  return new ImageData(d, w, h);
}

async function writePng(path: string, img: ImageData) {
  await Deno.writeFile(path, new Uint8Array(await encodePng(img)));
}

Deno.test("ImageFolder: PNG/JPEG class folders, resize, corrupt files skipped and counted once, layouts, errors", async () => {
  const root = await Deno.makeTempDir({ prefix: "ibot-imagefolder-" });
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (...a: unknown[]) => void warnings.push(a.join(" "));
  try {
    await Deno.mkdir(`${root}/flat/cat`, { recursive: true });
    await Deno.mkdir(`${root}/flat/dog`, { recursive: true });
    await writePng(`${root}/flat/cat/a.png`, solid(10, 6, [255, 0, 0]));
    await writePng(`${root}/flat/cat/b.PNG`, solid(5, 9, [10, 200, 30]));
    // A horizontal ramp 0..252 over 64 px (step 4), 8 rows.
    const ramp = new Uint8ClampedArray(64 * 8 * 4);
    for (let i = 0; i < 64 * 8; i++) ramp.set([(i % 64) * 4, 0, 0, 255], i * 4);
    await writePng(`${root}/flat/dog/c.png`, new ImageData(ramp, 64, 8));
    await Deno.writeFile(`${root}/flat/dog/d.jpg`, new Uint8Array(await encodeJpeg(solid(16, 16, [20, 40, 220]))));
    const corrupt = new Uint8Array(64).fill(7);
    corrupt.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    await Deno.writeFile(`${root}/flat/dog/e.png`, corrupt);
    await Deno.writeFile(`${root}/flat/dog/notes.txt`, new TextEncoder().encode("not an image"));

    const ds = await loadImageFolder(`${root}/flat`, { size: 4 });
    checkDataset(ds);
    assert.deepEqual([ds.classNames, ds.numClasses, ds.channels, ds.size], [["cat", "dog"], 2, 3, 4]);
    assert.deepEqual([ds.train.n, ds.test.n, Array.from(ds.train.labels)], [4, 0, [0, 0, 1, 1]]);
    assert.deepEqual(ds.skipped, [`${root}/flat/dog/e.png`]);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /skipped 1 undecodable file /);
    const px = (i: number, c: number) => Array.from(ds.train.images.subarray(i * 48 + c * 16, i * 48 + c * 16 + 16));
    assert.deepEqual([px(0, 0), px(0, 1), px(0, 2)], [Array(16).fill(1), Array(16).fill(0), Array(16).fill(0)]);
    for (const [c, v] of [[0, 10], [1, 200], [2, 30]]) {
      px(1, c).forEach((x) => assert.ok(Math.abs(x - v / 255) < 1e-6));
    }
    for (const [c, v] of [[0, 20], [1, 40], [2, 220]]) {
      px(3, c).forEach((x) => assert.ok(Math.abs(x - v / 255) < 4 / 255, `jpeg channel ${c}: ${x * 255} vs ${v}`));
    }
    // The ramp's centred 8x8 square (x = 28..35, values 112..140) down to 4 px: the antialiased triangle filter
    // of a ramp gives its value at each output centre, except at the renormalised borders.
    const r = px(2, 0).slice(0, 4).map((v) => v * 255);
    const inner = [1, 2].map((o) => 4 * (28 + 2 * o + 0.5));
    assert.ok(Math.abs(r[1] - inner[0]) < 1e-3 && Math.abs(r[2] - inner[1]) < 1e-3, `ramp ${r}`);
    assert.ok(r[0] > 112 && r[0] < inner[0] && r[3] < 140 && r[3] > inner[1], `ramp borders ${r}`);

    // Held-out split: round(½ · files) per class (cat 1 of 2, dog 2 of 3 incl. the corrupt one), seeded.
    const gray = await loadImageFolder(`${root}/flat`, { size: 2, channels: 1, testFraction: 0.5 });
    const again = await loadImageFolder(`${root}/flat`, { size: 2, channels: 1, testFraction: 0.5 });
    assert.deepEqual([gray.channels, gray.train.n + gray.test.n, classCounts(gray, gray.test)[0]], [1, 4, 1]);
    assert.deepEqual([gray.train.images, gray.test.images], [again.train.images, again.test.images]);
    assert.ok(Math.abs(gray.train.images[0] - 0.299) < 1e-6, "luma of pure red");
    assert.equal(warnings.length, 3);

    // train/val layout
    for (const split of ["train", "val"]) {
      for (const cls of ["x", "y"]) {
        await Deno.mkdir(`${root}/tv/${split}/${cls}`, { recursive: true });
        await writePng(`${root}/tv/${split}/${cls}/1.png`, solid(3, 3, cls === "x" ? [0, 0, 0] : [255, 255, 255]));
      }
    }
    const tv = await loadImageFolder(`${root}/tv`, { size: 3 });
    assert.deepEqual([tv.train.n, tv.test.n, Array.from(tv.test.labels), tv.test.images[9 * 3]], [2, 2, [0, 1], 1]);
    assert.equal(warnings.length, 3);
    await assert.rejects(() => loadImageFolder(`${root}/missing`), /missing does not exist or is not a folder/);
    await Deno.mkdir(`${root}/empty`);
    await assert.rejects(() => loadImageFolder(`${root}/empty`), /no class sub-folders/);
  } finally {
    console.warn = warn;
    await Deno.remove(root, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------------
// Loader

async function collect<U>(gen: AsyncGenerator<Batch<U>>, limit = Infinity): Promise<Batch<U>[]> {
  const out: Batch<U>[] = [];
  for await (const b of gen) {
    out.push(b);
    if (out.length >= limit) break;
  }
  return out;
}

const small: Dataset = embeddedDataset({ seed: 1, trainPerClass: 5, testPerClass: 1 });

Deno.test("loader: epoch permutations are random.permutation(foldIn(key(seed), epoch)); full coverage; shapes", async () => {
  for (const epoch of [0, 3]) {
    const dev = await random.permutation(random.foldIn(random.key(42, cpu), epoch), 50).data();
    assert.deepEqual(Array.from(epochPermutation(42, epoch, 50)), Array.from(dev));
  }
  assert.equal(stepsPerEpoch(50, 8), 6);
  assert.equal(stepsPerEpoch(50, 8, false), 7);
  const all = await collect(batches(small, { batchSize: 8, seed: 5, dropLast: false, epochs: 2 }));
  assert.equal(all.length, 14);
  for (const e of [0, 1]) {
    const seen = all.filter((b) => b.epoch === e).flatMap((b) => Array.from(b.indices)).sort((a, b) => a - b);
    assert.deepEqual(seen, Array.from({ length: 50 }, (_, i) => i), `epoch ${e} covers the data once`);
  }
  assert.deepEqual(all.map((b) => b.shape[0]), [8, 8, 8, 8, 8, 8, 2, 8, 8, 8, 8, 8, 8, 2]);
  assert.deepEqual(all.map((b) => b.iteration), Array.from({ length: 14 }, (_, i) => i));
  assert.notDeepEqual(Array.from(all[0].indices), Array.from(all[7].indices), "epochs are shuffled differently");
  for (const b of all) {
    assert.deepEqual(b.images, gatherBatch(small, small.train, b.indices));
    assert.deepEqual(Array.from(b.labels), Array.from(b.indices, (i) => small.train.labels[i]));
    assert.deepEqual(b.shape.slice(1), [3, 32, 32]);
  }
  const dropped = await collect(batches(small, { batchSize: 8, seed: 5, epochs: 1 }));
  assert.deepEqual(dropped.map((b) => [b.epoch, b.step, b.shape[0]]), [0, 1, 2, 3, 4, 5].map((s) => [0, s, 8]));
  assert.deepEqual(dropped.at(-1)!.next, { epoch: 1, step: 0 });
  const ordered = await collect(batches(small, { batchSize: 10, seed: 5, shuffle: false, split: "test", epochs: 1 }));
  assert.deepEqual(Array.from(ordered[0].indices), Array.from({ length: 10 }, (_, i) => i));
});

Deno.test("loader: deterministic per seed; resumes exactly at (epoch, step)", async () => {
  const opts = { batchSize: 7, seed: 11, epochs: 3 };
  const a = await collect(batches(small, opts));
  const b = await collect(batches(small, opts));
  const other = await collect(batches(small, { ...opts, seed: 12 }));
  const ids = (bs: Batch<unknown>[]) => bs.map((x) => Array.from(x.indices));
  assert.deepEqual(ids(a), ids(b));
  assert.notDeepEqual(ids(a), ids(other));
  for (const k of [0, 4, 6, 13]) {
    const resumed = await collect(batches(small, { ...opts, start: a[k].next }));
    assert.deepEqual(ids(resumed), ids(a.slice(k + 1)), `resume after batch ${k}`);
    assert.deepEqual(resumed.map((x) => x.iteration), a.slice(k + 1).map((x) => x.iteration));
  }
  // A step count past the epoch end rolls over.
  const rolled = await collect(batches(small, { ...opts, start: { epoch: 0, step: 7 } }), 1);
  assert.deepEqual([rolled[0].epoch, rolled[0].step], [1, 0]);
});

Deno.test("loader: the next batch is prepared and uploaded while the current step runs; early exit frees it", async () => {
  const g = await gpu();
  const events: string[] = [];
  const disposed: number[] = [];
  const gen = batches<Tensor>(small, {
    batchSize: 10,
    seed: 2,
    upload: (b) => {
      events.push(`upload ${b.step}`);
      return fromTyped(b.images, b.shape, "float32", g);
    },
    dispose: (t) => {
      disposed.push(t.shape[0]);
      t.dispose();
    },
  });
  let steps = 0;
  for await (const b of gen) {
    events.push(`step ${b.step}`);
    // The "step": it awaits the device (and a timer, as a GPU step would on any backend), so the loader works
    // meanwhile.
    const [back] = await Promise.all([b.data.data(), new Promise((r) => setTimeout(r, 5))]);
    assert.deepEqual(back, b.images);
    events.push(`done ${b.step}`);
    b.data.dispose();
    if (++steps === 3) break;
  }
  // Batch k + 1 was uploaded before step k finished.
  assert.deepEqual(events.slice(0, 7), ["upload 0", "step 0", "upload 1", "done 0", "step 1", "upload 2", "done 1"]);
  assert.deepEqual(disposed, [10], "the batch in flight at the break is freed");
});
