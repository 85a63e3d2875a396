// Drives the review page in headless Chromium the way a user would: select two previews, export
// the selection, promote it (confirming the cost), and wait for the two finals to appear beside
// their previews. Then opens the HTML report from file:// and checks its chart and images.
//
// usage: node review.mjs REVIEW_URL REPORT_FILE SCREENSHOT_DIR
// Prints one JSON line of what it saw; exits non-zero on any failure.

import { chromium } from "playwright-core";

const [reviewUrl, reportFile, shots] = process.argv.slice(2);
const executablePath = process.env.DARKROOM_CHROMIUM || "/usr/bin/chromium";
const seen = {};

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(e.message));
  await page.goto(reviewUrl);

  const previews = page.locator(".tile.preview.done");
  await previews.first().waitFor({ timeout: 30_000 });
  seen.previews = await previews.count();
  await previews.nth(0).click();
  // The keyboard chooses too: focus a tile and press space.
  await previews.nth(2).focus();
  await page.keyboard.press(" ");
  seen.checked = await page.locator('.tile.preview[aria-checked="true"]').count();
  await page.waitForFunction(() => document.querySelector("#count").textContent.startsWith("2 selected"));
  seen.count = await page.locator("#count").textContent();
  seen.cost = await page.locator("#cost").textContent();

  await page.click("#export");
  await page.waitForFunction(() => document.querySelector("#message").textContent.includes("select.csv"));
  seen.exported = await page.locator("#message").textContent();

  page.once("dialog", async (dialog) => {
    seen.confirm = dialog.message();
    await dialog.accept();
  });
  await page.click("#promote");
  await page.locator(".tile.final.done").nth(1).waitFor({ timeout: 120_000 });
  seen.finals = await page.locator(".tile.final.done").count();
  // Each final sits in the same frame as its preview.
  seen.pairs = await page.locator(".pair:has(.tile.preview.done):has(.tile.final.done)").count();
  await page.waitForFunction(() =>
    [...document.querySelectorAll(".tile.final.done img")].every((i) => i.complete && i.naturalWidth > 0),
  );
  // One more chosen, for the picture: selection, cost, and finals beside their previews.
  await previews.nth(3).click();
  await page.waitForFunction(() => document.querySelector("#count").textContent.startsWith("1 selected"));
  await page.screenshot({ path: `${shots}/review.png`, fullPage: true });
  // The pass is over (and its report refreshed) when the page says what the finals cost.
  await page.waitForFunction(() => document.querySelector("#message").textContent.startsWith("finals:"), null, {
    timeout: 60_000,
  });
  seen.summary = await page.locator("#message").textContent();
  if (problems.length) throw new Error("page errors: " + problems.join("; "));

  const report = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await report.goto("file://" + reportFile);
  seen.chart = await report.locator("svg.chart polyline.spend").count();
  seen.reportImages = await report.evaluate(
    () => [...document.images].filter((i) => i.complete && i.naturalWidth > 0).length,
  );
  seen.reportBroken = await report.evaluate(
    () => [...document.images].filter((i) => !(i.complete && i.naturalWidth > 0)).length,
  );
  await report.screenshot({ path: `${shots}/report.png`, fullPage: true });
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
