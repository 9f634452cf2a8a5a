// k6 smoke: 1 VU, 10 requests; every one must be served.
//   k6 run loadtest/k6/smoke.js   (BASE_URL=http://host:port)
import { completion, SERVED_P95 } from './lib.js';

export const options = {
  vus: 1,
  iterations: 10,
  thresholds: {
    errors: ['rate==0'],
    shed: ['rate==0'],
    [SERVED_P95]: ['p(95)<2000'],
  },
};

export default function () {
  completion();
}
