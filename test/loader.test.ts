import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { explainLoadFailure } from '../lib/binding';

const root = path.join(__dirname, '..');

describe('when the addon does not load, the error says why and what to run', () => {
  test('no build at all', () => {
    // A copy of the compiled TS without build/ or prebuilds/ next to it.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-nobuild-'));
    fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
    const r = spawnSync(process.execPath, ['-e', "require('./dist')"], { cwd: dir, encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/pirl: could not load the native addon/);
    expect(r.stderr).toMatch(/Cause: no build of the addon exists/);
    expect(r.stderr).toMatch(/Possible solutions:/);
    expect(r.stderr).toMatch(/apt-get install libtorch-dev libopenblas0-pthread/);
    expect(r.stderr).toMatch(/node node_modules\/pirl\/scripts\/install.js/);
  });

  test('libtorch missing: the dynamic loader cannot find it', () => {
    // The message glibc gives when a DT_NEEDED library is absent (the real one is checked below).
    const msg = 'libtorch_cpu.so.1.13: cannot open shared object file: No such file or directory';
    const text = explainLoadFailure(new Error(msg));
    expect(text).toMatch(/Cause: libtorch is missing: libtorch_cpu\.so\.1\.13/);
    expect(text).toMatch(/LIBTORCH=\/path\/to\/libtorch/);
  });

  test('ABI mismatch: undefined libtorch symbol', () => {
    const text = explainLoadFailure(new Error('/x/pirl.node: undefined symbol: _ZN3c105ErrorC2ENS_14SourceLocationESs'));
    expect(text).toMatch(/built against a different libtorch .*ABI mismatch/);
    expect(text).toMatch(/scripts\/install.js/);
  });

  test('a real loader message for a missing library is classified', () => {
    let message = '';
    try {
      process.dlopen({ exports: {} } as NodeJS.Module, '/nonexistent/libtorch_cpu.so.9');
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/cannot open shared object file/);
    expect(explainLoadFailure(new Error(message.replace('/nonexistent/', '')))).toMatch(/libtorch is missing/);
  });

  test('a LIBTORCH without a libtorch in it falls through to the next place in the order', () => {
    const out = execFileSync(process.execPath, [path.join(root, 'scripts/libtorch.js')], {
      env: { ...process.env, LIBTORCH: '/nonexistent/libtorch' },
    }).toString();
    expect(JSON.parse(out).torchDir).toMatch(/Torch$/);
  });
});
