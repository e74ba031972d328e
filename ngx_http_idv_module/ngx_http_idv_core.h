
/*
 * ngx_http_idv_module: the pure core.
 *
 * Nothing here knows about nginx requests: canonical encoding, signing,
 * the operations table and the request model compile on their own into
 * unit tests and fuzz targets.  Strings are (len, data) pairs laid out
 * like ngx_str_t; memory comes from a caller-supplied allocator (a pool
 * in nginx, malloc in tests).
 */


#ifndef _NGX_HTTP_IDV_CORE_H_INCLUDED_
#define _NGX_HTTP_IDV_CORE_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>


typedef struct {
    size_t                      len;
    u_char                     *data;
} ngx_http_idv_str_t;


#define ngx_http_idv_string(s)  { sizeof(s) - 1, (u_char *) s }


typedef void *(*ngx_http_idv_alloc_pt)(void *data, size_t size);


/*
 * The passes over a body (JSON strings, base64, percent-encoding) take
 * blocks of 16 bytes, one or two a step, where SSE2 is there (always on
 * amd64), one byte at a time elsewhere.  These classify the bytes of a block: 0xff where a byte is
 * in the class.  Signed compares: bytes from 0x80 up are in no range.
 */

#if (defined __SSE2__)

#include <emmintrin.h>

#define ngx_http_idv_sse2_in(v, lo, hi)                                       \
    _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8((lo) - 1)),                 \
                  _mm_cmplt_epi8(v, _mm_set1_epi8((hi) + 1)))

#define ngx_http_idv_sse2_is(v, c)                                            \
    _mm_cmpeq_epi8(v, _mm_set1_epi8(c))

/* A-Z a-z: a letter with 0x20 set is a lower-case one, nothing else is */
#define ngx_http_idv_sse2_alpha(v)                                            \
    ngx_http_idv_sse2_in(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 'z')

#endif


/* one API parameter as it will be sent */

typedef struct {
    ngx_http_idv_str_t          key;
    ngx_http_idv_str_t          value;
    unsigned                    body:1;     /* form body, not query */
    unsigned                    pii:1;      /* never log the value */
    unsigned                    base64:1;   /* checked as strict base64:
                                               '+' '/' '=' are its only
                                               reserved bytes */
} ngx_http_idv_param_t;


/* percent-encoding: the canonical form of both signature versions */

size_t ngx_http_idv_pct_encoded_len(const u_char *src, size_t len);
u_char *ngx_http_idv_pct_encode(u_char *dst, const u_char *src, size_t len);

/* the same for a value checked as strict base64 (only '+' '/' '=' escaped) */
u_char *ngx_http_idv_pct_encode_base64(u_char *dst, const u_char *src,
    size_t len);

/*
 * form decoding ('+' is a space, %XX in either case); dst may be src;
 * returns the decoded length or (size_t) -1 on a malformed escape
 */
size_t ngx_http_idv_pct_decode(u_char *dst, const u_char *src, size_t len);

/* byte-order sort by key (stable for equal keys) */
void ngx_http_idv_params_sort(ngx_http_idv_param_t *params, size_t n);


/* signing */

#define NGX_HTTP_IDV_SIGN_V3        0       /* ACS3-HMAC-SHA256 */
#define NGX_HTTP_IDV_SIGN_V1        1       /* HMAC-SHA1, SignatureVersion 1.0 */

#define NGX_HTTP_IDV_API_VERSION    "2022-08-09"


typedef struct {
    /* input */
    int                         algorithm;
    ngx_http_idv_str_t          access_key_id;
    ngx_http_idv_str_t          access_key_secret;
    ngx_http_idv_str_t          security_token; /* temporary credentials'
                                                   (V3 header, V1 param.),
                                                   or empty */
    ngx_http_idv_str_t          host;           /* exactly the Host sent */
    ngx_http_idv_str_t          action;
    ngx_http_idv_str_t          version;        /* "2022-08-09" */
    ngx_http_idv_str_t          timestamp;      /* YYYY-MM-DDTHH:MM:SSZ */
    ngx_http_idv_str_t          nonce;
    ngx_http_idv_param_t       *params;         /* sorted in place */
    size_t                      nparams;
    unsigned                    form:1;         /* the call carries a form
                                                   body (content-type is
                                                   sent and, in V3, signed)
                                                   even when it is empty */

    ngx_http_idv_alloc_pt       alloc;
    void                       *alloc_data;

    /* output */
    ngx_http_idv_str_t          query;          /* wire query, no '?' */
    ngx_http_idv_str_t          body;           /* form-encoded body */
    ngx_http_idv_str_t          canonical_query;
    ngx_http_idv_str_t          canonical_request;      /* V3 only */
    ngx_http_idv_str_t          string_to_sign;
    ngx_http_idv_str_t          signature;
    ngx_http_idv_str_t          authorization;          /* V3 only */
    u_char                      content_sha256[64];     /* V3, lower hex */
} ngx_http_idv_sign_t;


/* once per process: fetch the digest and MAC implementations */
int ngx_http_idv_sign_init(void);
void ngx_http_idv_sign_cleanup(void);

/* 0 on success, -1 on allocation or crypto failure */
int ngx_http_idv_sign(ngx_http_idv_sign_t *s);

/* building blocks, shared with verification of incoming SDK requests */
int ngx_http_idv_sha256_hex(const u_char *data, size_t len, u_char *hex64);
int ngx_http_idv_hmac_sha256(const u_char *key, size_t key_len,
    const u_char *data, size_t len, u_char *out32);
int ngx_http_idv_hmac_sha1(const u_char *key, size_t key_len,
    const u_char *data, size_t len, u_char *out20);
u_char *ngx_http_idv_hex(u_char *dst, const u_char *src, size_t len);
size_t ngx_http_idv_base64_encode(u_char *dst, const u_char *src, size_t len);
/* returns decoded length or (size_t) -1 on malformed input */
size_t ngx_http_idv_base64_decode(u_char *dst, const u_char *src,
    size_t len);
int ngx_http_idv_memeq_const(const u_char *a, const u_char *b, size_t len);


#endif /* _NGX_HTTP_IDV_CORE_H_INCLUDED_ */
