// The package as a user gets it: a prebuild filed in a copy of the package (prebuild.js --into), then
// `npm pack`, then the tarball installed into fresh projects with no compiler on PATH.
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { fakeLibtorch } from './helpers';

const root = path.join(__dirname, '..');
const platform = `${process.platform}-${process.arch}`;
const tag = execFileSync(process.execPath, [path.join(root, 'scripts/libtorch.js'), '--tag']).toString().trim();
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-package-'));

// What a published package is made from: the files git would commit (dist/ is compiled below).
function packageCopy(): string {
  const dir = path.join(work, 'pirl');
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root })
    .toString().split('\0').filter(Boolean);
  for (const file of files) {
    const from = path.join(root, file);
    if (!fs.existsSync(from)) continue;
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.cpSync(from, path.join(dir, file), { recursive: true });
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

// A PATH with node, npm, npx and sh only: no g++, cc, make or cmake.
function pathWithoutCompiler(): string {
  const bin = path.join(work, 'bin');
  fs.mkdirSync(bin);
  const which = (program: string) => execFileSync('sh', ['-c', `command -v ${program}`]).toString().trim();
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  for (const program of ['npm', 'npx', 'sh']) fs.symlinkSync(fs.realpathSync(which(program)), path.join(bin, program));
  return bin;
}

let pkg = '';
let tarball = '';
let consumerPath = '';

function consumerEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: consumerPath };
  for (const name of ['LIBTORCH', 'Torch_DIR', 'CMAKE_PREFIX_PATH', 'LD_LIBRARY_PATH', 'PIRL_FORCE_BUILD']) delete env[name];
  for (const name of Object.keys(env)) if (name.startsWith('npm_')) delete env[name]; // jest may run under `npm test`
  return { ...env, ...extra };
}

function run(cwd: string, command: string, args: string[], extra: Record<string, string> = {}): SpawnSyncReturns<string> {
  return spawnSync(command, args, { cwd, env: consumerEnv(extra), encoding: 'utf8', timeout: 300_000 });
}

function expectOk(r: SpawnSyncReturns<string>): string {
  if (r.status !== 0) throw new Error(`exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** A fresh project with the tarball installed by `npm install TARBALL ...args`; returns its folder. */
function consumer(name: string, args: string[]): { dir: string; seconds: number } {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
  const t0 = Date.now();
  // The registry only for what the npm cache lacks (sharp's platform packages, @types/node).
  expectOk(run(dir, 'npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', ...args]));
  return { dir, seconds: (Date.now() - t0) / 1000 };
}

// One training step, run in a consumer's folder with the pirl it installed.
const trainStep = (dir: string) => JSON.parse(expectOk(run(dir, 'node', [path.join(root, 'test/fixtures/train-step.js')])));

beforeAll(() => {
  pkg = packageCopy();
  // This checkout's build (npm test's, current) as it is, filed in the copy as in a release tree: a build of the copy
  // from scratch took ~5 of this suite's ~7 minutes, and compiled the same sources against the same libtorch.
  const prebuild = spawnSync(process.execPath, [path.join(root, 'scripts/prebuild.js'), '--into', pkg, '--no-build'], { cwd: root, encoding: 'utf8' });
  if (prebuild.status !== 0) throw new Error(`prebuild --into the copy failed:\n${prebuild.stdout}\n${prebuild.stderr}`);
  // What npm pack's prepare runs: dist/ compiled from lib/ afresh (its output would mix into pack's JSON).
  execFileSync('npm', ['run', 'build:ts'], { cwd: pkg, stdio: 'ignore' });
  const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], { cwd: pkg }).toString());
  tarball = path.join(work, packed[0].filename);
  consumerPath = pathWithoutCompiler();
}, 1_200_000);

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('npm run prebuild (--into a release tree)', () => {
  test('files the addon under the tag of the libtorch found, and it loads from there (the copy has no build/)', () => {
    expect(tag).toMatch(/^torch-\d+\.\d+-(cpu|cu\d+|cuda)(-abi0)?$/);
    expect(fs.existsSync(path.join(pkg, 'prebuilds', platform, tag, 'pirl.node'))).toBe(true);
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false);
    const script = `
      const pirl = require('./dist');
      pirl.ops.matmul(pirl.Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]), pirl.Tensor.from(new Float32Array([1, 0, 0, 1]), [2, 2]))
        .then((t) => console.log(JSON.stringify({ addon: pirl.buildInfo().addonPath, kind: pirl.buildInfo().addonKind, product: Array.from(t.data()) })));`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: pkg }).toString());
    expect(out).toEqual({ addon: path.join(pkg, 'prebuilds', platform, tag, 'pirl.node'), kind: 'prebuild', product: [1, 2, 3, 4] });
  });

  test('a prebuild made from other C++ sources is neither loaded nor packed (an older pirl would lack exports)', () => {
    expect(expectOk(run(pkg, process.execPath, ['scripts/prebuild.js', '--check']))).toContain('made from these sources');
    const source = path.join(pkg, 'native/core/memory_bank.cpp');
    const original = fs.readFileSync(source);
    fs.appendFileSync(source, '// changed\n');
    try {
      const load = run(pkg, process.execPath, ['-e', "require('./dist')"]);
      expect(load.status).not.toBe(0);
      expect(load.stderr).toContain(`prebuilds/${platform}/${tag}/pirl.node was built from other C++ sources than this package's native/`);
      expect(load.stderr).toContain(`  node ${path.join(pkg, 'scripts', 'install.js')}`);
      const pack = run(pkg, 'npm', ['pack', '--dry-run']);
      expect(pack.status).not.toBe(0);
      expect(pack.stderr).toContain(`prebuilds/${platform}/{${tag}} was built from other C++ sources than native/`);
      // Nor filed there from this checkout's build, which is of other sources now.
      const into = run(root, process.execPath, ['scripts/prebuild.js', '--into', pkg]);
      expect(into.status).not.toBe(0);
      expect(into.stderr).toContain(`pirl: --into ${pkg}: its native/ differs from ${path.join(root, 'native')}, whose build this would file there: run npm run prebuild in ${pkg}`);
    } finally {
      fs.writeFileSync(source, original);
    }
  });
});

