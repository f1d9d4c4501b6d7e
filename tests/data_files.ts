/**
 * Dataset files made byte by byte for the tests: IDX arrays, gzip, and a CMYK JPEG (which no encoder at hand
 * writes).
 *
 * @module
 */

/** An IDX file: magic `0 0 <type> <rank>`, big-endian uint32 dims, then `body`. */
export function idx(type: number, dims: number[], body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + body.length);
  const v = new DataView(out.buffer);
  out.set([0, 0, type, dims.length]);
  dims.forEach((d, i) => v.setUint32(4 + 4 * i, d));
  out.set(body, 4 + 4 * dims.length);
  return out;
}

/** Gzip-compresses bytes with `CompressionStream`. */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const s = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(s).arrayBuffer());
}

/** One JPEG marker segment: `FF <marker>`, a big-endian length that counts itself, then `body`. */
function segment(marker: number, body: number[]): number[] {
  return [0xff, marker, (body.length + 2) >> 8, (body.length + 2) & 0xff, ...body];
}

/**
 * A valid baseline 8×8 JPEG with 4 colour components (CMYK), every block flat: one quantisation table of ones,
 * one DC and one AC Huffman table each holding a single 1-bit code (DC difference 0, end of block), so the scan
 * is one zero byte (2 bits per component).
 */
export function cmykJpeg(): Uint8Array {
  const ids = [1, 2, 3, 4];
  const oneCode = (tableClass: number) => [tableClass << 4, 1, ...Array(15).fill(0), 0];
  return new Uint8Array([
    0xff,
    0xd8,
    ...segment(0xdb, [0, ...Array(64).fill(1)]),
    ...segment(0xc0, [8, 0, 8, 0, 8, ids.length, ...ids.flatMap((id) => [id, 0x11, 0])]),
    ...segment(0xc4, [...oneCode(0), ...oneCode(1)]),
    ...segment(0xda, [ids.length, ...ids.flatMap((id) => [id, 0]), 0, 63, 0]),
    0x00,
    0xff,
    0xd9,
  ]);
}
