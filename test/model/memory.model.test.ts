// The call model's paths against the real server on the memory store (see model-suite.ts). No
// restart and no second instance here: a memory store is neither kept nor shared (listed as skipped).
import { describeCallModel } from './model-suite.js';

await describeCallModel('memory');