describe('the packed tarball', () => {
  test('holds the prebuild and the compiled TS, no build folder, and source maps that carry their sources', () => {
    const files = execFileSync('tar', ['-tzf', tarball]).toString().split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
    expect(files).toContain(`prebuilds/${platform}/${tag}/pirl.node`);
    expect(files).toEqual(expect.arrayContaining(['dist/index.js', 'dist/index.d.ts', 'scripts/addon.js', 'scripts/libtorch.js', 'scripts/install.js']));
    expect(files.filter((f) => f.startsWith('build/') || f.startsWith('node_modules/'))).toEqual([]);
    const maps = files.filter((f) => f.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(10);
    const unpacked = path.join(work, 'unpacked');
    fs.mkdirSync(unpacked);
    execFileSync('tar', ['-xzf', tarball, '-C', unpacked]);
    for (const map of maps) {
      const { sources, sourcesContent } = JSON.parse(fs.readFileSync(path.join(unpacked, 'package', map), 'utf8'));
      expect({ map, carried: (sourcesContent ?? []).filter((s: unknown) => typeof s === 'string').length }).toEqual({ map, carried: sources.length });
    }
  });
});

describe('npm install of the tarball in a fresh project, no compiler on PATH', () => {
  test('the PATH given has no compiler', () => {
    expect(run(work, 'sh', ['-c', 'command -v g++ || command -v cc || command -v make || command -v cmake']).status).not.toBe(0);
  });

  test("with npm's defaults: installs without building, then a training step and `pirl info` run", () => {
    const { dir, seconds } = consumer('consumer-defaults', []);
    console.log(`consumer install with npm's defaults: ${seconds.toFixed(1)} s`);
    // Whether this npm ran pirl's install script or blocked it, nothing was compiled.
    expect(fs.existsSync(path.join(dir, 'node_modules/pirl/build'))).toBe(false);
    const { steps, addonKind } = trainStep(dir);
    expect(steps).toHaveLength(1);
    expect(Number.isFinite(steps[0].loss)).toBe(true);
    expect(addonKind).toBe('prebuild');
    const info = expectOk(run(dir, 'npx', ['--no-install', 'pirl', 'info']));
    expect(info).toContain(`addon       ${path.join(dir, 'node_modules/pirl/prebuilds', platform, tag, 'pirl.node')} (prebuild for ${tag})`);
  }, 600_000);

  describe('with install scripts blocked (--ignore-scripts: what allowScripts does to an unlisted package)', () => {
    let dir = '';
    beforeAll(() => {
      const installed = consumer('consumer-blocked', ['--ignore-scripts']);
      dir = installed.dir;
      console.log(`consumer install with scripts blocked: ${installed.seconds.toFixed(1)} s`);
      const runtime = fs.readdirSync(path.join(dir, 'node_modules'), { withFileTypes: true })
        .flatMap((e) => (e.name.startsWith('@') ? fs.readdirSync(path.join(dir, 'node_modules', e.name)).map((n) => `${e.name}/${n}`) : [e.name]))
        .filter((n) => !n.startsWith('.'));
      console.log(`packages in the consumer's node_modules: ${runtime.length} (${runtime.join(', ')})`);
    }, 600_000);

    test('the prebuild loads: `pirl info` and a training step', () => {
      expect(expectOk(run(dir, 'npx', ['--no-install', 'pirl', 'info']))).toContain(`(prebuild for ${tag})`);
      expect(trainStep(dir)).toMatchObject({ steps: [{ step: 1, loss: expect.any(Number) }], addon: path.join(dir, 'node_modules/pirl/prebuilds', platform, tag, 'pirl.node') });
    });

    test('import and require give the same exports (the exports map), and a default import the whole API', () => {
      const esm = `import * as esm from 'pirl'; import pirl from 'pirl'; import { createRequire } from 'module';
        const cjs = createRequire(import.meta.url)('pirl');
        const named = (m) => Object.keys(m).filter((k) => !['default', '__esModule'].includes(k)).sort();
        // TypeScript's and bundlers' CommonJS interop (__importDefault) reads default where __esModule is set.
        const interop = cjs.__esModule ? cjs.default : cjs;
        console.log(JSON.stringify({ esm: named(esm), cjs: named(cjs), defaults: [pirl.Trainer === cjs.Trainer, interop.Trainer === cjs.Trainer] }));`;
      const out = JSON.parse(expectOk(run(dir, 'node', ['--input-type=module', '-e', esm])));
      expect(out.cjs.length).toBeGreaterThan(30);
      expect(out.esm).toEqual(out.cjs);
      expect(out.defaults).toEqual([true, true]);
      expect(run(dir, 'node', ['-e', "require('pirl/dist/tensor')"]).stderr).toMatch(/ERR_PACKAGE_PATH_NOT_EXPORTED/);
    });

    // skipLibCheck off, so pirl's own .d.ts files are checked too.
    const strictConsumer = (types: string[]) => {
      const tsconfig = {
        compilerOptions: { strict: true, target: 'ES2022', lib: ['ES2022'], module: 'nodenext', moduleResolution: 'nodenext', types, noEmit: true, skipLibCheck: false },
        files: ['use.mts', 'use.cts'],
      };
      fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(tsconfig));
      const use = `const t = Tensor.from(new Float32Array(4), [2, 2]);
        const bytes: Uint8Array = serializeSafetensors([['t', t]]);
        const info: BuildInfo = buildInfo();
        export const summary = [bytes.length, info.libtorch.tag, resolveTrainConfig({}).batchSize, whole.Trainer.name];`;
      fs.writeFileSync(path.join(dir, 'use.mts'), `import whole, { Tensor, buildInfo, resolveTrainConfig, serializeSafetensors, type BuildInfo } from 'pirl';\n${use}`);
      fs.writeFileSync(path.join(dir, 'use.cts'), `import pirl = require('pirl');\nimport whole from 'pirl';\nconst { Tensor, buildInfo, resolveTrainConfig, serializeSafetensors } = pirl;\ntype BuildInfo = pirl.BuildInfo;\n${use}`);
      return run(dir, 'node', [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', dir]);
    };

    test('its types compile in a strict consumer that does not declare @types/node (pirl brings it)', () => {
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).dependencies).toEqual({ pirl: expect.any(String) });
      const r = strictConsumer([]);
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
    });

    test('and in one that declares its own @types/node', () => {
      expectOk(run(dir, 'npm', ['install', '--save-dev', '@types/node@20', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund']));
      const r = strictConsumer(['node']);
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
    }, 300_000);

    test('a libtorch with no prebuild: the error names it, the prebuilds shipped and the command that builds for it', () => {
      const libtorch = path.join(work, 'libtorch-2.11');
      fakeLibtorch('2.11.0', '13.0', { prefix: libtorch });
      const r = run(dir, 'node', ['-e', "require('pirl')"], { LIBTORCH: libtorch });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('pirl: could not load the native addon: no prebuilt addon matches the libtorch found');
      expect(r.stderr).toContain(`libtorch found: 2.11.0 with CUDA 13.0, from LIBTORCH (${path.join(libtorch, 'share/cmake/Torch')}); it needs the prebuild ${platform}/torch-2.11-cu130.`);
      expect(r.stderr).toContain(`prebuilds shipped: ${platform}/${tag}.`);
      expect(r.stderr).toContain(`  node ${path.join(dir, 'node_modules/pirl/scripts/install.js')}\n`);
      // The CLI (its diagnostic verb too) says the same, without a stack trace.
      const info = run(dir, 'npx', ['--no-install', 'pirl', 'info'], { LIBTORCH: libtorch });
      expect(info.status).toBe(1);
      expect(info.stderr.trim()).toBe(r.stderr.slice(r.stderr.indexOf('pirl: could not load'), r.stderr.indexOf('\n    at ')).trim());
    });
  });
});
