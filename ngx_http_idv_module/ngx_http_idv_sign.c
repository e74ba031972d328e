/*
 * ngx_http_idv_module: canonical encoding and request signing.
 *
 * Pure core: no nginx headers, memory only from the caller's allocator.
 * The digest and MAC implementations are fetched once per process and
 * their contexts reused; a worker is single-threaded, so one context per
 * algorithm is enough.
 */


#include <string.h>

#include <openssl/opensslv.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/core_names.h>

#include "ngx_http_idv_core.h"


#if (OPENSSL_VERSION_NUMBER < 0x30000000L)
#error ngx_http_idv_module needs OpenSSL 3.0 or later (EVP_MAC)
#endif


/*
 * a V3 form body is hashed as it is written: input bytes encoded before
 * the digest reads what they became (with its escapes, a little more:
 * well within a 32 KB L1 data cache)
 */

#define NGX_HTTP_IDV_SHA256_CHUNK  8192


static void ngx_http_idv_pct_encode2(u_char **enc, u_char **enc2,
    const u_char *src, size_t len);
static int ngx_http_idv_key_cmp(const ngx_http_idv_str_t *a,
    const ngx_http_idv_str_t *b);
static int ngx_http_idv_sign_v1(ngx_http_idv_sign_t *s);
static int ngx_http_idv_sign_v3(ngx_http_idv_sign_t *s);
static int ngx_http_idv_sha256_begin(void);
static int ngx_http_idv_sha256_add(const u_char *data, size_t len);
static int ngx_http_idv_sha256_end(u_char *hex64);
static int ngx_http_idv_hmac(EVP_MAC_CTX *ctx, const u_char *key,
    size_t key_len, const u_char *data, size_t len, u_char *out,
    size_t size);


/*
 * The unreserved characters of RFC 3986, the only bytes both signature
 * versions leave unescaped: A-Z a-z 0-9 - _ . ~
 * One bit per byte value; the length pass and the write pass both read
 * this table, so they cannot disagree.
 */

static const uint32_t  ngx_http_idv_unreserved[] = {

                /* ???? ???? ???? ???? ???? ???? ???? ???? */
    0x00000000, /* 0000 0000 0000 0000 0000 0000 0000 0000 */

                /* ?>=< ;:98 7654 3210 /.-, +*)( '&%$ #"!  */
    0x03ff6000, /* 0000 0011 1111 1111 0110 0000 0000 0000 */

                /* _^]\ [ZYX WVUT SRQP ONML KJIH GFED CBA@ */
    0x87fffffe, /* 1000 0111 1111 1111 1111 1111 1111 1110 */

                /*  ~}| {zyx wvut srqp onml kjih gfed cba` */
    0x47fffffe, /* 0100 0111 1111 1111 1111 1111 1111 1110 */

    0x00000000,
    0x00000000,
    0x00000000,
    0x00000000
};


#define ngx_http_idv_is_unreserved(c)                                        \
    (ngx_http_idv_unreserved[(c) >> 5] & (1U << ((c) & 0x1f)))


static const u_char  ngx_http_idv_hex_upper[] = "0123456789ABCDEF";

/* an escape's two digits: byte c's at [2 * c], one load and store */

static const u_char  ngx_http_idv_hex_pairs[] =
    "000102030405060708090A0B0C0D0E0F"
    "101112131415161718191A1B1C1D1E1F"
    "202122232425262728292A2B2C2D2E2F"
    "303132333435363738393A3B3C3D3E3F"
    "404142434445464748494A4B4C4D4E4F"
    "505152535455565758595A5B5C5D5E5F"
    "606162636465666768696A6B6C6D6E6F"
    "707172737475767778797A7B7C7D7E7F"
    "808182838485868788898A8B8C8D8E8F"
    "909192939495969798999A9B9C9D9E9F"
    "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"
    "B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF"
    "C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF"
    "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
    "E0E1E2E3E4E5E6E7E8E9EAEBECEDEEEF"
    "F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF";

static const u_char  ngx_http_idv_hex_lower[] = "0123456789abcdef";

static const u_char  ngx_http_idv_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/*
 * V1 system parameters, sorted by key; ngx_http_idv_sign_v1() fills in
 * the empty values from the request
 */

static const ngx_http_idv_param_t  ngx_http_idv_v1_system[] = {
    { ngx_http_idv_string("AccessKeyId"), { 0, NULL }, 0, 0, 0 },
    { ngx_http_idv_string("Action"), { 0, NULL }, 0, 0, 0 },
    { ngx_http_idv_string("Format"), ngx_http_idv_string("json"), 0, 0, 0 },
    { ngx_http_idv_string("SecurityToken"), { 0, NULL }, 0, 0, 0 },
    { ngx_http_idv_string("SignatureMethod"),
      ngx_http_idv_string("HMAC-SHA1"), 0, 0, 0 },
    { ngx_http_idv_string("SignatureNonce"), { 0, NULL }, 0, 0, 0 },
    { ngx_http_idv_string("SignatureVersion"),
      ngx_http_idv_string("1.0"), 0, 0, 0 },
    { ngx_http_idv_string("Timestamp"), { 0, NULL }, 0, 0, 0 },
    { ngx_http_idv_string("Version"), { 0, NULL }, 0, 0, 0 }
};

