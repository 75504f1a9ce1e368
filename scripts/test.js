#!/usr/bin/env node
'use strict';
// `npm test`: builds the addon and the native suite, runs the native suite (sharded) and jest, and ends with one line
// `N passed, N failed` that sums both. `node scripts/test.js --native`: the native suite alone (GTEST_FILTER applies).
const fs = require('fs');
const path = require('path');
const os = require('os');
const { spawn, spawnSync } = require('child_process');
const { build } = require('./build');

const root = path.join(__dirname, '..');
const buildDir = path.join(root, 'build');

function run(cmd, args, options = {}) {
  return spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...options }).status;
}

// The native suite in one process per core, each a gtest shard (GTEST_TOTAL_SHARDS): ctest's process per case
// spent ~0.9 s of each ~1.25 s loading libtorch (518 of them: most of its 325 s in CI). ctest still lists every case.
function nativeCounts() {
  const binary = path.join(buildDir, 'pirl_native_tests');
  const shards = os.availableParallelism();
  const started = Date.now();
  console.log(`native suite: ${shards} shard(s) running (logs: ${path.join(buildDir, 'native-shard-*.log')})`);
  const children = [];
  const runs = Array.from({ length: shards }, (_, index) => {
    const xml = path.join(buildDir, `native-shard-${index}.xml`);
    const log = path.join(buildDir, `native-shard-${index}.log`);
    fs.rmSync(xml, { force: true });
    // Two threads each, unless OMP_NUM_THREADS says otherwise: libtorch's default is every core, in every shard.
    const env = { OMP_NUM_THREADS: '2', ...process.env, GTEST_TOTAL_SHARDS: String(shards), GTEST_SHARD_INDEX: String(index) };
    const out = fs.openSync(log, 'w');
    const child = spawn(binary, [`--gtest_output=xml:${xml}`], { cwd: root, env, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    children.push({ child, log });
    return new Promise((resolve) => {
      // A case that hangs ends its shard (the log's last "[ RUN ]" names it), not the whole npm test.
      let timedOut = false;
      const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, SHARD_TIMEOUT_MS);
      child.on('error', (err) => { clearTimeout(timer); resolve({ index, xml, log, status: null, error: err }); });
      child.on('exit', (status, signal) => { clearTimeout(timer); resolve({ index, xml, log, status, signal, timedOut }); });
    });
  });
  // Stopped from outside (a CI step's or the GPU check's time limit): each shard's case in progress is said first.
  const stopped = () => {
    for (const { child, log } of children) {
      child.kill('SIGKILL');
      const running = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith('[ RUN      ]')).pop() : undefined;
      console.log(`native suite stopped (SIGTERM); ${log} was at: ${running ?? 'no case yet'}`);
    }
    process.exit(143);
  };
  process.once('SIGTERM', stopped);
  return Promise.all(runs).then((done) => {
    process.off('SIGTERM', stopped);
    const total = { passed: 0, failed: 0, skipped: 0, disabled: 0 };
    for (const shard of done) {
      const counts = shardCounts(shard);
      console.log(`native shard ${shard.index + 1}/${shards}: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped${counts.disabled ? `, ${counts.disabled} disabled` : ''}`);
      for (const key of Object.keys(total)) total[key] += counts[key];
    }
    // A suite where no case ran (none built, a filter that matches none, or only DISABLED_ ones) is broken, not green.
    if (total.passed + total.failed + total.skipped === 0) {
      console.log(`native suite: no test ran${process.env.GTEST_FILTER ? ` (GTEST_FILTER=${process.env.GTEST_FILTER})` : ''}`);
      total.failed = 1;
    }
    console.log(`native suite: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped${total.disabled ? `, ${total.disabled} disabled` : ''} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return { passed: total.passed, failed: total.failed, skipped: total.skipped + total.disabled };
  });
}

const SHARD_TIMEOUT_MS = 20 * 60 * 1000;

// A shard's counts from its gtest XML; its failures printed with their messages. No XML (a crash, a kill, no binary)
// is one failure, shown by the log's end.
function shardCounts({ index, xml, log, status, signal, error, timedOut }) {
  const cases = fs.existsSync(xml) ? fs.readFileSync(xml, 'utf8').split('<testcase ').slice(1) : [];
  const failures = cases.filter((c) => /<failure\b/.test(c.slice(0, c.indexOf('</testcase>') >>> 0)));
  const skipped = cases.filter((c) => /^[^>]*\bresult="skipped"/.test(c)).length;
  const disabled = cases.filter((c) => /^[^>]*\bresult="suppressed"/.test(c)).length; // DISABLED_ cases: not run
  for (const c of failures) {
    const name = /classname="([^"]*)"/.exec(c)[1] + '.' + /^name="([^"]*)"/.exec(c)[1];
    const messages = [...c.matchAll(/<failure message="([^"]*)"/g)].map((m) => unescapeXml(m[1]));
    console.log(`FAILED ${name}\n  ${messages.join('\n').replace(/\n/g, '\n  ')}`);
  }
  // gtest exits 1 when a case failed: its XML says which, and the log's end would add nothing.
  const ran = { passed: cases.length - failures.length - skipped - disabled, failed: failures.length, skipped, disabled };
  if (fs.existsSync(xml) && (status === 0 || (status === 1 && failures.length > 0))) return ran;
  const why = error ? error.message : timedOut ? `over ${SHARD_TIMEOUT_MS / 60000} min: killed` : signal ? `killed by ${signal}` : `exit ${status}`;
  const tail = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').slice(-60).join('\n') : '';
  console.log(`native shard ${index + 1} failed (${why}); the end of ${log}:\n${tail}`);
  return { ...ran, failed: Math.max(1, failures.length) };
}

const unescapeXml = (s) => s.replace(/&#x0*A;/gi, '\n').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');

function jestCounts(extraArgs) {
  const out = path.join(buildDir, 'jest-results.json');
  fs.rmSync(out, { force: true });
  const jest = require.resolve('jest/bin/jest');
  const status = run(process.execPath, [jest, '--json', `--outputFile=${out}`, ...extraArgs]);
  if (!fs.existsSync(out)) return { passed: 0, failed: 1, skipped: 0, status };
  const r = JSON.parse(fs.readFileSync(out, 'utf8'));
  const suiteErrors = r.numRuntimeErrorTestSuites || 0;
  return { passed: r.numPassedTests, failed: r.numFailedTests + suiteErrors, skipped: r.numPendingTests, status };
}

async function main(argv) {
  // `--native`: the native suite alone, as last built (the GPU check; GTEST_FILTER picks the cases).
  if (argv[0] === '--native') return (await nativeCounts()).failed > 0 ? 1 : 0;
  build({ tests: true });
  // lib/ compiled to dist/ (the CLI tests and fixtures run it), then the tests type-checked: jest ran them with type errors unreported.
  const tsc = (project) => run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', project]);
  if (tsc('tsconfig.json') !== 0 || tsc('tsconfig.test.json') !== 0) {
    console.log('0 passed, 1 failed');
    return 1;
  }
  const native = await nativeCounts();
  const js = jestCounts(argv);
  const passed = native.passed + js.passed;
  const failed = native.failed + js.failed;
  const skipped = native.skipped + js.skipped;
  console.log(`native: ${native.passed} passed, ${native.failed} failed; jest: ${js.passed} passed, ${js.failed} failed`);
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  return failed || js.status ? 1 : 0;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => {
  console.error(`pirl: ${err.message}`);
  console.log('0 passed, 1 failed');
  process.exitCode = 1;
});
