import { type Database, InsufficientCreditsError, withCreditReservation } from '@bragdoc/database';

/** What a brag document costs, in free credits. */
export const BRAG_DOC_COST = 2;

export interface Llm {
  complete: (prompt: string) => Promise<string>;
}

/**
 * A stand-in LLM: answers after a short delay, and fails on the calls whose number (1-based)
 * is in `failOn`, as a real one times out or is rate-limited now and then.
 */
export function fakeLlm(failOn: number[] = []): Llm & { calls: number } {
  const llm = {
    calls: 0,
    async complete(prompt: string) {
      llm.calls++;
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (failOn.includes(llm.calls)) throw new Error(`LLM call ${llm.calls} timed out`);
      return `# Brag document\n\n${prompt}: shipped, measured, celebrated.`;
    },
  };
  return llm;
}

export type BragDocResult =
  | { ok: true; document: string; creditsLeft: number }
  | { ok: false; reason: 'insufficient_credits'; required: number; available: number };

/**
 * The feature: hold the credits first (so two concurrent requests cannot spend the same
 * credits), call the LLM, settle the hold when it answers and give the credits back if it
 * fails; the error still reaches the caller. Killed in between, the hold expires on its own.
 */
export async function generateBragDoc(
  db: Database,
  llm: Llm,
  request: { userId: string; prompt: string; requestId: string },
): Promise<BragDocResult> {
  try {
    return await withCreditReservation(
      db,
      {
        userId: request.userId,
        amount: BRAG_DOC_COST,
        featureType: 'document_generation',
        metadata: { requestId: request.requestId, model: 'fake-llm-1' },
      },
      async (reservation) => ({
        ok: true as const,
        document: await llm.complete(request.prompt),
        creditsLeft: reservation.balance,
      }),
    );
  } catch (error) {
    if (error instanceof InsufficientCreditsError) {
      return {
        ok: false,
        reason: 'insufficient_credits',
        required: error.required,
        available: error.available,
      };
    }
    throw error;
  }
}
