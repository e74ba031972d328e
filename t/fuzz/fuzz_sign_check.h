
/*
 * ngx_http_idv_module: the oracle for ngx_http_idv_sign().
 *
 * Re-derives every output of a signed call from the inputs, the way the
 * two signature specifications state them, with OpenSSL's one-shot
 * functions and an encoder of its own, and aborts on any difference:
 *
 *   - the parameters are a stable byte-order sort of the input;
 *   - the canonical query, the wire query and the form body decode back
 *     to exactly the parameters (and, in V1, the system parameters and
 *     Signature), each component "key=value" with only unreserved bytes
 *     and upper-case %XX escapes;
 *   - V3: x-acs-content-sha256, the canonical request, the string to
 *     sign, the HMAC-SHA256 signature and the Authorization value;
 *   - V1: the string to sign and the HMAC-SHA1 signature.
 */


#ifndef _IDV_FUZZ_SIGN_CHECK_H_INCLUDED_
#define _IDV_FUZZ_SIGN_CHECK_H_INCLUDED_


#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fuzz.h"


typedef struct {
    ngx_http_idv_param_t   p;
    size_t                 group;      /* V1: 0 API parameter, 1 system */
    size_t                 index;
} fuzz_sorted_t;


static inline int
fuzz_key_cmp(const ngx_http_idv_str_t *a, const ngx_http_idv_str_t *b)
{
    size_t  n;
    int     rc;

    n = a->len < b->len ? a->len : b->len;
    rc = n ? memcmp(a->data, b->data, n) : 0;

    if (rc != 0) {
        return rc;
    }

    return (a->len > b->len) - (a->len < b->len);
}


static inline int
fuzz_sorted_cmp(const void *a, const void *b)
{
    const fuzz_sorted_t  *x = a, *y = b;
    int                   rc;

    rc = fuzz_key_cmp(&x->p.key, &y->p.key);
    if (rc != 0) {
        return rc;
    }

    if (x->group != y->group) {
        return x->group < y->group ? -1 : 1;
    }

    return (x->index > y->index) - (x->index < y->index);
}


static inline int
fuzz_param_same(const ngx_http_idv_param_t *a, const ngx_http_idv_param_t *b)
{
    return a->key.len == b->key.len && a->key.data == b->key.data
           && a->value.len == b->value.len && a->value.data == b->value.data
           && a->body == b->body;
}


static inline u_char *
fuzz_pct_encode(u_char *d, const u_char *s, size_t len)
{
    static const char  hex[] = "0123456789ABCDEF";
    size_t             i;
    u_char             c;

    for (i = 0; i < len; i++) {
        c = s[i];

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9')
            || c == '-' || c == '_' || c == '.' || c == '~')
        {
            *d++ = c;

        } else {
            *d++ = '%';
            *d++ = hex[c >> 4];
            *d++ = hex[c & 0xf];
        }
    }

    return d;
}


static inline u_char *
fuzz_hex(u_char *d, const u_char *s, size_t len)
{
    static const char  hex[] = "0123456789abcdef";

    while (len--) {
        *d++ = hex[*s >> 4];
        *d++ = hex[*s++ & 0xf];
    }

    return d;
}


/*
 * the components of an encoded list "k=v&k=v..." must decode to want[],
 * in order; the text ends after them or, with tail, continues with "&"
 * and is returned from there
 */

static inline const u_char *
fuzz_check_list(const u_char *s, size_t len, fuzz_sorted_t *want, size_t n,
    int tail)
{
    const u_char  *end, *amp, *eq;
    u_char        *buf;
    long           k, v;
    size_t         i;

    end = s + len;

    if (n == 0) {
        return s;
    }

    buf = fuzz_alloc(NULL, len + 1);

    for (i = 0; i < n; i++) {
        FUZZ_CHECK(s <= end);

        amp = memchr(s, '&', end - s);
        if (amp == NULL) {
            amp = end;
        }

        eq = memchr(s, '=', amp - s);
        FUZZ_CHECK(eq != NULL);

        k = fuzz_pct_decode(s, eq - s, buf);
        FUZZ_CHECK(k >= 0);
        FUZZ_CHECK(fuzz_str_eq(&want[i].p.key, buf, (size_t) k));

        v = fuzz_pct_decode(eq + 1, amp - eq - 1, buf);
        FUZZ_CHECK(v >= 0);
        FUZZ_CHECK(fuzz_str_eq(&want[i].p.value, buf, (size_t) v));

        if (i + 1 < n) {
            FUZZ_CHECK(amp < end);
        }

        s = amp + 1;
    }

    if (tail) {
        return s;
    }

    FUZZ_CHECK(s == end + 1);

    return s;
}


