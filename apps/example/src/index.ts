export { createDatabase, history, signUp } from './signup.js';
