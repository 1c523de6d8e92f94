// The call model's paths against the real server on the redis store (see model-suite.ts).
import { describeCallModel } from './model-suite.js';

await describeCallModel('redis');