static inline fuzz_sorted_t *
fuzz_subset(fuzz_sorted_t *all, size_t n, int body, size_t *m)
{
    fuzz_sorted_t  *sub;
    size_t          i;

    sub = fuzz_alloc(NULL, (n + 1) * sizeof(fuzz_sorted_t));
    *m = 0;

    for (i = 0; i < n; i++) {
        if ((int) all[i].p.body == body) {
            sub[(*m)++] = all[i];
        }
    }

    return sub;
}


/* orig: the parameters as passed in, before ngx_http_idv_sign() sorted */

static inline void
fuzz_check_signed(const ngx_http_idv_sign_t *s,
    const ngx_http_idv_param_t *orig, int form_in)
{
    static const ngx_http_idv_param_t  v1sys[] = {
        { ngx_http_idv_string("AccessKeyId"), { 0, NULL }, 0, 0, 0 },
        { ngx_http_idv_string("Action"), { 0, NULL }, 0, 0, 0 },
        { ngx_http_idv_string("Format"), ngx_http_idv_string("json"), 0, 0, 0 },
        { ngx_http_idv_string("SignatureMethod"),
          ngx_http_idv_string("HMAC-SHA1"), 0, 0, 0 },
        { ngx_http_idv_string("SignatureNonce"), { 0, NULL }, 0, 0, 0 },
        { ngx_http_idv_string("SignatureVersion"),
          ngx_http_idv_string("1.0"), 0, 0, 0 },
        { ngx_http_idv_string("Timestamp"), { 0, NULL }, 0, 0, 0 },
        { ngx_http_idv_string("Version"), { 0, NULL }, 0, 0, 0 }
    };

    static const char  sh_form[] = "content-type;host;x-acs-action;"
        "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version";

    size_t           i, n, nq, nb, len, sh_len;
    int              form;
    const char      *sh;
    const u_char    *rest;
    u_char          *buf, *p, md[EVP_MAX_MD_SIZE], hash[64], hex[64];
    unsigned int     mdlen;
    fuzz_sorted_t   *all, *q, *b;

    n = s->nparams;

    /* a stable sort of the input */

    all = fuzz_alloc(NULL, (n + 8 + 1) * sizeof(fuzz_sorted_t));

    for (i = 0; i < n; i++) {
        all[i].p = orig[i];
        all[i].group = 0;
        all[i].index = i;
    }

    qsort(all, n, sizeof(fuzz_sorted_t), fuzz_sorted_cmp);

    for (i = 0; i < n; i++) {
        FUZZ_CHECK(fuzz_param_same(&s->params[i], &all[i].p));
    }

    nb = 0;
    for (i = 0; i < n; i++) {
        nb += s->params[i].body;
    }

    form = form_in || nb > 0;

    if (s->algorithm == NGX_HTTP_IDV_SIGN_V3) {

        FUZZ_CHECK(s->form == (unsigned) form);
        FUZZ_CHECK(s->query.data == s->canonical_query.data
                   && s->query.len == s->canonical_query.len);

        q = fuzz_subset(all, n, 0, &nq);
        b = fuzz_subset(all, n, 1, &nb);

        (void) fuzz_check_list(s->canonical_query.data, s->canonical_query.len,
                               q, nq, 0);
        if (nq == 0) {
            FUZZ_CHECK(s->canonical_query.len == 0);
        }

        (void) fuzz_check_list(s->body.data, s->body.len, b, nb, 0);
        if (nb == 0) {
            FUZZ_CHECK(s->body.len == 0);
        }

        /* x-acs-content-sha256 */

        FUZZ_CHECK(EVP_Digest(s->body.len ? s->body.data : (u_char *) "",
                              s->body.len, md, &mdlen, EVP_sha256(), NULL)
                   == 1);
        fuzz_hex(hash, md, 32);
        FUZZ_CHECK(memcmp(hash, s->content_sha256, 64) == 0);

        /* the canonical request, as the V3 specification lists it */

        sh = form ? sh_form : sh_form + sizeof("content-type;") - 1;
        sh_len = strlen(sh);

        len = 64 + s->canonical_query.len + s->host.len + s->action.len
              + s->timestamp.len + s->nonce.len + s->version.len + sh_len
              + 2 * 64 + 256;
        buf = fuzz_alloc(NULL, len);
        p = buf;

#define CPY(d, l)  do { if (l) { memcpy(p, d, l); } p += l; } while (0)
#define LIT(lit)   CPY(lit, sizeof(lit) - 1)

        LIT("POST\n/\n");
        CPY(s->canonical_query.data, s->canonical_query.len);
        LIT("\n");
        if (form) {
            LIT("content-type:application/x-www-form-urlencoded\n");
        }
        LIT("host:");
        CPY(s->host.data, s->host.len);
        LIT("\nx-acs-action:");
        CPY(s->action.data, s->action.len);
        LIT("\nx-acs-content-sha256:");
        CPY(hash, 64);
        LIT("\nx-acs-date:");
        CPY(s->timestamp.data, s->timestamp.len);
        LIT("\nx-acs-signature-nonce:");
        CPY(s->nonce.data, s->nonce.len);
        LIT("\nx-acs-version:");
        CPY(s->version.data, s->version.len);
        LIT("\n\n");
        CPY(sh, sh_len);
        LIT("\n");
        CPY(hash, 64);

        FUZZ_CHECK(fuzz_str_eq(&s->canonical_request, buf, p - buf));

        /* the string to sign */

        FUZZ_CHECK(EVP_Digest(buf, p - buf, md, &mdlen, EVP_sha256(), NULL)
                   == 1);
        p = buf;
        LIT("ACS3-HMAC-SHA256\n");
        p = fuzz_hex(p, md, 32);

        FUZZ_CHECK(fuzz_str_eq(&s->string_to_sign, buf, p - buf));

        /* the signature and the Authorization value */

        FUZZ_CHECK(HMAC(EVP_sha256(),
                        s->access_key_secret.len ? s->access_key_secret.data
                                                 : (u_char *) "",
                        (int) s->access_key_secret.len,
                        buf, p - buf, md, &mdlen)
                   != NULL);
        fuzz_hex(hex, md, 32);

        FUZZ_CHECK(fuzz_str_eq(&s->signature, hex, 64));

        len = 128 + s->access_key_id.len + sh_len;
        buf = fuzz_alloc(NULL, len);
        p = buf;

        LIT("ACS3-HMAC-SHA256 Credential=");
        CPY(s->access_key_id.data, s->access_key_id.len);
        LIT(",SignedHeaders=");
        CPY(sh, sh_len);
        LIT(",Signature=");
        CPY(hex, 64);

        FUZZ_CHECK(fuzz_str_eq(&s->authorization, buf, p - buf));

        return;
    }

    FUZZ_CHECK(s->algorithm == NGX_HTTP_IDV_SIGN_V1);

    /* V1: API and system parameters merged, the API one first on a tie */

    for (i = 0; i < 8; i++) {
        all[n + i].p = v1sys[i];
        all[n + i].group = 1;
        all[n + i].index = i;
    }

    all[n + 0].p.value = s->access_key_id;
    all[n + 1].p.value = s->action;
    all[n + 4].p.value = s->nonce;
    all[n + 6].p.value = s->timestamp;
    all[n + 7].p.value = s->version;

    qsort(all, n + 8, sizeof(fuzz_sorted_t), fuzz_sorted_cmp);

    (void) fuzz_check_list(s->canonical_query.data, s->canonical_query.len,
                           all, n + 8, 0);

    FUZZ_CHECK(s->form == (unsigned) form);

    /* the string to sign: "POST&%2F&" and the encoded canonical query */

    len = sizeof("POST&%2F&") + 3 * s->canonical_query.len;
    buf = fuzz_alloc(NULL, len);
    p = buf;

    LIT("POST&%2F&");
    p = fuzz_pct_encode(p, s->canonical_query.data, s->canonical_query.len);

    FUZZ_CHECK(fuzz_str_eq(&s->string_to_sign, buf, p - buf));

    /* Signature = base64(HMAC-SHA1(secret "&", string to sign)) */

    len = s->access_key_secret.len + 1;
    p = fuzz_alloc(NULL, len);
    if (s->access_key_secret.len) {
        memcpy(p, s->access_key_secret.data, s->access_key_secret.len);
    }
    p[len - 1] = '&';

    FUZZ_CHECK(HMAC(EVP_sha1(), p, (int) len, s->string_to_sign.data,
                    s->string_to_sign.len, md, &mdlen)
               != NULL && mdlen == 20);

    FUZZ_CHECK(EVP_EncodeBlock(hex, md, 20) == 28);
    FUZZ_CHECK(fuzz_str_eq(&s->signature, hex, 28));

    /* the wire query: the query parameters, then Signature */

    q = fuzz_subset(all, n + 8, 0, &nq);
    b = fuzz_subset(all, n + 8, 1, &nb);

    rest = fuzz_check_list(s->query.data, s->query.len, q, nq, 1);

    len = s->query.len - (rest - s->query.data);
    buf = fuzz_alloc(NULL, 10 + 3 * 28);
    p = buf;
    LIT("Signature=");
    p = fuzz_pct_encode(p, hex, 28);

    FUZZ_CHECK(len == (size_t) (p - buf) && memcmp(rest, buf, len) == 0);

    (void) fuzz_check_list(s->body.data, s->body.len, b, nb, 0);
    if (nb == 0) {
        FUZZ_CHECK(s->body.len == 0);
    }

#undef CPY
#undef LIT
}


#endif /* _IDV_FUZZ_SIGN_CHECK_H_INCLUDED_ */
