/**
 * The browser demo (`examples/browser/`) in a real browser: bundles `main.ts` with `deno bundle`, serves the
 * page, the bundle, a random ViT-tiny/8 checkpoint and a 32 px PNG from memory on 127.0.0.1, drives Debian's
 * Chromium (`/usr/bin/chromium`, WebGPU on SwiftShader) with `playwright-core`, and compares the page's [CLS]
 * token and last-block [CLS] attention with the same forward pass in Deno (WebGPU and the CPU backend).
 *
 * Ignored, with the reason printed, when `/usr/bin/chromium` is missing (`apt-get install chromium`; CI installs
 * it) or with IBOT_TEST_NO_BROWSER=1. Needs `--allow-run` for the deno binary and /usr/bin/chromium,
 * `--allow-net=127.0.0.1`, `--allow-write=/tmp`, `--allow-read` and `--allow-env` (the `test` task has them).
 */
import assert from "node:assert/strict";
import { CHECKPOINT_NAME, demoCheckpoint, demoImage, IMAGE_NAME, pngBytes } from "../examples/browser/assets.ts";
import { formatCls, loadDemoModel, preprocess, runDemo } from "../examples/browser/demo.ts";
import type { DemoState } from "../examples/browser/main.ts";
import { assertClose, cpu, gpu } from "./util.ts";

const CHROMIUM = "/usr/bin/chromium";
const ROOT = new URL("../", import.meta.url);

function skipReason(): string | null {
  if (Deno.env.get("IBOT_TEST_NO_BROWSER") === "1") return "IBOT_TEST_NO_BROWSER=1";
  try {
    Deno.statSync(CHROMIUM);
  } catch {
    return `${CHROMIUM} is missing (apt-get install chromium)`;
  }
  return null;
}
const skip = skipReason();
if (skip) console.log(`browser_test: ignored: ${skip}`);

/** `deno bundle` of the page's entry (through a temporary directory). */
async function bundle(): Promise<Uint8Array<ArrayBuffer>> {
  const dir = await Deno.makeTempDir({ prefix: "ibot-browser-" });
  try {
    await bundleTo(dir);
    return await Deno.readFile(`${dir}/main.js`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function bundleTo(dir: string): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform",
      "browser",
      "--format",
      "esm",
      "-o",
      `${dir}/main.js`,
      "examples/browser/main.ts",
    ],
    cwd: ROOT.pathname,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.code !== 0) throw new Error(`deno bundle failed:\n${new TextDecoder().decode(out.stderr)}`);
}

Deno.test({
  name: "browser demo: Chromium (WebGPU) gives the same [CLS] token and attention as Deno",
  ignore: skip !== null,
  async fn() {
    const t0 = performance.now();
    const lap = (what: string) => console.log(`${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const backend = await gpu();
    const [mainJs, ckpt] = await Promise.all([bundle(), demoCheckpoint(0, backend)]);
    const img = demoImage();
    const files: Record<string, [Uint8Array<ArrayBuffer>, string]> = {
      "/": [await Deno.readFile(new URL("examples/browser/index.html", ROOT)), "text/html; charset=utf-8"],
      "/main.js": [mainJs, "text/javascript; charset=utf-8"],
      [`/${CHECKPOINT_NAME}`]: [ckpt, "application/octet-stream"],
      [`/${IMAGE_NAME}`]: [await pngBytes(img), "image/png"],
    };
    lap(`bundle (${files["/main.js"][0].byteLength} bytes) and checkpoint (${ckpt.byteLength} bytes)`);
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const file = files[new URL(req.url).pathname];
      return file
        ? new Response(file[0], { headers: { "content-type": file[1] } })
        : new Response("not found", { status: 404 });
    });
    // playwright-core runs in a child process (see tests/browser_driver.ts for why it needs --allow-all).
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "tests/browser_driver.ts", `http://127.0.0.1:${server.addr.port}/`, CHROMIUM, "240000"],
      cwd: ROOT.pathname,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const driver = child.output();
    try {
      // The reference in Deno runs while the page works (the browser is another process).
      const model = loadDemoModel(ckpt, { backend });
      const pixels = preprocess(img.rgba, img.width, img.height, model);
      const ref = await runDemo(model, pixels, img.width, img.height);
      const oracle = await runDemo(loadDemoModel(ckpt, { backend: cpu }), pixels, img.width, img.height);
      lap(`deno reference on ${backend.name} and cpu`);
      const out = await driver;
      const stdout = new TextDecoder().decode(out.stdout).trim();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `browser driver failed:\n${stderr}\n${stdout}`);
      const { state, logs, printed: text } = JSON.parse(stdout.split("\n").pop()!) as {
        state: DemoState;
        logs: string[];
        printed?: string;
      };
      lap(`page ${state.status} on '${state.backend}' (forward pass ${state.ms?.toFixed(0)} ms)`);
      assert.equal(state.status, "done", `page error: ${state.error}\n${logs.join("\n")}`);
      assert.deepEqual([state.heads, state.grid], [3, [4, 4]]);
      const cls = state.cls!;
      const attention = state.attention!;
      assert.equal(cls.length, 192);
      assert.equal(attention.length, 3 * 16);
      const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) =>
        Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i])));
      console.log(`browser [CLS][:8] ${formatCls(cls)}`);
      console.log(`deno    [CLS][:8] ${formatCls(ref.cls)} (${backend.name})`);
      console.log(
        `max |browser - deno ${backend.name}|: cls ${maxDiff(cls, ref.cls).toExponential(2)}, ` +
          `attention ${maxDiff(attention, ref.attention).toExponential(2)}; ` +
          `max |browser - deno cpu|: cls ${maxDiff(cls, oracle.cls).toExponential(2)}, ` +
          `attention ${maxDiff(attention, oracle.attention).toExponential(2)}`,
      );
      assertClose(cls, ref.cls, 1e-4, 1e-4, "[CLS] vs Deno WebGPU");
      assertClose(attention, ref.attention, 1e-4, 1e-4, "attention vs Deno WebGPU");
      assertClose(cls, oracle.cls, 1e-4, 1e-4, "[CLS] vs Deno CPU");
      assertClose(attention, oracle.attention, 1e-4, 1e-4, "attention vs Deno CPU");
      // The numbers printed in the page are the first [CLS] values.
      const printed = (text ?? "").trim().split(/\s+/).map(Number);
      assert.equal(printed.length, 8);
      assertClose(printed, ref.cls.slice(0, 8), 0, 2e-6 + 1e-4, "printed [CLS] values");
      for (let h = 0; h < 3; h++) {
        const row = attention.slice(16 * h, 16 * (h + 1)).reduce((a, b) => a + b, 0);
        assert.ok(row < 1 && row > 0.5, `head ${h}: [CLS] attention to the patches sums to ${row}`);
      }
    } finally {
      try {
        child.kill(); // when the Deno side failed first
      } catch { /* already exited */ }
      await driver.catch(() => {});
      await server.shutdown();
    }
    lap("done");
  },
});
