/**
 * Multi-crop augmentation: output shapes and [0, 1] ranges, determinism per key, CPU == WebGPU, jit == eager,
 * per-crop probabilities, and every op in isolation against a small host reference (crop-box sampling and
 * its fallback, crop + resize incl. Pillow's antialiased filter, flip, brightness/contrast/saturation/hue,
 * grayscale, the random jitter order, Gaussian blur with reflect padding, solarisation, normalisation).
 */
import assert from "node:assert/strict";
import { type Backend, cpu, fromTyped, jit, random, type Tensor, tensor } from "../mod.ts";
import * as A from "../train/augment.ts";
import { assertClose, gpu, randArray, readAll, rng } from "./util.ts";

const f32 = (a: ArrayLike<number>) => Float32Array.from(a);
const img = (data: ArrayLike<number>, shape: number[], be: Backend = cpu) => fromTyped(f32(data), shape, "float32", be);
const vec = (v: number[], be: Backend = cpu) => tensor(v, { backend: be });

/** A smooth-ish random image batch in [0, 1]. */
function images(seed: number, shape: number[]): Float32Array {
  const r = rng(seed);
  const [b, c, h, w] = shape;
  const out = new Float32Array(b * c * h * w);
  for (let i = 0; i < b * c; i++) {
    const fx = 0.2 + r() * 0.6;
    const fy = 0.2 + r() * 0.6;
    const ph = r() * 6;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = 0.5 + 0.35 * Math.sin(fx * x + ph) * Math.cos(fy * y) + 0.15 * (r() - 0.5);
        out[(i * h + y) * w + x] = Math.min(1, Math.max(0, v));
      }
    }
  }
  return out;
}

/** An RGB config exercising every op (hue, saturation, grayscale, bicubic) at small sizes. */
const RGB = A.augmentConfig("imagenet", {
  normalize: false,
  globalCrops: { size: 20 },
  localCrops: { number: 3, size: 8 },
  blur: { taps: 5, sigma: [0.1, 1.5] },
});
const FMNIST = A.augmentConfig("fmnist-tiny", { normalize: false });

function checkRange(xs: ArrayLike<number>[], what: string) {
  for (const x of xs) {
    for (let i = 0; i < x.length; i++) {
      if (!(x[i] >= 0 && x[i] <= 1)) throw new Error(`${what}: value ${x[i]} at ${i} outside [0, 1]`);
    }
  }
}

Deno.test("presets: fmnist-tiny is exactly the requested recipe; configs validate", () => {
  const f = A.AUGMENT_PRESETS["fmnist-tiny"];
  assert.deepEqual(
    { ...f },
    {
      channels: 1,
      mean: [0.2860],
      std: [0.3530],
      normalize: true,
      globalCrops: { number: 2, size: 28, scale: [0.25, 1] },
      localCrops: { number: 4, size: 12, scale: [0.05, 0.25] },
      ratio: [3 / 4, 4 / 3],
      attempts: 10,
      interpolation: "bilinear",
      antialias: true,
      flipP: 0.5,
      jitter: { p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0, hue: 0 },
      grayscaleP: 0,
      blur: { pGlobal1: 1, pGlobalOther: 0.1, pLocal: 0.5, sigma: [0.1, 1.0], taps: 5 },
      solarize: { pGlobal1: 0, pGlobalOther: 0.2, pLocal: 0, threshold: 0.5 },
    },
  );
  const specs = A.cropSpecs(f);
  assert.deepEqual(specs.map((s) => [s.kind, s.size, s.blurP, s.solarizeP]), [
    ["global", 28, 1, 0],
    ["global", 28, 0.1, 0.2],
    ["local", 12, 0.5, 0],
    ["local", 12, 0.5, 0],
    ["local", 12, 0.5, 0],
    ["local", 12, 0.5, 0],
  ]);
  const im = A.IMAGENET_AUGMENT;
  assert.deepEqual([im.globalCrops, im.localCrops], [
    { number: 2, size: 224, scale: [0.25, 1] },
    { number: 10, size: 96, scale: [0.05, 0.25] },
  ]);
  assert.deepEqual(im.jitter, { p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 });
  for (const name of Object.keys(A.AUGMENT_PRESETS) as (keyof typeof A.AUGMENT_PRESETS)[]) {
    A.validateAugmentConfig(A.AUGMENT_PRESETS[name]);
  }
  assert.throws(() => A.augmentConfig("fmnist-tiny", { blur: { taps: 4 } }), /taps/);
  assert.throws(() => A.augmentConfig("fmnist-tiny", { flipP: 1.5 }), /flipP/);
  assert.throws(() => A.augmentConfig("fmnist-tiny", { mean: [0.1, 0.2] }), /mean\/std/);
  assert.throws(() => A.multiCrop(random.key(0), img(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]), f), /channels/);
});

