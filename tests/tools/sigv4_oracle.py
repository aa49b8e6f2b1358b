#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
#
# sigv4_oracle.py: the second opinion for test_sigv4's differential test.
# Reads JSON lines (one request each) on stdin, signs every request with
# botocore's SigV4Auth (S3SigV4Auth for service "s3") and prints one line per
# request: the Authorization value, a tab, and botocore's canonical request as
# a JSON string (only read when a case differs, to show why).
#
# Input fields: method, path (as sent on the wire), query (as sent, no '?'),
# headers ([[name, value], ...], exactly the set to sign), body (text, sent
# as UTF-8), region, service, amz_date, access_key, secret_key.
#
# The oracle adds and removes nothing: like kinlake's signer it signs the
# headers it is given, so it calls botocore's canonical_request(),
# string_to_sign() and signature() instead of add_auth() (which would set
# X-Amz-Date, X-Amz-Security-Token and, for S3, X-Amz-Content-SHA256 itself).
#
# The query is handed to botocore as decoded (name, value) pairs, which
# botocore encodes and sorts itself. Decoding is kinlake's rule: split on
# '&', skip empty pieces, split each at the first '=' (no '=' means an empty
# value), and percent-decode ('+' stays '+'; an invalid escape stays as
# written). A request that needs something else prints "ERROR <reason>".
#
# Without botocore the only output is one line "SKIP <reason>", and the
# exit status is 0: the C test reports the skip.

import json
import sys
from urllib.parse import unquote


def decode_query(query):
    params = []
    for piece in query.split('&'):
        if not piece:
            continue
        name, _, value = piece.partition('=')
        params.append((unquote(name, errors='strict'),
                       unquote(value, errors='strict')))
    return params


def sign(case, botocore_mods):
    auth_mod, awsrequest_mod, credentials_mod = botocore_mods
    body = case.get('body', '').encode('utf-8')
    request = awsrequest_mod.AWSRequest(
        method=case['method'],
        url='https://oracle.invalid' + case['path'],
        data=body,
        params=decode_query(case.get('query') or ''))
    # HTTPHeaders appends on assignment, so repeated names are all kept.
    for name, value in case['headers']:
        request.headers[name] = value
    request.context['timestamp'] = case['amz_date']

    creds = credentials_mod.Credentials(case['access_key'], case['secret_key'])
    if case['service'] == 's3':
        signer = auth_mod.S3SigV4Auth(creds, case['service'], case['region'])
    else:
        signer = auth_mod.SigV4Auth(creds, case['service'], case['region'])

    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    signature = signer.signature(string_to_sign, request)
    signed = signer.signed_headers(signer.headers_to_sign(request))
    authorization = 'AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s' % (
        signer.scope(request), signed, signature)
    return authorization, canonical


def main():
    try:
        import botocore.auth
        import botocore.awsrequest
        import botocore.credentials
    except ImportError as exc:
        print('SKIP botocore cannot be imported: %s' % exc, flush=True)
        return 0
    mods = (botocore.auth, botocore.awsrequest, botocore.credentials)

    # Read everything first: the caller may only read after it has written.
    # Bytes, decoded as UTF-8 whatever the locale says.
    lines = sys.stdin.buffer.read().decode('utf-8').split('\n')
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            authorization, canonical = sign(json.loads(line), mods)
            out.append('%s\t%s' % (authorization, json.dumps(canonical)))
        except Exception as exc:  # report, keep one output line per input
            out.append('ERROR %s: %s' % (type(exc).__name__, exc))
    sys.stdout.buffer.write(('\n'.join(out) + ('\n' if out else '')).encode('utf-8'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
