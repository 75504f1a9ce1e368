// The `pirl` command line: one file per verb beside this one.
import { FOLDER_WARNINGS } from '../data/imageFolder';
import { ADDON_NOT_LOADED, isArgumentError, isOutOfMemory } from '../errors';
import { PIRL_VERSION } from '../runtime';
import { UsageError, type Flags } from './args';
import { EMBED_FLAGS, EMBED_USAGE, embed } from './embed';
import { EVAL_FLAGS, EVAL_USAGE, evaluate } from './eval';
import { EXPORT_FLAGS, EXPORT_USAGE, exportTrunk } from './export';
import { INFO_FLAGS, INFO_USAGE, info } from './info';
import { tellLauncher } from './launch';
import { quitOnSignals } from './quit';
import { PREVIEW_FLAGS, PREVIEW_USAGE, preview } from './preview';
import { SEARCH_FLAGS, SEARCH_USAGE, search } from './search';
import { TRAIN_FLAGS, TRAIN_USAGE, train } from './train';

/** A verb: what it runs (which may end with its own exit code, an interrupted run's 130; otherwise 0), its usage and its flags. */
export interface Command {
  run(args: string[]): void | number | Promise<void | number>;
  usage: string;
  flags: Flags;
}

export const COMMANDS: Readonly<Record<string, Command>> = {
  info: { run: info, usage: INFO_USAGE, flags: INFO_FLAGS },
  train: { run: train, usage: TRAIN_USAGE, flags: TRAIN_FLAGS },
  eval: { run: evaluate, usage: EVAL_USAGE, flags: EVAL_FLAGS },
  embed: { run: embed, usage: EMBED_USAGE, flags: EMBED_FLAGS },
  search: { run: search, usage: SEARCH_USAGE, flags: SEARCH_FLAGS },
  export: { run: exportTrunk, usage: EXPORT_USAGE, flags: EXPORT_FLAGS },
  preview: { run: preview, usage: PREVIEW_USAGE, flags: PREVIEW_FLAGS },
};

const USAGE = `Usage: pirl <command> [options]

Commands:
  ${Object.values(COMMANDS).map((c) => c.usage).join('\n  ')}
  help                          this text
  --version                     the version of pirl

<data> is a folder of images (flat, or one subfolder per class) or 'fashion-mnist'.`;

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
  return command !== undefined && Object.hasOwn(COMMANDS, command) ? `Usage: pirl ${COMMANDS[command].usage}

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
  quitOnSignals();
  try {
    if (!Object.hasOwn(COMMANDS, command)) throw new UsageError(`unknown command '${command}'`);
    // The addon loads at the verb's first use of it, after its flags are read (runtime.ts applies the defaults then).
    return (await COMMANDS[command].run(args)) ?? 0;
  } catch (err) {
    // Warnings emitted before the failure (process.emitWarning: on the next tick) are printed first: an error that
    // says "see the warnings" came above them.
    await new Promise((resolve) => setImmediate(resolve));
    // Flag mistakes (UsageError, or a library check of a value a flag gave) exit 2, saying where the usage is: printed
    // whole, it pushed the message off the screen.
    const usage = err instanceof UsageError || (isArgumentError(err) && err.argument.startsWith('--'));
    const message = failureMessage(command, err);
    const where = Object.hasOwn(COMMANDS, command) ? `pirl ${command} --help: its options` : 'pirl help: every command';
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
