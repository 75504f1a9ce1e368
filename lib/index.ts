// Public entry point of pirl.
// Public types use Node's Buffer: the package depends on @types/node, and this keeps the reference in index.d.ts.
/// <reference types="node" preserve="true" />
import './start';
import * as api from './api';

export * from './api';
/**
 * The whole API as one object, for `import pirl from 'pirl'`: Node's ESM gives the module itself; TypeScript's and
 * bundlers' CommonJS interop read `default` (without it, undefined where the types promised the module).
 */
export default api;