#define NGX_HTTP_IDV_V1_NSYS                                                 \
    (sizeof(ngx_http_idv_v1_system) / sizeof(ngx_http_idv_v1_system[0]))


#define NGX_HTTP_IDV_V3_ALGORITHM   "ACS3-HMAC-SHA256"
#define NGX_HTTP_IDV_FORM_TYPE      "application/x-www-form-urlencoded"

/*
 * V3 signed headers, sorted; without a form body skip "content-type;";
 * temporary credentials sign their token too
 */
static const u_char  ngx_http_idv_v3_signed[] =
    "content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;"
    "x-acs-signature-nonce;x-acs-version";
static const u_char  ngx_http_idv_v3_signed_token[] =
    "content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;"
    "x-acs-security-token;x-acs-signature-nonce;x-acs-version";

#define NGX_HTTP_IDV_V3_CT_SKIP     (sizeof("content-type;") - 1)


static int            ngx_http_idv_crypto_ready;
static EVP_MD        *ngx_http_idv_sha256_md;
static EVP_MD_CTX    *ngx_http_idv_sha256_ctx;
static EVP_MAC       *ngx_http_idv_hmac_mac;
static EVP_MAC_CTX   *ngx_http_idv_hmac_sha256_ctx;
static EVP_MAC_CTX   *ngx_http_idv_hmac_sha1_ctx;


/*
 * The last key of each MAC context: signing with the same secret again
 * (the usual case) restarts the context from its keyed state instead of
 * hashing the key again.
 */

typedef struct {
    EVP_MAC_CTX   *ctx;
    size_t         len;
    u_char         key[128];
} ngx_http_idv_hmac_key_t;

static ngx_http_idv_hmac_key_t  ngx_http_idv_hmac_keys[2];


static inline u_char *
ngx_http_idv_cpymem(u_char *dst, const void *src, size_t n)
{
    if (n) {
        memcpy(dst, src, n);
    }

    return dst + n;
}


#define ngx_http_idv_cpylit(dst, lit)                                        \
    ngx_http_idv_cpymem(dst, lit, sizeof(lit) - 1)


static inline size_t
ngx_http_idv_pct_reserved(const u_char *src, size_t len)
{
    size_t  n;

    n = 0;

    while (len--) {
        n += !ngx_http_idv_is_unreserved(*src);
        src++;
    }

    return n;
}


size_t
ngx_http_idv_pct_encoded_len(const u_char *src, size_t len)
{
    return len + 2 * ngx_http_idv_pct_reserved(src, len);
}


/*
 * 16 bytes at a time: a block is stored whole; each reserved byte in it,
 * from the first, is escaped where it lands and, when another follows in
 * the block, the 16 input bytes after it are stored again behind the
 * escape (the next escape overwrites what they wrote past it; the output
 * of 16 input bytes is at least 16 bytes, so nothing is written past the
 * end of the value's output).  The block is classified once however many
 * reserved bytes it has; the next block starts after its last one (its
 * store writes what follows, once).  What is left when fewer than 16
 * input bytes follow goes to the byte loop.
 *
 * A value checked as strict base64 (an image: ngx_http_idv_image_check())
 * has no reserved bytes but '+', '/' and '=': its blocks are classified
 * by those three alone, a third of the work of the full class.  The byte
 * loop is the same for both.
 */

/* each caller gets its own copy, base64 a constant in it: -O does not */

#if (defined __GNUC__)
#define ngx_http_idv_specialized  inline __attribute__((always_inline))
#else
#define ngx_http_idv_specialized  inline
#endif

