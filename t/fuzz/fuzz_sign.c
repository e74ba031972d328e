
/*
 * libFuzzer target: the signer, ngx_http_idv_sign(), with every input
 * taken from the fuzzer, and all its outputs re-derived and compared
 * (fuzz_sign_check.h): canonical query, wire query and form body decode
 * back to the parameters, V3 canonical request, string to sign,
 * signature and Authorization, V1 string to sign and signature.
 *
 * Input, fields separated by '\n' (an empty field is an empty string
 * with a NULL pointer, as an empty ngx_str_t often is):
 *
 *     flags        "V1" or "V3" (a '1' anywhere: V1), an 'F': form call
 *     access key id, access key secret, host, action, version,
 *     timestamp, nonce
 *     parameters, one a line: "key\tvalue" in the query, "+key\tvalue"
 *     in the form body (no tab: the whole line is the key); a value
 *     wholly in the base64 alphabet is marked base64, as a checked image
 *     is, and takes that encoder
 */


#include <stdint.h>

#include "fuzz.h"
#include "fuzz_sign_check.h"


#define FUZZ_MAX_PARAMS  64


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                 n, i;
    u_char                *tab;
    const u_char          *p, *end;
    ngx_http_idv_str_t     flags, line, **f;
    ngx_http_idv_sign_t    s;
    ngx_http_idv_param_t  *params, *orig;

    ngx_http_idv_str_t    *fields[] = {
        &s.access_key_id, &s.access_key_secret, &s.host, &s.action,
        &s.version, &s.timestamp, &s.nonce
    };

    p = data;
    end = data + size;

    memset(&s, 0, sizeof(s));

    if (!fuzz_field(&p, end, '\n', &flags)) {
        return 0;
    }

    s.algorithm = NGX_HTTP_IDV_SIGN_V3;

    if (flags.len && memchr(flags.data, '1', flags.len)) {
        s.algorithm = NGX_HTTP_IDV_SIGN_V1;
    }

    s.form = (flags.len && memchr(flags.data, 'F', flags.len)) ? 1 : 0;

    for (f = fields; f < fields + 7; f++) {
        if (!fuzz_field(&p, end, '\n', *f)) {
            (*f)->len = 0;
            (*f)->data = NULL;
        }
    }

    params = fuzz_alloc(NULL, FUZZ_MAX_PARAMS * sizeof(ngx_http_idv_param_t));
    n = 0;

    while (n < FUZZ_MAX_PARAMS && fuzz_field(&p, end, '\n', &line)) {

        if (line.len && line.data[0] == '+') {
            params[n].body = 1;
            line.data++;
            line.len--;

        } else {
            params[n].body = 0;
        }

        params[n].pii = 0;

        tab = line.len ? memchr(line.data, '\t', line.len) : NULL;

        if (tab) {
            params[n].key.data = (tab > line.data) ? line.data : NULL;
            params[n].key.len = tab - line.data;
            params[n].value.len = line.len - params[n].key.len - 1;
            params[n].value.data = params[n].value.len ? tab + 1 : NULL;

        } else {
            params[n].key.data = line.len ? line.data : NULL;
            params[n].key.len = line.len;
            params[n].value.data = NULL;
            params[n].value.len = 0;
        }

        /* a value in the base64 alphabet takes the base64 encoder */

        params[n].base64 = params[n].value.len != 0;

        for (i = 0; i < params[n].value.len; i++) {
            if (memchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789+/=", params[n].value.data[i], 65)
                == NULL)
            {
                params[n].base64 = 0;
                break;
            }
        }

        n++;
    }

    orig = fuzz_alloc(NULL, (n + 1) * sizeof(ngx_http_idv_param_t));
    if (n) {
        memcpy(orig, params, n * sizeof(ngx_http_idv_param_t));
    }

    s.params = params;
    s.nparams = n;
    s.alloc = fuzz_alloc;

    FUZZ_CHECK(ngx_http_idv_sign(&s) == 0);

    /* an empty version is the API version */
    FUZZ_CHECK(s.version.len != 0);

    fuzz_check_signed(&s, orig, (flags.len && memchr(flags.data, 'F',
                                                      flags.len)) != 0);

    /* signing again, the parameters now sorted, gives the same result */

    {
        ngx_http_idv_sign_t  s2;

        s2 = s;
        FUZZ_CHECK(ngx_http_idv_sign(&s2) == 0);
        FUZZ_CHECK(s2.signature.len == s.signature.len
                   && memcmp(s2.signature.data, s.signature.data,
                             s.signature.len) == 0);
    }

    fuzz_free_all();

    return 0;
}
