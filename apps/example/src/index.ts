export {
  BRAG_DOC_COST,
  type BragDocResult,
  fakeLlm,
  generateBragDoc,
  type Llm,
} from './brag-doc.js';
export { createDatabase, history, signUp, WELCOME_CREDITS } from './signup.js';