static ngx_http_idv_specialized u_char *
ngx_http_idv_pct_encode_as(u_char *dst, const u_char *src, size_t len,
    int base64)
{
    u_char   c;
#if (defined __SSE2__)
    int      mask;
    size_t   n, o;
    __m128i  v, m;

    while (len >= 16) {
        v = _mm_loadu_si128((const __m128i *) src);

        _mm_storeu_si128((__m128i *) dst, v);

        if (base64) {
            m = _mm_or_si128(_mm_or_si128(ngx_http_idv_sse2_is(v, '+'),
                                          ngx_http_idv_sse2_is(v, '/')),
                             ngx_http_idv_sse2_is(v, '='));

            mask = _mm_movemask_epi8(m);

        } else {
            /* unreserved: A-Z a-z 0-9 - _ . ~ ('-', '.' are 0x2d, 0x2e) */

            m = _mm_or_si128(_mm_or_si128(ngx_http_idv_sse2_alpha(v),
                                          ngx_http_idv_sse2_in(v, '0', '9')),
                             _mm_or_si128(ngx_http_idv_sse2_in(v, '-', '.'),
                                          _mm_or_si128(
                                              ngx_http_idv_sse2_is(v, '_'),
                                              ngx_http_idv_sse2_is(v, '~'))));

            mask = ~_mm_movemask_epi8(m) & 0xffff;
        }

        if (mask == 0) {
            src += 16;
            dst += 16;
            len -= 16;
            continue;
        }

        /* o: the output bytes the escapes of this block added so far */

        o = 0;

        for ( ;; ) {
            n = __builtin_ctz((unsigned) mask);
            mask &= mask - 1;

            c = src[n];

            dst[o + n] = '%';
            memcpy(dst + o + n + 1, &ngx_http_idv_hex_pairs[2 * c], 2);

            o += 2;

            if (mask == 0 || len - n - 1 < 16) {
                break;
            }

            _mm_storeu_si128((__m128i *) (dst + o + n + 1),
                             _mm_loadu_si128((const __m128i *)
                                             (src + n + 1)));
        }

        src += n + 1;
        dst += o + n + 1;
        len -= n + 1;
    }
#endif

    while (len--) {
        c = *src++;

        if (ngx_http_idv_is_unreserved(c)) {
            *dst++ = c;
            continue;
        }

        *dst++ = '%';
        *dst++ = ngx_http_idv_hex_upper[c >> 4];
        *dst++ = ngx_http_idv_hex_upper[c & 0xf];
    }

    return dst;
}


u_char *
ngx_http_idv_pct_encode(u_char *dst, const u_char *src, size_t len)
{
    return ngx_http_idv_pct_encode_as(dst, src, len, 0);
}


/* a value checked as strict base64, byte for byte what the above writes */

u_char *
ngx_http_idv_pct_encode_base64(u_char *dst, const u_char *src, size_t len)
{
    return ngx_http_idv_pct_encode_as(dst, src, len, 1);
}


