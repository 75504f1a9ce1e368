// Jest runs each suite in its own realm, but the addon makes errors and typed arrays in Node's main
// realm; sharing these constructors keeps `instanceof` true for both, as it is in a user's program.
const { TestEnvironment } = require('jest-environment-node');

const SHARED = [
  'Error', 'TypeError', 'RangeError', 'ArrayBuffer', 'SharedArrayBuffer', 'DataView',
  'Float32Array', 'Float64Array', 'Int8Array', 'Int16Array', 'Int32Array', 'BigInt64Array',
  'Uint8Array', 'Uint8ClampedArray', 'Uint16Array', 'Uint32Array', 'BigUint64Array',
];

class PirlEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED) this.global[name] = globalThis[name];
  }
}

module.exports = PirlEnvironment;
