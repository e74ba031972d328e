
/*
 * libFuzzer target: the image checks on base64 text,
 * ngx_http_idv_image_check() (strict base64, 1 MB, JPEG/PNG header and
 * pixel bounds, all read from the text without decoding it whole).
 *
 * Input: one mode byte, then
 *   mode even: the image bytes, which the target base64-encodes;
 *   mode odd:  the base64 text itself.
 *
 * Invariants: a rejection is a 400 with one of the three image codes;
 * text the strict decoder accepts (whole quads) is never called invalid
 * base64; a byte string that does not start like a JPEG or PNG is never
 * accepted; a PNG with an IHDR is judged by the size in it.
 */


#include <stdint.h>

#include "fuzz.h"
#include "ngx_http_idv_request.h"


static unsigned
fuzz_be32(const u_char *p)
{
    return (unsigned) p[0] << 24 | (unsigned) p[1] << 16
           | (unsigned) p[2] << 8 | p[3];
}


static int
fuzz_size_ok(unsigned w, unsigned h)
{
    unsigned  lo, hi;

    lo = w < h ? w : h;
    hi = w < h ? h : w;

    return hi >= NGX_HTTP_IDV_IMAGE_MIN_LONG
           && lo >= NGX_HTTP_IDV_IMAGE_MIN_SHORT
           && hi <= NGX_HTTP_IDV_IMAGE_MAX_LONG
           && lo <= NGX_HTTP_IDV_IMAGE_MAX_SHORT;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                  rc, png, jpeg;
    size_t               len, dlen;
    u_char              *img, *b64, *dec;
    ngx_http_idv_req_t   rq;

    if (size < 1) {
        return 0;
    }

    memset(&rq, 0, sizeof(rq));
    rq.alloc = fuzz_alloc;

    len = size - 1;
    img = fuzz_dup(data + 1, len);

    if (data[0] & 1) {

        /* base64 text as the backend sent it */

        rc = ngx_http_idv_image_check(&rq, "FacePictureBase64", img, len);

        dec = fuzz_alloc(NULL, (len + 3) / 4 * 3 + 1);
        dlen = ngx_http_idv_base64_decode(dec, img, len);

        if (rc != 0 && dlen != (size_t) -1 && len && len % 4 == 0) {
            FUZZ_CHECK(strstr(rq.message, "not valid base64") == NULL);
        }

        if (rc == 0) {
            FUZZ_CHECK(len && len % 4 == 0);
        }

    } else {

        /* image bytes, encoded */

        b64 = fuzz_alloc(NULL, (len + 2) / 3 * 4 + 1);
        dlen = ngx_http_idv_base64_encode(b64, img, len);

        rc = ngx_http_idv_image_check(&rq, "FacePictureBase64", b64, dlen);

        png = len >= 8 && memcmp(img, "\x89PNG\r\n\x1a\n", 8) == 0;
        jpeg = len >= 3 && img[0] == 0xff && img[1] == 0xd8 && img[2] == 0xff;

        if (!png && !jpeg) {
            FUZZ_CHECK(rc != 0);
        }

        if (len == 0) {
            FUZZ_CHECK(rc != 0 && strstr(rq.message, "valid base64"));
        }

        if (png && len >= 24 && memcmp(img + 12, "IHDR", 4) == 0) {
            FUZZ_CHECK((rc == 0)
                       == fuzz_size_ok(fuzz_be32(img + 16),
                                       fuzz_be32(img + 20)));
        }

        if (png && (len < 24 || memcmp(img + 12, "IHDR", 4) != 0)) {
            FUZZ_CHECK(rc != 0);
        }
    }

    if (rc != 0) {
        FUZZ_CHECK(rq.status == 400);
        FUZZ_CHECK(strcmp(rq.code, "InvalidParameter") == 0
                   || strcmp(rq.code, "ToolargeImage") == 0
                   || strcmp(rq.code, "UnqualifiedPhoto") == 0);
        FUZZ_CHECK(strstr(rq.message, "FacePictureBase64") != NULL);
    }

    fuzz_free_all();

    return 0;
}
