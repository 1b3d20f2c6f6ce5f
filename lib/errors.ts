/** Stable error codes: callers branch on `err.code`, never on the message text. */
export type LstmErrorCode =
  | 'LSTM_OPTION'
  | 'LSTM_SHAPE'
  | 'LSTM_DTYPE'
  | 'LSTM_WEIGHTS'
  | 'LSTM_FORMAT'
  | 'LSTM_DISPOSED'
  | 'LSTM_NATIVE'
  | 'LSTM_WASM';

const CODES: ReadonlySet<string> = new Set<LstmErrorCode>([
  'LSTM_OPTION',
  'LSTM_SHAPE',
  'LSTM_DTYPE',
  'LSTM_WEIGHTS',
  'LSTM_FORMAT',
  'LSTM_DISPOSED',
  'LSTM_NATIVE',
  'LSTM_WASM',
]);

export class LstmError extends Error {
  readonly code: LstmErrorCode;
  constructor(code: LstmErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LstmError';
    this.code = code;
  }
}

export function isErrorCode(code: string): code is LstmErrorCode {
  return CODES.has(code);
}

/** The native layer throws plain Errors carrying our codes; give them the public class. */
export function asLstmError(err: unknown): unknown {
  if (err instanceof LstmError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (err instanceof Error && typeof code === 'string' && CODES.has(code)) {
    return new LstmError(code as LstmErrorCode, err.message, { cause: err });
  }
  return err;
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (Array.isArray(value)) return `array(${value.length})`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as { length?: number }).length ?? value.byteLength})`;
  if (typeof value === 'object') return value.constructor?.name ?? 'object';
  return typeof value;
}

/** An options argument: undefined means {}, anything but a plain object is LSTM_OPTION. */
export function optionsArg<T extends object>(value: T | undefined | null, name: string, known?: readonly string[]): Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new LstmError('LSTM_OPTION', `${name}: expected an options object, got ${describe(value)}`);
  }
  checkKnownKeys(value, name, known);
  return value;
}

/** An unknown option name is LSTM_OPTION listing the known ones, so a typo never passes silently. */
export function checkKnownKeys(value: object, name: string, known?: readonly string[]): void {
  if (!known) return;
  for (const k of Object.keys(value)) {
    if (!known.includes(k)) throw new LstmError('LSTM_OPTION', `${name}: unknown option '${k}' (known: ${known.join(', ')})`);
  }
}
