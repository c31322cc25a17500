// Renders safe-deploy job summaries the way GitHub does and checks them in headless Chromium.
//
//   node check.mjs SAMPLES_DIR SCREENSHOT_DIR [--expect a.md,b.md]
//
// --expect names summaries that must be there (a missing one fails the run).
//
// Each SAMPLES_DIR/*.md is rendered in Node with marked (GFM) + marked-alert. Raw HTML passes
// through as it does in GFM before GitHub sanitises it, so an element that the renderer failed
// to escape reaches the page. The page (local files only, a strict CSP) is loaded in the
// Debian chromium through puppeteer-core, the ```mermaid blocks are rendered with mermaid,
// and the DOM is inspected. A summary fails on:
//   size      over 1 MiB (1048576 bytes), which the runner refuses
//   mermaid   a mermaid syntax error, or a diagram that throws, draws nothing or draws NaN
//   ticks     a gantt chart whose x-axis carries two ticks with the same text
//   element   an element outside the allowlist (GFM + our renderer + alert + mermaid output),
//             any element inside <code> (the renderer's <code> cells hold escaped outside text,
//             so an element there, HTML or Markdown-made, came from outside), or alert/mermaid
//             markup that the Markdown did not produce (a copy injected as raw HTML)
//   attribute an on*= attribute anywhere, or an attribute GFM does not produce
//   url       a javascript:, vbscript: or data: URL in href/src
//   alert     the Markdown has a `> [!CAUTION]` line but the page has no rendered caution alert
//   script    a dialog, an uncaught page error, or something the page's CSP had to block
//   network   a request for anything but a local file
//   timeout   the page took longer than the per-page limit (SUMMARY_PAGE_TIMEOUT_MS, 30 s)
//   browser   the page could not be loaded, inspected or captured
// One line per summary; exit 0 when all pass, 1 when any fails, 2 when the check could not run.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { Marked } from 'marked';
import markedAlert from 'marked-alert';
import puppeteer from 'puppeteer-core';

const MAX_BYTES = 1048576;
const PAGE_TIMEOUT_MS = Number(process.env.SUMMARY_PAGE_TIMEOUT_MS || 30000);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const VIEWPORT = { width: 1100, height: 900 };
// Chromium cannot capture a taller page in one piece; past this the screenshot is cut.
const MAX_SCREENSHOT_HEIGHT = 16000;

const here = path.dirname(new URL(import.meta.url).pathname);
const MERMAID_JS = path.join(here, 'node_modules/mermaid/dist/mermaid.min.js');
const MARKDOWN_CSS = path.join(here, 'node_modules/github-markdown-css/github-markdown-light.css');

function usage(message) {
  console.error(`check.mjs: ${message}\nusage: node check.mjs SAMPLES_DIR SCREENSHOT_DIR [--expect a.md,b.md]`);
  process.exit(2);
}

/** Markdown to HTML as GitHub's GFM does, plus what the Markdown itself asked for. */
export function renderMarkdown(md) {
  const alerts = {};
  let mermaidBlocks = 0;
  const marked = new Marked({ gfm: true })
    // Registered first, so it runs after marked-alert has turned blockquotes into alerts.
    .use({
      walkTokens(token) {
        if (token.type === 'alert') alerts[token.meta.variant] = (alerts[token.meta.variant] || 0) + 1;
        if (token.type === 'code' && (token.lang || '').trim().split(/\s+/)[0] === 'mermaid') mermaidBlocks++;
      },
    })
    .use(markedAlert());
  const html = marked.parse(md);
  return { html, alerts, mermaidBlocks };
}

