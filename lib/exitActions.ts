// What must run however this process ends (a lock freed, a half-written temporary file removed): at its 'exit', and
// at a CLI's quit on a signal, where 'exit' listeners are not run (the addon's waits for native work in flight).
const actions = new Set<() => void>();

/** `action` run once when this process exits or quits, unless the returned function is called first (done with). */
export function atExit(action: () => void): () => void {
  if (actions.size === 0) process.once('exit', runExitActions);
  actions.add(action);
  return () => {
    actions.delete(action);
    if (actions.size === 0) process.off('exit', runExitActions);
  };
}

/** Runs (once) every action still due: each on its own, so that one's failure (a file gone) keeps none of the others from running. */
export function runExitActions(): void {
  process.off('exit', runExitActions);
  for (const action of [...actions]) {
    actions.delete(action);
    try {
      action();
    } catch {
      // a lock or temporary file already gone
    }
  }
}