Deno.test("multiCrop: shapes, [0, 1] ranges, normalisation, determinism per key, CPU == WebGPU, jit == eager", async () => {
  const g = await gpu();
  const B = 6;
  for (const [name, cfg, shape] of [["fmnist", FMNIST, [B, 1, 28, 28]], ["rgb", RGB, [B, 3, 24, 20]]] as const) {
    const data = images(name.length, [...shape]);
    const results: ArrayLike<number>[][] = [];
    for (const be of [cpu, g]) {
      const x = img(data, [...shape], be);
      const k = random.key(11, be);
      const eager = A.multiCrop(k, x, cfg);
      const again = A.multiCrop(k, x, cfg);
      const other = A.multiCrop(random.key(12, be), x, cfg);
      const normed = A.multiCrop(k, x, { ...cfg, normalize: true });
      const aug = jit((kk: Tensor, xx: Tensor) => A.multiCrop(kk, xx, cfg));
      const jitted = aug(k, x);
      const sizes = [
        ...Array(cfg.globalCrops.number).fill(cfg.globalCrops.size),
        ...Array(cfg.localCrops.number)
          .fill(cfg.localCrops.size),
      ];
      assert.deepEqual(eager.map((t) => t.shape), sizes.map((s) => [B, shape[1], s, s]), name);
      const all = await readAll([...eager, ...again, ...other, ...normed, ...jitted]);
      const n = eager.length;
      const [e, a, o, nm, j] = [0, 1, 2, 3, 4].map((i) => all.slice(i * n, (i + 1) * n));
      checkRange(e, `${name} on ${be.name}`);
      e.forEach((v, i) => assert.deepEqual(a[i], v, `${name}: same key, crop ${i}`));
      e.forEach((v, i) => assert.notDeepEqual(o[i], v, `${name}: another key, crop ${i}`));
      e.forEach((v, i) => assertClose(j[i], v, 1e-5, 1e-6, `${name} jit vs eager on ${be.name}, crop ${i}`));
      const hw = (s: number) => s * s;
      e.forEach((v, i) => {
        const want = Float32Array.from(v, (x, idx) => {
          const c = Math.floor(idx / hw(sizes[i])) % shape[1];
          return (x - cfg.mean[c]) / cfg.std[c];
        });
        assertClose(nm[i], want, 1e-5, 1e-5, `${name}: normalised crop ${i}`);
      });
      results.push(e);
      aug.dispose();
    }
    results[0].forEach((v, i) => assertClose(results[1][i], v, 0, 1e-4, `${name}: WebGPU vs CPU, crop ${i}`));
  }
});

