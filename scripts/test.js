#!/usr/bin/env node
'use strict';
// `npm test`: builds the addon and the native suite, runs ctest and jest, and ends with one line
// `N passed, N failed` that sums both.
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { build } = require('./build');

const root = path.join(__dirname, '..');
const buildDir = path.join(root, 'build');

function run(cmd, args, options = {}) {
  return spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...options }).status;
}

function ctestCounts() {
  const junit = path.join(buildDir, 'ctest-junit.xml');
  fs.rmSync(junit, { force: true });
  const status = run('ctest', ['--test-dir', buildDir, '--parallel', String(require('os').availableParallelism()), '--output-on-failure', '--output-junit', junit]);
  if (!fs.existsSync(junit)) return { passed: 0, failed: 1, skipped: 0, status };
  const head = /<testsuite\b[^>]*>/.exec(fs.readFileSync(junit, 'utf8'))[0];
  const attr = (name) => Number((new RegExp(`\\b${name}="(\\d+)"`).exec(head) || [0, 0])[1]);
  const failed = attr('failures') + attr('errors');
  const skipped = attr('skipped') + attr('disabled');
  // A native suite that found no tests is broken, not green.
  const broken = status !== 0 || attr('tests') === 0;
  return { passed: attr('tests') - failed - skipped, failed: failed || (broken ? 1 : 0), skipped, status: broken ? 1 : 0 };
}

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

function main() {
  build({ tests: true });
  // lib/ compiled to dist/ (the CLI tests and fixtures run it), then the tests type-checked: jest ran them with type errors unreported.
  const tsc = (project) => run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', project]);
  if (tsc('tsconfig.json') !== 0 || tsc('tsconfig.test.json') !== 0) {
    console.log('0 passed, 1 failed');
    return 1;
  }
  const native = ctestCounts();
  const js = jestCounts(process.argv.slice(2));
  const passed = native.passed + js.passed;
  const failed = native.failed + js.failed;
  const skipped = native.skipped + js.skipped;
  console.log(`native: ${native.passed} passed, ${native.failed} failed; jest: ${js.passed} passed, ${js.failed} failed`);
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  return failed || native.status || js.status ? 1 : 0;
}

try {
  process.exitCode = main();
} catch (err) {
  console.error(`pirl: ${err.message}`);
  console.log('0 passed, 1 failed');
  process.exitCode = 1;
}
