import type { CreditBalance } from '../src/credits/balance.js';
import type { FeatureType } from '../src/schema.js';

export const unitName = (feature: FeatureType, amount: number) =>
  feature === 'chat_message'
    ? `chat message${amount === 1 ? '' : 's'}`
    : `credit${amount === 1 ? '' : 's'}`;

// C0 and C1 control characters, DEL, and the bidi controls that reorder what a terminal shows.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text a user or an app wrote (a name, an e-mail, metadata, a reason), made safe to print on
 * a support engineer's terminal: a control character is shown as its \u escape, so an escape
 * sequence can neither hide a line, move the cursor over a finding, nor write the clipboard.
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Prints a line of output (console.log) with what data it holds made printable. */
export function say(line: string): void {
  console.log(printable(line));
}

/** JSON for one line of text output: at most `max` characters, saying how much was cut. */
export function shortJson(value: unknown, max = 500): string {
  const text = JSON.stringify(value);
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} characters)`;
}

/** The line every support command ends with: the balances after what it did. */
export function printBalance(command: string, email: string, balance: CreditBalance): void {
  const held = (n: number) => (n > 0 ? ` (${n} held)` : '');
  say(
    `${command}: ${email} now has ${balance.freeCredits} credits${held(balance.heldCredits)} and ${balance.freeChatMessages} chat messages${held(balance.heldChatMessages)}; plan ${balance.plan.plan}${balance.plan.unlimited ? ' (unlimited)' : ''}.`,
  );
}