Deno.test("multiCrop: per-crop probabilities (solarise only global 2, grayscale, flip) from constant images", async () => {
  // A constant image stays constant under crop, flip and blur, so each crop reveals which ops fired.
  const B = 400;
  const cfg = A.augmentConfig("imagenet", {
    normalize: false,
    globalCrops: { size: 4 },
    localCrops: { number: 2, size: 4 },
    jitter: { p: 0 },
    blur: { taps: 3 },
  });
  const rgb = [0.9, 0.6, 0.7];
  const x = img(Array.from({ length: B * 3 * 8 * 8 }, (_, i) => rgb[Math.floor(i / 64) % 3]), [B, 3, 8, 8]);
  const out = await readAll(A.multiCrop(random.key(5), x, cfg));
  const gray = 0.299 * 0.9 + 0.587 * 0.6 + 0.114 * 0.7;
  const frac = (d: ArrayLike<number>, pred: (r: number, g: number) => boolean) => {
    let n = 0;
    for (let b = 0; b < B; b++) if (pred(d[b * 48], d[b * 48 + 16])) n++;
    return n / B;
  };
  const close = (a: number, b: number) => Math.abs(a - b) < 1e-5;
  out.forEach((d, i) => {
    const sol = frac(d, (r) => close(r, 0.1) || close(r, 1 - gray));
    const gr = frac(d, (r, g) => close(r, g));
    if (i === 1) assert.ok(sol > 0.14 && sol < 0.27, `solarised fraction of global 2: ${sol}`);
    else assert.equal(sol, 0, `crop ${i} must never be solarised`);
    assert.ok(gr > 0.14 && gr < 0.27, `grayscale fraction of crop ${i}: ${gr}`);
  });
  // Flip: a horizontal ramp with the whole image as the crop (scale 1, ratio 1).
  const ramp = img(Array.from({ length: B * 3 * 8 * 8 }, (_, i) => (i % 8) / 7), [B, 3, 8, 8]);
  const flipCfg = A.augmentConfig(cfg, { globalCrops: { scale: [1, 1], size: 8 }, ratio: [1, 1], grayscaleP: 0 });
  const [g1] = await readAll(A.multiCrop(random.key(6), ramp, flipCfg));
  let flipped = 0;
  for (let b = 0; b < B; b++) if (g1[b * 192] > g1[b * 192 + 7]) flipped++;
  assert.ok(Math.abs(flipped / B - 0.5) < 0.1, `flipped fraction ${flipped / B}`);
});

// ---------------------------------------------------------------------------------------------------------
// Ops in isolation

/** torchvision's get_params on the host (float64), given the same uniforms. */
function hostBoxes(u: Float64Array, b: number, h: number, w: number, scale: number[], ratio: number[], att: number) {
  const at = (row: number, i: number) => u[row * b + i];
  const out: number[][] = [];
  let nearTie = false;
  for (let i = 0; i < b; i++) {
    let box: number[] | null = null;
    for (let k = 0; k < att && !box; k++) {
      const area = h * w * (scale[0] + (scale[1] - scale[0]) * at(k, i));
      const lr = Math.log(ratio[0]) + (Math.log(ratio[1]) - Math.log(ratio[0])) * at(att + k, i);
      const cw = Math.sqrt(area * Math.exp(lr));
      const ch = Math.sqrt(area / Math.exp(lr));
      for (const v of [cw, ch]) if (Math.abs(v - Math.floor(v) - 0.5) < 1e-4) nearTie = true;
      const [rw, rh] = [Math.floor(cw + 0.5), Math.floor(ch + 0.5)];
      if (rw > 0 && rw <= w && rh > 0 && rh <= h) {
        box = [Math.floor(at(2 * att, i) * (h - rh + 1)), Math.floor(at(2 * att + 1, i) * (w - rw + 1)), rh, rw];
      }
    }
    out.push(box ?? A.fallbackBox(h, w, ratio as [number, number]));
  }
  return { out, nearTie };
}

