export {
  createDatabase,
  type Database,
  type DatabaseHandle,
  type DatabaseOptions,
  type Schema,
  type Transaction,
} from './client.js';
export * from './credits/index.js';
export { DatabaseError } from './errors.js';
export * from './schema.js';