static inline int
ngx_http_idv_hex_value(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


size_t
ngx_http_idv_pct_decode(u_char *dst, const u_char *src, size_t len)
{
    int            h, l;
    u_char        *d;
    const u_char  *end;

    d = dst;
    end = src + len;

    while (src < end) {

        if (*src == '+') {
            *d++ = ' ';
            src++;
            continue;
        }

        if (*src != '%') {
            *d++ = *src++;
            continue;
        }

        if (end - src < 3) {
            return (size_t) -1;
        }

        h = ngx_http_idv_hex_value(src[1]);
        l = ngx_http_idv_hex_value(src[2]);

        if (h < 0 || l < 0) {
            return (size_t) -1;
        }

        *d++ = (u_char) (h << 4 | l);
        src += 3;
    }

    return d - dst;
}


/*
 * V1 signs enc(canonical query): write enc(src) and enc(enc(src)) in one
 * pass instead of encoding the canonical query a second time.  In
 * enc(src) only the '%' of an escape is itself reserved, so
 * enc(enc(src)) escapes byte c as "%25XX".
 */

static void
ngx_http_idv_pct_encode2(u_char **enc, u_char **enc2, const u_char *src,
    size_t len)
{
    u_char  c, h, l, *p, *q;

    p = *enc;
    q = *enc2;

    while (len--) {
        c = *src++;

        if (ngx_http_idv_is_unreserved(c)) {
            *p++ = c;
            *q++ = c;
            continue;
        }

        h = ngx_http_idv_hex_upper[c >> 4];
        l = ngx_http_idv_hex_upper[c & 0xf];

        *p++ = '%';
        *p++ = h;
        *p++ = l;

        *q++ = '%';
        *q++ = '2';
        *q++ = '5';
        *q++ = h;
        *q++ = l;
    }

    *enc = p;
    *enc2 = q;
}


static int
ngx_http_idv_key_cmp(const ngx_http_idv_str_t *a, const ngx_http_idv_str_t *b)
{
    int     rc;
    size_t  n;

    n = a->len < b->len ? a->len : b->len;

    if (n) {
        rc = memcmp(a->data, b->data, n);
        if (rc != 0) {
            return rc;
        }
    }

    return (a->len > b->len) - (a->len < b->len);
}


/* insertion sort: stable, and an API call has a few dozen parameters */

void
ngx_http_idv_params_sort(ngx_http_idv_param_t *params, size_t n)
{
    size_t                i, j;
    ngx_http_idv_param_t  t;

    for (i = 1; i < n; i++) {

        if (ngx_http_idv_key_cmp(&params[i - 1].key, &params[i].key) <= 0) {
            continue;
        }

        t = params[i];
        j = i;

        do {
            params[j] = params[j - 1];
            j--;
        } while (j > 0
                 && ngx_http_idv_key_cmp(&params[j - 1].key, &t.key) > 0);

        params[j] = t;
    }
}


int
ngx_http_idv_sign(ngx_http_idv_sign_t *s)
{
    if (!ngx_http_idv_crypto_ready && ngx_http_idv_sign_init() != 0) {
        return -1;
    }

    if (s->version.len == 0) {
        s->version.len = sizeof(NGX_HTTP_IDV_API_VERSION) - 1;
        s->version.data = (u_char *) NGX_HTTP_IDV_API_VERSION;
    }

    ngx_http_idv_params_sort(s->params, s->nparams);

    s->canonical_request.len = 0;
    s->canonical_request.data = NULL;
    s->authorization.len = 0;
    s->authorization.data = NULL;

    switch (s->algorithm) {

    case NGX_HTTP_IDV_SIGN_V3:
        return ngx_http_idv_sign_v3(s);

    case NGX_HTTP_IDV_SIGN_V1:
        return ngx_http_idv_sign_v1(s);

    default:
        return -1;
    }
}


/*
 * V1 (HMAC-SHA1, SignatureVersion 1.0).  One allocation holds, in order:
 * the canonical query, the string to sign, the wire query (every signed
 * parameter but the body ones, then Signature), the form body, the HMAC
 * key and the Base64 signature.  The API parameters are sorted already;
 * the system parameters below are listed sorted, and the write pass
 * merges the two lists.
 */

static int
ngx_http_idv_sign_v1(ngx_http_idv_sign_t *s)
{
    u_char                *p, *cq, *sts, *q, *b, *key, *sig, *seg;
    size_t                 i, j, n, kr, vr, len, cq_len, sts_len, q_len,
                           b_len, size, nsys;
    ngx_http_idv_param_t  *prm, sys[NGX_HTTP_IDV_V1_NSYS];
    u_char                 mac[20];

    memcpy(sys, ngx_http_idv_v1_system, sizeof(sys));

    sys[0].value = s->access_key_id;
    sys[1].value = s->action;
    sys[3].value = s->security_token;
    sys[5].value = s->nonce;
    sys[7].value = s->timestamp;
    sys[8].value = s->version;

    nsys = NGX_HTTP_IDV_V1_NSYS;

    if (s->security_token.len == 0) {
        /* a long-lived key: no SecurityToken parameter at all */
        memmove(&sys[3], &sys[4], (nsys - 4) * sizeof(ngx_http_idv_param_t));
        nsys--;
    }

    /* length pass: every length below includes one trailing separator */

    cq_len = 0;
    sts_len = 0;
    q_len = 0;
    b_len = 0;

    for (i = 0; i < s->nparams + nsys; i++) {
        prm = (i < s->nparams) ? &s->params[i] : &sys[i - s->nparams];

        kr = ngx_http_idv_pct_reserved(prm->key.data, prm->key.len);
        vr = ngx_http_idv_pct_reserved(prm->value.data, prm->value.len);

        len = prm->key.len + 2 * kr + 1 + prm->value.len + 2 * vr + 1;

        cq_len += len;
        sts_len += prm->key.len + 4 * kr + 3
                   + prm->value.len + 4 * vr + 3;

        if (prm->body) {
            b_len += len;

        } else {
            q_len += len;
        }
    }

    cq_len -= 1;
    sts_len += sizeof("POST&%2F&") - 1 - 3;

    if (b_len) {
        b_len -= 1;
        s->form = 1;
    }

    /* the Base64 signature is 28 bytes, at most 3 * 28 when encoded */
    q_len += sizeof("Signature=") - 1 + 3 * 28;

    size = cq_len + sts_len + q_len + b_len
           + s->access_key_secret.len + 1 + 28;

    p = s->alloc(s->alloc_data, size);
    if (p == NULL) {
        return -1;
    }

    s->canonical_query.data = p;
    s->string_to_sign.data = p + cq_len;
    s->query.data = s->string_to_sign.data + sts_len;
    s->body.data = s->query.data + q_len;
    key = s->body.data + b_len;
    sig = key + s->access_key_secret.len + 1;

    cq = s->canonical_query.data;
    sts = ngx_http_idv_cpylit(s->string_to_sign.data, "POST&%2F&");
    q = s->query.data;
    b = s->body.data;

    i = 0;
    j = 0;
    n = s->nparams;

    while (i < n || j < nsys) {

        if (j == nsys
            || (i < n
                && ngx_http_idv_key_cmp(&s->params[i].key, &sys[j].key) <= 0))
        {
            prm = &s->params[i++];

        } else {
            prm = &sys[j++];
        }

        if (cq != s->canonical_query.data) {
            *cq++ = '&';
            sts = ngx_http_idv_cpylit(sts, "%26");
        }

        seg = cq;

        ngx_http_idv_pct_encode2(&cq, &sts, prm->key.data, prm->key.len);
        *cq++ = '=';
        sts = ngx_http_idv_cpylit(sts, "%3D");
        ngx_http_idv_pct_encode2(&cq, &sts, prm->value.data, prm->value.len);

        if (prm->body) {
            if (b != s->body.data) {
                *b++ = '&';
            }

            b = ngx_http_idv_cpymem(b, seg, cq - seg);

        } else {
            q = ngx_http_idv_cpymem(q, seg, cq - seg);
            *q++ = '&';
        }
    }

    s->canonical_query.len = cq - s->canonical_query.data;
    s->string_to_sign.len = sts - s->string_to_sign.data;
    s->body.len = b - s->body.data;

    p = ngx_http_idv_cpymem(key, s->access_key_secret.data,
                            s->access_key_secret.len);
    *p = '&';

    if (ngx_http_idv_hmac(ngx_http_idv_hmac_sha1_ctx, key,
                          s->access_key_secret.len + 1,
                          s->string_to_sign.data, s->string_to_sign.len,
                          mac, sizeof(mac))
        != 0)
    {
        OPENSSL_cleanse(key, s->access_key_secret.len + 1);
        return -1;
    }

    OPENSSL_cleanse(key, s->access_key_secret.len + 1);

    s->signature.data = sig;
    s->signature.len = ngx_http_idv_base64_encode(sig, mac, sizeof(mac));

    q = ngx_http_idv_cpylit(q, "Signature=");
    q = ngx_http_idv_pct_encode(q, s->signature.data, s->signature.len);

    s->query.len = q - s->query.data;

    return 0;
}


/*
 * V3 (ACS3-HMAC-SHA256) with the minimal header set.  One allocation
 * holds the form body, the canonical request, the string to sign and the
 * Authorization value.  The canonical query is also the wire query and
 * both point into the canonical request; the signature points into the
 * tail of the Authorization value.
 */

static int
ngx_http_idv_sign_v3(ngx_http_idv_sign_t *s)
{
    u_char                *p, *b, *hashed, *sts, *auth;
    size_t                 i, len, left, cq_len, b_len, ct_len, cr_len,
                           sts_len, auth_len, sh_len, tk_len;
    const u_char          *sh, *v;
    ngx_http_idv_param_t  *prm;
    u_char                 mac[32];

    cq_len = 0;
    b_len = 0;

    for (i = 0; i < s->nparams; i++) {
        prm = &s->params[i];

        /*
         * an upper bound only sizes the one allocation (every pointer
         * comes from where the writing ended): no pass over 1 MB images
         * just to count their escapes
         */

        len = 3 * prm->key.len + 1 + 3 * prm->value.len + 1;

        if (prm->body) {
            b_len += len;

        } else {
            cq_len += len;
        }
    }

    cq_len -= (cq_len ? 1 : 0);

    /* body parameters mean a form body: its content-type must be signed */

    if (b_len) {
        b_len -= 1;
        s->form = 1;
    }

    if (s->security_token.len) {
        sh = ngx_http_idv_v3_signed_token;
        sh_len = sizeof(ngx_http_idv_v3_signed_token) - 1;
        tk_len = sizeof("x-acs-security-token:\n") - 1
                 + s->security_token.len;

    } else {
        sh = ngx_http_idv_v3_signed;
        sh_len = sizeof(ngx_http_idv_v3_signed) - 1;
        tk_len = 0;
    }

    ct_len = sizeof("content-type:" NGX_HTTP_IDV_FORM_TYPE "\n") - 1;

    if (!s->form) {
        sh += NGX_HTTP_IDV_V3_CT_SKIP;
        sh_len -= NGX_HTTP_IDV_V3_CT_SKIP;
        ct_len = 0;
    }

    cr_len = sizeof("POST\n/\n") - 1 + cq_len + 1 + ct_len
             + sizeof("host:\n") - 1 + s->host.len
             + sizeof("x-acs-action:\n") - 1 + s->action.len
             + sizeof("x-acs-content-sha256:\n") - 1 + 64
             + sizeof("x-acs-date:\n") - 1 + s->timestamp.len + tk_len
             + sizeof("x-acs-signature-nonce:\n") - 1 + s->nonce.len
             + sizeof("x-acs-version:\n") - 1 + s->version.len
             + 1 + sh_len + 1 + 64;

    sts_len = sizeof(NGX_HTTP_IDV_V3_ALGORITHM "\n") - 1 + 64;

    auth_len = sizeof(NGX_HTTP_IDV_V3_ALGORITHM " Credential=") - 1
               + s->access_key_id.len
               + sizeof(",SignedHeaders=") - 1 + sh_len
               + sizeof(",Signature=") - 1 + 64;

    p = s->alloc(s->alloc_data, b_len + cr_len + sts_len + auth_len);
    if (p == NULL) {
        return -1;
    }

    /*
     * The body first: its hash is a header and the payload hash.  It is
     * hashed as it is written, a chunk at a time, while the chunk is in
     * the cache: not in a second pass over a body of megabytes.
     */

    s->body.data = p;
    b = p;
    hashed = p;

    if (b_len && ngx_http_idv_sha256_begin() != 0) {
        return -1;
    }

    for (i = 0; i < s->nparams; i++) {
        prm = &s->params[i];

        if (!prm->body) {
            continue;
        }

        if (b != s->body.data) {
            *b++ = '&';
        }

        b = ngx_http_idv_pct_encode(b, prm->key.data, prm->key.len);
        *b++ = '=';

        v = prm->value.data;
        left = prm->value.len;

        while (left) {
            len = left < NGX_HTTP_IDV_SHA256_CHUNK
                  ? left : NGX_HTTP_IDV_SHA256_CHUNK;

            b = prm->base64 ? ngx_http_idv_pct_encode_base64(b, v, len)
                            : ngx_http_idv_pct_encode(b, v, len);
            v += len;
            left -= len;

            if ((size_t) (b - hashed) >= NGX_HTTP_IDV_SHA256_CHUNK) {
                if (ngx_http_idv_sha256_add(hashed, b - hashed) != 0) {
                    return -1;
                }

                hashed = b;
            }
        }
    }

    s->body.len = b - s->body.data;

    if (b_len == 0) {
        /* SHA-256 of the empty body (every Initialize without images) */
        memcpy(s->content_sha256, "e3b0c44298fc1c149afbf4c8996fb924"
                                  "27ae41e4649b934ca495991b7852b855", 64);

    } else if (ngx_http_idv_sha256_add(hashed, b - hashed) != 0
               || ngx_http_idv_sha256_end(s->content_sha256) != 0)
    {
        return -1;
    }

    s->canonical_request.data = b;
    p = ngx_http_idv_cpylit(b, "POST\n/\n");

    s->canonical_query.data = p;

    for (i = 0; i < s->nparams; i++) {
        prm = &s->params[i];

        if (prm->body) {
            continue;
        }

        if (p != s->canonical_query.data) {
            *p++ = '&';
        }

        p = ngx_http_idv_pct_encode(p, prm->key.data, prm->key.len);
        *p++ = '=';
        p = ngx_http_idv_pct_encode(p, prm->value.data, prm->value.len);
    }

    s->canonical_query.len = p - s->canonical_query.data;
    s->query = s->canonical_query;

    *p++ = '\n';

    if (s->form) {
        p = ngx_http_idv_cpylit(p, "content-type:");
        p = ngx_http_idv_cpylit(p, NGX_HTTP_IDV_FORM_TYPE "\n");
    }

    p = ngx_http_idv_cpylit(p, "host:");
    p = ngx_http_idv_cpymem(p, s->host.data, s->host.len);
    p = ngx_http_idv_cpylit(p, "\nx-acs-action:");
    p = ngx_http_idv_cpymem(p, s->action.data, s->action.len);
    p = ngx_http_idv_cpylit(p, "\nx-acs-content-sha256:");
    p = ngx_http_idv_cpymem(p, s->content_sha256, 64);
    p = ngx_http_idv_cpylit(p, "\nx-acs-date:");
    p = ngx_http_idv_cpymem(p, s->timestamp.data, s->timestamp.len);

    if (tk_len) {
        p = ngx_http_idv_cpylit(p, "\nx-acs-security-token:");
        p = ngx_http_idv_cpymem(p, s->security_token.data,
                                s->security_token.len);
    }

    p = ngx_http_idv_cpylit(p, "\nx-acs-signature-nonce:");
    p = ngx_http_idv_cpymem(p, s->nonce.data, s->nonce.len);
    p = ngx_http_idv_cpylit(p, "\nx-acs-version:");
    p = ngx_http_idv_cpymem(p, s->version.data, s->version.len);
    p = ngx_http_idv_cpylit(p, "\n\n");
    p = ngx_http_idv_cpymem(p, sh, sh_len);
    *p++ = '\n';
    p = ngx_http_idv_cpymem(p, s->content_sha256, 64);

    s->canonical_request.len = p - s->canonical_request.data;

    sts = p;
    s->string_to_sign.data = sts;
    s->string_to_sign.len = sts_len;

    p = ngx_http_idv_cpylit(sts, NGX_HTTP_IDV_V3_ALGORITHM "\n");

    if (ngx_http_idv_sha256_hex(s->canonical_request.data,
                                s->canonical_request.len, p)
        != 0)
    {
        return -1;
    }

    if (ngx_http_idv_hmac(ngx_http_idv_hmac_sha256_ctx,
                          s->access_key_secret.data,
                          s->access_key_secret.len,
                          sts, sts_len, mac, sizeof(mac))
        != 0)
    {
        return -1;
    }

    auth = sts + sts_len;
    s->authorization.data = auth;

    p = ngx_http_idv_cpylit(auth, NGX_HTTP_IDV_V3_ALGORITHM " Credential=");
    p = ngx_http_idv_cpymem(p, s->access_key_id.data, s->access_key_id.len);
    p = ngx_http_idv_cpylit(p, ",SignedHeaders=");
    p = ngx_http_idv_cpymem(p, sh, sh_len);
    p = ngx_http_idv_cpylit(p, ",Signature=");

    s->signature.data = p;
    s->signature.len = 64;

    p = ngx_http_idv_hex(p, mac, sizeof(mac));

    s->authorization.len = p - auth;

    return 0;
}


int
ngx_http_idv_sign_init(void)
{
    OSSL_PARAM  params[2];

    if (ngx_http_idv_crypto_ready) {
        return 0;
    }

    ngx_http_idv_sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (ngx_http_idv_sha256_md == NULL) {
        goto failed;
    }

    ngx_http_idv_sha256_ctx = EVP_MD_CTX_new();
    if (ngx_http_idv_sha256_ctx == NULL) {
        goto failed;
    }

    ngx_http_idv_hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (ngx_http_idv_hmac_mac == NULL) {
        goto failed;
    }

    /*
     * the digest is bound to each MAC context here, once: EVP_MAC_init()
     * with NULL params keeps it, so a request only sets the key
     */

    ngx_http_idv_hmac_sha256_ctx = EVP_MAC_CTX_new(ngx_http_idv_hmac_mac);
    if (ngx_http_idv_hmac_sha256_ctx == NULL) {
        goto failed;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_CTX_set_params(ngx_http_idv_hmac_sha256_ctx, params) != 1) {
        goto failed;
    }

    ngx_http_idv_hmac_sha1_ctx = EVP_MAC_CTX_new(ngx_http_idv_hmac_mac);
    if (ngx_http_idv_hmac_sha1_ctx == NULL) {
        goto failed;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA1", 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_CTX_set_params(ngx_http_idv_hmac_sha1_ctx, params) != 1) {
        goto failed;
    }

    ngx_http_idv_crypto_ready = 1;

    return 0;

failed:

    ngx_http_idv_sign_cleanup();

    return -1;
}


void
ngx_http_idv_sign_cleanup(void)
{
    /* the remembered keys belong to the contexts freed here */
    OPENSSL_cleanse(ngx_http_idv_hmac_keys, sizeof(ngx_http_idv_hmac_keys));

    EVP_MAC_CTX_free(ngx_http_idv_hmac_sha1_ctx);
    EVP_MAC_CTX_free(ngx_http_idv_hmac_sha256_ctx);
    EVP_MAC_free(ngx_http_idv_hmac_mac);
    EVP_MD_CTX_free(ngx_http_idv_sha256_ctx);
    EVP_MD_free(ngx_http_idv_sha256_md);

    ngx_http_idv_hmac_sha1_ctx = NULL;
    ngx_http_idv_hmac_sha256_ctx = NULL;
    ngx_http_idv_hmac_mac = NULL;
    ngx_http_idv_sha256_ctx = NULL;
    ngx_http_idv_sha256_md = NULL;

    ngx_http_idv_crypto_ready = 0;
}


int
ngx_http_idv_sha256_hex(const u_char *data, size_t len, u_char *hex64)
{
    if (ngx_http_idv_sha256_begin() != 0
        || ngx_http_idv_sha256_add(data, len) != 0
        || ngx_http_idv_sha256_end(hex64) != 0)
    {
        return -1;
    }

    return 0;
}


/* one SHA-256 at a time, fed in pieces: the body as it is written */

static int
ngx_http_idv_sha256_begin(void)
{
    if (!ngx_http_idv_crypto_ready && ngx_http_idv_sign_init() != 0) {
        return -1;
    }

    if (EVP_DigestInit_ex2(ngx_http_idv_sha256_ctx, ngx_http_idv_sha256_md,
                           NULL)
        != 1)
    {
        return -1;
    }

    return 0;
}


static int
ngx_http_idv_sha256_add(const u_char *data, size_t len)
{
    if (len && EVP_DigestUpdate(ngx_http_idv_sha256_ctx, data, len) != 1) {
        return -1;
    }

    return 0;
}


static int
ngx_http_idv_sha256_end(u_char *hex64)
{
    u_char        md[32];
    unsigned int  n;

    if (EVP_DigestFinal_ex(ngx_http_idv_sha256_ctx, md, &n) != 1
        || n != sizeof(md))
    {
        return -1;
    }

    ngx_http_idv_hex(hex64, md, sizeof(md));

    return 0;
}


static int
ngx_http_idv_hmac(EVP_MAC_CTX *ctx, const u_char *key, size_t key_len,
    const u_char *data, size_t len, u_char *out, size_t size)
{
    size_t                    n;
    ngx_http_idv_hmac_key_t  *k;

    /* a NULL key would silently reuse the previous call's key */
    if (key == NULL) {
        key = (const u_char *) "";
        key_len = 0;
    }

    k = &ngx_http_idv_hmac_keys[ctx == ngx_http_idv_hmac_sha1_ctx];

    if (k->ctx == ctx && k->len == key_len && key_len != 0
        && CRYPTO_memcmp(k->key, key, key_len) == 0)
    {
        key = NULL;
        key_len = 0;

    } else if (key_len != 0 && key_len <= sizeof(k->key)) {
        k->ctx = ctx;
        k->len = key_len;
        memcpy(k->key, key, key_len);

    } else {
        k->ctx = NULL;
    }

    if (EVP_MAC_init(ctx, key, key_len, NULL) != 1
        || EVP_MAC_update(ctx, data, len) != 1
        || EVP_MAC_final(ctx, out, &n, size) != 1
        || n != size)
    {
        return -1;
    }

    return 0;
}


int
ngx_http_idv_hmac_sha256(const u_char *key, size_t key_len,
    const u_char *data, size_t len, u_char *out32)
{
    if (!ngx_http_idv_crypto_ready && ngx_http_idv_sign_init() != 0) {
        return -1;
    }

    return ngx_http_idv_hmac(ngx_http_idv_hmac_sha256_ctx, key, key_len,
                             data, len, out32, 32);
}


int
ngx_http_idv_hmac_sha1(const u_char *key, size_t key_len,
    const u_char *data, size_t len, u_char *out20)
{
    if (!ngx_http_idv_crypto_ready && ngx_http_idv_sign_init() != 0) {
        return -1;
    }

    return ngx_http_idv_hmac(ngx_http_idv_hmac_sha1_ctx, key, key_len,
                             data, len, out20, 20);
}


u_char *
ngx_http_idv_hex(u_char *dst, const u_char *src, size_t len)
{
    while (len--) {
        *dst++ = ngx_http_idv_hex_lower[*src >> 4];
        *dst++ = ngx_http_idv_hex_lower[*src++ & 0xf];
    }

    return dst;
}


size_t
ngx_http_idv_base64_encode(u_char *dst, const u_char *src, size_t len)
{
    u_char  *d;

    d = dst;

    while (len > 2) {
        *d++ = ngx_http_idv_b64[src[0] >> 2];
        *d++ = ngx_http_idv_b64[((src[0] & 0x03) << 4) | (src[1] >> 4)];
        *d++ = ngx_http_idv_b64[((src[1] & 0x0f) << 2) | (src[2] >> 6)];
        *d++ = ngx_http_idv_b64[src[2] & 0x3f];

        src += 3;
        len -= 3;
    }

    if (len) {
        *d++ = ngx_http_idv_b64[src[0] >> 2];

        if (len == 1) {
            *d++ = ngx_http_idv_b64[(src[0] & 0x03) << 4];
            *d++ = '=';

        } else {
            *d++ = ngx_http_idv_b64[((src[0] & 0x03) << 4) | (src[1] >> 4)];
            *d++ = ngx_http_idv_b64[(src[1] & 0x0f) << 2];
        }

        *d++ = '=';
    }

    return d - dst;
}


static inline int
ngx_http_idv_base64_value(u_char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '+') {
        return 62;
    }

    if (c == '/') {
        return 63;
    }

    return -1;
}