Deno.test("sampleCropBoxes: the first valid of the attempts (host reference), else the centre-crop fallback", async () => {
  const [B, H, W, att] = [64, 20, 30, 4];
  const u = randArray(3, (2 * att + 2) * B, 0, 1);
  for (const [scale, ratio] of [[[0.05, 1], [3 / 4, 4 / 3]], [[0.5, 1], [0.3, 3]], [[0.9, 1], [1, 1]]]) {
    const boxes = A.sampleCropBoxes(
      img(u, [2 * att + 2, B]),
      H,
      W,
      scale as [number, number],
      ratio as [
        number,
        number,
      ],
      att,
    );
    const [t, l, h, w] = await readAll([boxes.top, boxes.left, boxes.height, boxes.width]);
    const { out, nearTie } = hostBoxes(u, B, H, W, scale, ratio, att);
    assert.ok(!nearTie, "the test's uniforms should not sit on a rounding tie");
    assert.deepEqual(out, Array.from({ length: B }, (_, i) => [t[i], l[i], h[i], w[i]]), `scale ${scale}`);
  }
  // No attempt fits (area > image): centre crop with the ratio clamped to the range.
  assert.deepEqual(A.fallbackBox(20, 30, [3 / 4, 4 / 3]), [0, 1, 20, 27]);
  assert.deepEqual(A.fallbackBox(30, 20, [3 / 4, 4 / 3]), [1, 0, 27, 20]);
  assert.deepEqual(A.fallbackBox(20, 30, [0.5, 2]), [0, 0, 20, 30]);
  const big = A.sampleCropBoxes(img(u, [2 * att + 2, B]), H, W, [1.5, 2], [3 / 4, 4 / 3], att);
  const [t, l, h, w] = await readAll([big.top, big.left, big.height, big.width]);
  for (let i = 0; i < B; i++) assert.deepEqual([t[i], l[i], h[i], w[i]], [0, 1, 20, 27]);
});

/** Pillow's `precompute_coeffs` for resizing a crop of length `len` to `out` (bilinear/bicubic a = -0.5). */
function pilCoeffs(len: number, out: number, filter: "bilinear" | "bicubic", antialias = true): number[][] {
  const support0 = filter === "bilinear" ? 1 : 2;
  const f = (x: number) => {
    x = Math.abs(x);
    if (filter === "bilinear") return x < 1 ? 1 - x : 0;
    const a = -0.5;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  };
  const scale = len / out;
  const fs = antialias ? Math.max(scale, 1) : 1;
  const support = support0 * fs;
  const m: number[][] = [];
  for (let o = 0; o < out; o++) {
    const center = (o + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), len);
    const row = new Array(len).fill(0);
    let ww = 0;
    for (let x = xmin; x < xmax; x++) {
      row[x] = f((x - center + 0.5) / fs);
      ww += row[x];
    }
    m.push(row.map((v) => v / ww));
  }
  return m;
}

/** Crop (top, left, h, w) of a [H, W] plane, then separable resampling with Pillow's coefficients. */
function hostResizedCrop(p: ArrayLike<number>, W: number, box: number[], size: number, filter: "bilinear" | "bicubic") {
  const [t, l, h, w] = box;
  const cy = pilCoeffs(h, size, filter);
  const cx = pilCoeffs(w, size, filter);
  const out = new Float64Array(size * size);
  for (let oy = 0; oy < size; oy++) {
    for (let ox = 0; ox < size; ox++) {
      let s = 0;
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) s += cy[oy][y] * cx[ox][x] * p[(t + y) * W + l + x];
      out[oy * size + ox] = Math.min(1, Math.max(0, s));
    }
  }
  return out;
}

/** PyTorch's bilinear `align_corners=False` resize of a crop (upsampling: no antialias question). */
function torchBilinear(p: ArrayLike<number>, W: number, box: number[], size: number) {
  const [t, l, h, w] = box;
  const src = (o: number, len: number) => {
    const s = Math.max((o + 0.5) * len / size - 0.5, 0);
    const i0 = Math.min(Math.floor(s), len - 1);
    return [i0, Math.min(i0 + 1, len - 1), s - i0] as const;
  };
  const out = new Float64Array(size * size);
  for (let oy = 0; oy < size; oy++) {
    const [y0, y1, ly] = src(oy, h);
    for (let ox = 0; ox < size; ox++) {
      const [x0, x1, lx] = src(ox, w);
      const v = (y: number, x: number) => p[(t + y) * W + l + x];
      out[oy * size + ox] = (1 - ly) * ((1 - lx) * v(y0, x0) + lx * v(y0, x1)) +
        ly * ((1 - lx) * v(y1, x0) + lx * v(y1, x1));
    }
  }
  return out;
}

