/**
 * examples/lib/png.ts: the encoder's output decodes (with @jsquash/png, the codec the data loader uses) to the
 * same pixels for RGB and RGBA images of awkward sizes; chunk CRCs and the zlib stream (header, Adler-32, length)
 * are valid; resvg renders an SVG to a PNG of the right size and colours.
 */
import assert from "node:assert/strict";
import {
  adler32,
  crc32,
  encodePng,
  encodeRgba,
  pickRenderer,
  pngChunks,
  pngSize,
  svgToPng,
  zlibDecompress,
} from "../examples/lib/png.ts";
import { decodeImage } from "../train/data/imagefolder.ts";
import { rng } from "./util.ts";

const ascii = (s: string) => new TextEncoder().encode(s);

Deno.test("png: crc32 and adler32 check values", () => {
  assert.equal(crc32(ascii("123456789")), 0xcbf43926);
  assert.equal(crc32(ascii("IEND")), 0xae426082);
  assert.equal(crc32(ascii("6789"), crc32(ascii("12345"))), 0xcbf43926); // continued
  assert.equal(adler32(ascii("Wikipedia")), 0x11e60398);
  assert.equal(adler32(new Uint8Array(0)), 1);
});

/** A test image mixing flat areas, gradients and noise, so every PNG filter gets picked somewhere. */
function pattern(w: number, h: number, c: number, seed: number): Uint8Array {
  const r = rng(seed);
  const px = new Uint8Array(w * h * c);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let k = 0; k < c; k++) {
        const region = (x * 3 + y) % 4;
        const v = region === 0 ? 200 : region === 1 ? (x * 7 + y * 3 + k * 50) & 255 : Math.floor(r() * 256);
        px[(y * w + x) * c + k] = k === 3 ? (x + y) % 3 === 0 ? 255 : v : v;
      }
    }
  }
  return px;
}

Deno.test("png: RGB and RGBA round trip through @jsquash/png; CRCs and the zlib stream are valid", async () => {
  for (const [w, h] of [[1, 1], [17, 5], [64, 33], [3, 40]]) {
    for (const c of [3, 4] as const) {
      const px = pattern(w, h, c, w * 31 + h + c);
      const png = await encodePng(px, w, h, c);
      assert.deepEqual(pngSize(png), { width: w, height: h });
      const chunks = pngChunks(png);
      assert.deepEqual(chunks.map((k) => k.type), ["IHDR", "IDAT", "IEND"]);
      assert.ok(chunks.every((k) => k.crcOk), "every chunk CRC matches");
      const z = chunks[1].data;
      assert.equal(z[0] & 0x0f, 8, "zlib: deflate method");
      assert.equal(((z[0] << 8) | z[1]) % 31, 0, "zlib: header check bits");
      const raw = await zlibDecompress(z);
      assert.equal(raw.length, h * (1 + w * c), "one filter byte + a row per scanline");
      const stored = new DataView(z.buffer, z.byteOffset + z.length - 4, 4).getUint32(0);
      assert.equal(adler32(raw), stored, "zlib: Adler-32 trailer");
      for (let y = 0; y < h; y++) assert.ok(raw[y * (1 + w * c)] <= 4, "filter type 0..4");

      const img = await decodeImage(png);
      assert.equal(img.width, w);
      assert.equal(img.height, h);
      const want = new Uint8Array(w * h * 4);
      for (let i = 0; i < w * h; i++) {
        for (let k = 0; k < 4; k++) want[i * 4 + k] = k < c ? px[i * c + k] : 255;
      }
      assert.deepEqual(new Uint8Array(img.data), want, `${w}x${h}x${c} pixels`);
    }
  }
});

Deno.test("png: a corrupted chunk fails its CRC; errors name the problem", async () => {
  const png = await encodePng(new Uint8Array([1, 2, 3]), 1, 1, 3);
  const bad = png.slice();
  bad[bad.length - 20] ^= 0xff; // inside IDAT
  assert.ok(pngChunks(bad).some((k) => !k.crcOk));
  assert.throws(() => pngChunks(new Uint8Array([1, 2, 3])), /signature/);
  await assert.rejects(() => encodePng(new Uint8Array(5), 1, 1, 3), /5 bytes for 1x1x3/);
});

Deno.test("png: encodeRgba drops an all-opaque alpha channel", async () => {
  const data = new Uint8ClampedArray([10, 20, 30, 255, 40, 50, 60, 255]);
  const rgb = await encodeRgba({ width: 2, height: 1, data });
  assert.equal(pngChunks(rgb)[0].data[9], 2, "colour type RGB");
  data[7] = 128;
  const rgba = await encodeRgba({ width: 2, height: 1, data });
  assert.equal(pngChunks(rgba)[0].data[9], 6, "colour type RGBA");
  assert.deepEqual([...(await decodeImage(rgba)).data], [...data]);
});

Deno.test("png: svgToPng renders an SVG (resvg) at its size and colours", async () => {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30">` +
    `<rect width="40" height="30" fill="#ffffff"/><rect x="10" y="10" width="20" height="10" fill="#ff0000"/></svg>`;
  const renderers: ("wasm" | "native")[] = ["wasm"];
  if (pickRenderer() === "native") renderers.push("native"); // it needs --allow-ffi and --allow-sys
  for (const renderer of renderers) {
    const png = await svgToPng(svg, { renderer });
    const img = await decodeImage(png);
    assert.deepEqual([img.width, img.height], [40, 30]);
    const at = (x: number, y: number) => [...img.data.subarray((y * 40 + x) * 4, (y * 40 + x) * 4 + 4)];
    assert.deepEqual(at(20, 15), [255, 0, 0, 255], renderer);
    assert.deepEqual(at(2, 2), [255, 255, 255, 255], renderer);
    const big = await svgToPng(svg, { renderer, scale: 2 });
    assert.deepEqual(pngSize(big), { width: 80, height: 60 });
  }
});
