// The source tree for untar / find / du: a tarball of the repository's node_modules (pinned by
// package-lock.json, so the same on every machine), made deterministic (sorted names, fixed mtime
// and owner) and cached in .bench/. Full: node_modules without typescript (~50 MB, ~7,000 entries,
// mostly small JavaScript files); quick: node_modules/lodash (~5 MB, ~1,000 entries).
import fs from 'node:fs';
import path from 'node:path';
import { runOk, progress } from './proc.js';
import { REPO, CACHE_DIR } from './config.js';
import type { TreeInfo } from './workloads.js';

export async function sourceTree(kind: 'full' | 'small'): Promise<TreeInfo> {
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const tarball = path.join(CACHE_DIR, `tree-${kind}-v2.tar`);
  const lock = path.join(REPO, 'package-lock.json');
  const stale = !fs.existsSync(tarball) || (fs.existsSync(lock) && fs.statSync(lock).mtimeMs > fs.statSync(tarball).mtimeMs);
  if (stale) {
    progress(`making ${path.relative(REPO, tarball)} from node_modules`);
    const top = kind === 'full' ? 'node_modules' : 'node_modules/lodash';
    const skip = kind === 'full' ? ['node_modules/typescript', 'node_modules/.cache'] : [];
    if (!fs.existsSync(path.join(REPO, top))) throw new Error(`no ${top} in ${REPO} (run npm ci)`);
    // Symbolic links into what is left out (node_modules/.bin/tsc) would dangle once extracted.
    const dangling = linksOutside(top, skip);
    const what = [...[...skip, ...dangling].map((x) => `--exclude=${x}`), top];
    await runOk('tar', [
      '--sort=name', '--mtime=@1700000000', '--owner=0', '--group=0', '--numeric-owner', '--format=gnu',
      '-C', REPO, '-cf', `${tarball}.tmp`, ...what,
    ], { timeoutMs: 300_000 });
    fs.renameSync(`${tarball}.tmp`, tarball);
  }
  const list = await runOk('tar', ['-tf', tarball], { timeoutMs: 60_000 });
  // What find lists under the extraction directory: every member and every directory above one
  // (tar creates the parents of "node_modules/lodash/..." even when they are not members).
  const paths = new Set<string>();
  for (const line of list.stdout.split('\n')) {
    const parts = line.replace(/\/+$/, '').split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) paths.add(parts.slice(0, i).join('/'));
  }
  const entries = paths.size;
  const bytes = fs.statSync(tarball).size;
  return { tarball, entries, bytes, label: `${kind === 'full' ? 'node_modules' : 'lodash'} (${(bytes / 1e6).toFixed(0)} MB, ${entries} entries)` };
}

/** Symbolic links under top (relative to REPO) whose target is missing or inside a skipped directory. */
function linksOutside(top: string, skip: string[]): string[] {
  const out: string[] = [];
  const inside = (rel: string) => skip.some((d) => rel === d || rel.startsWith(`${d}/`));
  const walk = (rel: string) => {
    if (inside(rel)) return;
    for (const e of fs.readdirSync(path.join(REPO, rel), { withFileTypes: true })) {
      const child = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(child);
      else if (e.isSymbolicLink()) {
        const target = path.relative(REPO, path.resolve(REPO, rel, fs.readlinkSync(path.join(REPO, child))));
        if (inside(target) || !fs.existsSync(path.join(REPO, target))) out.push(child);
      }
    }
  };
  walk(top);
  return out;
}
