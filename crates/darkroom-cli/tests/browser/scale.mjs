// Opens the review page of a 50,000-image job in headless Chromium and measures what it loads:
// the bytes of the first page of the sheet, the bytes of each poll of the change feed, the pairs
// rendered, and how many after scrolling to the end of the first page.
//
// usage: node scale.mjs REVIEW_URL
// Prints one JSON line of what it saw; exits non-zero on any failure.

import { chromium } from "playwright-core";

const [reviewUrl] = process.argv.slice(2);
const executablePath = process.env.DARKROOM_CHROMIUM || "/usr/bin/chromium";
const seen = { sheetBytes: [], pollBytes: [] };

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(e.message));
  page.on("response", async (response) => {
    const path = new URL(response.url()).pathname;
    if (path !== "/api/sheet" && path !== "/api/changes") return;
    const bytes = (await response.body()).length;
    (path === "/api/sheet" ? seen.sheetBytes : seen.pollBytes).push(bytes);
  });
  const started = Date.now();
  await page.goto(reviewUrl);
  await page.locator(".pair").nth(199).waitFor({ timeout: 60_000 });
  seen.firstPageMs = Date.now() - started;
  seen.pairs = await page.locator(".pair").count();
  seen.shown = await page.locator("#shown").textContent();
  // Two polls of the change feed while nothing changes.
  await page.waitForFunction(() => true, null, { timeout: 1000 });
  const polled = Date.now();
  while (seen.pollBytes.length < 2 && Date.now() - polled < 20_000) await page.waitForTimeout(250);
  // The end of the first page in view: the next page is loaded.
  await page.locator("#more").scrollIntoViewIfNeeded();
  await page.locator(".pair").nth(399).waitFor({ timeout: 60_000 });
  seen.afterScroll = await page.locator(".pair").count();
  if (problems.length) throw new Error("page errors: " + problems.join("; "));
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