Deno.test("resizedCrop: PyTorch bilinear when upsampling, Pillow's antialiased filters, flips, identity copies", async () => {
  const [H, W] = [9, 11];
  const plane = randArray(7, H * W, 0, 1);
  const boxes = [[1, 2, 4, 5], [0, 0, 9, 11], [3, 1, 6, 6], [2, 3, 7, 8]];
  const B = boxes.length;
  const x = img(Array.from({ length: B }, () => Array.from(plane)).flat(), [B, 1, H, W]);
  const col = (k: number) => vec(boxes.map((b) => b[k]));
  const bx = { top: col(0), left: col(1), height: col(2), width: col(3) };
  for (const [size, filter] of [[12, "bilinear"], [5, "bilinear"], [12, "bicubic"], [4, "bicubic"]] as const) {
    const flipMask = tensor([true, false, true, false], { dtype: "bool" });
    const [plain, flipped, noAa] = await readAll([
      A.resizedCrop(x, bx, size, { interpolation: filter }),
      A.resizedCrop(x, bx, size, { interpolation: filter, flip: flipMask }),
      A.resizedCrop(x, bx, size, { interpolation: filter, antialias: false }),
    ]);
    boxes.forEach((box, b) => {
      const got = Array.from(plain).slice(b * size * size, (b + 1) * size * size);
      assertClose(got, hostResizedCrop(plane, W, box, size, filter), 1e-5, 1e-6, `${filter} ${size} box ${box}`);
      if (filter === "bilinear" && box[2] <= size && box[3] <= size) {
        assertClose(got, torchBilinear(plane, W, box, size), 1e-5, 1e-6, `torch bilinear ${size} box ${box}`);
      }
      const fl = Array.from(flipped).slice(b * size * size, (b + 1) * size * size);
      const mirrored = got.map((_, i) => got[Math.floor(i / size) * size + size - 1 - (i % size)]);
      assertClose(fl, b % 2 === 0 ? mirrored : got, 0, 1e-7, `flip of box ${b}`);
      if (filter === "bilinear" && box[3] > size) {
        // Without antialias a 2x downsample would skip pixels; the antialiased result must differ.
        const na = Array.from(noAa).slice(b * size * size, (b + 1) * size * size);
        assert.ok(na.some((v, i) => Math.abs(v - got[i]) > 1e-3), `antialias matters for box ${b}`);
      }
    });
  }
  // A crop resampled to its own size is an exact copy; two crops per image are crop-major.
  const two = { top: vec([1, 0, 2, 1]), left: vec([2, 0, 1, 0]), height: vec([4, 4, 4, 4]), width: vec([4, 4, 4, 4]) };
  const x2 = img([...plane, ...plane.map((v) => 1 - v)], [2, 1, H, W]);
  const [copy] = await readAll([A.resizedCrop(x2, two, 4)]);
  const want: number[] = [];
  for (let k = 0; k < 4; k++) {
    const [t, l] = [[1, 2], [0, 0], [2, 1], [1, 0]][k];
    for (let y = 0; y < 4; y++) {
      for (let xx = 0; xx < 4; xx++) want.push(k % 2 ? 1 - plane[(t + y) * W + l + xx] : plane[(t + y) * W + l + xx]);
    }
  }
  assertClose(copy, want, 1e-6, 1e-7, "identity crops");
});

