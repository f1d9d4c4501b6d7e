/**
 * Bad dataset inputs get clear, typed errors naming the file: IDX labels outside the class range, a corrupt
 * gzip, a gzip that inflates past what its IDX header declares, seeds beyond the exact integers; undecodable
 * images get a readable reason (a CMYK JPEG, corrupt data). Also: the embedded decoder WebAssembly is
 * byte-identical to the npm packages' files.
 */
import assert from "node:assert/strict";
import { encode as encodeJpeg } from "npm:@jsquash/jpeg@1.6.0";
import { DataError, InputError } from "../mod.ts";
import { loadFashionMnist, readIdx } from "../train/data/fmnist.ts";
import { decodeImage, jpegComponents } from "../train/data/decode.ts";
import { seedKey } from "../ops/host_random.ts";
import * as embedded from "../train/data/codecs_wasm.ts";
import { CODEC_FILES, codecCachePath } from "../tools/codec_files.ts";
import { cmykJpeg, gzip, idx } from "./data_files.ts";

async function fmnistDir(trainLabels: number[]): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ibot-fmnist-bad-" });
  const px = (n: number) => new Uint8Array(n * 16).fill(9);
  const n = trainLabels.length;
  await Deno.writeFile(`${dir}/train-images-idx3-ubyte.gz`, await gzip(idx(0x08, [n, 4, 4], px(n))));
  await Deno.writeFile(`${dir}/train-labels-idx1-ubyte.gz`, await gzip(idx(0x08, [n], Uint8Array.from(trainLabels))));
  await Deno.writeFile(`${dir}/t10k-images-idx3-ubyte.gz`, await gzip(idx(0x08, [1, 4, 4], px(1))));
  await Deno.writeFile(`${dir}/t10k-labels-idx1-ubyte.gz`, await gzip(idx(0x08, [1], Uint8Array.from([3]))));
  return dir;
}

/** Asserts that `p` rejects with a `DataError` (an `InputError`) whose message matches `re`. */
async function rejectsData(p: () => Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.ok(e instanceof DataError && e instanceof InputError, `${e.name}: ${e.message}`);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("Fashion-MNIST: a label outside [0, 10) is a DataError naming the file, the item and the label", async () => {
  const dir = await fmnistDir([2, 10, 0]);
  try {
    await rejectsData(
      () => loadFashionMnist({ dir }),
      /train-labels-idx1-ubyte\.gz: label 10 of item 1 outside \[0, 10\)/,
    );
    // Only the labels in use are checked: a limit before the bad one loads.
    assert.equal((await loadFashionMnist({ dir, trainLimit: 1 })).train.n, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("IDX: a corrupt or truncated gzip is a DataError naming the file", async () => {
  const dir = await fmnistDir([1, 2]);
  try {
    const path = `${dir}/t10k-images-idx3-ubyte.gz`;
    const good = await Deno.readFile(path);
    await Deno.writeFile(path, good.subarray(0, good.length - 9));
    await rejectsData(() => readIdx(path), /t10k-images-idx3-ubyte\.gz: corrupt gzip stream/);
    const flipped = good.slice();
    for (let i = 10; i < flipped.length - 8; i++) flipped[i] ^= 0x5a;
    await Deno.writeFile(path, flipped);
    await rejectsData(() => loadFashionMnist({ dir }), /t10k-images-idx3-ubyte\.gz: corrupt gzip stream/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("IDX: a gzip that inflates past its header's size stops there with a DataError", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ibot-idx-bomb-" });
  try {
    // The header declares 16 values; 16 MiB of zeros follow (16 KiB compressed).
    const bomb = new Uint8Array(16 << 20);
    bomb.set(idx(0x08, [1, 4, 4], new Uint8Array(16)));
    await Deno.writeFile(`${dir}/bomb.gz`, await gzip(bomb));
    const t0 = performance.now();
    await rejectsData(() => readIdx(`${dir}/bomb.gz`), /bomb\.gz: decompresses to more than the 32 bytes/);
    const ms = performance.now() - t0;
    console.log(`refused after ${ms.toFixed(0)} ms`);
    assert.ok(ms < 1000, `${ms} ms: inflated far past the header before stopping`);
    // A non-IDX payload is refused on its first bytes, not after inflating it all.
    const notIdx = new Uint8Array(16 << 20).fill(7);
    await Deno.writeFile(`${dir}/other.gz`, await gzip(notIdx));
    await rejectsData(() => readIdx(`${dir}/other.gz`), /other\.gz: not an IDX file \(bad magic 7,7,7,7\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("seeds: keys hold exact integers only; beyond 2^53 - 1 distinct seeds would share a key", () => {
  assert.deepEqual(seedKey(2 ** 53 - 1), [0x1fffff, 0xffffffff]);
  assert.deepEqual(seedKey(-1), [0xffffffff, 0xffffffff]);
  assert.throws(() => seedKey(2 ** 53), RangeError);
  assert.throws(() => seedKey(1e20), /seed 100000000000000000000 is outside the exact integers/);
  assert.throws(() => seedKey(0.5), TypeError);
});

Deno.test("decode: a CMYK JPEG and corrupt images are refused with a readable reason", async () => {
  const cmyk = cmykJpeg();
  assert.equal(jpegComponents(cmyk), 4);
  await rejectsData(() => decodeImage(cmyk), /^a CMYK \(4-component\) JPEG, which the decoder cannot convert/);
  const rgb = new Uint8Array(await encodeJpeg(new ImageData(new Uint8ClampedArray(8 * 8 * 4).fill(90), 8, 8)));
  assert.equal(jpegComponents(rgb), 3);
  assert.equal((await decodeImage(rgb)).width, 8);
  // libjpeg's own reason, not "[object Object]".
  await rejectsData(() => decodeImage(rgb.subarray(0, 20)), /^corrupt JPEG: [A-Za-z]/);
  await rejectsData(() => decodeImage(Uint8Array.from([1, 2, 3, 4])), /neither PNG nor JPEG/);
  const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 13, 10, 26, 10, 0, 0, 0, 13, 1, 2, 3]);
  await rejectsData(() => decodeImage(png), /^corrupt PNG: /);
});

Deno.test("decode: the embedded WebAssembly equals the npm packages' files (tools/embed_codecs.ts is current)", async () => {
  for (const [name, file] of Object.entries(CODEC_FILES)) {
    const b64 = (embedded as Record<string, string>)[name];
    const gz = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const stream = new Blob([gz]).stream().pipeThrough(new DecompressionStream("gzip"));
    const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
    const cached = await Deno.readFile(await codecCachePath(file));
    assert.equal(bytes.length, cached.length, `${name}: ${file.pkg}@${file.version}/${file.file}`);
    assert.ok(bytes.every((b, i) => b === cached[i]), `${name} differs from the npm file: run tools/embed_codecs.ts`);
  }
});
