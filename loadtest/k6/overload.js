// k6 overload: constant arrival rate at ~3x capacity (RATE, default 80/s)
// for DURATION (default 2m). Expect shedding: every shed answer must carry
// Retry-After (the `errors` threshold) and come fast; served requests stay
// within their deadline.
import { completion, thresholds, SERVED_P95 } from './lib.js';

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
  thresholds: thresholds({
    time_to_reject: ['p(99)<250'],
    [SERVED_P95]: [`p(95)<${__ENV.P95_MS || 3000}`],
  }),
};

export default function () {
  completion();
}
