/**
 * Opens a page in Chromium through playwright-core, waits until the browser demo sets `ibotDemo.status` to
 * "done" or "error", and prints one JSON line `{ state, logs, printed }` (the page's `ibotDemo`, its console and
 * errors, and the text of `#cls`).
 *
 *   deno run -A tests/browser_driver.ts <url> [chromium] [timeout-ms]
 *
 * `tests/browser_test.ts` runs it as a child process: playwright-core needs `--allow-all` in Deno (when loaded
 * it probes `/proc/sys/fs/binfmt_misc/WSLInterop`, a path Deno lets only `--allow-all` read), which the test
 * runner itself should not have. Chromium runs headless with WebGPU enabled (SwiftShader without a GPU) and a
 * fresh profile in a temporary directory.
 *
 * @module
 */
import { chromium } from "npm:playwright-core@1.65.1";

/** Chromium flags for a quiet headless browser with WebGPU. */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless=new",
  "--enable-unsafe-webgpu",
  "--no-sandbox",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

if (import.meta.main) {
  const [url, executablePath = "/usr/bin/chromium", timeout = "240000"] = Deno.args;
  if (!url) {
    console.error("usage: deno run -A tests/browser_driver.ts <url> [chromium] [timeout-ms]");
    Deno.exit(2);
  }
  const profile = await Deno.makeTempDir({ prefix: "ibot-chromium-" });
  const logs: string[] = [];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: false, // CHROMIUM_ARGS choose the new headless mode
    args: [...CHROMIUM_ARGS],
    timeout: 60_000,
  });
  try {
    const page = context.pages()[0] ?? await context.newPage();
    page.on("console", (m) => logs.push(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
    await page.goto(url);
    await page.waitForFunction(
      () => {
        const s = (globalThis as unknown as { ibotDemo?: { status: string } }).ibotDemo?.status;
        return s === "done" || s === "error";
      },
      null,
      { timeout: Number(timeout), polling: 250 },
    );
    const state = await page.evaluate(() => (globalThis as unknown as { ibotDemo: unknown }).ibotDemo);
    const printed = await page.textContent("#cls");
    console.log(JSON.stringify({ state, logs, printed }));
  } catch (e) {
    console.log(JSON.stringify({ state: { status: "error", error: `driver: ${(e as Error).message}` }, logs }));
  } finally {
    await context.close();
    await Deno.remove(profile, { recursive: true });
  }
}
