
/*
 * libFuzzer target: ngx_http_idv_base64_encode() and the strict
 * ngx_http_idv_base64_decode().
 *
 *   - encode then decode gives the input back, and the encoding has the
 *     length 4 * ceil(n / 3);
 *   - the input as base64 text: when the decoder accepts it, the length
 *     is right, and encoding the result gives the text back (padded:
 *     the decoder accepts unpadded text too) -- one encoding per byte
 *     string, as the decoder promises; it never writes more than
 *     3 * ceil(len / 4) bytes.
 */


#include <stdint.h>

#include "fuzz.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t   elen, dlen, cap, plen;
    u_char  *in, *enc, *dec, *re, *padded;

    in = fuzz_dup(data, size);

    /* round trip from bytes */

    elen = (size + 2) / 3 * 4;
    enc = fuzz_alloc(NULL, elen + 1);

    FUZZ_CHECK(ngx_http_idv_base64_encode(enc, in, size) == elen);

    dec = fuzz_alloc(NULL, size + 1);
    dlen = ngx_http_idv_base64_decode(dec, enc, elen);

    FUZZ_CHECK(dlen == size);
    FUZZ_CHECK(size == 0 || memcmp(dec, data, size) == 0);

    /* the input as text */

    cap = (size + 3) / 4 * 3;
    dec = fuzz_alloc(NULL, cap + 1);
    dlen = ngx_http_idv_base64_decode(dec, in, size);

    if (dlen == (size_t) -1) {
        fuzz_free_all();
        return 0;
    }

    FUZZ_CHECK(dlen <= cap);

    plen = (size + 3) / 4 * 4;
    padded = fuzz_alloc(NULL, plen + 1);
    if (size) {
        memcpy(padded, data, size);
    }
    memset(padded + size, '=', plen - size);

    /* padding, where given, must have been complete */
    FUZZ_CHECK(size % 4 == 0 || memchr(data, '=', size) == NULL);

    FUZZ_CHECK(dlen == plen / 4 * 3
                       - (plen && padded[plen - 1] == '=')
                       - (plen && padded[plen - 2] == '='));

    re = fuzz_alloc(NULL, (dlen + 2) / 3 * 4 + 1);
    elen = ngx_http_idv_base64_encode(re, dec, dlen);

    FUZZ_CHECK(elen == plen && (plen == 0 || memcmp(re, padded, plen) == 0));

    fuzz_free_all();

    return 0;
}