/** colorsys-style host HSV round trip with a hue shift. */
function hostHue(r: number, g: number, b: number, shift: number): number[] {
  const mx = Math.max(r, g, b);
  const mn = Math.min(r, g, b);
  const v = mx;
  if (mx === mn) return [r, g, b];
  const s = (mx - mn) / mx;
  const rc = (mx - r) / (mx - mn);
  const gc = (mx - g) / (mx - mn);
  const bc = (mx - b) / (mx - mn);
  let h = r === mx ? bc - gc : g === mx ? 2 + rc - bc : 4 + gc - rc;
  h = (((h / 6 + shift) % 1) + 1) % 1;
  const i = Math.floor(h * 6);
  const f = h * 6 - i;
  const p = v * (1 - s);
  const q = v * (1 - s * f);
  const t = v * (1 - s * (1 - f));
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
}

Deno.test("colour ops: brightness, contrast, saturation, hue, grayscale against host formulas", async () => {
  const [B, H, W] = [3, 4, 5];
  const n = H * W;
  const data = randArray(9, B * 3 * n, 0, 1);
  const x = img(data, [B, 3, H, W]);
  const f = [0.6, 1.0, 1.37];
  const shift = [-0.1, 0.03, 0.5];
  const [br, co, sa, hu, gr, co1] = await readAll([
    A.adjustBrightness(x, vec(f)),
    A.adjustContrast(x, vec(f)),
    A.adjustSaturation(x, vec(f)),
    A.adjustHue(x, vec(shift)),
    A.grayscale(x),
    A.adjustContrast(img(data.slice(0, B * n), [B, 1, H, W]), vec(f)),
  ]);
  const at = (b: number, c: number, i: number) => data[(b * 3 + c) * n + i];
  const clamp = (v: number) => Math.min(1, Math.max(0, v));
  const luma = (b: number, i: number) => 0.299 * at(b, 0, i) + 0.587 * at(b, 1, i) + 0.114 * at(b, 2, i);
  const want = { br: [] as number[], co: [] as number[], sa: [] as number[], hu: [] as number[], gr: [] as number[] };
  const co1Want: number[] = [];
  for (let b = 0; b < B; b++) {
    let m = 0;
    for (let i = 0; i < n; i++) m += luma(b, i) / n;
    const grey = Math.round(m * 255) / 255;
    let m1 = 0;
    for (let i = 0; i < n; i++) m1 += data[b * n + i] / n;
    const grey1 = Math.round(m1 * 255) / 255;
    for (let i = 0; i < n; i++) co1Want.push(clamp(f[b] * data[b * n + i] + (1 - f[b]) * grey1));
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < n; i++) {
        const v = at(b, c, i);
        want.br.push(clamp(v * f[b]));
        want.co.push(clamp(f[b] * v + (1 - f[b]) * grey));
        want.sa.push(clamp(f[b] * v + (1 - f[b]) * luma(b, i)));
        want.hu.push(hostHue(at(b, 0, i), at(b, 1, i), at(b, 2, i), shift[b])[c]);
        want.gr.push(luma(b, i));
      }
    }
  }
  assertClose(br, want.br, 1e-6, 1e-6, "brightness");
  assertClose(co, want.co, 1e-5, 1e-6, "contrast");
  assertClose(co1, co1Want, 1e-5, 1e-6, "contrast, 1 channel");
  assertClose(sa, want.sa, 1e-5, 1e-6, "saturation");
  assertClose(hu, want.hu, 1e-4, 1e-5, "hue");
  assertClose(gr, want.gr, 1e-5, 1e-6, "grayscale");
});

