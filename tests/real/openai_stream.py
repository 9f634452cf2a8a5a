#!/usr/bin/env python3
"""Stream one chat completion with the official OpenAI Python client.

    python tests/real/openai_stream.py --base-url http://127.0.0.1:8080/v1 [--max-tokens 48]

Used by `tests/real_llama.rs` (openai_client_streams_through_sluice) with
Sluice in front of a real llama-server, to prove that what clients actually
use works through the gateway: the stream arrives incrementally (not
buffered to the end), ends cleanly (`data: [DONE]` consumed by the client, no
exception) and reports usage (`stream_options.include_usage`).

Prints ONE line of JSON on stdout (everything else goes to stderr):

    {"ok": true, "openai_version": "...", "status": 200, "backend": "r0",
     "chunks": 50, "content_chunks": 48, "first_content_s": 0.03,
     "last_content_s": 0.61, "end_s": 0.62, "finish_reason": "length",
     "usage": {"prompt_tokens": 12, "completion_tokens": 48, "total_tokens": 60},
     "usage_chunk_last": true, "text_chars": 190, "error": null}

Times are seconds since the request was sent (time.monotonic). The exit
status is 0 when the stream was read to its end without an exception, 1
otherwise (the JSON still says what happened). The test asserts on the JSON;
this script only reports.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True, help="gateway URL + /v1")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds, per attempt")
    ap.add_argument("--max-retries", type=int, default=8,
                    help="the client's own retries (it honours Retry-After on 503)")
    args = ap.parse_args()

    out: dict = {"ok": False, "error": None}
    try:
        import openai
        from openai import OpenAI
    except ImportError as e:  # the interpreter is not the venv with openai
        out["error"] = f"cannot import openai: {e} (python: {sys.executable})"
        print(json.dumps(out))
        return 1
    out["openai_version"] = openai.__version__

    client = OpenAI(
        base_url=args.base_url,
        api_key="sk-sluice-test",  # llama-server started without --api-key accepts any
        timeout=args.timeout,
        max_retries=args.max_retries,
    )
    chunks = 0
    content_chunks = 0
    first_content = None
    last_content = None
    finish_reason = None
    usage = None
    usage_chunk_index = None
    text = []
    t0 = time.monotonic()
    try:
        # with_raw_response gives the HTTP headers (x-sluice-backend) and the
        # usual Stream object from .parse().
        raw = client.chat.completions.with_raw_response.create(
            model="tiny",
            messages=[
                {"role": "system", "content": "You are a test."},
                {"role": "user", "content": "Count slowly from one to one hundred."},
            ],
            max_tokens=args.max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
            # llama-server extension: generate exactly max_tokens (the model
            # is random weights and would otherwise stop at any point).
            extra_body={"ignore_eos": True},
        )
        out["status"] = raw.http_response.status_code
        out["backend"] = raw.headers.get("x-sluice-backend")
        out["request_id"] = raw.headers.get("x-request-id")
        out["content_type"] = raw.headers.get("content-type")
        stream = raw.parse()
        for chunk in stream:
            now = time.monotonic() - t0
            chunks += 1
            if chunk.usage is not None:
                usage = chunk.usage.model_dump()
                usage_chunk_index = chunks
            for choice in chunk.choices or []:
                piece = choice.delta.content if choice.delta else None
                if piece:
                    content_chunks += 1
                    text.append(piece)
                    if first_content is None:
                        first_content = now
                    last_content = now
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
        out["ok"] = True
    except Exception as e:  # report, do not hide: the test prints this
        out["error"] = f"{type(e).__name__}: {e}"
    out.update(
        chunks=chunks,
        content_chunks=content_chunks,
        first_content_s=first_content,
        last_content_s=last_content,
        end_s=time.monotonic() - t0,
        finish_reason=finish_reason,
        usage=usage,
        usage_chunk_last=usage_chunk_index is not None and usage_chunk_index == chunks,
        text_chars=sum(len(t) for t in text),
    )
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
