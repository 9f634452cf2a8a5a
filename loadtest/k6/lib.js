// Shared by the k6 profiles: one POST /completion per iteration, and the
// metrics the thresholds read.
//
//   BASE_URL   gateway address (default http://127.0.0.1:8080)
//   N_PREDICT  tokens to generate (default 32)
//   DEADLINE   x-sluice-deadline: how long a request may wait at the gateway (default 2s)
//   STREAM     "1": ask for SSE (the duration then covers the whole stream)
import http from 'k6/http';
import { check } from 'k6';
import { Rate, Trend, Counter } from 'k6/metrics';

export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const N_PREDICT = parseInt(__ENV.N_PREDICT || '32', 10);
const DEADLINE = __ENV.DEADLINE || '2s';
const STREAM = __ENV.STREAM === '1';

// Hard errors: anything but a 200 or a shed answer (503/429 with Retry-After).
export const errors = new Rate('errors');
// Share of all answers that were shed (503/429).
export const shed = new Rate('shed');
// Among shed answers: share that carried Retry-After (must be all of them).
export const shedWithRetryAfter = new Rate('shed_with_retry_after');
// Time to a shed answer (Sluice answers at once; a queue timeout does not).
export const timeToReject = new Trend('time_to_reject', true);
export const served = new Counter('served');

// 503 and 429 are expected answers under overload: keep them out of
// http_req_failed and out of the latency of served requests.
http.setResponseCallback(http.expectedStatuses(200));

export function completion() {
  const body = JSON.stringify({ prompt: 'Hello', n_predict: N_PREDICT, stream: STREAM });
  const res = http.post(`${BASE_URL}/completion`, body, {
    headers: { 'Content-Type': 'application/json', 'x-sluice-deadline': DEADLINE },
    timeout: '60s',
    tags: { name: 'completion' },
  });
  const isShed = res.status === 503 || res.status === 429;
  const hasRetryAfter = res.headers['Retry-After'] !== undefined;
  shed.add(isShed);
  if (isShed) {
    shedWithRetryAfter.add(hasRetryAfter);
    timeToReject.add(res.timings.duration);
  }
  if (res.status === 200) served.add(1);
  errors.add(!(res.status === 200 || (isShed && hasRetryAfter)));
  check(res, {
    'status is 200 or shed': (r) => r.status === 200 || isShed,
    'shed answers carry Retry-After': () => !isShed || hasRetryAfter,
  });
  return res;
}

// Latency of served requests only: http_req_duration{expected_response:true}.
export const SERVED_P95 = 'http_req_duration{expected_response:true}';