Deno.test("colorJitter: applies the enabled ops in each image's random order, with probability p", async () => {
  const [B, n] = [4, 6];
  const data = randArray(4, B * n, 0.1, 0.9);
  const x = img(data, [B, 1, 2, 3]);
  const cfg: A.ColorJitterConfig = { p: 1, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 };
  const fb = [1.3, 0.7, 1.3, 0.9];
  const fc = [0.65, 1.35, 1.2, 0.8];
  const factors = img([...fb, ...fc, 1, 1, 1, 1, 0, 0, 0, 0], [4, B]);
  // Images 0 and 2: brightness first; images 1 and 3: contrast first (hue/saturation are no-ops on 1 channel).
  const order = img([0.1, 0.9, 0.2, 0.5, 0.3, 0.2, 0.7, 0.4, 0, 0, 0, 0, 0, 0, 0, 0], [4, B]);
  const apply = tensor([true, true, false, true], { dtype: "bool" });
  const [got] = await readAll([A.colorJitter(x, factors, order, apply, cfg)]);
  const clamp = (v: number) => Math.min(1, Math.max(0, v));
  const want: number[] = [];
  for (let b = 0; b < B; b++) {
    let px = Array.from(data.slice(b * n, (b + 1) * n));
    const bright = () => (px = px.map((v) => clamp(v * fb[b])));
    const contrast = () => {
      const g = Math.round((px.reduce((s, v) => s + v, 0) / n) * 255) / 255;
      px = px.map((v) => clamp(fc[b] * v + (1 - fc[b]) * g));
    };
    const steps = b === 2 ? [] : b % 2 === 0 ? [bright, contrast] : [contrast, bright]; // image 2: not applied
    for (const step of steps) step();
    want.push(...px);
  }
  assertClose(got, want, 1e-5, 1e-6, "jitter order");
});

/** All permutations of 0..n-1. */
function permutations(n: number): number[][] {
  if (n === 1) return [[0]];
  return permutations(n - 1).flatMap((p) =>
    Array.from({ length: n }, (_, i) => [...p.slice(0, i), n - 1, ...p.slice(i)])
  );
}

Deno.test("colorJitter on RGB: all 24 orders of brightness/contrast/saturation/hue equal the host composition", async () => {
  const perms = permutations(4);
  const B = perms.length;
  const n = 2 * 3;
  const data = randArray(21, B * 3 * n, 0.05, 0.95);
  const r = rng(5);
  const fac = [0, 1, 2].map(() => Array.from({ length: B }, () => 0.6 + 0.8 * r()));
  const hue = Array.from({ length: B }, () => 0.2 * r() - 0.1);
  // order[k][b]: op k's draw; ranking the draws gives the permutation perms[b] (op at slot s = perms[b][s]).
  const order = [0, 1, 2, 3].map((k) => perms.map((p) => (p.indexOf(k) + 0.5) / 4));
  const clamp = (v: number) => Math.min(1, Math.max(0, v));
  for (
    const cfg of [{ brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 }, {
      brightness: 0,
      contrast: 0.4,
      saturation: 0.2,
      hue: 0.1,
    }]
  ) {
    const factors = img([...fac.flat(), ...hue], [4, B]);
    const apply = tensor(Array(B).fill(true), { dtype: "bool" });
    const [got] = await readAll([A.colorJitter(img(data, [B, 3, 2, 3]), factors, img(order.flat(), [4, B]), apply, {
      p: 1,
      ...cfg,
    })]);
    const want: number[] = [];
    for (let b = 0; b < B; b++) {
      let px = [0, 1, 2].map((c) => Array.from(data.slice((b * 3 + c) * n, (b * 3 + c + 1) * n)));
      const luma = (i: number) => 0.299 * px[0][i] + 0.587 * px[1][i] + 0.114 * px[2][i];
      const ops = [
        () => (px = px.map((ch) => ch.map((v) => clamp(v * fac[0][b])))),
        () => {
          const g = Math.round((Array.from({ length: n }, (_, i) => luma(i)).reduce((s, v) => s + v, 0) / n) * 255) /
            255;
          px = px.map((ch) => ch.map((v) => clamp(fac[1][b] * v + (1 - fac[1][b]) * g)));
        },
        () => {
          const l = Array.from({ length: n }, (_, i) => luma(i));
          px = px.map((ch) => ch.map((v, i) => clamp(fac[2][b] * v + (1 - fac[2][b]) * l[i])));
        },
        () => {
          const out = Array.from({ length: n }, (_, i) => hostHue(px[0][i], px[1][i], px[2][i], hue[b]));
          px = [0, 1, 2].map((c) => out.map((o) => o[c]));
        },
      ];
      for (const k of perms[b]) if (k !== 0 || cfg.brightness > 0) ops[k]();
      want.push(...px.flat());
    }
    assertClose(got, want, 1e-4, 1e-5, `jitter orders with brightness ${cfg.brightness}`);
  }
});

