'use strict';
// Debian packages pirl may install for its user (libtorch at install time, Fashion-MNIST for the demo):
// only as root on a system with apt-get, never with PIRL_NO_APT=1; otherwise callers say what to run.
const fs = require('fs');
const { spawnSync } = require('child_process');

function canUseApt() {
  return process.platform === 'linux' && process.getuid && process.getuid() === 0 &&
    fs.existsSync('/usr/bin/apt-get') && !process.env.PIRL_NO_APT;
}

function aptInstall(packages) {
  console.error(`pirl: installing ${packages.join(' ')} with apt-get (set PIRL_NO_APT=1 to prevent this)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // stdout to stderr: callers' stdout may be JSON.
  const run = (args) => spawnSync('apt-get', args, { stdio: ['ignore', 2, 2], env }).status === 0;
  // A fresh machine often has no package lists yet; update only when the first try fails.
  if (!run(['install', '-y', '-q', ...packages]) && !(run(['update', '-q']) && run(['install', '-y', '-q', ...packages]))) {
    throw new Error(`apt-get install ${packages.join(' ')} failed`);
  }
}

module.exports = { canUseApt, aptInstall };
