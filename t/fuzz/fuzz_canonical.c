
/*
 * libFuzzer target: the canonicaliser's building blocks on arbitrary
 * bytes.
 *
 *   - ngx_http_idv_pct_encoded_len() equals what ngx_http_idv_pct_encode()
 *     writes (the two passes of every signer share it), the output has
 *     only unreserved bytes and upper-case %XX, and decodes back to the
 *     input;
 *   - ngx_http_idv_pct_encode_base64() writes what
 *     ngx_http_idv_pct_encode() writes for the same input mapped into the
 *     base64 alphabet and '=' (the values it is given), and no more;
 *   - ngx_http_idv_params_sort() is a stable byte-order sort: the input
 *     split at '\n' into keys (the value remembers the position).
 */


#include <stdint.h>

#include "fuzz.h"


static int
fuzz_cmp(const ngx_http_idv_str_t *a, const ngx_http_idv_str_t *b)
{
    size_t  n;
    int     rc;

    n = a->len < b->len ? a->len : b->len;
    rc = n ? memcmp(a->data, b->data, n) : 0;

    return rc ? rc : (a->len > b->len) - (a->len < b->len);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                 len, i, n, pos;
    long                   dlen;
    u_char                *in, *enc, *dec, *e;
    const u_char          *p, *end;
    ngx_http_idv_str_t     key;
    ngx_http_idv_param_t  *params;

    /* percent-encoding */

    in = fuzz_dup(data, size);

    len = ngx_http_idv_pct_encoded_len(in, size);
    FUZZ_CHECK(len >= size && len <= 3 * size);

    enc = fuzz_alloc(NULL, len + 1);
    e = ngx_http_idv_pct_encode(enc, in, size);
    FUZZ_CHECK((size_t) (e - enc) == len);

    dec = fuzz_alloc(NULL, size + 1);
    dlen = fuzz_pct_decode(enc, len, dec);
    FUZZ_CHECK(dlen == (long) size);
    FUZZ_CHECK(size == 0 || memcmp(dec, data, size) == 0);

    /* the base64 encoder: the input mapped into its alphabet */

    for (i = 0; i < size; i++) {
        in[i] = (u_char) "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789+/="[data[i] % 65];
    }

    len = ngx_http_idv_pct_encoded_len(in, size);

    enc = fuzz_alloc(NULL, len + 1);
    e = ngx_http_idv_pct_encode(enc, in, size);
    FUZZ_CHECK((size_t) (e - enc) == len);

    /* exactly len bytes: ASan sees a write past the output */

    dec = fuzz_alloc(NULL, len);
    e = ngx_http_idv_pct_encode_base64(dec, in, size);
    FUZZ_CHECK((size_t) (e - dec) == len);
    FUZZ_CHECK(len == 0 || memcmp(dec, enc, len) == 0);

    /* the stable sort */

    params = fuzz_alloc(NULL, (size + 1) * sizeof(ngx_http_idv_param_t));
    n = 0;
    p = data;
    end = data + size;

    while (n < 256 && fuzz_field(&p, end, '\n', &key)) {
        memset(&params[n], 0, sizeof(ngx_http_idv_param_t));
        params[n].key = key;
        /* the position, kept in the value's length */
        params[n].value.len = n;
        n++;
    }

    ngx_http_idv_params_sort(params, n);

    for (i = 1; i < n; i++) {
        int  rc = fuzz_cmp(&params[i - 1].key, &params[i].key);

        FUZZ_CHECK(rc < 0 || (rc == 0
                              && params[i - 1].value.len
                                 < params[i].value.len));
    }

    /* a permutation: every position exactly once */

    for (pos = 0; pos < n; pos++) {
        size_t  seen = 0;

        for (i = 0; i < n; i++) {
            seen += (params[i].value.len == pos);
        }

        FUZZ_CHECK(seen == 1);
    }

    fuzz_free_all();

    return 0;
}
