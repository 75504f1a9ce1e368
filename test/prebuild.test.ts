import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..');

// What a published package holds: the tracked sources and the compiled TS, no build/ folder.
function packageCopy(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-prebuild-'));
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: root }).toString().split('\0').filter(Boolean);
  for (const file of [...files, 'dist']) {
    const from = path.join(root, file);
    if (!fs.existsSync(from)) continue;
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.cpSync(from, path.join(dir, file), { recursive: true });
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

describe('node-gyp and prebuildify', () => {
  // node-gyp compiles every source without a precompiled header: minutes on two cores.
  test('`npm run prebuild` (node-gyp under prebuildify) makes an addon that loads once build/ is gone', () => {
    const dir = packageCopy();
    try {
      const npm = spawnSync('npm', ['run', 'prebuild'], { cwd: dir, encoding: 'utf8' });
      expect(npm.stderr + npm.stdout).toMatch(/gyp info ok/);
      expect(npm.status).toBe(0);
      const prebuilds = fs.readdirSync(path.join(dir, 'prebuilds', `${process.platform}-${process.arch}`));
      expect(prebuilds.some((f) => f.endsWith('.node'))).toBe(true);
      fs.rmSync(path.join(dir, 'build'), { recursive: true, force: true });
      const script = `
        const pirl = require('./dist');
        pirl.ops.matmul(pirl.Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]), pirl.Tensor.from(new Float32Array([1, 0, 0, 1]), [2, 2]))
          .then((t) => console.log(JSON.stringify({ addon: pirl.buildInfo().addonPath, product: Array.from(t.data()) })));`;
      const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: dir }).toString());
      expect(out.addon).toContain(path.join(dir, 'prebuilds'));
      expect(out.product).toEqual([1, 2, 3, 4]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 900_000);
});
