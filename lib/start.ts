// index.ts's first import: the addon loads as pirl is required — a missing libtorch is said at require('pirl'), not
// at the first call — and libtorch's libraries load before sharp's (libvips), as they always have.
import { initRuntime } from './runtime';

initRuntime();
