import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Trainer, buildInfo, getDeterministic, getNumThreads, getTf32, setDeterministic, setNumThreads, setTf32, weightsDigest } from '../lib';
import { defaultNumThreads } from '../lib/runtime';

const root = path.join(__dirname, '..');

describe('buildInfo', () => {
  test('reports libtorch, CUDA, BLAS, threads, Node-API and the addon path', () => {
    const b = buildInfo();
    expect(b.libtorch.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(b.libtorch.library).toMatch(/libtorch_cpu\.so/);
    expect(typeof b.cuda.compiled).toBe('boolean');
    expect(b.cuda.available).toBe(b.cuda.deviceCount > 0);
    expect(['openblas', 'mkl', 'reference', 'other']).toContain(b.blas.kind);
    expect(b.blas.warning === null).toBe(b.blas.kind !== 'reference');
    expect(b.napiVersion.addon).toBe(9);
    expect(b.napiVersion.node).toBeGreaterThanOrEqual(9);
    expect(b.addonPath).toMatch(/\.node$/);
  });

  test('the libtorch reported is the one scripts/libtorch.js finds', () => {
    const found = JSON.parse(execFileSync(process.execPath, [path.join(root, 'scripts/libtorch.js')]).toString());
    expect(buildInfo().libtorch.version).toBe(found.version.split('.').slice(0, 3).join('.'));
    expect(buildInfo().libtorch).toMatchObject({ source: found.source, tag: found.tag });
    // The tests run on build/Release, made by scripts/build.js for this libtorch.
    expect(buildInfo()).toMatchObject({ addonKind: 'build', addonPath: path.join(root, 'build/Release/pirl.node') });
  });
});

describe('threads', () => {
  const threadsIn = (value: string | undefined, more: NodeJS.ProcessEnv = {}): string => {
    const env = { ...process.env, ...more };
    if (value === undefined) delete env.PIRL_NUM_THREADS;
    else env.PIRL_NUM_THREADS = value;
    return execFileSync(process.execPath, ['-e', "console.log(require('./dist').getNumThreads())"], {
      cwd: root,
      env,
      stdio: 'pipe',
    }).toString();
  };

  test('default to the available cores, not libtorch’s 1', () => {
    expect(Number(threadsIn(undefined, { OMP_NUM_THREADS: '', LOCAL_WORLD_SIZE: '' }))).toBe(os.availableParallelism());
  });

  test('PIRL_NUM_THREADS overrides the default and is validated', () => {
    expect(Number(threadsIn('1'))).toBe(1);
    expect(() => threadsIn('lots')).toThrow(/PIRL_NUM_THREADS must be an integer in \[1, 256\], got "lots"/);
  });

  test('a bad PIRL_NUM_THREADS is said at every use of the addon, whichever loads it, and as itself, not as a flag', () => {
    const env = { ...process.env, PIRL_NUM_THREADS: 'lots' };
    const twice = "const { Tensor } = require('./dist/tensor'); require('./dist/runtime'); for (let i = 0; i < 2; i++) try { Tensor.zeros([2]); console.log('made'); } catch (e) { console.log(e.message); }";
    expect(execFileSync(process.execPath, ['-e', twice], { cwd: root, env }).toString()).toBe('PIRL_NUM_THREADS must be an integer in [1, 256], got "lots"\n'.repeat(2));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-threads-'));
    try {
      fs.writeFileSync(path.join(dir, 'c.json'), '{"epochs": 2}');
      const r = spawnSync(process.execPath, [path.join(root, 'dist/cli.js'), 'train', dir, '--config', path.join(dir, 'c.json')], { env, encoding: 'utf8' });
      expect([r.status, r.stderr]).toEqual([1, 'pirl: PIRL_NUM_THREADS must be an integer in [1, 256], got "lots"\n']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("as a rank: OMP_NUM_THREADS (torchrun's 1 per worker), else the cores shared by the host's ranks (LOCAL_WORLD_SIZE)", () => {
    expect(defaultNumThreads({ OMP_NUM_THREADS: '1', LOCAL_WORLD_SIZE: '2' })).toBe(1);
    expect(defaultNumThreads({ PIRL_NUM_THREADS: '2', OMP_NUM_THREADS: '1' })).toBe(2);
    expect(defaultNumThreads({ LOCAL_WORLD_SIZE: '2' })).toBe(Math.max(1, Math.floor(os.availableParallelism() / 2)));
    expect(defaultNumThreads({ LOCAL_WORLD_SIZE: String(4 * os.availableParallelism()) })).toBe(1);
    // Launched without LOCAL_WORLD_SIZE (by hand, or by Slurm): ranks that meet on loopback or through a file are all on this host.
    const all = Math.min(os.availableParallelism(), 256);
    expect(defaultNumThreads({ WORLD_SIZE: '2', RANK: '1', MASTER_ADDR: '127.0.0.1' })).toBe(Math.max(1, Math.floor(os.availableParallelism() / 2)));
    expect(defaultNumThreads({ WORLD_SIZE: '2', RANK: '1', PIRL_STORE_FILE: '/tmp/r' })).toBe(Math.max(1, Math.floor(os.availableParallelism() / 2)));
    expect(defaultNumThreads({ WORLD_SIZE: '2', RANK: '1', MASTER_ADDR: 'node7' })).toBe(all);
    // OpenMP's syntax: a list of levels (the first is this one's); more than libtorch takes, its most; one it cannot read, left aside.
    expect(defaultNumThreads({ OMP_NUM_THREADS: '4,2' })).toBe(4);
    expect(defaultNumThreads({ OMP_NUM_THREADS: '100000' })).toBe(256);
    for (const unread of ['lots', '0x10', '1e2', '4.0', '0']) {
      expect({ unread, threads: defaultNumThreads({ OMP_NUM_THREADS: unread, LOCAL_WORLD_SIZE: '1' }) }).toEqual({ unread, threads: Math.min(os.availableParallelism(), 256) });
    }
    expect(Number(threadsIn(undefined, { OMP_NUM_THREADS: '1' }))).toBe(1); // what a process starts with
  });

  test("rank 0's epoch-end kNN pass takes the threads of the host's ranks, which wait for it; then its own again", () => {
    const script = `const r = require('./dist/runtime'); r.withHostThreads(async () => r.getNumThreads()).then((during) => console.log(JSON.stringify([during, r.getNumThreads()])))`;
    const threads = (env: NodeJS.ProcessEnv) => JSON.parse(spawnSync(process.execPath, ['-e', script], { cwd: root, env: { ...process.env, LOCAL_WORLD_SIZE: '', ...env }, encoding: 'utf8' }).stdout);
    expect(threads({ PIRL_NUM_THREADS: '1', LOCAL_WORLD_SIZE: '2' })).toEqual([2, 1]);
    expect(threads({ PIRL_NUM_THREADS: '3', WORLD_SIZE: '4', RANK: '0', MASTER_ADDR: '127.0.0.1' })).toEqual([12, 3]);
    expect(threads({ PIRL_NUM_THREADS: '1' })).toEqual([1, 1]); // alone: as it is
  });

  test('setNumThreads changes the count and validates its argument', () => {
    const before = getNumThreads();
    setNumThreads(1);
    expect(getNumThreads()).toBe(1);
    expect(buildInfo().threads.intraOp).toBe(1);
    setNumThreads(before);
    expect(() => setNumThreads(0)).toThrow(/n must be an integer in \[1, 256\], got 0/);
    expect(() => setNumThreads(1.5)).toThrow(TypeError);
    expect(() => setNumThreads('2' as never)).toThrow(/got "2"/);
  });

  test("the count is the process's: a Worker thread that loads pirl leaves the count another thread set as it is", () => {
    // Each Worker applied the default again (its module state is its own): a service's setNumThreads(1) undone by its pool.
    const other = defaultNumThreads({ ...process.env, PIRL_NUM_THREADS: '' }) === 1 ? 2 : 1;
    const script = `
      const { Worker } = require('worker_threads');
      const pirl = require(${JSON.stringify(root)});
      pirl.setNumThreads(${other});
      const worker = new Worker("const p = require(${JSON.stringify(root).replace(/"/g, "'")}); require('worker_threads').parentPort.postMessage(p.getNumThreads());", { eval: true });
      worker.once('message', async (inWorker) => {
        await worker.terminate();
        console.log(JSON.stringify({ inWorker, main: pirl.getNumThreads() }));
      });`;
    const env = { ...process.env, PIRL_NUM_THREADS: '', OMP_NUM_THREADS: '', LOCAL_WORLD_SIZE: '' };
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env, timeout: 60_000 });
    expect({ status: r.status, out: r.stdout.trim() }).toEqual({ status: 0, out: JSON.stringify({ inWorker: other, main: other }) });
  });

  test("more threads than this process's share of the cores is warned of, once per count", () => {
    const cores = os.availableParallelism();
    const said = (counts: number[], env?: NodeJS.ProcessEnv) => {
      const r = spawnSync(process.execPath, ['-e', `const p = require('./dist'); p.getNumThreads(); for (const n of ${JSON.stringify(counts)}) p.setNumThreads(n)`],
        { cwd: root, env: { ...process.env, LOCAL_WORLD_SIZE: '', ...env }, encoding: 'utf8' });
      return (r.stderr.match(/\[PIRL_THREADS_OVERSUBSCRIBED\] Warning: .*/g) ?? []) as string[];
    };
    expect(said([cores, 1])).toEqual([]);
    expect(said([cores + 1, cores + 1, 1, cores + 1])).toEqual([
      `[PIRL_THREADS_OVERSUBSCRIBED] Warning: ${cores + 1} threads, more than the ${cores} cores this process may use: they wait for each other and run slower than ${cores} (--threads, setNumThreads)`,
    ]);
    // The default's count from the environment names its variable.
    expect(said([], { PIRL_NUM_THREADS: String(cores + 1) })).toEqual([
      `[PIRL_THREADS_OVERSUBSCRIBED] Warning: ${cores + 1} threads, more than the ${cores} cores this process may use: they wait for each other and run slower than ${cores} (PIRL_NUM_THREADS)`,
    ]);
    // A rank of two on this host has half the cores.
    const half = Math.max(1, Math.floor(cores / 2));
    expect(said([half], { LOCAL_WORLD_SIZE: '2' })).toEqual([]);
    expect(said([half + 1], { LOCAL_WORLD_SIZE: '2' })).toEqual([
      `[PIRL_THREADS_OVERSUBSCRIBED] Warning: ${half + 1} threads, more than this process's share of the ${cores} cores it may use (2 ranks on this host): they wait for each other and run slower than ${half} (--threads, setNumThreads)`,
    ]);
    // Ranks started alike: rank 0 alone says it (each of --nproc's did, naming the variable the launcher passed --threads in).
    const rank = (r: string) => ({ WORLD_SIZE: '2', RANK: r, MASTER_ADDR: '127.0.0.1' });
    expect(said([half + 1], rank('1'))).toEqual([]);
    expect(said([half + 1], rank('0'))).toEqual(said([half + 1], { LOCAL_WORLD_SIZE: '2' }));
  });
});

describe('TF32', () => {
  test("PyTorch's defaults; each switch set alone, the other kept; options checked", () => {
    expect(getTf32()).toEqual({ convolutions: true, matmul: false });
    setTf32({ convolutions: false });
    expect(getTf32()).toEqual({ convolutions: false, matmul: false });
    setTf32({ matmul: true });
    expect(getTf32()).toEqual({ convolutions: false, matmul: true });
    setTf32({ convolutions: true, matmul: false });
    expect(getTf32()).toEqual({ convolutions: true, matmul: false });
    expect(() => setTf32({ convolutions: 'no' } as never)).toThrow(/options.convolutions must be a boolean, got "no"/);
    expect(() => setTf32({ conv: false } as never)).toThrow(/options.conv is not an option; options takes convolutions, matmul/);
    expect(() => setTf32(null as never)).toThrow(/options must be an object, got null/);
    expect(getTf32()).toEqual({ convolutions: true, matmul: false });
  });
});

describe('pirl info', () => {
  test('prints the facts as JSON and as text', () => {
    const json = JSON.parse(execFileSync(process.execPath, [path.join(root, 'dist/cli.js'), 'info', '--json']).toString());
    expect(json.libtorch.version).toBe(buildInfo().libtorch.version);
    const text = execFileSync(process.execPath, [path.join(root, 'dist/cli.js'), 'info']).toString();
    expect(text).toMatch(/libtorch\s+\d+\.\d+/);
    expect(text).toMatch(/BLAS\s+\w+/);
  });

  test('the CLI runs with the thread default of the library: $PIRL_NUM_THREADS, else the cores', () => {
    const threads = (env: NodeJS.ProcessEnv) => JSON.parse(execFileSync(process.execPath, [path.join(root, 'dist/cli.js'), 'info', '--json'],
      { env: { ...process.env, ...env } }).toString()).threads.intraOp;
    expect(threads({ PIRL_NUM_THREADS: '' })).toBe(Math.min(os.availableParallelism(), 256)); // 256: setNumThreads' ceiling
    expect(threads({ PIRL_NUM_THREADS: '1' })).toBe(1);
    expect(threads({ PIRL_NUM_THREADS: '3' })).toBe(3);
  });

  test('an unknown command exits 2 with the usage', () => {
    let status = 0;
    try {
      execFileSync(process.execPath, [path.join(root, 'dist/cli.js'), 'frobnicate'], { stdio: 'pipe' });
    } catch (e) {
      status = (e as { status: number }).status;
    }
    expect(status).toBe(2);
  });
});

describe('deterministic', () => {
  afterEach(() => setDeterministic(false));

  test("off by default; on, a CPU run's steps are the same bit for bit (none of its ops lacks a deterministic kernel); checked", async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const tiny = require('./fixtures/tiny-run.js') as { dataset(): import('../lib').Dataset; config: import('../lib').TrainConfig };
    const run = async () => {
      const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1 });
      const losses: number[] = [];
      await trainer.fit({ callbacks: { onBatchEnd: (l) => void losses.push(l.loss) } });
      return { losses, weights: await weightsDigest(trainer.model) };
    };
    expect(getDeterministic()).toBe(false);
    const free = await run();
    setDeterministic(true);
    expect(getDeterministic()).toBe(true);
    const deterministic = await run();
    expect(deterministic.losses.length).toBeGreaterThan(2);
    expect(deterministic).toEqual(free);
    setDeterministic(false);
    expect(getDeterministic()).toBe(false);
    expect(() => setDeterministic('yes' as never)).toThrow(/^on must be a boolean, got "yes"$/);
    expect(() => setDeterministic(undefined as never)).toThrow(/^on must be a boolean, got undefined$/);
  });
});
