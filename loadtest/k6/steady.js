// k6 steady: constant arrival rate under capacity (RATE, default 10/s) for
// DURATION (default 2m). Nothing should be shed; p95 stays near the
// service time.
import { completion, thresholds, SERVED_P95 } from './lib.js';

export const options = {
  scenarios: {
    steady: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE || '10', 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '2m',
      preAllocatedVUs: 32,
      maxVUs: 200,
    },
  },
  thresholds: thresholds({
    shed: ['rate<0.01'],
    [SERVED_P95]: [`p(95)<${__ENV.P95_MS || 1500}`],
  }),
};

export default function () {
  completion();
}
