/**
 * The browser demo's inputs, generated rather than committed: a randomly initialised ViT-tiny/8 backbone for
 * 32 px images (`initVit(random.key(0))`, about 5.5 M parameters, 22 MB of float32) as safetensors with
 * `num_heads` metadata, and a 32 px PNG from the embedded shapes dataset.
 *
 * `deno task bundle` runs this file to put `vit_tiny8_32.safetensors` and `default.png` into `dist/`
 * (`deno run --allow-read --allow-write=dist examples/browser/assets.ts dist`); `tests/browser_test.ts` calls
 * the functions and serves the bytes from memory.
 *
 * @module
 */
import { encode as encodePng } from "npm:@jsquash/png@3.1.1";
import {
  type Backend,
  data,
  defaultBackend,
  encodeSafetensors,
  type HostTensor,
  initBackend,
  initVit,
  random,
  type Tensor,
  tree,
  vitConfig,
} from "../../mod.ts";

/** File names the page loads by default. */
export const CHECKPOINT_NAME = "vit_tiny8_32.safetensors";
/** See `CHECKPOINT_NAME`. */
export const IMAGE_NAME = "default.png";

/** The demo architecture: ViT-tiny (D 192, depth 12, 3 heads) with patch 8 at 32 px, a teacher-style backbone. */
export const DEMO_CONFIG = vitConfig({ arch: "vit_tiny", patchSize: 8, imgSize: 32, maskedEmbed: false });

/** Safetensors bytes of the random backbone (official names, no prefix) with `num_heads` and size metadata. */
export async function demoCheckpoint(seed = 0, backend: Backend = defaultBackend()): Promise<Uint8Array<ArrayBuffer>> {
  const params = initVit(random.key(seed, backend), DEMO_CONFIG);
  const leaves = tree.paths<Tensor>(params);
  const datas = await Promise.all(leaves.map(([, t]) => t.data()));
  const entries = leaves.map(([name, t], i): [string, HostTensor] => [
    name,
    { dtype: t.dtype, shape: [...t.shape], data: datas[i] },
  ]);
  for (const [, t] of leaves) t.dispose();
  return encodeSafetensors(entries, { // a fresh ArrayBuffer-backed array
    arch: "vit_tiny",
    num_heads: String(DEMO_CONFIG.numHeads),
    patch_size: String(DEMO_CONFIG.patchSize),
    img_size: String(DEMO_CONFIG.imgSize),
    seed: String(seed),
  }) as Uint8Array<ArrayBuffer>;
}

/** Image `index` of the embedded shapes test split (seed 0) as 32x32 RGBA bytes. */
export function demoImage(index = 0): { rgba: Uint8ClampedArray<ArrayBuffer>; width: number; height: number } {
  const ds = data.embeddedDataset({ seed: 0, trainPerClass: 0, testPerClass: 1 });
  const img = data.imageAt(ds, ds.test, index % ds.test.n); // [3, 32, 32] in [0, 1]
  const n = ds.size * ds.size;
  const rgba = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) rgba[4 * i + c] = Math.round(img[c * n + i] * 255);
    rgba[4 * i + 3] = 255;
  }
  return { rgba, width: ds.size, height: ds.size };
}

/** PNG bytes of RGBA pixels. */
export async function pngBytes(
  img: { rgba: Uint8ClampedArray<ArrayBuffer>; width: number; height: number },
): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await encodePng(new ImageData(img.rgba, img.width, img.height)));
}

if (import.meta.main) {
  const out = Deno.args[0] ?? "dist";
  await Deno.mkdir(out, { recursive: true });
  await initBackend("auto"); // the same weights on every backend; WebGPU is faster
  await Deno.writeFile(`${out}/${CHECKPOINT_NAME}`, await demoCheckpoint());
  await Deno.writeFile(`${out}/${IMAGE_NAME}`, await pngBytes(demoImage()));
  console.log(`wrote ${out}/${CHECKPOINT_NAME} and ${out}/${IMAGE_NAME}`);
}
