// k6 overload: constant arrival rate at ~3x capacity (RATE, default 80/s)
// for DURATION (default 2m). Expect shedding: every shed answer must carry
// Retry-After and come fast; served requests stay within their deadline.
import { completion, SERVED_P95 } from './lib.js';

export const options = {
  scenarios: {
    overload: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE || '80', 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '2m',
      preAllocatedVUs: 100,
      maxVUs: 600,
    },
  },
  thresholds: {
    errors: ['rate<0.01'],
    shed_with_retry_after: ['rate>0.99'],
    time_to_reject: ['p(99)<250'],
    [SERVED_P95]: [`p(95)<${__ENV.P95_MS || 3000}`],
  },
};

export default function () {
  completion();
}
