// Opens docs/loop-viewer.html in headless Chromium, loads a real trace
// through the page's own file input, and takes screenshots.
//
//   node loop-viewer.mjs PAGE TRACE OUTDIR
//
// Prints one JSON line: the page's summary of the trace, what it showed
// with "only sessions with backpressure" ticked, what the time axis drew
// (window.loopViewer.drawn), any page error or console
// error, and any request the page made (it must make none: it is offline).
// Run by tests/loop_viewer.rs.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [page_, trace, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });

// Playwright gives Chromium a fresh temporary --user-data-dir and
// --headless; the rest of the flags are ours.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
  ],
});
const result = { problems: [], requests: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const self = pathToFileURL(page_).href;
  page.on('pageerror', (e) => result.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') result.problems.push(`console: ${m.text()}`); });
  // Anything but the page itself is a request the offline page must not make.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url === self) return route.continue();
    result.requests.push(url);
    return route.abort();
  });
  await page.goto(self);
  await page.setInputFiles('#file', trace);
  await page.waitForFunction(() => window.loopViewer && window.loopViewer.summary, null, { timeout: 30000 });
  result.summary = await page.evaluate(() => window.loopViewer.summary);
  result.text = await page.textContent('#summary');
  await page.screenshot({ path: `${out}/loop-viewer-all.png` });

  // Only the sessions that backed up, lanes tall enough for labels.
  await page.check('#onlyBusy');
  await page.fill('#laneH', '16');
  await page.dispatchEvent('#laneH', 'input');
  await page.hover('#scroller', { position: { x: 400, y: 90 } });
  result.tip = await page.textContent('#tip');
  // Out of the lanes again, so the tooltip does not cover the picture.
  await page.mouse.move(5, 5);
  await page.screenshot({ path: `${out}/loop-viewer-backpressure.png` });
  result.lanesShown = await page.evaluate(() => document.getElementById('spacer').style.height);

  // The time axis: every session again, iterations laid out by time, the
  // sleep and the stages at the top.
  await page.uncheck('#onlyBusy');
  await page.check('#timeAxis');
  result.timeAxis = await page.evaluate(() => window.loopViewer.drawn);
  await page.hover('#scroller', { position: { x: 600, y: 40 } });
  result.timeTip = await page.textContent('#tip');
  result.timeTipShown = await page.evaluate(() => document.getElementById('tip').style.display);
  await page.mouse.move(5, 5);
  await page.screenshot({ path: `${out}/loop-viewer-time.png` });
} catch (e) {
  result.problems.push(`script: ${e.message}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