/*
 * Strict: the standard alphabet only, padding either complete or absent,
 * and the unused low bits of the last symbol zero, so that every byte
 * string has exactly one accepted encoding (two, counting padding).
 */

size_t
ngx_http_idv_base64_decode(u_char *dst, const u_char *src, size_t len)
{
    int      v[4];
    size_t   i, k;
    u_char  *d;

    if (len >= 4 && len % 4 == 0 && src[len - 1] == '=') {
        len -= (src[len - 2] == '=') ? 2 : 1;
    }

    if (len % 4 == 1) {
        return (size_t) -1;
    }

    d = dst;

    for (i = 0; i < len; i += 4) {

        for (k = 0; k < 4 && i + k < len; k++) {
            v[k] = ngx_http_idv_base64_value(src[i + k]);
            if (v[k] < 0) {
                return (size_t) -1;
            }
        }

        *d++ = (u_char) (v[0] << 2 | v[1] >> 4);

        if (k == 2) {
            if (v[1] & 0x0f) {
                return (size_t) -1;
            }

            break;
        }

        *d++ = (u_char) (v[1] << 4 | v[2] >> 2);

        if (k == 3) {
            if (v[2] & 0x03) {
                return (size_t) -1;
            }

            break;
        }

        *d++ = (u_char) (v[2] << 6 | v[3]);
    }

    return d - dst;
}


int
ngx_http_idv_memeq_const(const u_char *a, const u_char *b, size_t len)
{
    if (len == 0) {
        return 1;
    }

    return CRYPTO_memcmp(a, b, len) == 0;
}
