// An AbortSignal over the evaluation's work: a feature pass stops before its next batch, native work (a kNN search,
// a probe's training) between its pieces; either rejects as Node's own aborted calls do (name AbortError, code ABORT_ERR).
import { binding, type StopHandle } from '../binding';

/** Throws the AbortError of `what` if `signal` was aborted. */
export function throwIfAborted(signal: AbortSignal | null, what = 'the feature pass'): void {
  if (!signal?.aborted) return;
  throw Object.assign(new Error(`${what} was stopped: its signal was aborted`, { cause: signal.reason }), { name: 'AbortError', code: 'ABORT_ERR' });
}

/**
 * Native work `start`ed with a StopHandle that `signal` requests when aborted (none without a signal): stopped, it
 * rejects with the AbortError of `what`; work that ended first keeps its result.
 */
export async function stoppable<T>(signal: AbortSignal | null, what: string, start: (stop: StopHandle | null) => Promise<T>): Promise<T> {
  if (signal === null) return start(null);
  throwIfAborted(signal, what);
  const stop = new binding.StopHandle();
  const request = () => stop.request();
  signal.addEventListener('abort', request, { once: true });
  try {
    return await start(stop);
  } catch (err) {
    throwIfAborted(signal, what); // the native work's own "was stopped" error, said as the signal's
    throw err;
  } finally {
    signal.removeEventListener('abort', request);
  }
}