Deno.test("gaussianBlur: an impulse gives the normalised taps; reflect padding at the borders (host reference)", async () => {
  const [H, W, taps] = [7, 9, 5];
  const sig = [0.3, 1.0, 1.7];
  const B = sig.length;
  const r = (taps - 1) / 2;
  const g = (s: number) => {
    const k = Array.from({ length: taps }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * s * s)));
    const sum = k.reduce((a, b) => a + b, 0);
    return k.map((v) => v / sum);
  };
  const impulse = new Float64Array(B * H * W);
  for (let b = 0; b < B; b++) impulse[b * H * W + 3 * W + 4] = 1;
  const noise = randArray(8, B * 2 * H * W, 0, 1);
  const [imp, blurred, taps1] = await readAll([
    A.gaussianBlur(img(impulse, [B, 1, H, W]), vec(sig), taps),
    A.gaussianBlur(img(noise, [B, 2, H, W]), vec(sig), taps),
    A.gaussianBlur(img(noise, [B, 2, H, W]), vec(sig), 1),
  ]);
  for (let b = 0; b < B; b++) {
    const k = g(sig[b]);
    const want = new Float64Array(H * W);
    for (let i = 0; i < taps; i++) for (let j = 0; j < taps; j++) want[(3 - r + i) * W + 4 - r + j] = k[i] * k[j];
    assertClose(Array.from(imp).slice(b * H * W, (b + 1) * H * W), want, 1e-5, 1e-7, `impulse, sigma ${sig[b]}`);
  }
  // Separable convolution with PyTorch 'reflect' padding, on the host.
  const reflect = (i: number, n: number) => (i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i);
  const want: number[] = [];
  for (let b = 0; b < B; b++) {
    const k = g(sig[b]);
    for (let c = 0; c < 2; c++) {
      const p = (y: number, x: number) => noise[((b * 2 + c) * H + y) * W + x];
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          let s = 0;
          for (let i = 0; i < taps; i++) {
            for (let j = 0; j < taps; j++) s += k[i] * k[j] * p(reflect(y + i - r, H), reflect(x + j - r, W));
          }
          want.push(s);
        }
      }
    }
  }
  assertClose(blurred, want, 1e-5, 1e-6, "reflect-padded blur");
  assertClose(taps1, noise, 0, 1e-7, "1 tap is the identity");
  assert.deepEqual([-3, -2, -1, 0, 4, 5, 6, 7, 12].map((i) => A.reflectIndex(i, 5)), [3, 2, 1, 0, 4, 3, 2, 1, 4]);
});

Deno.test("solarize and normalize", async () => {
  const v = [0, 0.2, 0.4999, 0.5, 0.75, 1];
  const [s, nm] = await readAll([
    A.solarize(img(v, [1, 1, 2, 3])),
    A.normalize(img([...v, ...v], [1, 2, 2, 3]), [0.5, 0.25], [0.5, 2]),
  ]);
  assertClose(s, [0, 0.2, 0.4999, 0.5, 0.25, 0], 0, 1e-7, "solarize");
  assertClose(nm, [...v.map((x) => (x - 0.5) / 0.5), ...v.map((x) => (x - 0.25) / 2)], 1e-6, 1e-7, "normalize");
});