/** How many `> [!CAUTION]` lines the Markdown has outside fenced code. */
export function cautionLines(md) {
  let fence = null;
  let count = 0;
  for (const line of md.split('\n')) {
    const f = line.match(/^ {0,3}(`{3,}|~{3,})/);
    if (f) {
      if (fence === null) fence = f[1];
      else if (f[1][0] === fence[0] && f[1].length >= fence.length) fence = null;
      continue;
    }
    if (fence === null && /^ {0,3}> ?\[!CAUTION\]/.test(line)) count++;
  }
  return count;
}

function escapeHtml(s) {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

function page(name, html, nonce, css) {
  // Scripts run only with the nonce, so nothing from the summary can run or touch the check.
  const csp = [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    "style-src 'unsafe-inline'",
    'img-src data:',
    'font-src data:',
  ].join('; ');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<title>${escapeHtml(name)}</title>
<style data-check="${nonce}">${css}
body { margin: 0; background: #fff; }
.markdown-body { box-sizing: border-box; max-width: 1012px; margin: 0 auto; padding: 32px; }
</style>
<script nonce="${nonce}" data-check="${nonce}" src="${pathToFileURL(MERMAID_JS).href}"></script>
</head><body data-check="${nonce}"><article class="markdown-body" id="summary-${nonce}" data-check="${nonce}">
${html}
</article></body></html>
`;
}

// ---- In the page (serialised by puppeteer; no closures over Node values) ----

/** Every element the Markdown produced, against the allowlist; before mermaid runs. */
function inspectStatic({ nonce, alerts, mermaidBlocks }) {
  const problems = [];
  const ALLOWED = new Set(
    'h1 h2 h3 h4 h5 h6 p table thead tbody tr th td ul ol li code pre strong em a details summary sub blockquote br hr'.split(' '),
  );
  const ATTRS = { a: ['href', 'title'], th: ['align'], td: ['align'], ol: ['start'], details: ['open'] };
  const URL_ATTRS = new Set(['href', 'src', 'xlink:href', 'action', 'formaction', 'srcset', 'poster', 'background', 'data']);
  const where = (el) => {
    const parts = [];
    for (let e = el; e && e.dataset?.check !== nonce; e = e.parentElement) parts.unshift(e.localName);
    return parts.join(' > ');
  };
  const snippet = (el) => {
    const s = el.outerHTML.replace(/\s+/g, ' ');
    return s.length > 160 ? `${s.slice(0, 157)}...` : s;
  };
  const article = document.getElementById(`summary-${nonce}`);

  // The chrome marked-alert draws, exactly as it draws it; anything else shaped like it is foreign.
  const chrome = new Set();
  const injected = new Set();
  const alertSeen = {};
  for (const div of article.querySelectorAll('div.markdown-alert')) {
    const m = div.className.match(/^markdown-alert markdown-alert-(note|tip|important|warning|caution)$/);
    const title = div.firstElementChild;
    const svg = title?.firstElementChild;
    const icon = svg?.firstElementChild;
    const ok =
      m &&
      div.attributes.length === 1 &&
      title.localName === 'p' &&
      title.className === 'markdown-alert-title' &&
      title.attributes.length === 1 &&
      title.children.length === 1 &&
      svg.localName === 'svg' &&
      /^octicon octicon-[a-z-]+ mr-2$/.test(svg.getAttribute('class') || '') &&
      [...svg.attributes].every((a) => ['class', 'viewBox', 'width', 'height', 'aria-hidden'].includes(a.name)) &&
      svg.children.length === 1 &&
      icon.localName === 'path' &&
      icon.attributes.length === 1 &&
      icon.hasAttribute('d') &&
      icon.children.length === 0;
    if (!ok) continue;
    const variant = m[1];
    alertSeen[variant] = (alertSeen[variant] || 0) + 1;
    if (alertSeen[variant] > (alerts[variant] || 0)) {
      problems.push({ kind: 'element', message: `a ${variant} alert the Markdown did not ask for (injected HTML?) at ${where(div)}: ${snippet(div)}` });
      injected.add(div);
      continue;
    }
    chrome.add(div).add(title).add(svg).add(icon);
  }
  const mermaidCodes = article.querySelectorAll('pre > code.language-mermaid');
  if (mermaidCodes.length !== mermaidBlocks) {
    problems.push({ kind: 'element', message: `${mermaidCodes.length} mermaid code blocks on the page, ${mermaidBlocks} in the Markdown (injected HTML?)` });
  }

  let checked = 0;
  for (const el of document.body.querySelectorAll('*')) {
    if (el === article) continue;
    checked++;
    const tag = el.localName;
    const allowed = chrome.has(el) || (ALLOWED.has(tag) && el.namespaceURI === 'http://www.w3.org/1999/xhtml');
    if (!allowed && !injected.has(el)) problems.push({ kind: 'element', message: `<${tag}> at ${where(el)}: ${snippet(el)}` });
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      if (name.startsWith('on')) {
        problems.push({ kind: 'attribute', message: `event handler ${name}= on <${tag}> at ${where(el)}: ${snippet(el)}` });
      } else if (URL_ATTRS.has(name) && /^(javascript|vbscript|data):/i.test(attr.value.replace(/[\s\u0000-\u001f]+/g, ''))) {
        problems.push({ kind: 'url', message: `${name}="${attr.value.slice(0, 60)}" on <${tag}> at ${where(el)}` });
      } else if (allowed && !chrome.has(el)) {
        const fenced = tag === 'code' && name === 'class' && el.parentElement?.localName === 'pre' && /^language-[\w+#.-]+$/.test(attr.value);
        if (!fenced && !(ATTRS[tag] || []).includes(name)) {
          problems.push({ kind: 'attribute', message: `${name}= on <${tag}>, an attribute GFM does not produce, at ${where(el)}: ${snippet(el)}` });
        }
      }
    }
    // Our <code> cells wrap escaped text: an element inside one came from outside.
    if (tag === 'code' && el.children.length > 0) {
      const inner = [...el.children].map((c) => `<${c.localName}>`).join(' ');
      problems.push({ kind: 'element', message: `${inner} inside <code>, where only escaped text belongs, at ${where(el)}: ${snippet(el)}` });
    }
  }
  return { problems, checked };
}

/** Renders each mermaid block in place, and reads back what it drew. */
async function renderMermaid({ nonce }) {
  const problems = [];
  const diagrams = [];
  let checked = 0;
  const message = (e) => String(e?.message || e).replace(/\s+/g, ' ').trim().slice(0, 300);
  if (typeof window.mermaid?.render !== 'function') {
    return { problems: [{ kind: 'mermaid', message: 'the mermaid bundle did not load' }], diagrams, checked };
  }
  window.mermaid.initialize({ startOnLoad: false, securityLevel: 'strict', theme: 'default' });
  const codes = [...document.querySelectorAll(`#summary-${nonce} pre > code.language-mermaid`)];
  for (const [i, code] of codes.entries()) {
    const n = i + 1;
    const text = code.textContent;
    const figure = document.createElement('div');
    figure.className = 'mermaid-figure';
    figure.dataset.check = nonce;
    code.parentElement.replaceWith(figure);
    const d = { n, type: null, ticks: [], tasks: 0 };
    diagrams.push(d);
    try {
      d.type = (await window.mermaid.parse(text)).diagramType;
    } catch (e) {
      problems.push({ kind: 'mermaid', message: `diagram ${n}: syntax error: ${message(e)}` });
      figure.textContent = `mermaid syntax error: ${message(e)}`;
      continue;
    }
    try {
      const { svg, bindFunctions } = await window.mermaid.render(`mermaid-${nonce}-${n}`, text, figure);
      figure.innerHTML = svg;
      bindFunctions?.(figure);
    } catch (e) {
      problems.push({ kind: 'mermaid', message: `diagram ${n} (${d.type}): failed to render: ${message(e)}` });
      figure.textContent = `mermaid render error: ${message(e)}`;
      continue;
    } finally {
      for (const left of document.querySelectorAll(`[id^="dmermaid-${nonce}-"], [id^="imermaid-${nonce}-"]`)) left.remove();
    }
    const svg = figure.querySelector('svg');
    const box = svg?.getBoundingClientRect();
    if (!svg || !(box.width > 0 && box.height > 0)) {
      problems.push({ kind: 'mermaid', message: `diagram ${n} (${d.type}): drew nothing` });
      continue;
    }
    if (svg.querySelector('.error-icon, .error-text') || /syntax error in text/i.test(svg.textContent)) {
      problems.push({ kind: 'mermaid', message: `diagram ${n} (${d.type}): mermaid drew its error diagram` });
    }
    const bad = [];
    for (const el of figure.querySelectorAll('*')) {
      checked++;
      const tag = el.localName;
      if (['script', 'iframe', 'object', 'embed', 'img', 'image', 'link', 'meta', 'base', 'form', 'input'].includes(tag)) {
        problems.push({ kind: 'element', message: `<${tag}> inside mermaid diagram ${n}` });
      }
      for (const attr of el.attributes) {
        const name = attr.name.toLowerCase();
        if (name.startsWith('on')) problems.push({ kind: 'attribute', message: `event handler ${name}= on <${tag}> inside mermaid diagram ${n}` });
        else if (/href|src/.test(name) && /^(javascript|vbscript|data):/i.test(attr.value.replace(/[\s\u0000-\u001f]+/g, ''))) {
          problems.push({ kind: 'url', message: `${name}="${attr.value.slice(0, 60)}" inside mermaid diagram ${n}` });
        } else if (/(^|[^\w])(NaN|Infinity)([^\w]|$)/.test(attr.value) && bad.length < 3) bad.push(`<${tag} ${name}="${attr.value.slice(0, 40)}">`);
      }
    }
    if (bad.length) problems.push({ kind: 'mermaid', message: `diagram ${n} (${d.type}): drew NaN coordinates: ${bad.join(' ')}` });
    if (d.type === 'gantt') {
      const bars = [...svg.querySelectorAll('rect.task')];
      d.tasks = bars.length;
      // rangeRound gives a phase far shorter than the run a width of 0 (drawn as its outline);
      // a negative or non-numeric width, or a chart in which no bar has any width, drew nothing.
      const widths = bars.map((b) => Number(b.getAttribute('width')));
      const broken = bars.filter((b, j) => !(widths[j] >= 0)).map((b) => (b.id || '?').replace(/^mermaid-[0-9a-f]+-\d+-/, ''));
      if (broken.length) problems.push({ kind: 'mermaid', message: `diagram ${n} (gantt): task bars with a negative or non-numeric width: ${broken.slice(0, 5).join(', ')}` });
      else if (bars.length && !widths.some((w) => w > 0)) problems.push({ kind: 'mermaid', message: `diagram ${n} (gantt): none of its ${bars.length} task bars has any width` });
      d.ticks = [...svg.querySelectorAll('g.grid g.tick text')].map((t) => t.textContent);
      if (d.tasks === 0) problems.push({ kind: 'mermaid', message: `diagram ${n} (gantt): drew no task bars` });
      if (d.ticks.length === 0) problems.push({ kind: 'ticks', message: `diagram ${n} (gantt): no x-axis tick labels` });
      const counts = {};
      for (const t of d.ticks) counts[t] = (counts[t] || 0) + 1;
      const dups = Object.entries(counts).filter(([, c]) => c > 1);
      if (dups.length) {
        problems.push({
          kind: 'ticks',
          message: `diagram ${n} (gantt): ${d.ticks.length} x-axis ticks read [${d.ticks.join(', ')}]; repeated: ${dups.map(([t, c]) => `"${t}" x${c}`).join(', ')}`,
        });
      }
    }
  }
  return { problems, diagrams, checked };
}

/** The rendered caution alerts a reader would see. */
function cautionAlerts({ nonce }) {
  const out = [];
  for (const div of document.querySelectorAll(`#summary-${nonce} .markdown-alert-caution`)) {
    const r = div.getBoundingClientRect();
    const title = div.querySelector('.markdown-alert-title')?.textContent.trim();
    out.push({ visible: r.width > 0 && r.height > 0, title });
  }
  return out;
}

// ---- Node ----

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`${what} took over ${ms / 1000}s`), { timeout: true })), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function checkOne(browser, file, screenDir, workDir, css) {
  const name = path.basename(file);
  const started = Date.now();
  const problems = [];
  const result = { name, bytes: 0, problems, diagrams: [], checked: 0, screenshot: null, ms: 0 };
  const buf = fs.readFileSync(file);
  result.bytes = buf.length;
  if (buf.length > MAX_BYTES) {
    problems.push({ kind: 'size', message: `${buf.length} bytes, over GitHub's limit of ${MAX_BYTES} (1 MiB)` });
  }
  const md = buf.toString('utf8');
  const { html, alerts, mermaidBlocks } = renderMarkdown(md);
  const cautions = cautionLines(md);
  const nonce = crypto.randomBytes(12).toString('hex');
  const pageFile = path.join(workDir, `${name}.html`);
  fs.writeFileSync(pageFile, page(name, html, nonce, css));

  const context = await browser.createBrowserContext();
  try {
    const tab = await context.newPage();
    tab.setDefaultTimeout(PAGE_TIMEOUT_MS);
    tab.on('dialog', (dialog) => {
      problems.push({ kind: 'script', message: `a ${dialog.type()} dialog opened: "${dialog.message()}"` });
      dialog.dismiss().catch(() => {});
    });
    tab.on('pageerror', (e) => problems.push({ kind: 'script', message: `uncaught page error: ${String(e?.message || e).slice(0, 200)}` }));
    await tab.setRequestInterception(true);
    tab.on('request', (req) => {
      if (/^(file|data|about):/.test(req.url())) return req.continue();
      problems.push({ kind: 'network', message: `the page asked for ${req.url().slice(0, 120)}` });
      return req.abort();
    });
    await tab.evaluateOnNewDocument(() => {
      window.__csp = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}${e.sample ? ` (${e.sample})` : ''}`);
      });
    });
    await tab.setViewport(VIEWPORT);
    await withTimeout(
      (async () => {
        await tab.goto(pathToFileURL(pageFile).href, { waitUntil: 'load' });
        const stat = await tab.evaluate(inspectStatic, { nonce, alerts, mermaidBlocks });
        problems.push(...stat.problems);
        const mer = await tab.evaluate(renderMermaid, { nonce });
        problems.push(...mer.problems);
        result.diagrams = mer.diagrams;
        result.checked = stat.checked + mer.checked;
        if (cautions > 0) {
          const seen = await tab.evaluate(cautionAlerts, { nonce });
          const shown = seen.filter((a) => a.visible && a.title === 'Caution').length;
          if (shown < cautions) {
            problems.push({ kind: 'alert', message: `the Markdown has ${cautions} "> [!CAUTION]" line(s), the page shows ${shown} rendered caution alert(s) (.markdown-alert-caution)` });
          }
        }
        for (const v of await tab.evaluate(() => window.__csp)) problems.push({ kind: 'script', message: `CSP: ${v}` });
        const height = await tab.evaluate(() => Math.ceil(document.documentElement.scrollHeight));
        fs.mkdirSync(screenDir, { recursive: true });
        const shot = path.join(screenDir, name.replace(/\.md$/, '') + '.png');
        if (height > MAX_SCREENSHOT_HEIGHT) {
          await tab.screenshot({ path: shot, clip: { x: 0, y: 0, width: VIEWPORT.width, height: MAX_SCREENSHOT_HEIGHT }, captureBeyondViewport: true });
          result.cut = height;
        } else {
          await tab.screenshot({ path: shot, fullPage: true });
        }
        result.screenshot = shot;
      })(),
      PAGE_TIMEOUT_MS,
      name,
    );
  } catch (e) {
    problems.push({ kind: e.timeout ? 'timeout' : 'browser', message: String(e?.message || e).slice(0, 300) });
  } finally {
    await context.close().catch(() => {});
  }
  result.ms = Date.now() - started;
  return result;
}

/** A path as the caller gave it: relative when under the working directory. */
function shown(p) {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') ? rel : p;
}

function line(r) {
  const diagrams = r.diagrams;
  const okDiagrams = diagrams.filter((d) => !r.problems.some((p) => p.kind === 'mermaid' && (p.message.startsWith(`diagram ${d.n}:`) || p.message.startsWith(`diagram ${d.n} (`)))).length;
  const mermaid = diagrams.length === 0 ? 'mermaid none' : `mermaid ${okDiagrams}/${diagrams.length} ok`;
  const ticks = diagrams
    .filter((d) => d.type === 'gantt')
    .map((d) => `${d.ticks.length} tick${d.ticks.length === 1 ? '' : 's'}`)
    .join(', ');
  const shot = r.screenshot ? shown(r.screenshot) : 'no screenshot';
  const status = r.problems.length ? 'FAIL' : 'ok  ';
  return `${status} ${r.name}  ${r.bytes} bytes  ${mermaid}${ticks ? ` (${ticks})` : ''}  ${r.checked} elements checked  ${shot}${r.cut ? ` (cut at ${MAX_SCREENSHOT_HEIGHT}px of ${r.cut})` : ''}  ${(r.ms / 1000).toFixed(1)}s`;
}

async function main() {
  const args = process.argv.slice(2);
  let expect = [];
  const at = args.indexOf('--expect');
  if (at >= 0) {
    expect = (args[at + 1] || '').split(',').filter(Boolean);
    args.splice(at, 2);
  }
  if (args.length !== 2) usage('two directories, please');
  const [samplesDir, screenDir] = args.map((a) => path.resolve(a));
  if (!fs.statSync(samplesDir, { throwIfNoEntry: false })?.isDirectory()) usage(`${samplesDir} is not a directory`);
  for (const f of [MERMAID_JS, MARKDOWN_CSS]) if (!fs.existsSync(f)) usage(`${f} is missing: run npm ci in ${here}`);
  const files = fs.readdirSync(samplesDir).filter((f) => f.endsWith('.md')).sort();
  if (files.length === 0) usage(`no *.md summaries in ${samplesDir}`);
  const missing = expect.filter((e) => !files.includes(e));

  const css = fs.readFileSync(MARKDOWN_CSS, 'utf8');
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'summary-browser-'));
  const userDataDir = path.join(workDir, 'profile');
  let browser;
  const results = [];
  const t0 = Date.now();
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      userDataDir,
      timeout: 30000,
      // headless: true makes puppeteer pass --headless=new (what plain --headless means in this chromium).
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-dev-shm-usage',
      ],
    });
    console.log(`summary-browser: ${await browser.version()}, ${files.length} summaries in ${shown(samplesDir)}`);
    for (const f of files) {
      const r = await checkOne(browser, path.join(samplesDir, f), screenDir, workDir, css);
      results.push(r);
      console.log(line(r));
      const seen = new Map();
      for (const p of r.problems) seen.set(`[${p.kind}] ${p.message}`, (seen.get(`[${p.kind}] ${p.message}`) || 0) + 1);
      for (const [m, n] of seen) console.log(`     ${r.name}: ${m}${n > 1 ? ` (x${n})` : ''}`);
    }
  } catch (e) {
    console.error(`summary-browser: could not run the check: ${e?.stack || e}`);
    process.exitCode = 2;
    return;
  } finally {
    await browser?.close().catch(() => {});
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  for (const m of missing) console.log(`FAIL ${m}: [missing] expected in ${samplesDir} but not there`);
  const failed = results.filter((r) => r.problems.length).length + missing.length;
  const per = results.length ? results.reduce((a, r) => a + r.ms, 0) / results.length / 1000 : 0;
  console.log(`summary-browser: ${((Date.now() - t0) / 1000).toFixed(1)}s in all, ${per.toFixed(1)}s per page on average`);
  console.log(`summaries: ${results.length + missing.length - failed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  await main();
}
