
/*
 * libFuzzer target: verification of incoming SDK requests,
 * ngx_http_idv_verify_parse() (query string, form body, V3 and V1
 * signature fields, signed headers), ngx_http_idv_verify_time() and
 * ngx_http_idv_verify_signature().
 *
 * Input: an HTTP request as it arrives,
 *
 *     METHOD TARGET[ HTTP/1.1]
 *     Name: value            (header lines, names lower-cased as nginx
 *     ...                     hands them over)
 *
 *     body
 *
 * lines ending in "\n" or "\r\n"; TARGET is split at the first '?'; the
 * body is urlencoded when Content-Type says so.
 *
 * Invariants: a rejection has a status and, unless 500, a code and a
 * message; an accepted request has at most
 * NGX_HTTP_IDV_VERIFY_MAX_PARAMS parameters, each non-NULL unless empty,
 * and a V3 or V1 signature; a request that verifies with the secret
 * "testsecret" (the signature vectors' seeds) does not verify with
 * another secret.
 */


#include <stdint.h>
#include <strings.h>

#include "fuzz.h"
#include "ngx_http_idv_verify.h"


#define FUZZ_MAX_HEADERS  64
#define FUZZ_NOW          1716193800        /* 2024-05-20T08:30:00Z */


static const u_char *
fuzz_line(const u_char **p, const u_char *end, size_t *len)
{
    const u_char  *s, *nl;

    s = *p;
    nl = memchr(s, '\n', end - s);

    if (nl == NULL) {
        *len = end - s;
        *p = end;

    } else {
        *len = nl - s;
        *p = nl + 1;
    }

    if (*len && s[*len - 1] == '\r') {
        (*len)--;
    }

    return s;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                  len, i, n;
    u_char                 *c;
    const u_char           *p, *end, *line, *sp, *q, *colon;
    ngx_http_idv_header_t  *h;
    ngx_http_idv_verify_t   v, v2;

    p = data;
    end = data + size;

    memset(&v, 0, sizeof(v));

    /* the request line */

    line = fuzz_line(&p, end, &len);

    sp = memchr(line, ' ', len);
    if (sp == NULL) {
        return 0;
    }

    v.method.len = sp - line;
    v.method.data = fuzz_dup(line, v.method.len);

    line = sp + 1;
    len -= v.method.len + 1;

    sp = memchr(line, ' ', len);
    if (sp) {
        len = sp - line;
    }

    q = memchr(line, '?', len);

    v.path.len = q ? (size_t) (q - line) : len;
    v.path.data = fuzz_dup(line, v.path.len);

    if (q) {
        v.query.len = len - v.path.len - 1;
        v.query.data = fuzz_dup(q + 1, v.query.len);
    }

    /* headers up to an empty line */

    h = fuzz_alloc(NULL, FUZZ_MAX_HEADERS * sizeof(ngx_http_idv_header_t));
    n = 0;

    while (p < end && n < FUZZ_MAX_HEADERS) {
        line = fuzz_line(&p, end, &len);

        if (len == 0) {
            break;
        }

        colon = memchr(line, ':', len);
        if (colon == NULL) {
            continue;
        }

        h[n].name.len = colon - line;
        h[n].name.data = fuzz_dup(line, h[n].name.len);

        for (i = 0, c = h[n].name.data; i < h[n].name.len; i++) {
            if (c[i] >= 'A' && c[i] <= 'Z') {
                c[i] |= 0x20;
            }
        }

        colon++;
        while (colon < line + len && *colon == ' ') {
            colon++;
        }

        h[n].value.len = line + len - colon;
        h[n].value.data = fuzz_dup(colon, h[n].value.len);

        if (h[n].name.len == 12
            && memcmp(h[n].name.data, "content-type", 12) == 0
            && h[n].value.len >= 33
            && strncasecmp((char *) h[n].value.data,
                           "application/x-www-form-urlencoded", 33) == 0)
        {
            v.form = 1;
        }

        n++;
    }

    v.headers = h;
    v.nheaders = n;

    /* the body, exactly as long as it is */

    v.body.len = end - p;
    v.body.data = fuzz_dup(p, v.body.len);

    v.alloc = fuzz_alloc;

    v2 = v;

    if (ngx_http_idv_verify_parse(&v) != 0) {
        FUZZ_CHECK(v.status >= 400 && v.status < 600);
        FUZZ_CHECK(v.status == 500 || (v.code && v.message.len));
        fuzz_free_all();
        return 0;
    }

    FUZZ_CHECK(v.algorithm == NGX_HTTP_IDV_SIGN_V3
               || v.algorithm == NGX_HTTP_IDV_SIGN_V1);
    FUZZ_CHECK(v.nparams <= NGX_HTTP_IDV_VERIFY_MAX_PARAMS);
    FUZZ_CHECK(v.nparams == 0 || v.params != NULL);

    for (i = 0; i < v.nparams; i++) {
        FUZZ_CHECK(v.params[i].key.len == 0 || v.params[i].key.data);
        FUZZ_CHECK(v.params[i].value.len == 0 || v.params[i].value.data);
    }

    (void) ngx_http_idv_verify_time(&v, FUZZ_NOW,
                                    NGX_HTTP_IDV_VERIFY_WINDOW);

    if (ngx_http_idv_verify_signature(&v, (u_char *) "testsecret", 10) == 0) {

        /* the same request under another secret must fail */

        FUZZ_CHECK(ngx_http_idv_verify_parse(&v2) == 0);
        FUZZ_CHECK(ngx_http_idv_verify_signature(&v2,
                                                 (u_char *) "testsecreT", 10)
                   != 0);
    }

    fuzz_free_all();

    return 0;
}
