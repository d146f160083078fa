import type { CreditBalance } from '../src/credits/balance.js';
import type { FeatureType } from '../src/schema.js';

export const unitName = (feature: FeatureType, amount: number) =>
  feature === 'chat_message'
    ? `chat message${amount === 1 ? '' : 's'}`
    : `credit${amount === 1 ? '' : 's'}`;

/** The line every support command ends with: the balances after what it did. */
export function printBalance(command: string, email: string, balance: CreditBalance): void {
  const held = (n: number) => (n > 0 ? ` (${n} held)` : '');
  console.log(
    `${command}: ${email} now has ${balance.freeCredits} credits${held(balance.heldCredits)} and ${balance.freeChatMessages} chat messages${held(balance.heldChatMessages)}; plan ${balance.plan.plan}${balance.plan.unlimited ? ' (unlimited)' : ''}.`,
  );
}
