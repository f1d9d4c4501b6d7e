/**
 * The decoder WebAssembly files that `tools/embed_codecs.ts` embeds into `train/data/codecs_wasm.ts`, and where
 * Deno's npm cache holds them. The versions must match the `npm:` specifiers in `train/data/imagefolder.ts`.
 *
 * @module
 */

/** One embedded file: its npm package, version and path inside the package. */
export interface CodecFile {
  /** npm package name. */
  pkg: string;
  /** Exact version. */
  version: string;
  /** Path of the `.wasm` inside the package. */
  file: string;
}

/** The embedded files, by the name of their export in `codecs_wasm.ts`. */
export const CODEC_FILES: Record<string, CodecFile> = {
  JPEG_DECODER_WASM: { pkg: "@jsquash/jpeg", version: "1.6.0", file: "codec/dec/mozjpeg_dec.wasm" },
  PNG_DECODER_WASM: { pkg: "@jsquash/png", version: "3.1.1", file: "codec/pkg/squoosh_png_bg.wasm" },
};

/** The path of `f` in Deno's npm cache (asks `deno info --json` where the cache is; needs `--allow-run`). */
export async function codecCachePath(f: CodecFile): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped", stderr: "null" })
    .output();
  const { npmCache } = JSON.parse(new TextDecoder().decode(out.stdout)) as { npmCache: string };
  return `${npmCache}/registry.npmjs.org/${f.pkg}/${f.version}/${f.file}`;
}
