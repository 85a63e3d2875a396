// Drives the review page in headless Chromium the way a user would. First the trial's pairs page:
// the "glass" group judged "Flash is enough". Then the job's page: its reframes under their
// sources, select two previews, export the selection, promote it (confirming the cost), and wait
// for the two finals to appear beside their previews; the quality-check filter, the large view
// with the arrow keys and Escape, select-all in a group. Then opens the HTML report from file://
// and checks its chart and images.
//
// usage: node review.mjs REVIEW_URL REPORT_FILE SCREENSHOT_DIR TRIAL_REVIEW_URL
// Prints one JSON line of what it saw; exits non-zero on any failure.

import { chromium } from "playwright-core";

const [reviewUrl, reportFile, shots, trialUrl] = process.argv.slice(2);
const executablePath = process.env.DARKROOM_CHROMIUM || "/usr/bin/chromium";
const seen = {};

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const problems = [];
  const trial = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  trial.on("pageerror", (e) => problems.push(e.message));
  await trial.goto(trialUrl + "trial");
  const glass = trial.locator('.choice[data-scope="group"][data-key="glass"] button[data-model="photon-flash-1"]');
  await glass.waitFor({ timeout: 30_000 });
  seen.trialPairs = await trial.locator(".pair").count();
  await glass.click();
  await trial.locator('.choice[data-scope="group"][data-key="glass"] button[data-model="photon-flash-1"].on').waitFor();
  seen.trialChoice = "glass: photon-flash-1";
  await trial.screenshot({ path: `${shots}/trial.png`, fullPage: true });

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => problems.push(e.message));
  await page.goto(reviewUrl);

  const previews = page.locator(".tile.preview.done");
  await previews.first().waitFor({ timeout: 30_000 });
  seen.previews = await previews.count();
  await page.waitForFunction(() =>
    [...document.querySelectorAll(".pair .reframe img")].every((i) => i.complete && i.naturalWidth > 0),
  );
  seen.reframes = await page.locator(".pair .reframe.done img").count();
  seen.reframeShapes = await page.locator('.pair .reframe[data-shape="16:9"]').count();
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

  // The quality-check filter: only the blank card's pair is flagged.
  await page.selectOption("#qc-filter", "blank");
  await page.waitForFunction(() => document.querySelector("#shown").textContent.startsWith("1 of 1"));
  seen.blank = await page.locator(".pair:not(.filtered)").evaluateAll((els) => els.map((e) => e.dataset.id));
  await page.selectOption("#qc-filter", "");
  await page.waitForFunction(() => document.querySelector("#shown").textContent.startsWith("5 of 5"));

  // The large view: right, right, left, then Escape; the glass jar is promoted with Flash.
  await page.locator('.pair[data-id="tall-1"] button.open').click();
  await page.locator("#viewer.open").waitFor();
  const title = () => page.locator("#viewer-title").textContent();
  seen.viewed = [await title()];
  for (const key of ["ArrowRight", "ArrowRight", "ArrowLeft", "ArrowRight", "ArrowRight"]) {
    await page.keyboard.press(key);
    seen.viewed.push(await title());
  }
  await page.waitForFunction(() =>
    [...document.querySelectorAll("#viewer-pictures img")].every((i) => i.complete && i.naturalWidth > 0),
  );
  seen.largeWidth = await page.locator("#viewer-pictures img").first().evaluate((i) => i.naturalWidth);
  seen.jarFacts = await page.locator("#viewer-facts").textContent();
  await page.screenshot({ path: `${shots}/large.png` });
  await page.keyboard.press("Escape");
  seen.viewerClosed = await page.locator("#viewer.open").count() === 0;

  // Select all in the ceramics group, beside the jar chosen before.
  await page.locator('section[data-group="ceramics"] button.select-all').click();
  await page.waitForFunction(() => document.querySelector("#count").textContent.startsWith("4 selected"));
  seen.afterSelectAll = await page.locator("#count").textContent();
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
