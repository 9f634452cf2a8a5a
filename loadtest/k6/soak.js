// k6 soak: ~70 % of capacity (RATE, default 20/s) for DURATION (default
// 30m). Thresholds as steady; watch the gateway's RSS and p99 drift.
import { completion, thresholds, SERVED_P95 } from './lib.js';

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE || '20', 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '30m',
      preAllocatedVUs: 64,
      maxVUs: 400,
    },
  },
  thresholds: thresholds({
    shed: ['rate<0.02'],
    [SERVED_P95]: [`p(95)<${__ENV.P95_MS || 2000}`],
  }),
};

export default function () {
  completion();
}
