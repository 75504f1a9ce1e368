// The `pirl` command line: one file per verb beside this one.
import { FOLDER_WARNINGS } from '../data/imageFolder';
import { ADDON_NOT_LOADED, isArgumentError, isOutOfMemory } from '../errors';
import { PIRL_VERSION } from '../runtime';
import { UsageError } from './args';
import { EMBED_USAGE, embed } from './embed';
import { EVAL_USAGE, evaluate } from './eval';
import { EXPORT_USAGE, exportTrunk } from './export';
import { INFO_USAGE, info } from './info';
import { tellLauncher } from './launch';
import { PREVIEW_USAGE, preview } from './preview';
import { SEARCH_USAGE, search } from './search';
import { TRAIN_USAGE, train } from './train';

const USAGE = `Usage: pirl <command> [options]

Commands:
  ${INFO_USAGE}
  ${TRAIN_USAGE}
  ${EVAL_USAGE}
  ${EMBED_USAGE}
  ${SEARCH_USAGE}
  ${EXPORT_USAGE}
  ${PREVIEW_USAGE}
  help                          this text
  --version                     the version of pirl

<data> is a folder of images (flat, or one subfolder per class) or 'fashion-mnist'.`;

// A verb may end with its own exit code (an interrupted run: 130); otherwise 0.
const VERBS: Record<string, (args: string[]) => void | number | Promise<void | number>> = {
  info, train, eval: evaluate, embed, search, export: exportTrunk, preview,
};
const VERB_USAGE: Record<string, string> = {
  info: INFO_USAGE, train: TRAIN_USAGE, eval: EVAL_USAGE, embed: EMBED_USAGE, search: SEARCH_USAGE, export: EXPORT_USAGE, preview: PREVIEW_USAGE,
};

// What to change when a command's memory ran out (the device's, or the host's): the flags that size its work.
const OUT_OF_MEMORY_HINTS: Record<string, string> = {
  train: 'a smaller --batch (the lr follows batch/256), --precision bf16, or the batch spread over more GPUs (--nproc N, one per GPU)',
  eval: 'a smaller --size, or --device cpu', embed: 'a smaller --size, or --device cpu',
  search: '--device cpu (its queries are embedded at the side the catalogue was)',
};

/** What `pirl <command>` prints of an error it ends with: the message, and for memory that ran out what to change. */
export function failureMessage(command: string, err: unknown): string {
  const notLoaded = addonFailure(err);
  if (notLoaded !== null) return notLoaded.message;
  const hint = isOutOfMemory(err) && Object.hasOwn(OUT_OF_MEMORY_HINTS, command) ? `\n(out of memory: ${OUT_OF_MEMORY_HINTS[command]})` : '';
  return `pirl: ${(err as Error).message}${hint}`;
}

// The addon's failure to load, where an error is it or was caused by it (a file's read that loaded it first).
function addonFailure(err: unknown): Error | null {
  for (let e = err; e instanceof Error; e = e.cause) if ((e as { code?: unknown }).code === ADDON_NOT_LOADED) return e;
  return null;
}

/** The usage of one command (with where the rest is), or of all. */
function usageOf(command: string | undefined): string {
  return command !== undefined && Object.hasOwn(VERB_USAGE, command) ? `Usage: pirl ${VERB_USAGE[command]}

(pirl help: every command)` : USAGE;
}

// pirl's warnings (an unreadable image, a slow BLAS) read as the CLI's other messages, not as Node's
// "(node:PID) [PIRL_…] Warning: … (Use `node --trace-warnings …`)"; Node prints the others as ever.
function printPirlWarningsPlainly(): void {
  const nodes = process.listeners('warning');
  process.removeAllListeners('warning');
  process.on('warning', (w: Error & { code?: string }) => {
    // A data set's notices (an image skipped, some left out) read as the CLI's reports of its data, not as warnings.
    if (w.code?.startsWith('PIRL_')) console.error(`pirl: ${(FOLDER_WARNINGS as readonly string[]).includes(w.code) ? '' : 'warning: '}${w.message}`);
    else nodes.forEach((listener) => listener(w));
  });
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command === '--version' || command === '-v') {
    console.log(PIRL_VERSION);
    return 0;
  }
  if (command === undefined) { // a mistake (a script's empty variable): the usage, as an error
    console.error(USAGE);
    return 2;
  }
  // `pirl <command> --help` shows that command's options; `pirl help`, every command's.
  if (['help', '--help', '-h'].includes(command) || args.includes('--help') || args.includes('-h')) {
    console.log(usageOf(command));
    return 0;
  }
  printPirlWarningsPlainly();
  try {
    if (!Object.hasOwn(VERBS, command)) throw new UsageError(`unknown command '${command}'`);
    // The addon loads at the verb's first use of it, after its flags are read (runtime.ts applies the defaults then).
    return (await VERBS[command](args)) ?? 0;
  } catch (err) {
    // Warnings emitted before the failure (process.emitWarning: on the next tick) are printed first: an error that
    // says "see the warnings" came above them.
    await new Promise((resolve) => setImmediate(resolve));
    // Flag mistakes (UsageError, or a library check of a value a flag gave) exit 2, saying where the usage is: printed
    // whole, it pushed the message off the screen.
    const usage = err instanceof UsageError || (isArgumentError(err) && err.argument.startsWith('--'));
    const message = failureMessage(command, err);
    const where = Object.hasOwn(VERB_USAGE, command) ? `pirl ${command} --help: its options` : 'pirl help: every command';
    if (!(await tellLauncher(message))) console.error(usage ? `${message}\n(${where})` : message);
    return usage ? 2 : 1;
  }
}

export function run(): void {
  // A closed pipe or terminal (`pirl train … | head`, a dropped ssh session) ends no run: what no one reads goes unwritten.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE' && err.code !== 'EIO') throw err;
    });
  }
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
